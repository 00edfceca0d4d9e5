"""pyproject.toml declares what the code needs, read from the source with ``ast``.

A third-party module that ``src/`` imports unguarded must be a core dependency: the
command that reaches it would stop on an ImportError. One imported only inside
``try: … except ImportError`` (an optional feature that names its extra, like
``format=onnx``) may instead come from a user-facing extra (not ``dev``). Classes that
configs in ``conf/`` instantiate count as well: Lightning's loggers import their package
when they start, and the Hydra launcher plugins come with the ``sweep`` extra.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest brings tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"stnlab", "__main__"}
# Import name → distribution, for modules not installed here (their extra left out).
NOT_INSTALLED = {"PIL": "pillow", "yaml": "pyyaml", "hydra": "hydra-core"}
# What a logger class needs beyond Lightning: any one of the packages.
LOGGER_PACKAGES = {
    "CSVLogger": set(),
    "TensorBoardLogger": {"tensorboard", "tensorboardx"},
    "WandbLogger": {"wandb"},
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path = ROOT / "pyproject.toml") -> tuple[set[str], set[str]]:
    """``(core, user-facing extras)`` distribution names of ``pyproject``."""
    project = tomllib.loads(pyproject.read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        found = {_canonical(Requirement(r).name) for r in requirements}
        return found - {_canonical(project["name"])}  # dev = stnlab[sweep,export] + tools

    extras = project.get("optional-dependencies", {})
    optional = set().union(*(names(reqs) for extra, reqs in extras.items() if extra != "dev"))
    return names(project["dependencies"]), optional


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        caught = handler.type
        types = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if any(
            isinstance(t, ast.Name) and t.id in {"ImportError", "ModuleNotFoundError"}
            for t in types
        ):
            return True
    return False


def imported_modules(source: str) -> dict[str, bool]:
    """Top-level modules that ``source`` imports (absolute imports only), each with whether
    every import of it stands inside the body of a ``try`` that catches ImportError."""
    found: dict[str, bool] = {}

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            inner = guarded or _catches_import_error(node)
            for child in node.body:
                visit(child, inner)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.partition(".")[0]
            found[top] = found.get(top, True) and guarded
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return found


def third_party_imports() -> dict[str, tuple[bool, list[str]]]:
    """Every third-party module imported under ``src/``: ``(guarded everywhere, files)``."""
    found: dict[str, tuple[bool, list[str]]] = {}
    for path in sorted((ROOT / "src").rglob("*.py")):
        for module, guarded in imported_modules(path.read_text()).items():
            if module in FIRST_PARTY or module in sys.stdlib_module_names:
                continue
            was_guarded, files = found.get(module, (True, []))
            found[module] = (was_guarded and guarded, [*files, str(path.relative_to(ROOT))])
    return found


def distributions(module: str) -> set[str]:
    """The distributions that provide top-level ``module`` (as installed here, else a guess)."""
    installed = packages_distributions().get(module)
    return {_canonical(d) for d in installed or [NOT_INSTALLED.get(module, module)]}


def test_the_scanner_tells_guarded_from_unguarded_imports() -> None:
    source = (
        "import numpy as np\nfrom torch import nn\nimport os\n"
        "def f():\n    import yaml\n"
        "    try:\n        import onnx\n        from onnxruntime import X\n"
        "    except ImportError:\n        import requests\n"
        "try:\n    import tomli\nexcept KeyError:\n    pass\n"
        "try:\n    import numpy\nexcept (ValueError, ModuleNotFoundError):\n    pass\n"
    )
    assert imported_modules(source) == {
        "numpy": False,  # unguarded once is unguarded
        "torch": False,
        "os": False,
        "yaml": False,  # inside a function, but nothing catches its ImportError
        "onnx": True,
        "onnxruntime": True,
        "requests": False,  # in the handler, not the guarded body
        "tomli": False,  # the try does not catch ImportError
    }
    assert _canonical("PyYAML") == "pyyaml" and _canonical("hydra_core") == "hydra-core"


def test_a_missing_declaration_is_caught(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "stnlab"\ndependencies = ["torch>=2.4", "Pillow>=10"]\n'
        '[project.optional-dependencies]\nexport = ["onnx>=1.16"]\n'
        'dev = ["stnlab[export]", "pytest>=8"]\n'
    )
    core, optional = _declared(pyproject)
    assert core == {"torch", "pillow"} and optional == {"onnx"}  # dev's tools do not count
    assert not distributions("yaml") & core  # PyYAML undeclared: the tests below would fail


def test_every_module_src_imports_is_declared() -> None:
    core, optional = _declared()
    imports = third_party_imports()
    assert {"torch", "lightning", "hydra", "numpy", "PIL", "yaml"} <= set(imports)
    missing = []
    for module, (guarded, files) in sorted(imports.items()):
        allowed = core | optional if guarded else core
        if not distributions(module) & allowed:
            where = "core or an extra" if guarded else "core dependencies"
            missing.append(f"{module} ({', '.join(files[:3])}) is not among the {where}")
    assert not missing, "pyproject.toml does not declare:\n" + "\n".join(missing)


def _targets() -> list[tuple[str, str]]:
    """``(config file, _target_)`` of every config under ``conf/``."""
    pattern = re.compile(r"^\s*_target_:\s*([\w.]+)", re.MULTILINE)
    return [
        (str(path.relative_to(ROOT)), target)
        for path in sorted((ROOT / "conf").rglob("*.yaml"))
        for target in pattern.findall(path.read_text())
    ]


def test_classes_the_configs_instantiate_have_their_packages() -> None:
    core, optional = _declared()
    targets = _targets()
    problems = []
    for config, target in targets:
        top, _, rest = target.partition(".")
        if top == "hydra_plugins":  # hydra_plugins.hydra_joblib_launcher → its distribution
            plugin = rest.partition(".")[0]
            # stnlab's own sweeper ships with stnlab; it needs the sweep extra's optuna
            plugin = {"stnlab_sweepers": "optuna"}.get(plugin, plugin)
            if _canonical(plugin) not in optional:
                problems.append(f"{config}: {target} needs a plugin no extra declares")
        elif target.startswith("lightning.pytorch.loggers."):
            logger = target.rpartition(".")[2]
            if logger not in LOGGER_PACKAGES:
                problems.append(f"{config}: add {logger}'s package to LOGGER_PACKAGES")
            elif LOGGER_PACKAGES[logger] and not LOGGER_PACKAGES[logger] & core:
                problems.append(f"{config}: {logger} needs one of {LOGGER_PACKAGES[logger]}")
        elif config.startswith("conf/hydra/sweeper/"):  # the sweeper's, with the sweep extra
            if not distributions(top) & optional:
                problems.append(f"{config}: {target} comes from a package no extra declares")
        elif top not in FIRST_PARTY and not distributions(top) & core:
            problems.append(f"{config}: {target} comes from an undeclared package")
    assert any(t.endswith("TensorBoardLogger") for _, t in targets)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("extra", ["sweep", "export"])
def test_dev_installs_the_user_facing_extras(extra: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    assert any(r.name == "stnlab" and extra in r.extras for r in dev)

"""Configs outside ``@hydra.main`` and the OmegaConf resolvers ``conf/`` uses.

One place finds ``conf/`` (:func:`conf_dir`) and composes a config the way an entry point
would (:func:`compose_config`): eval's variants, the benchmarks, the gallery and the tests
all use it. Data variants are the files of ``conf/data/`` (:func:`data_variants`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from stnlab.errors import ConfigError
from stnlab.progress import on_terminal
from stnlab.temp_files import atomic_path

CONF_ENV = "STNLAB_CONF_DIR"


def conf_dir() -> Path:
    """The ``conf/`` folder: ``$STNLAB_CONF_DIR``, the checkout this module lives in
    (editable install), or the first ``conf/`` with a ``train.yaml`` from the current
    folder upwards (a plain ``pip install .`` run from the checkout)."""
    candidates = []
    if os.environ.get(CONF_ENV):
        candidates.append(Path(os.environ[CONF_ENV]))
    candidates.append(Path(__file__).resolve().parents[2] / "conf")
    here = Path.cwd().resolve()
    candidates += [folder / "conf" for folder in (here, *here.parents)]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate
    raise ConfigError(
        f"stnlab's conf/ folder was not found (looked in {candidates[0]} and upwards from "
        f"{here}): run from the stnlab checkout, or set {CONF_ENV}=<checkout>/conf"
    )


def project_root() -> str:
    """The project's root: the folder holding the ``conf/`` this config was composed from
    (the entry point's ``../conf``), else the parent of :func:`conf_dir`; never just the
    current folder. ``${project_root:}`` is ``paths.root_dir``, under which ``data/`` and
    ``outputs/`` live, wherever a command is started."""
    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.get("config_sources") or []:
            if source.get("provider") == "main" and source.get("schema") == "file":
                return str(Path(source.path).resolve().parent)
    return str(conf_dir().parent)


def data_variants(*, single_digit: bool = False) -> list[str]:
    """The data variants, one per file of ``conf/data/`` (``mnist``, ``rotated``, …).

    ``single_digit``: only the distortions of one labelled digit per image, those whose
    file keeps ``mnist.yaml``'s data module (the Table-1 variants); MNIST addition and
    co-localisation name their own ``_target_`` and are left out.
    """
    names = sorted(p.stem for p in (conf_dir() / "data").glob("*.yaml"))
    if single_digit:
        names = [n for n in names if _data_module_file(n) == "mnist"]
    return names


def _data_module_file(variant: str) -> str:
    """The ``conf/data/`` file whose ``_target_`` a variant uses: itself, or the file it
    extends (the first entry of its defaults list), followed until one names it."""
    seen = []
    while variant not in seen:
        seen.append(variant)
        config = yaml.safe_load((conf_dir() / "data" / f"{variant}.yaml").read_text()) or {}
        bases = [d for d in config.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        if "_target_" in config or not bases:
            return variant
        variant = bases[0]
    return variant


def compose_config(
    name: str,
    overrides: Sequence[str] = (),
    output_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> DictConfig:
    """``conf/<name>.yaml`` with ``overrides``, composed as ``@hydra.main`` would.

    With ``output_dir`` the result is a run's config: ``paths`` point at ``output_dir``
    and ``data_dir``, Hydra's runtime config is registered (``${hydra:…}`` resolves) and
    then dropped from the returned config, as the task sees it. Works inside a running
    Hydra app (eval composing its variants) and outside one (benchmarks, tests).
    """
    args = list(overrides)
    if GlobalHydra.instance().is_initialized() and output_dir is None:
        return compose(name, overrides=args)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(name, overrides=args, return_hydra_config=output_dir is not None)
    if output_dir is None:
        return cfg
    with open_dict(cfg):
        cfg.paths.root_dir = str(conf_dir().parent)
        cfg.paths.output_dir = str(output_dir)
        if data_dir is not None:
            cfg.paths.data_dir = str(Path(data_dir).resolve())
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(Path.cwd())
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


TREE_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


def print_config_tree(cfg: DictConfig, path: str | os.PathLike) -> None:
    """The composed config as a rich tree, one branch per top-level key (``data``, ``model``,
    ``callbacks``, ``logger``, ``trainer``, ``paths``, ``extras``, then the rest), on
    stdout and into ``path`` (the run folder's ``config_tree.log``). Values are resolved,
    so call it once the config is validated."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER]
    for key in keys:
        value = cfg.get(key)
        text = (
            OmegaConf.to_yaml(value, resolve=True)
            if isinstance(value, DictConfig | ListConfig)
            else str(value)
        )
        tree.add(str(key), style="dim", guide_style="dim").add(Syntax(text, "yaml"))
    Console().print(tree)
    with atomic_path(path, "config tree") as tmp, open(tmp, "w", encoding="utf-8") as f:
        Console(file=f, width=120, color_system=None).print(tree)


def register_resolvers() -> None:
    """Register stnlab's OmegaConf resolvers (idempotent)."""
    from stnlab.loggers import wandb_mode

    resolvers = {
        "wandb_mode": wandb_mode,  # ${wandb_mode:${.save_dir}}
        "project_root": project_root,  # ${project_root:}: paths.root_dir
        "on_terminal": on_terminal,  # ${on_terminal:stdout}: a bar there would be drawn
        "floordiv": lambda a, b: int(a) // int(b),  # ${floordiv:${data.canvas_size},2}
        "mul": lambda a, b: int(a) * int(b),
        # ${window_scale:24,${data.canvas_size}}: the share of the canvas's side a 24-pixel
        # window spans (at most 1: the whole canvas)
        "window_scale": lambda a, b: min(1.0, float(a) / float(b)),
        # ${fraction_of:${trainer.max_epochs},0.6}: an epoch count at 60% of training (>= 1)
        "fraction_of": lambda n, f: max(1, round(int(n) * float(f))),
    }
    for key, fn in resolvers.items():
        if not OmegaConf.has_resolver(key):
            OmegaConf.register_new_resolver(key, fn)


register_resolvers()

"""Start-up checks: a bad config fails before any data or model work, with a clear message.

Hydra itself rejects an unknown config-group option (it lists the valid ones) and an
override of a key that does not exist (``trainer.max_epoch=3``: "Key 'max_epoch' is not in
struct"). What Hydra cannot know is checked here:

* every number is finite: NaN and infinity pass any ``x < 0`` check, then train to NaN;
* keys added with ``+`` that the ``_target_`` they configure does not take (with the
  closest valid key as a suggestion), ``_target_`` paths that do not exist, and values of
  the wrong type for the parameter they set (``data.batch_size=1.5``, a scalar for a
  ``[low, high]`` range), read from the constructor's type hints;
* run-level values: ``seed``, ``trainer.max_epochs``, ``optimized_metric``, the canvas
  size, the optimiser's ranges, an accelerator this machine has, the global batch size
  against the number of processes, writable output and checkpoint folders;
* constructor checks of every class (ranges, sizes that must fit together) run when the
  objects are built, and :func:`instantiate_checked` reports them under their config key.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import math
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from stnlab.checks import check_batch_split, check_range, check_writable, show_value
from stnlab.config import conf_dir
from stnlab.errors import ConfigError

# Metrics the LightningModule logs; a sweeper can optimise any of them.
KNOWN_METRICS = (
    "val/acc_best",
    "val/acc",
    "val/loss",
    "train/acc",
    "train/loss_epoch",
    "test/acc",
    "test/err",
    "test/loss",
    "val/pose/undone",
    "val/coloc/hit_rate",
    "val/coloc/hit_rate_best",
    "test/coloc/hit_rate",
)
_SPECIAL_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
_CHECKED_SECTIONS = ("data", "model", "trainer", "callbacks", "logger")
_TRANSFORM_NODE = "model.net.transformer.transform"
SEED_MAX = 2**32 - 1  # NumPy's seeds (Lightning's seed_everything seeds NumPy too)
# Ranges of common optimiser settings; anything else the optimiser checks itself.
_OPTIMIZER_RANGES: dict[str, dict[str, Any]] = {
    "lr": {"above": 0, "hint": ", e.g. 0.02 (SGD) or 0.003 (AdamW)"},
    "momentum": {"minimum": 0, "below": 1, "hint": " (0: plain SGD)"},
    "dampening": {"minimum": 0, "below": 1},
    "weight_decay": {"minimum": 0, "hint": " (0: none)"},
    "eps": {"minimum": 0},
}
# Config keys of folders a callback or logger writes into.
_OUTPUT_DIR_KEYS = ("dirpath", "save_dir")


def _conf_choices(group: str) -> list[str]:
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


_SEQUENCES = (
    list,
    tuple,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _union_args(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def _fits(annotation: Any, value: Any) -> bool | None:
    """Whether a resolved config ``value`` fits a type hint; ``None`` when it cannot tell.

    Only what a YAML value can be is judged (numbers, strings, booleans, lists,
    mappings); objects built from a nested ``_target_``, strings a class may parse
    (paths, devices) and hints it does not know are left to the constructor.
    """
    if value is None or annotation in (inspect.Parameter.empty, Any):
        return None
    members = _union_args(annotation)
    if members is not None:
        results = [_fits(m, value) for m in members if m is not type(None)]
        if True in results:
            return True
        return False if results and all(r is False for r in results) else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return True if value in args else None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    is_list = isinstance(value, ListConfig | list | tuple)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return is_number and isinstance(value, int)
    if annotation is float:
        return is_number
    if annotation is str:  # Hydra reads `name=1` as a number: leave that to the class
        return False if is_list or isinstance(value, DictConfig) else None
    if origin in _SEQUENCES or annotation in (list, tuple):
        if not is_list:
            return False if is_number or isinstance(value, bool | DictConfig) else None
        items = list(value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                return False
            checks = [_fits(a, v) for a, v in zip(args, items, strict=True)]
        else:
            checks = [_fits(args[0], v) for v in items] if args else []
        return False not in checks
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return isinstance(value, DictConfig | dict) or (False if is_number or is_list else None)
    if inspect.isclass(annotation):
        if isinstance(value, annotation):
            return True
        return False if is_number or isinstance(value, bool) else None
    return None


def _describe(annotation: Any) -> str:
    """What a type hint asks for, in words: ``an integer``, ``a list of 2 numbers``."""
    members = _union_args(annotation)
    if members is not None:
        words: list[str] = []
        for member in members:
            if member is type(None):
                continue
            text = _describe(member)
            # tuple[float, float] | list[float]: "a list of 2 numbers" says it all
            if text not in words and not (
                text.startswith("a list") and any(w.startswith("a list") for w in words)
            ):
                words.append(text)
        if type(None) in members:
            words.append("null")
        return " or ".join(words)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(show_value(a) for a in args)
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if annotation in simple:
        return simple[annotation]
    if origin in _SEQUENCES or annotation in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            kinds = {_PLURAL.get(a, "values") for a in args}
            return f"a list of {len(args)} {kinds.pop() if len(kinds) == 1 else 'values'}"
        return f"a list of {_PLURAL.get(args[0], 'values')}" if args else "a list"
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return "a mapping"
    return f"a {getattr(annotation, '__name__', annotation)}"


def _example(key: str, default: Any, annotation: Any) -> str:
    if (
        default is inspect.Parameter.empty
        or default is None
        or _fits(annotation, default) is not True
    ):
        return ""
    return f", e.g. {key}={show_value(default)}"


def _signature(obj: Any) -> inspect.Signature | None:
    """``obj``'s signature with its type hints evaluated (without them if they cannot be)."""
    for eval_str in (True, False):
        try:
            return inspect.signature(obj, eval_str=eval_str)
        except (TypeError, ValueError):
            return None
        except Exception:  # a hint that names something imported only for type checkers
            continue
    return None


def _check_node(path: str, node: DictConfig) -> None:
    """One ``_target_`` node: the target exists, takes every key, each value fits its type."""
    target = node.get("_target_")
    try:
        obj = get_object(str(target))
    except Exception:
        hint = ""
        if path == _TRANSFORM_NODE:
            names = " | ".join(_conf_choices("model/transform"))
            hint = f" Valid transform families: model/transform={names}."
        raise ConfigError(
            f"{path}._target_={target!r} does not exist (no such class or function).{hint}"
        ) from None
    signature = _signature(obj)
    if signature is None:
        return
    params = signature.parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in node:
        key = str(key)
        if key in _SPECIAL_KEYS:
            continue
        if key not in valid:
            if open_ended:
                continue
            close = difflib.get_close_matches(key, valid, n=1)
            suggestion = f" Did you mean {path}.{close[0]}?" if close else ""
            raise ConfigError(
                f"{path}.{key} is not a parameter of {target}.{suggestion} "
                f"Valid keys: {', '.join(sorted(valid))}."
            )
        try:
            value = node[key]
        except Exception:  # an interpolation that cannot resolve here: the class decides
            continue
        param = params[key]
        if _fits(param.annotation, value) is False:
            full = f"{path}.{key}"
            raise ConfigError(
                f"{full}={show_value(value)} must be {_describe(param.annotation)}"
                f"{_example(full, param.default, param.annotation)}"
            )


def _target_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        children = node.items_ex(resolve=False)
    elif isinstance(node, ListConfig):
        children = ((f"[{i}]", node[i]) for i in range(len(node)))
    else:
        return
    for key, child in children:
        if isinstance(child, DictConfig | ListConfig):
            where = f"{path}{key}" if str(key).startswith("[") else f"{path}.{key}"
            yield from _target_nodes(child, where)


def check_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` resolves, every key beside it is a parameter it takes, and every
    value has the type its parameter is annotated with (``int``, ``float``, a list …)."""
    for section in _CHECKED_SECTIONS:
        node = cfg.get(section)
        if node is None:
            continue
        for path, spec in _target_nodes(node, section):
            _check_node(path, spec)


def check_finite(cfg: DictConfig | ListConfig, path: str = "") -> None:
    """Every number of ``cfg`` (except under ``hydra``) is finite: no ``nan``, no ``inf``.

    No stnlab setting means anything with NaN or infinity, and both slip through range
    checks written as ``x < 0``; this rejects them wherever they are.
    """
    if isinstance(cfg, DictConfig):
        keys: Iterator[Any] = (k for k in cfg if not (path == "" and k == "hydra"))
    else:
        keys = iter(range(len(cfg)))
    for key in keys:
        where = (
            f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        )
        try:
            value = cfg[key]
        except Exception:  # an interpolation that cannot resolve here (e.g. ${hydra:…})
            continue
        if isinstance(value, DictConfig | ListConfig):
            check_finite(value, where)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{where}={value} is not a finite number; NaN and infinity are never valid "
                "settings, give a finite value"
            )


def process_count(trainer_cfg: DictConfig | None) -> int | None:
    """Processes the trainer will start (devices × nodes), or ``None`` when set to auto."""
    if trainer_cfg is None:
        return None
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, bool) or not isinstance(nodes, int):
        return None
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        return len(devices) * nodes
    return None  # "auto", -1: known only at start-up; the DataModule checks again then


def check_accelerator(trainer: DictConfig) -> None:
    """``trainer.accelerator`` names a device this machine has (a GPU for ``gpu``/``cuda``)."""
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}, but this machine has no GPU that PyTorch can "
            f"use (torch {torch.__version__}: torch.cuda.is_available() is False). Run on "
            "the CPU with trainer=cpu (or trainer.accelerator=cpu), or run on a GPU machine."
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator=mps, but Apple's MPS is not available here. Run on the CPU "
            "with trainer=cpu (or trainer.accelerator=cpu)."
        )


def check_optimizer(node: DictConfig, key: str = "model.optimizer") -> None:
    """The optimiser's common settings are in range, and it accepts all of its settings.

    The optimiser is a ``_partial_`` built only when training starts; building it here on
    a probe parameter turns its own checks into a start-up error.
    """
    for name, bounds in _OPTIMIZER_RANGES.items():
        if node.get(name) is not None:
            check_range(f"{key}.{name}", node[name], **bounds)
    betas = node.get("betas")
    if betas is not None:
        if not isinstance(betas, ListConfig) or len(betas) != 2:
            raise ConfigError(
                f"{key}.betas={show_value(betas)} must be a list of 2 numbers in [0, 1)"
            )
        for i, beta in enumerate(betas):
            check_range(f"{key}.betas[{i}]", beta, minimum=0, below=1)
    if node.get("fused"):  # a fused optimiser may refuse a CPU probe that training never sees
        return
    try:
        factory = instantiate(node)
        factory([torch.nn.Parameter(torch.zeros(1))])
    except InstantiationException:
        return  # reported by check_targets or when the model is built
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{key} ({node.get('_target_')}): {err}") from None


def validate_config(cfg: DictConfig) -> None:
    """Run every config check of this module; raise :class:`ConfigError` at the first problem."""
    check_finite(cfg)
    seed = cfg.get("seed")
    if seed is not None:
        check_range(
            "seed",
            seed,
            integer=True,
            minimum=0,
            maximum=SEED_MAX,
            hint=" (NumPy's seed range), or null for no seed",
        )
    budget = cfg.get("budget", 1.0)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0:
        raise ConfigError(
            f"budget={budget!r} must be a number > 0: the fraction of the paper's 150k steps "
            "that experiment presets train (0.01 = 1,500 steps; 1 = the paper's schedule)"
        )
    trainer = cfg.get("trainer")
    if trainer is not None:
        max_epochs = trainer.get("max_epochs")
        if max_epochs is not None and (
            not isinstance(max_epochs, int) or max_epochs < -1 or max_epochs == 0
        ):
            raise ConfigError(
                f"trainer.max_epochs={max_epochs!r} must be a positive integer "
                "(or -1 for no limit, with trainer.max_steps set)"
            )
        accumulate = trainer.get("accumulate_grad_batches", 1)
        if not isinstance(accumulate, int) or isinstance(accumulate, bool) or accumulate < 1:
            raise ConfigError(
                f"trainer.accumulate_grad_batches={accumulate!r} must be a whole number >= 1 "
                "(batches whose gradients add up before each optimiser step; 1 = every batch)"
            )
    metric = cfg.get("optimized_metric")
    if metric is not None and metric not in KNOWN_METRICS:
        close = difflib.get_close_matches(str(metric), KNOWN_METRICS, n=1)
        suggestion = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"optimized_metric={metric!r} is not a metric stnlab logs.{suggestion} "
            f"Valid: {', '.join(KNOWN_METRICS)}."
        )
    data = cfg.get("data")
    if data is not None:
        # Checked before the classes: the distortion and the models all read these.
        for key in ("canvas_size", "image_size"):
            if key in data:
                check_range(f"data.{key}", data[key], integer=True, minimum=1, hint=" (pixels)")
    check_targets(cfg)
    model = cfg.get("model")
    if model is not None and model.get("optimizer") is not None:
        check_optimizer(model.optimizer)
    if trainer is not None:
        check_accelerator(trainer)
    processes = process_count(trainer)
    if data is not None and processes:
        batch = data.get("batch_size")
        if isinstance(batch, int):
            devices, nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
            check_batch_split(batch, processes, f"trainer.devices={devices} × num_nodes={nodes}")
    if cfg.get("paths") is not None:
        check_writable(cfg.paths.output_dir, "paths.output_dir")
    check_output_folders(cfg)


def check_output_folders(cfg: DictConfig) -> None:
    """The folders callbacks and loggers write into (checkpoints, grids, logs) can be
    written: found now rather than when the first epoch is saved."""
    for section in ("callbacks", "logger"):
        for name, node in (cfg.get(section) or {}).items():
            if not isinstance(node, DictConfig) or "_target_" not in node:
                continue
            for key in _OUTPUT_DIR_KEYS:
                folder = node.get(key)
                if isinstance(folder, str) and folder:
                    full = f"{section}.{name}.{key}"
                    check_writable(
                        folder,
                        full,
                        fix=f"Point {full} at a writable folder, or fix the folder's permissions.",
                        keep=False,
                    )


def instantiate_checked(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with a constructor's ``ValueError`` reported under ``key``."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        full_key = key
        for line in str(err).splitlines():
            if line.startswith("full_key:"):
                full_key = line.split(":", 1)[1].strip() or key
        if isinstance(cause, ConfigError):
            raise cause from None
        if (
            isinstance(cause, ValueError | TypeError)
            or type(cause).__name__ == "MisconfigurationException"
        ):
            message = str(cause)
            if not message.startswith(full_key.split(".")[0] + "."):
                message = f"{full_key}: {message}"
            raise ConfigError(message) from None
        raise


def instantiate_dict(cfg: DictConfig | None, what: str, drop: Sequence[str] = ()) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping (callbacks, loggers); skip nulls.

    ``drop``: keys stnlab reads beside a constructor's (``logger.wandb.watch``), left out of
    the call.
    """
    if cfg is None:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{what} config must be a mapping of name → object, got {type(cfg)}")
    built = []
    for name, node in cfg.items():
        if node is None or "_target_" not in node:
            continue
        if any(key in node for key in drop):
            plain = OmegaConf.to_container(node, resolve=True)
            node = OmegaConf.create({k: v for k, v in plain.items() if k not in drop})
        built.append(instantiate_checked(node, f"{what}.{name}"))
    return built

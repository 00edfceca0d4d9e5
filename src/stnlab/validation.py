"""Start-up checks: a bad config fails before any data or model work, with a clear message.

Hydra itself rejects an unknown config-group option (it lists the valid ones) and an
override of a key that does not exist (``trainer.max_epoch=3``: "Key 'max_epoch' is not in
struct"). What Hydra cannot know is checked here:

* keys added with ``+`` that the ``_target_`` they configure does not take (with the
  closest valid key as a suggestion), and ``_target_`` paths that do not exist;
* run-level values: ``seed``, ``trainer.max_epochs``, ``optimized_metric``, the global
  batch size against the number of processes, a writable output directory;
* constructor checks of every class (ranges, sizes that must fit together) run when the
  objects are built, and :func:`instantiate_checked` reports them under their config key.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

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
)
_SPECIAL_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
_CHECKED_SECTIONS = ("data", "model", "trainer", "callbacks", "logger")
_TRANSFORM_NODE = "model.net.transformer.transform"


def _target_nodes(tree: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(tree, dict):
        if "_target_" in tree:
            yield path, tree
        for key, value in tree.items():
            yield from _target_nodes(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _target_nodes(value, f"{path}[{i}]")


def _conf_choices(group: str) -> list[str]:
    conf = Path(__file__).resolve().parents[2] / "conf" / group
    return sorted(p.stem for p in conf.glob("*.yaml")) if conf.is_dir() else []


def check_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` resolves, and every key beside it is a parameter it takes."""
    for section in _CHECKED_SECTIONS:
        node = cfg.get(section)
        if node is None:
            continue
        tree = OmegaConf.to_container(node, resolve=False)
        for path, spec in _target_nodes(tree, section):
            target = spec["_target_"]
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
            try:
                params = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                continue
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                continue
            valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
            for key in spec:
                if key in _SPECIAL_KEYS or key in valid:
                    continue
                close = difflib.get_close_matches(str(key), valid, n=1)
                suggestion = f" Did you mean {path}.{close[0]}?" if close else ""
                raise ConfigError(
                    f"{path}.{key} is not a parameter of {target}.{suggestion} "
                    f"Valid keys: {', '.join(sorted(valid))}."
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


def check_batch_split(batch_size: int, processes: int, where: str) -> None:
    """The global batch must split evenly over the processes."""
    if processes > 1 and batch_size % processes:
        low = batch_size - batch_size % processes
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch, split over {processes} "
            f"processes ({where}); it must be divisible by {processes}, e.g. "
            f"{low or processes} or {low + processes}."
        )


def check_writable(directory: str | os.PathLike, key: str) -> None:
    """Create ``directory`` and write a probe file in it, or explain why that fails."""
    path = Path(directory)
    probe = path / f".stnlab-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"{key}={directory} cannot be written ({type(err).__name__}: {err.strerror or err}). "
            "Point the run elsewhere, e.g. hydra.run.dir=<a writable folder> "
            "(hydra.sweep.dir for -m), or fix the folder's permissions."
        ) from None


def validate_config(cfg: DictConfig) -> None:
    """Run every config check of this module; raise :class:`ConfigError` at the first problem."""
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed={seed!r} must be a non-negative integer (or null for no seed)")
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
    metric = cfg.get("optimized_metric")
    if metric is not None and metric not in KNOWN_METRICS:
        close = difflib.get_close_matches(str(metric), KNOWN_METRICS, n=1)
        suggestion = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"optimized_metric={metric!r} is not a metric stnlab logs.{suggestion} "
            f"Valid: {', '.join(KNOWN_METRICS)}."
        )
    check_targets(cfg)
    data = cfg.get("data")
    processes = process_count(trainer)
    if data is not None and processes:
        batch = data.get("batch_size")
        if isinstance(batch, int):
            devices, nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
            check_batch_split(batch, processes, f"trainer.devices={devices} × num_nodes={nodes}")
    if cfg.get("paths") is not None:
        check_writable(cfg.paths.output_dir, "paths.output_dir")


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
        if isinstance(cause, ValueError | TypeError):
            message = str(cause)
            if not message.startswith(full_key.split(".")[0] + "."):
                message = f"{full_key}: {message}"
            raise ConfigError(message) from None
        raise


class OutputDirCheck(Callback):
    """Hydra callback: stop with a one-line message when the run or sweep folder is unwritable.

    Hydra creates that folder before the task starts, so :func:`validate_config` would
    come too late; without this check the user gets a ``NotADirectoryError`` traceback.
    """

    @staticmethod
    def _check(directory: str, key: str) -> None:
        try:
            check_writable(directory, key)
        except ConfigError as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(1)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

"""Checkpoint files: atomic writes, safe reading, rebuilding a network, a run's last one.

Lightning writes checkpoints through a ``CheckpointIO`` plugin; :class:`AtomicCheckpointIO`
writes each file under a temporary name in the same folder, flushes it to disk and
renames it over the old one, so a crash or ``kill -9`` mid-save leaves the previous
``last.ckpt`` intact, never a truncated file.

A checkpoint is a file people share, so reading one never runs code:

* tensors and plain data only (``torch.load(weights_only=True)``), for stnlab's readers
  and for Lightning's resume alike;
* the run config stored inside (``stnlab_config``) is checked as a whole before anything
  is built: every ``_target_`` at any depth must be in :data:`ALLOWED_TARGETS`, and no
  string may hold an interpolation (``${…}``); stored configs are resolved when saved;
* objects are rebuilt by :func:`build_from_data`: Hydra's ``instantiate``, called only once
  the whole tree has passed that check.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from stnlab.errors import CheckpointError, RefusedError
from stnlab.temp_files import atomic_path

log = logging.getLogger(__name__)

LAST = "last.ckpt"
RESUME = ("last", "auto")
"""``ckpt_path`` values that resume a run's own ``last.ckpt`` (``auto``: the older name)."""

# Every class a stored config may name: stnlab's own and the few torch/Lightning classes
# the shipped configs use (a test keeps this in step with conf/). A model of your own
# needs its class added here before its checkpoints can be loaded.
ALLOWED_TARGETS: frozenset[str] = frozenset(
    {
        "stnlab.models.CNN",
        "stnlab.models.FCN",
        "stnlab.models.ConvLocNet",
        "stnlab.models.FCLocNet",
        "stnlab.models.STNClassifier",
        "stnlab.models.SpatialTransformer",
        "stnlab.models.ICSpatialTransformer",
        "stnlab.models.Colocaliser",
        "stnlab.models.CropEncoder",
        "stnlab.geometry.TranslationTransform",
        "stnlab.geometry.AttentionTransform",
        "stnlab.geometry.SimilarityTransform",
        "stnlab.geometry.AffineTransform",
        "stnlab.geometry.ProjectiveTransform",
        "stnlab.geometry.TPSTransform",
        "stnlab.data.datamodule.DigitsDataModule",
        "stnlab.data.addition.AdditionDataModule",
        "stnlab.data.colocalisation.ColocalisationDataModule",
        "stnlab.data.distortions.RandomSimilarity",
        "stnlab.data.distortions.RandomProjective",
        "stnlab.data.distortions.RandomElastic",
        "stnlab.data.distortions.ClutteredPlacement",
        "stnlab.module.STNLitModule",
        "stnlab.colocalisation.ColocalisationModule",
        "stnlab.callbacks.TransformGridCallback",
        "stnlab.callbacks.CollapseDetector",
        "stnlab.callbacks.PoseRecoveryCallback",
        "stnlab.callbacks.ErrorAnalysisCallback",
        "stnlab.callbacks.LearningRates",
        "stnlab.schedules.WarmupDecayLR",
        "torch.optim.SGD",
        "torch.optim.AdamW",
        "torch.optim.lr_scheduler.MultiStepLR",
        "lightning.Trainer",
        "lightning.pytorch.callbacks.ModelCheckpoint",
        "lightning.pytorch.loggers.CSVLogger",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "lightning.pytorch.loggers.WandbLogger",
        "lightning.pytorch.profilers.SimpleProfiler",
    }
)
_PLAIN = (type(None), bool, int, float, str, list, tuple, torch.Tensor)
_INTERPOLATION = re.compile(r"\$\{")
_WANDB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _walk(tree: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every node of a plain tree with its key path (``model.net.backbone``, ``a[0]``)."""
    yield path, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from _walk(value, f"{path}[{i}]")


def check_stored_config(
    tree: Any, source: str, where: str = "stnlab_config", built: tuple[str, ...] = ("",)
) -> None:
    """Refuse a stored config that names a class outside the allow-list or interpolates.

    Walks the whole tree before anything is built. ``_target_``s are checked in the
    sections under ``built`` (key paths relative to ``where``; ``""`` is all of it): the
    parts stnlab may build. A run's own extra callbacks or loggers are never built from a
    checkpoint, so they do not make it unreadable. Raises :class:`CheckpointError` naming
    ``source`` (the file), the key path and the offending value.
    """
    prefixes = tuple(f"{where}.{section}".rstrip(".") for section in built)
    for path, node in _walk(tree, where):
        if isinstance(node, dict):
            target = node.get("_target_")
            checked = any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in prefixes)
            if (
                checked
                and "_target_" in node
                and (not isinstance(target, str) or target not in ALLOWED_TARGETS)
            ):
                raise CheckpointError(
                    f"{source}: {path}._target_={target!r} is not a class stnlab builds from "
                    "a checkpoint; refused before building anything (stored configs may only "
                    "name stnlab's models, transforms, data and the torch/Lightning classes "
                    "of conf/)"
                )
            bad_keys = [k for k in node if not isinstance(k, str)]
            if bad_keys:
                raise CheckpointError(f"{source}: {path} has a non-text key {bad_keys[0]!r}")
        elif isinstance(node, str) and _INTERPOLATION.search(node):
            raise CheckpointError(
                f"{source}: {path}={node!r} is an interpolation; a stored config holds "
                "resolved values only, and stnlab never resolves one from a file"
            )
        elif not isinstance(node, _PLAIN):
            raise CheckpointError(
                f"{source}: {path} holds a {type(node).__name__}; a stored config holds "
                "plain values only"
            )


def build_from_data(node: Any, where: str = "config") -> Any:
    """Build the objects a plain config tree describes, once it is known to be safe.

    :func:`check_stored_config` refuses the tree unless every ``_target_`` is in
    :data:`ALLOWED_TARGETS` and no string interpolates; only then does Hydra's
    ``instantiate`` build it, so it calls allow-listed classes only and has nothing to
    resolve.
    """
    check_stored_config(node, where, where)
    return instantiate(node)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` through :func:`~stnlab.temp_files.atomic_path`: a failed write keeps
    the earlier checkpoints and names them."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options}")
        target = Path(path)
        kept = ", ".join(sorted(p.name for p in target.parent.glob("*.ckpt"))) or "none yet"
        advice = (
            f"the earlier checkpoints in {target.parent} are intact ({kept}): free some space "
            "or fix the folder, then resume from one with ckpt_path=…"
        )
        with atomic_path(target, "checkpoint", advice) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's resume reads through here: tensors and plain data only, checked."""
        return read_checkpoint(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU, or raise :class:`CheckpointError` saying what is wrong."""
    file = Path(path)
    if str(path) in RESUME:  # src/train.py resolves these itself; other commands have no run
        raise CheckpointError(
            f"ckpt_path={path} resumes a training run's own last.ckpt (src/train.py only); here "
            "ckpt_path must be a checkpoint file, e.g. "
            "ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt"
        )
    if file.is_dir():
        inside = sorted(str(p) for p in (*file.glob("*.ckpt"), *file.glob("checkpoints/*.ckpt")))
        hint = f"pass one of the checkpoints in it: {inside}" if inside else "it holds no .ckpt"
        raise CheckpointError(f"ckpt_path={path} is a folder, not a checkpoint file; {hint}")
    if file.exists() and not file.is_file():
        raise CheckpointError(
            f"ckpt_path={path} is not a regular file (a FIFO, a device or a socket); pass a "
            ".ckpt file written by src/train.py"
        )
    if not file.is_file():
        where = file.parent
        near = sorted(p.name for p in where.glob("*.ckpt")) if where.is_dir() else []
        hint = f" Checkpoints in {where}: {near}." if near else ""
        raise CheckpointError(
            f"ckpt_path={path} does not exist.{hint} Pass an existing .ckpt file, "
            "ckpt_path=last to resume this run's own last checkpoint, or ckpt_path=null."
        )
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, pickled objects, …
        raise CheckpointError(
            f"ckpt_path={path} cannot be read as a checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). The file is truncated, corrupted or not a "
            "Lightning checkpoint; use another one (e.g. checkpoints/best.ckpt) or start afresh."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"ckpt_path={path} holds no model weights (no 'state_dict' entry)")
    weights = checkpoint["state_dict"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CheckpointError(
            f"ckpt_path={path}: its 'state_dict' is not a mapping of weight names to tensors"
        )
    bad = next(
        (k for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()), None
    )
    if bad is not None:
        raise CheckpointError(
            f"ckpt_path={path} holds non-finite weights (NaN or inf, first in {bad}): the run "
            "that wrote it diverged; use an earlier checkpoint"
        )
    source = f"ckpt_path={path}"
    try:
        if "stnlab_config" in checkpoint:  # the model and data sections are what stnlab builds
            check_stored_config(checkpoint["stnlab_config"], source, built=("model", "data"))
        if "hyper_parameters" in checkpoint:
            check_stored_config(checkpoint["hyper_parameters"], source, "hyper_parameters")
    except RecursionError:
        raise CheckpointError(f"{source}: its stored config is nested too deep to read") from None
    run_id = checkpoint.get("stnlab_wandb_id")
    if run_id is not None and not (isinstance(run_id, str) and _WANDB_ID.fullmatch(run_id)):
        log.warning("%s: ignoring its W&B run id %r (not a W&B id)", source, run_id)
        checkpoint.pop("stnlab_wandb_id")
    return checkpoint


class _DataLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (an alias bomb expands without bound) and
    with OmegaConf's reading of floats such as ``1e-3``."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "a YAML alias (*name): run files hold plain data", mark
            )
        return super().compose_node(parent, index)


_DataLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?"
        r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_DataLoader.yaml_implicit_resolvers = {  # dates stay strings, as OmegaConf reads them
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _DataLoader.yaml_implicit_resolvers.items()
}


def read_yaml_data(path: str | os.PathLike) -> Any:
    """A YAML file of a run folder (``.hydra/config.yaml`` …) as plain dicts and lists.

    Data only: nothing is resolved (``${oc.env:…}`` stays a literal string), tags such as
    ``!!python/object`` and aliases are refused with a one-line
    :class:`~stnlab.errors.CheckpointError` naming the file, as is a file that is not
    YAML.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_DataLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        what = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{path} is not plain YAML data ({what}); skip or fix it") from None


def read_json_data(path: str | os.PathLike) -> Any:
    """A JSON file of a run folder (``metrics.json``, ``failure.json``), or a one-line
    :class:`~stnlab.errors.CheckpointError` naming the file when it is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({err}); the run that wrote it may have been cut off"
        ) from None


def run_variant(config: Mapping[str, Any], run_dir: Any = None) -> str | None:
    """The data variant a run trained on: ``data.variant`` (``data.name`` before it had
    its own word), or for runs from before data
    configs carried a name, Hydra's record of the ``data=`` choice in the run folder."""
    data = config.get("data") or {}
    name = data.get("variant", data.get("name"))
    if name is None and run_dir is not None:
        hydra_yaml = Path(run_dir) / ".hydra" / "hydra.yaml"
        if hydra_yaml.is_file():
            hydra = (read_yaml_data(hydra_yaml) or {}).get("hydra") or {}
            name = ((hydra.get("runtime") or {}).get("choices") or {}).get("data")
    return name


def run_source(config: Mapping[str, Any]) -> str:
    """The image source a run trained on: ``data.source`` (``data.dataset`` in configs
    written before it had its own word), ``mnist`` when neither is there."""
    data = config.get("data") or {}
    return str(data.get("source", data.get("dataset", "mnist")))


def load_checkpoint_net(ckpt_path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a checkpoint written by ``src/train.py``, in eval mode, and its config.

    Returns the :class:`~stnlab.models.STNClassifier` rebuilt from the stored config with
    :func:`build_from_data` and loaded with the checkpoint's weights, and the run's resolved
    config (``stnlab_config``, plain data).
    """
    checkpoint = read_checkpoint(ckpt_path)
    config = checkpoint.get("stnlab_config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(
            f"ckpt_path={ckpt_path} carries no stnlab run config ('stnlab_config'): it was "
            "not written by src/train.py, so the model to rebuild is unknown"
        )
    spec = config["model"].get("net")
    target = spec.get("_target_") if isinstance(spec, dict) else spec
    if target != "stnlab.models.STNClassifier":
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: stnlab_config.model.net must describe a "
            f"stnlab.models.STNClassifier, got {target!r}"
        )
    if not isinstance(config.get("data"), dict):
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: its stored run config has no 'data' section, so the "
            "images the model takes are unknown"
        )
    weights = {
        k.removeprefix("net."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("net.")
    }
    try:
        with torch.device("meta"):  # shapes first, no memory: a crafted size allocates nothing
            shell = build_from_data(spec, "stnlab_config.model.net")
        described = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
        stored = {k: tuple(v.shape) for k, v in weights.items()}
        if described != stored:
            first = min(
                k for k in set(described) | set(stored) if described.get(k) != stored.get(k)
            )
            raise CheckpointError(
                f"ckpt_path={ckpt_path}: its weights do not fit the model its config describes "
                f"(first difference: {first}: weights {stored.get(first, '<absent>')}, config "
                f"{described.get(first, '<absent>')})"
            )
        net = build_from_data(spec, "stnlab_config.model.net")
    except (InstantiationException, TypeError, ValueError, RecursionError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: its stored model config cannot be built "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: its weights do not fit the model its config describes "
            f"({str(err).splitlines()[0]})"
        ) from None
    return net.eval(), config


def checkpoint_dir(cfg: Any) -> Path:
    """Where a training run's checkpoints go: ``callbacks.model_checkpoint.dirpath``, or
    ``<run folder>/checkpoints`` without one."""
    from omegaconf import OmegaConf

    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(str(dirpath)) if dirpath else Path(cfg.paths.output_dir) / "checkpoints"


def own_last_checkpoint(folder: str | os.PathLike) -> Path | None:
    """``<folder>/last.ckpt`` (``folder``: a run's :func:`checkpoint_dir`) if it is there."""
    last = Path(folder) / LAST
    return last if last.is_file() else None


def refuse_to_overwrite(folder: Path, start: str) -> None:
    """Raise :class:`~stnlab.errors.RefusedError` when the checkpoint ``folder`` holds
    checkpoints of an earlier run, which a run starting as ``start`` says would write over."""
    earlier = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    if earlier:
        raise RefusedError(
            f"{start}, but the checkpoint folder {folder} holds {', '.join(earlier)} of an "
            "earlier run, which this run would write over: resume with ckpt_path=last (or "
            f"ckpt_path={folder}/<one of them>), or give this run another folder "
            "(hydra.run.dir=…, or callbacks.model_checkpoint.dirpath=…)"
        )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def config_differences(saved: Any, current: Any, prefix: str, limit: int = 8) -> list[str]:
    """Lines ``key: checkpoint has A, config has B`` for the leaves that differ."""
    old, new = _flatten(saved, prefix), _flatten(current, prefix)
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a != b:
            lines.append(f"{key}: checkpoint has {a!r}, config has {b!r}")
    return lines[:limit] + ([f"… and {len(lines) - limit} more"] if len(lines) > limit else [])


def checkpoint_for_run(cfg: Any) -> tuple[str | None, dict[str, Any] | None]:
    """Resolve ``cfg.ckpt_path`` (a path, ``last``/``auto`` or null) and load that checkpoint.

    ``last`` (or ``auto``) means the run's own ``last.ckpt`` in :func:`checkpoint_dir` (run
    again with the same ``hydra.run.dir`` to continue a killed run), or a fresh start when
    there is none.
    A training run that would start (afresh, or from another run's checkpoint) in a
    checkpoint folder holding an earlier run's checkpoints is refused
    (:func:`refuse_to_overwrite`). Whether the weights fit the configured model is
    :func:`check_fits`'s job.

    Returns the path to hand to Lightning and the loaded checkpoint (both ``None`` for a
    fresh start).
    """
    wanted = cfg.get("ckpt_path")
    folder = checkpoint_dir(cfg)
    training = bool(cfg.get("train", True))
    if wanted is not None and str(wanted) in RESUME:
        last = own_last_checkpoint(folder)
        if last is None:
            if training:
                refuse_to_overwrite(folder, f"ckpt_path={wanted} finds no last.ckpt in {folder}")
            return None, None
        wanted = str(last)
    if wanted is None:
        if training:
            refuse_to_overwrite(folder, "this run starts afresh (ckpt_path=null)")
        return None, None
    if training and not Path(str(wanted)).resolve().is_relative_to(folder.resolve()):
        refuse_to_overwrite(folder, f"this run starts from ckpt_path={wanted}")
    checkpoint = read_checkpoint(wanted)
    return str(wanted), checkpoint


def check_fits(model: Any, checkpoint: dict[str, Any], path: str, cfg: Any) -> None:
    """Raise :class:`CheckpointError` when ``checkpoint``'s weights do not fit ``model``.

    The weights decide (names and shapes); options that change no weight (e.g.
    ``channels_last``) or that a newer stnlab added do not matter. The message lists the
    config keys that differ from the run that wrote the checkpoint, which explain why.
    """
    from omegaconf import OmegaConf

    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    bad = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if not bad:
        return
    weights = [
        f"{k}: checkpoint {theirs.get(k, '<absent>')}, model {ours.get(k, '<absent>')}"
        for k in bad[:4]
    ] + ([f"… {len(bad) - 4} more weights"] if len(bad) > 4 else [])
    saved = checkpoint.get("stnlab_config")
    lines = []
    if isinstance(saved, dict) and cfg.get("model") is not None:
        lines = config_differences(
            saved.get("model", {}).get("net"),
            OmegaConf.to_container(cfg.model.net, resolve=True),
            "model.net",
        )
        saved_data, data = saved.get("data", {}), cfg.get("data", {})
        for key in ("canvas_size", "channels", "num_classes"):
            if key in saved_data and key in data and saved_data[key] != data[key]:
                lines.append(
                    f"data.{key}: checkpoint has {saved_data[key]!r}, config has {data[key]!r}"
                )
    diff = "\n  ".join(lines + weights)
    raise CheckpointError(
        f"ckpt_path={path} belongs to another model:\n  {diff}\n"
        "Use the model and data overrides of the run that wrote it (its "
        ".hydra/overrides.yaml), or train afresh without ckpt_path."
    )

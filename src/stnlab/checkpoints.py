"""Checkpoint files: atomic writes, reading with clear errors, finding a run's last one.

Lightning writes checkpoints through a ``CheckpointIO`` plugin; :class:`AtomicCheckpointIO`
writes each file under a temporary name in the same folder, flushes it to disk and
renames it over the old one, so a crash or ``kill -9`` mid-save leaves the previous
``last.ckpt`` intact, never a truncated file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from stnlab.errors import CheckpointError, StorageError

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.tmp-<pid>`` beside the target, fsync, then rename."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as err:  # full disk, read-only folder: say which file, and what is safe
            kept = ", ".join(sorted(p.name for p in target.parent.glob("*.ckpt"))) or "none yet"
            raise StorageError(
                f"could not write the checkpoint {target} ({err.strerror or err}). The earlier "
                f"checkpoints in {target.parent} are intact ({kept}): free some space or fix the "
                "folder, then resume from one with ckpt_path=…"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU, or raise :class:`CheckpointError` saying what is wrong."""
    file = Path(path)
    if str(path) == "auto":  # src/train.py resolves auto itself; other commands have no run
        raise CheckpointError(
            "ckpt_path=auto resumes a training run's own last.ckpt (src/train.py only); here "
            "ckpt_path must be a checkpoint file, e.g. "
            "ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt"
        )
    if file.is_dir():
        inside = sorted(str(p) for p in (*file.glob("*.ckpt"), *file.glob("checkpoints/*.ckpt")))
        hint = f"pass one of the checkpoints in it: {inside}" if inside else "it holds no .ckpt"
        raise CheckpointError(f"ckpt_path={path} is a folder, not a checkpoint file; {hint}")
    if not file.is_file():
        where = file.parent
        near = sorted(p.name for p in where.glob("*.ckpt")) if where.is_dir() else []
        hint = f" Checkpoints in {where}: {near}." if near else ""
        raise CheckpointError(
            f"ckpt_path={path} does not exist.{hint} Pass an existing .ckpt file, "
            "ckpt_path=auto to resume this run's own last checkpoint, or ckpt_path=null."
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
    return checkpoint


def own_last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """``<output_dir>/checkpoints/last.ckpt`` if this run directory has one."""
    last = Path(output_dir) / "checkpoints" / LAST
    return last if last.is_file() else None


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
    """Resolve ``cfg.ckpt_path`` (a path, ``auto`` or null) and load that checkpoint.

    ``auto`` means this run directory's own ``checkpoints/last.ckpt`` (run again with the
    same ``hydra.run.dir`` to continue a killed run), or a fresh start when there is none.
    Whether the weights fit the configured model is :func:`check_fits`'s job.

    Returns the path to hand to Lightning and the loaded checkpoint (both ``None`` for a
    fresh start).
    """
    wanted = cfg.get("ckpt_path")
    if wanted is None:
        return None, None
    if str(wanted) == "auto":
        last = own_last_checkpoint(cfg.paths.output_dir)
        if last is None:
            return None, None
        wanted = str(last)
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

"""The export task: ``python src/export.py ckpt_path=… format=pt2|onnx|torchscript``."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from stnlab.config_checks import check_writable
from stnlab.errors import ConfigError
from stnlab.export import EXPORTERS, export_checkpoint
from stnlab.tasks.runner import task

log = logging.getLogger(__name__)


def check_output(output: str, fmt: str) -> None:
    """``output=`` names a file in a folder that can be written (checked before the export)."""
    target = Path(output)
    suffix = EXPORTERS[fmt][1] if fmt in EXPORTERS else ".pt2"
    if target.is_dir():
        raise ConfigError(
            f"output={output} is a folder; name the file to write, "
            f"e.g. output={target / f'model{suffix}'}"
        )
    check_writable(
        target.parent,
        "output",
        fix=f"Give output= a file in a writable folder, e.g. output=./model{suffix}.",
    )


@task()
def export(cfg: DictConfig) -> Path:
    """Write the exported model, check that it reproduces the checkpoint's logits, print
    its path and return it."""
    if cfg.get("ckpt_path") in (None, "", "???"):
        raise ConfigError("ckpt_path is required: python src/export.py ckpt_path=<file.ckpt>")
    if cfg.get("output"):
        check_output(str(cfg.output), str(cfg.format))
    path, diff = export_checkpoint(
        cfg.ckpt_path, str(cfg.format), Path(cfg.paths.output_dir), cfg.get("output")
    )
    print(path)
    log.info("wrote %s (largest logit difference to the checkpoint: %.2g)", path, diff)
    return path

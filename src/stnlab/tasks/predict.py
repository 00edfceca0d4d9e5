"""The predict task: ``python src/predict.py ckpt_path=… input=…`` on your own images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stnlab.checks import check_not_input
from stnlab.errors import ConfigError, RefusedError
from stnlab.prediction import MIN_INK_SPAN, NO_INK, UNREADABLE, predict_files
from stnlab.tasks.runner import resolve_device, task

log = logging.getLogger(__name__)


@task()
def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Print one line per image; write predictions.csv and the images in the run folder.

    Images are framed as ``cfg.framing`` says (``auto`` | ``mnist`` | ``resize``) and classified
    ``cfg.batch_size`` at a time on ``cfg.device``. A blank or uniform image gets
    ``no_ink`` instead of a class. The exit status is 0 even if every image is blank (each
    is flagged); 1 if the options are wrong or a file cannot be read as an image.
    """
    for key in ("ckpt_path", "input"):
        if cfg.get(key) in (None, "", "???"):
            raise ConfigError(f"{key} is required: python src/predict.py ckpt_path=… input=…")
    device = resolve_device(str(cfg.get("device", "auto")))
    out = Path(cfg.paths.output_dir)
    # pictures would mix in with the inputs; refused before anything is written there
    check_not_input(out, {"input": cfg.input}, "hydra.run.dir", RefusedError)
    rows = predict_files(
        cfg.ckpt_path,
        cfg.input,
        out,
        invert=str(cfg.invert).lower(),
        framing=str(cfg.get("framing", "auto")),
        batch_size=cfg.get("batch_size", 64),
        device=device,
    )
    for row in rows:
        if row["status"] == UNREADABLE:
            print(f"{row['file']}\t-\t-\t{UNREADABLE}: not an image stnlab can read (see above)")
        elif row["status"] == NO_INK:
            print(
                f"{row['file']}\t-\t-\t{NO_INK}: blank or uniform image (brightness span "
                f"{row['ink']:.3f} < {MIN_INK_SPAN} after preprocessing), no class given"
            )
        else:
            print(f"{row['file']}\t{row['predicted']}\t{row['probability']:.3f}")
    unreadable = sum(row["status"] == UNREADABLE for row in rows)
    if unreadable == len(rows):
        raise ConfigError(f"input={cfg.input}: none of its {len(rows)} image file(s) can be read")
    blank = sum(row["status"] == NO_INK for row in rows)
    if blank:
        log.warning("%d of %d images have no ink and got no class", blank, len(rows))
    log.info("wrote predictions.csv and the transformed images in %s", out)
    return rows

"""Run ``src/train.py`` in a subprocess on the tests' synthetic MNIST.

``python tests/cli_helper.py [train.py overrides]`` with ``STNLAB_DATA_DIR`` pointing at a
data root made by the ``fake_mnist_root`` fixture: the checksums of those files are trusted
(as the ``fake_mnist`` fixture does in-process), then ``src/train.py`` runs as ``__main__``.
:class:`KillAtStep` is a callback for ``+callbacks.kill._target_=cli_helper.KillAtStep``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import runpy
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L

ROOT = Path(__file__).resolve().parents[1]


def trust_synthetic_mnist(root: str | Path) -> None:
    """Accept the IDX files under ``root/MNIST/raw`` by their own checksums; fetch nothing."""
    from stnlab.data import sources

    spec = sources.SPECS["mnist"]
    raw = Path(root) / "MNIST" / "raw"
    files = {
        key: dataclasses.replace(f, md5=hashlib.md5((raw / f.name).read_bytes()).hexdigest())
        for key, f in spec.files.items()
    }
    sources.SPECS["mnist"] = dataclasses.replace(
        spec, files=files, mirrors=(), npm_package=None, local_dirs=()
    )


class KillAtStep(L.Callback):
    """SIGKILL this process when training reaches global step ``step`` (mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    trust_synthetic_mnist(os.environ["STNLAB_DATA_DIR"])
    script = ROOT / "src" / "train.py"
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")

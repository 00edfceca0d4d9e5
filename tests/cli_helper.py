"""Helpers for tests that run ``src/train.py`` in subprocesses on the synthetic MNIST.

Subprocesses (the CLI, DDP ranks, joblib and submitit workers) cannot see the in-process
``fake_mnist`` fixture, so :func:`cli_env` gives them an environment in which
``tests/sitecustomize.py`` trusts the synthetic files' checksums at interpreter start-up.
:func:`write_mnist_raw` writes such files (IDX format, MNIST's names and layout).
:class:`KillAtStep` is a callback for ``+callbacks.kill._target_=cli_helper.KillAtStep``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRUST_ENV = "STNLAB_TEST_TRUST_MNIST"


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8, 1-D labels or 3-D images) in IDX format."""
    magic = {1: 0x0801, 3: 0x0803}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_arrays(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, np.ndarray]:
    """``(images, labels)`` of the training and test sets keyed as MNIST's four files."""
    return {
        "train_images": train[0],
        "train_labels": train[1],
        "test_images": test[0],
        "test_labels": test[1],
    }


def write_mnist_raw(root: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """``arrays`` (``train_images`` ``(N, 28, 28)``, ``train_labels`` ``(N,)``,
    ``test_images``, ``test_labels``) as MNIST's IDX files under ``root/MNIST/raw``;
    returns ``root``, a data root for ``data.source=mnist``."""
    from stnlab.data import sources

    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        (raw / sources.SPECS["mnist"].files[key].name).write_bytes(idx_bytes(array))
    return Path(root)


def trusted_mnist_spec(root: str | Path) -> Any:
    """MNIST's source spec accepting the IDX files under ``root/MNIST/raw`` by their own
    checksums, with nothing to fetch from (the one place tests trust synthetic files)."""
    from stnlab.data import sources

    spec = sources.SPECS["mnist"]
    raw = Path(root) / "MNIST" / "raw"
    files = {
        key: dataclasses.replace(f, md5=hashlib.md5((raw / f.name).read_bytes()).hexdigest())
        for key, f in spec.files.items()
    }
    return dataclasses.replace(spec, files=files, mirrors=(), npm_package=None, local_dirs=())


def trust_synthetic_mnist(root: str | Path) -> None:
    """In this process, accept the synthetic IDX files under ``root`` (see ``sitecustomize``)."""
    from stnlab.data import sources

    sources.SPECS["mnist"] = trusted_mnist_spec(root)


def cli_env(data_root: Path, **extra: str) -> dict[str, str]:
    """Environment for a ``src/train.py`` subprocess on the synthetic data at ``data_root``."""
    # WANDB_SERVICE points at the W&B service of this pytest process (set by in-process
    # runs); a subprocess must start its own, as it would from a shell.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {
        **env,
        "STNLAB_DATA_DIR": str(data_root),
        TRUST_ENV: str(data_root),
        # tests/ for sitecustomize; src/ so that its import of stnlab (before the script's
        # folder is on sys.path) is this checkout's, whatever package is installed
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")]),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        **extra,
    }


TINY_RUN_BASE = ("data=rotated", "model=stn_cnn", "schedule=sgd_epochs")
"""What the tests' training runs assume unless they choose otherwise: 28×28 rotated digits
(the keys ``data.distortion.max_angle`` …), the paper's ST-CNN (affine) and SGD counted in
epochs. The Quickstart's own defaults (cluttered, ``model=stn_cnn_window``,
``schedule=fast_epochs``) are tested in ``tests/test_config.py``."""


TEST_SAMPLES = 8
"""Cells of ``test_predictions.png`` in the tests' training runs (the config's 64 unless a
test sets it or drops the callback): drawing 64 cells with matplotlib took most of a short run's
time. ``tests/callbacks/test_dashboards.py`` checks the full 64."""


def with_tiny_run_base(overrides: Sequence[str]) -> list[str]:
    """``overrides`` after :data:`TINY_RUN_BASE`'s choices of the groups they leave open
    (an ``experiment=`` preset chooses data and schedule itself) and :data:`TEST_SAMPLES`;
    flags such as ``-m`` stay in front."""
    chosen = {o.lstrip("~+").split("=", 1)[0] for o in overrides if "=" in o}
    if "experiment" in chosen:  # a preset chooses its own data, model and schedule
        chosen |= {"data", "model", "schedule"}
    base = [b for b in TINY_RUN_BASE if b.split("=", 1)[0] not in chosen]
    analysis_untouched = not any(
        o.startswith(("~callbacks", "callbacks=")) or "error_analysis" in o for o in overrides
    )
    if analysis_untouched:  # see TEST_SAMPLES
        base.append(f"callbacks.error_analysis.num_samples={TEST_SAMPLES}")
    flags = [o for o in overrides if o.startswith("-")]  # -m, --cfg …: before the overrides
    return flags + base + [o for o in overrides if not o.startswith("-")]


def run_train(
    data_root: Path, *overrides: str, cwd: Path | None = None, script: str = "train.py"
) -> subprocess.CompletedProcess:
    """``python src/<script> *overrides`` on the synthetic data; output captured. A training
    run starts from :data:`TINY_RUN_BASE`."""
    if script == "train.py":
        overrides = tuple(with_tiny_run_base(overrides))
    cmd = [sys.executable, str(ROOT / "src" / script), *overrides]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=cli_env(data_root), cwd=cwd, timeout=600
    )


class KillAtStep(L.Callback):
    """SIGKILL this process when training reaches global step ``step`` (mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class TermAtStep(L.Callback):
    """Send this process SIGTERM at training step ``step`` (or at test batch ``test_batch``),
    as a scheduler does before it kills a job."""

    def __init__(self, step: int = -1, test_batch: int = -1) -> None:
        self.step, self.test_batch = step, test_batch

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, idx: int) -> None:
        if idx == self.test_batch:
            os.kill(os.getpid(), signal.SIGTERM)


class PauseAtStep(L.Callback):
    """At training step ``step``, write ``<ready>`` and wait (≤ 120 s) until ``<go>`` exists:
    holds a run mid-training while a test starts a second process on the same folder."""

    def __init__(self, step: int, ready: str, go: str) -> None:
        self.step, self.ready, self.go = step, Path(ready), Path(go)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        import time

        if trainer.global_step == self.step:
            self.ready.write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while not self.go.exists() and time.monotonic() < deadline:
                time.sleep(0.1)

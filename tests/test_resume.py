"""Interrupted training loses nothing: atomic checkpoints, exact resume, clear errors.

SIGKILL mid-epoch and the exact resume after it, in their own processes, are in
``tests/test_interruptions.py`` (marker e2e)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from stnlab.checkpoints import AtomicCheckpointIO, read_checkpoint
from stnlab.errors import CheckpointError
from stnlab.tasks import train

MakeCfg = Callable[..., DictConfig]


def test_auto_without_a_checkpoint_starts_afresh(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("model=cnn", "debug=limit", "trainer.max_epochs=1", "ckpt_path=auto")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["epoch"] == 0


def test_checkpoint_carries_everything_to_resume(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("model=stn_cnn", "debug=limit", "trainer.max_epochs=1", "test=false")
    train(cfg)
    ckpt = read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks"):
        assert ckpt[key], key
    assert ckpt["stnlab_config"]["model"]["net"]["_target_"] == "stnlab.models.STNClassifier"
    assert 0.0 <= ckpt["stnlab_val_acc_best"] <= 1.0
    assert set(ckpt["stnlab_rng"]) == {"torch", "cuda", "numpy", "python"}
    assert ckpt["DigitsDataModule"]["train_generator"].dtype == torch.uint8


def test_interrupted_save_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def crash(obj: object, f: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_truncated_checkpoint_is_a_clear_error(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("model=cnn", "debug=limit", "trainer.max_epochs=1", "test=false")
    train(cfg)
    good = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(good.read_bytes()[:2000])
    resume = make_cfg("model=cnn", "debug=fdr", f"ckpt_path={bad}", output_dir=tmp_path / "r")
    with pytest.raises(CheckpointError, match=r"truncated.ckpt cannot be read .* truncated"):
        train(resume)
    not_a_ckpt = tmp_path / "notes.ckpt"
    not_a_ckpt.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
        read_checkpoint(not_a_ckpt)


def test_checkpoint_of_another_model_is_rejected(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("model=cnn", "debug=limit", "trainer.max_epochs=1", "test=false")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    other = make_cfg("model=stn_cnn", "debug=fdr", f"ckpt_path={last}", output_dir=tmp_path / "o")
    with pytest.raises(CheckpointError) as info:
        train(other)
    message = str(info.value)
    assert "belongs to another model" in message
    assert "model.net.transformer._target_: checkpoint has '<absent>'" in message
    assert ".hydra/overrides.yaml" in message


def test_options_that_change_no_weight_do_not_block_a_resume(
    make_cfg: MakeCfg, tmp_path: Path
) -> None:
    cfg = make_cfg("model=cnn", "debug=limit", "trainer.max_epochs=1", "test=false")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    del ckpt["stnlab_config"]["model"]["net"]["channels_last"]  # as written by an older stnlab
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    resumed = make_cfg(
        "model=cnn",
        "debug=limit",
        "trainer.max_epochs=2",
        "test=false",
        "model.net.channels_last=true",
        f"ckpt_path={old}",
        output_dir=tmp_path / "resumed",
    )
    train(resumed)
    final = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 10


def test_a_wandb_id_still_held_by_a_killed_process_falls_back_to_a_new_run(
    make_cfg: MakeCfg,
) -> None:
    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    from stnlab.loggers import start_resumed_wandb

    class WandbLogger(LightningWandbLogger):  # Lightning's, with W&B answering "in use"
        calls = 0

        def __init__(self) -> None:  # no W&B run set up
            pass

        @property
        def experiment(self) -> None:
            WandbLogger.calls += 1
            raise RuntimeError("run ID abc123 is in use")

    cfg = make_cfg("logger=wandb", "logger.wandb.id=abc123")
    loggers = start_resumed_wandb([WandbLogger()], cfg, wait_s=0.2, poll_s=0.05)
    assert WandbLogger.calls >= 2  # it waited and retried
    assert type(loggers[0]).__module__.startswith("lightning") and cfg.logger.wandb.id is None

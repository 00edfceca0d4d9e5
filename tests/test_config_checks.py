"""Bad input fails at start-up with a message that names the value and what is valid.

One test per class of mistake; each asserts the message a user sees. Data-file problems
(missing, truncated, corrupted) are in ``tests/data/test_fetch.py``, checkpoint problems in
``tests/test_resume.py``.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, open_dict

from stnlab import checkpoints
from stnlab.checkpoints import read_checkpoint
from stnlab.config_checks import (
    check_batch_split,
    check_range,
    check_writable,
    process_count,
    validate_config,
)
from stnlab.data.distortions import RandomSimilarity
from stnlab.errors import CheckpointError, ConfigError, StorageError
from stnlab.tasks import evaluate, robustness, train

MakeCfg = Callable[..., DictConfig]


def _fails(make_cfg: MakeCfg, *overrides: str, match: str) -> ConfigError:
    return _fails_cfg(make_cfg("model=stn_cnn", "debug=fdr", *overrides), match=match)


def _fails_cfg(cfg: DictConfig, match: str) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as info:
        train(cfg)
    # The run folder says why it failed (sweep summaries read this).
    failure = json.loads((Path(cfg.paths.output_dir) / "failure.json").read_text())
    assert failure["error"] == "ConfigError" and failure["message"] == str(info.value)
    return info.value


def test_unknown_config_group_option_lists_the_choices(make_cfg: MakeCfg) -> None:
    with pytest.raises(MissingConfigException) as info:
        make_cfg("model=stn_cnnn")
    message = str(info.value)
    assert "Could not find 'model/stn_cnnn'" in message
    assert "stn_cnn" in message and "ic_stn_cnn" in message  # the valid options


def test_unknown_transform_family_lists_the_families(make_cfg: MakeCfg) -> None:
    with pytest.raises(MissingConfigException, match="projective"):
        make_cfg("model=stn_cnn", "model/transform=rotation")
    _fails(
        make_cfg,
        "model.net.transformer.transform._target_=stnlab.geometry.RotationTransform",
        match=r"RotationTransform' does not exist.*model/transform=affine \| attention",
    )


def test_typo_in_an_existing_key_is_rejected_by_hydra(make_cfg: MakeCfg) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg("trainer.max_epoch=3")
    assert "max_epoch" in str(info.value.__cause__) or "max_epoch" in str(info.value)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("+trainer.max_epoch=3", r"trainer.max_epoch is not a parameter .*max_epochs\?"),
        ("+data.distortion.max_angel=30", r"Did you mean data.distortion.max_angle\?"),
        ("+model.net.transformer.loc_net.hiden=[8]", r"Did you mean .*loc_net.hidden\?"),
    ],
)
def test_typo_in_an_added_key_suggests_the_valid_one(
    make_cfg: MakeCfg, override: str, match: str
) -> None:
    _fails(make_cfg, override, match=match)


def test_negative_rotation_range(make_cfg: MakeCfg) -> None:
    _fails(make_cfg, "data.distortion.max_angle=-10", match=r"data.distortion: max_angle .* >= 0")


def test_inverted_scale_range(make_cfg: MakeCfg) -> None:
    _fails(
        make_cfg,
        "data=rts",
        "data.distortion.scale=[1.2,0.7]",
        match=r"data.distortion: scale must be \(low, high\) with 0 < low <= high, got \[1.2, 0.7",
    )


def test_canvas_smaller_than_the_digit(make_cfg: MakeCfg) -> None:
    _fails(
        make_cfg,
        "data=rts",
        "data.canvas_size=30",
        match=r"canvas_size=30 is smaller than the largest digit \(28×1.2 px\)",
    )


def test_clutter_patches_larger_than_the_canvas(make_cfg: MakeCfg) -> None:
    _fails(
        make_cfg,
        "data=cluttered",
        "data.distortion.patch_size=40",
        match=r"patch_size=40 must be between 1 and min\(canvas_size=60, digit size 28\)",
    )


def test_loc_net_too_deep_for_the_input(make_cfg: MakeCfg) -> None:
    _fails(
        make_cfg,
        "model/loc_net=conv_large",
        "model.net.transformer.loc_net.input_pool=8",
        match=r"model.net.transformer.loc_net: ConvLocNet does not fit a 1×28×28 input",
    )


def test_batch_not_divisible_by_the_processes(make_cfg: MakeCfg) -> None:
    _fails(
        make_cfg,
        "trainer.accelerator=cpu",
        "trainer.devices=3",
        "data.batch_size=32",
        match=r"data.batch_size=32 is the global batch, split over 3 processes .* e.g. 30 or 33",
    )
    assert process_count(DictConfig({"devices": 2, "num_nodes": 2})) == 4
    assert process_count(DictConfig({"devices": "auto"})) is None
    check_batch_split(32, 4, "fine")  # divisible: no error


def test_every_n_epochs_must_be_positive(make_cfg: MakeCfg) -> None:
    _fails(
        make_cfg,
        "callbacks.transform_grid.every_n_epochs=0",
        match=r"every_n_epochs must be >= 1, got 0",
    )


def test_output_dir_that_cannot_be_written(make_cfg: MakeCfg, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = make_cfg("debug=fdr", output_dir=blocker / "run")
    with pytest.raises(ConfigError, match=r"paths.output_dir=.*a-file/run cannot be written"):
        train(cfg)
    assert blocker.read_text() == "not a folder"  # nothing was overwritten


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("seed=-1", r"seed=-1 must be an integer in \[0, 4294967295\]"),
        ("trainer.max_epochs=0", r"trainer.max_epochs=0 must be a positive integer"),
        ("optimized_metric=val/acc_bst", r"Did you mean val/acc_best\?"),
        ("data.source=kmnist", r"data.source='kmnist' is unknown; valid: \["),
        ("data.batch_size=0", r"^data.batch_size=0 must be an integer >= 1"),
        ("model.loc_lr_mult=-1", r"^model.loc_lr_mult=-1 must be a finite number >= 0"),
        ("data.val_size=100000", r"data.val_size=100000 must be between 1 and 599"),
        (
            "callbacks.collapse.min_coverage=2",
            r"^callbacks.collapse.min_coverage=2 must be a finite number in \[0, 1\)",
        ),
        ("callbacks.collapse.patience=0", r"^callbacks.collapse.patience=0 must be an integer"),
    ],
)
def test_out_of_range_values(make_cfg: MakeCfg, override: str, match: str) -> None:
    _fails(make_cfg, override, match=match)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["data.batch_size=1.5"],
            r"^data.batch_size=1.5 must be an integer, e.g. data.batch_size=256",
        ),
        (["data.eval_batch_size=1.5"], r"^data.eval_batch_size=1.5 must be an integer"),
        (["data.batch_size=abc"], r"^data.batch_size='abc' must be an integer"),
        (["data.pin_memory=3"], r"^data.pin_memory=3 must be true or false"),
        (
            ["data=rts", "data.distortion.scale=0.5"],
            r"^data.distortion.scale=0.5 must be a list of 2 numbers, e.g. .*=\[1.0, 1.0\]",
        ),
        (
            ["data=rts", "data.distortion.scale=[0.5]"],
            r"^data.distortion: scale must be \(low, high\) with 0 < low <= high, got \[0.5\]",
        ),
        (["data.canvas_size=-5"], r"^data.canvas_size=-5 must be an integer >= 1 \(pixels\)"),
        (["data.num_workers=-1"], r"^data.num_workers=-1 must be an integer >= 0 \(0: batches"),
        (["seed=4294967296"], r"^seed=4294967296 must be an integer in \[0, 4294967295\]"),
        (["seed=1.5"], r"^seed=1.5 must be an integer"),
        (["model.optimizer.lr=-1"], r"^model.optimizer.lr=-1 must be a finite number > 0, e.g."),
        (["model.optimizer.momentum=-1"], r"^model.optimizer.momentum=-1 .* in \[0, 1\)"),
        (
            ["model/optimizer=adamw", "+model.optimizer.betas=[0.9,1.5]"],
            r"^model.optimizer.betas\[1\]=1.5 must be a finite number in \[0, 1\)",
        ),
        (["trainer.max_epochs=1.5"], r"^trainer.max_epochs=1.5 must be a positive integer"),
        (
            ["model.scheduler_interval=batch"],
            r"^model.scheduler_interval='batch' must be 'epoch' or 'step'$",
        ),
        (
            ["experiment=colocalisation/t", "model.scheduler_interval=batch"],
            r"^model.scheduler_interval='batch' must be 'epoch' or 'step'$",
        ),
        (["~model.optimizer.lr"], r"^model.optimizer \(SGD\) has no lr for model.loc_lr_mult"),
    ],
)
def test_wrong_types_and_values_name_the_key_and_what_is_valid(
    make_cfg: MakeCfg, overrides: list[str], match: str
) -> None:
    _fails(make_cfg, *overrides, match=match)


@pytest.mark.parametrize(
    "override",
    [
        "model.loc_lr_mult=nan",  # trained to NaN and exited 0 before
        "data.distortion.max_angle=nan",  # was blamed on the learning rate
        "data.distortion.max_angle=inf",
        "model.optimizer.lr=inf",
        "budget=inf",
        "callbacks.collapse.min_coverage=nan",
    ],
)
def test_nan_and_infinity_are_rejected_wherever_they_are(make_cfg: MakeCfg, override: str) -> None:
    key, value = override.split("=")
    _fails(make_cfg, override, match=rf"^{key}={value} is not a finite number")


def test_non_finite_values_fail_every_range_check() -> None:
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match="must be a finite number"):
            check_range("x", value)
    with pytest.raises(ValueError, match="max_angle and max_shift must be finite"):
        RandomSimilarity(max_angle=float("nan"))


def test_gpu_trainer_without_a_gpu_says_how_to_run_on_the_cpu(
    make_cfg: MakeCfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = str(
        _fails(
            make_cfg, "trainer=gpu", match=r"^trainer.accelerator=gpu, but this machine has no GPU"
        )
    )
    assert "trainer=cpu" in message and "trainer.accelerator=cpu" in message


def test_read_only_checkpoint_folder_fails_at_start_up(
    make_cfg: MakeCfg, tmp_path: Path, read_only: Callable[[Path], None]
) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    read_only(folder)
    cfg = make_cfg("debug=limit", f"callbacks.model_checkpoint.dirpath={folder}")
    _fails_cfg(
        cfg, match=rf"^callbacks.model_checkpoint.dirpath={folder} cannot be written .*Read-only"
    )
    assert list(folder.iterdir()) == []
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()  # no epoch was trained


def test_a_checkpoint_folder_checked_at_start_up_is_not_left_behind(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b", "callbacks.x.dirpath", keep=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"dirpath=.*/file is a file, not a folder"):
        check_writable(tmp_path / "file", "callbacks.x.dirpath")


def test_full_disk_names_the_file_and_keeps_earlier_checkpoints(
    make_cfg: MakeCfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg("model=stn_cnn", "debug=limit", "callbacks.transform_grid.every_n_epochs=5")
    folder = Path(cfg.callbacks.model_checkpoint.dirpath)
    real_save, saves = torch.save, []

    def save_until_the_disk_is_full(obj: object, f: Any, *args: Any, **kwargs: Any) -> None:
        saves.append(f.name)
        if len(saves) > 2:  # epoch 0 wrote best and last; epoch 1 finds the disk full
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save_until_the_disk_is_full)
    with pytest.raises(StorageError) as info:
        train(cfg)
    message = str(info.value)
    assert re.search(rf"could not write the checkpoint {folder}/\w+.ckpt \(No space left", message)
    assert f"earlier checkpoints in {folder} are intact (best.ckpt, last.ckpt)" in message
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temp file
    assert read_checkpoint(folder / "last.ckpt")["epoch"] == 0
    failure = json.loads((Path(cfg.paths.output_dir) / "failure.json").read_text())
    assert failure["error"] == "StorageError"


def test_ckpt_path_that_is_a_folder_lists_its_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=r"is a folder, not a checkpoint file; pass one .*last"
    ):
        read_checkpoint(tmp_path)


def test_eval_with_ckpt_path_auto_says_a_file_is_needed(
    make_task_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_task_cfg("eval", "ckpt_path=auto")
    with pytest.raises(CheckpointError, match=r"^ckpt_path=auto resumes a training run's own"):
        evaluate(cfg)


def test_robustness_rejects_non_finite_and_fractional_settings(
    make_task_cfg: Callable[..., DictConfig],
) -> None:
    for override, match in (
        ("angle.start=nan", r"^angle.start=nan is not a finite number"),
        ("num_samples=1.5", r"^num_samples=1.5 must be an integer >= 1"),
    ):
        cfg = make_task_cfg("robustness", "ckpts=[never-read.ckpt]", override)
        with pytest.raises(ConfigError, match=match):
            robustness(cfg)


def test_ckpt_path_that_does_not_exist(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("debug=fdr", f"ckpt_path={tmp_path / 'nope.ckpt'}")
    with pytest.raises(CheckpointError, match=r"nope.ckpt does not exist.*ckpt_path=last"):
        train(cfg)


def test_validation_runs_before_any_work(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("debug=fdr", "+data.distortion.max_angel=30")
    with open_dict(cfg):
        cfg.data.root = str(tmp_path / "no-data-here")
        cfg.data.allow_fetch = False
    # The key error wins over the missing data: nothing was loaded or fetched.
    with pytest.raises(ConfigError, match="max_angel"):
        validate_config(cfg)
    assert not (tmp_path / "no-data-here").exists()


ROOT = Path(__file__).resolve().parents[1]
# (command after `python`, the line the user sees); {tmp} is the test's folder.
CLI_CASES = {
    "train-run-dir": (
        ["src/train.py", "debug=fdr", "hydra.run.dir={tmp}/a-file/run"],
        "Error: hydra.run.dir=",
    ),
    "train-typo": (
        ["src/train.py", "debug=fdr", "data=rotated", "+data.distortion.max_angel=30"],
        "Did you mean data.distortion.max_angle?",
    ),
    "train-type": (
        ["src/train.py", "debug=fdr", "data.batch_size=1.5"],
        "data.batch_size=1.5 must be an integer",
    ),
    "eval-auto": (
        ["src/eval.py", "ckpt_path=auto", "logger=csv"],
        "ckpt_path=auto resumes a training run's own last.ckpt",
    ),
    "export-folder": (
        ["src/export.py", "ckpt_path=x.ckpt", "output={tmp}"],
        "output={tmp} is a folder; name the file to write",
    ),
    "gallery": (["src/gallery.py", "num_samples=-4"], "num_samples=-4 must be an integer >= 1"),
    "bench": (
        ["-m", "stnlab.bench", "data", "--override", "data.batch_size=abc"],
        "error: data.batch_size='abc' must be an integer",
    ),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_prints_one_line_without_a_traceback(case: str, tmp_path: Path) -> None:
    """Every kind of entry point: status 1, the message on stderr, no traceback."""
    import subprocess
    import sys

    (tmp_path / "a-file").write_text("x")
    args, expected = CLI_CASES[case]
    args = [a.format(tmp=tmp_path) for a in args]
    if args[0].startswith("src/") and not any(a.startswith("hydra.run.dir") for a in args):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    env = {"WANDB_MODE": "offline", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert expected.format(tmp=tmp_path) in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "a-file").read_text() == "x"  # nothing was overwritten

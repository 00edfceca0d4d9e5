"""Bad input fails at start-up with a message that names the value and what is valid.

One test per class of mistake; each asserts the message a user sees. Data-file problems
(missing, truncated, corrupted) are in ``tests/data/test_fetch.py``, checkpoint problems in
``tests/test_resume.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, open_dict

from stnlab.errors import CheckpointError, ConfigError
from stnlab.tasks import train
from stnlab.validation import check_batch_split, process_count, validate_config

MakeCfg = Callable[..., DictConfig]


def _fails(make_cfg: MakeCfg, *overrides: str, match: str) -> ConfigError:
    cfg = make_cfg("model=stn_cnn", "debug=fdr", *overrides)
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
        ("seed=-1", r"seed=-1 must be a non-negative integer"),
        ("trainer.max_epochs=0", r"trainer.max_epochs=0 must be a positive integer"),
        ("optimized_metric=val/acc_bst", r"Did you mean val/acc_best\?"),
        ("data.dataset=kmnist", r"data.dataset='kmnist' is unknown; valid: \["),
        ("data.batch_size=0", r"batch sizes must be positive, got batch_size=0"),
        ("model.loc_lr_mult=-1", r"^model.loc_lr_mult must be >= 0, got -1"),
        ("data.val_size=100000", r"data.val_size=100000 must be between 1 and 599"),
        ("callbacks.collapse.min_coverage=2", r"min_coverage must be in \[0, 1\), got 2"),
    ],
)
def test_out_of_range_values(make_cfg: MakeCfg, override: str, match: str) -> None:
    _fails(make_cfg, override, match=match)


def test_ckpt_path_that_does_not_exist(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("debug=fdr", f"ckpt_path={tmp_path / 'nope.ckpt'}")
    with pytest.raises(CheckpointError, match=r"nope.ckpt does not exist.*ckpt_path=auto"):
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


def test_cli_prints_the_message_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    env = {"WANDB_MODE": "offline", "PATH": "/usr/bin:/bin"}
    base = [sys.executable, str(root / "src" / "train.py"), "debug=fdr"]
    cases = {
        f"hydra.run.dir={blocker / 'run'}": "Error: hydra.run.dir=",
        "+data.distortion.max_angel=30": "Did you mean data.distortion.max_angle?",
    }
    for override, expected in cases.items():
        extra = [] if override.startswith("hydra") else [f"hydra.run.dir={tmp_path / 'ok'}"]
        proc = subprocess.run(
            [*base, override, *extra], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert expected in proc.stderr and "Traceback" not in proc.stderr

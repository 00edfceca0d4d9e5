"""src/eval.py: one checkpoint on every distortion → results.csv / results.md + logger.

``tiny_run`` (tests/conftest.py) is the shared trained ST-CNN on the rotated digits."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from stnlab.analysis.evaluate import FIELDS, POSE_FIELDS, select_variants, write_results
from stnlab.checkpoints import load_checkpoint_net
from stnlab.config import data_variants
from stnlab.errors import CheckpointError, ConfigError
from stnlab.tasks import evaluate


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_writes_one_row_per_fitting_variant_and_logs(
    tiny_run: tuple[Path, dict], make_task_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    ckpt, metrics = tiny_run
    cfg = make_task_cfg("eval", f"ckpt_path={ckpt}", "device=cpu")
    rows = evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    table = read_rows(out / "results.csv")
    # own first, then the other 28×28 variants
    assert [r["variant"] for r in table] == ["rotated", "mnist", "projective", "elastic"]
    assert [r["own"] for r in table] == ["True", "False", "False", "False"]
    for row in table:
        assert 0.0 <= float(row["error_pct"]) <= 100.0
        assert int(row["samples"]) == 200
        assert float(row["error_pct"]) == pytest.approx(100 * int(row["errors"]) / 200)
    # the own row is the run's test set: the same error as the training run's test/err
    assert float(table[0]["error_pct"]) == pytest.approx(metrics["test/err"], abs=1e-3)
    assert table[0]["paper_pct"] == "0.7"  # ST-CNN Aff on R
    assert all(r["paper_pct"] == "" for r in table[1:])  # the paper trained per variant
    md = (out / "results.md").read_text()
    assert md.count("\n| ") == 5 and "ST-CNN Aff" in md  # header + 4 rows
    # pose recovery of the transformer on every test set (README, Pose recovery)
    assert set(POSE_FIELDS) <= set(table[0]) and "pose undone" in md
    pose = {r["variant"]: r for r in table}
    for variant in ("rotated", "projective", "elastic"):
        assert float(pose[variant]["pose_undone"]) <= 1.0
        for field in POSE_FIELDS:
            if field != "pose_clutter_kept":  # no clutter on these variants
                assert math.isfinite(float(pose[variant][field])), (variant, field)
        assert pose[variant]["pose_clutter_kept"] == ""
        assert 0 < float(pose[variant]["pose_digit_kept"]) <= 1.0
        assert 0 < float(pose[variant]["pose_zoom"]) <= 1.0
    assert float(pose["rotated"]["pose_angle_std_before"]) > 20  # uniform on ±90°
    assert pose["mnist"]["pose_undone"] == ""  # upright digits: no pose spread to undo
    assert float(pose["mnist"]["pose_angle_std_before"]) == 0.0
    logged = read_rows(out / "csv" / "metrics.csv")
    assert float(logged[-1]["eval/rotated/err"]) == pytest.approx(rows[0]["error_pct"])


def test_eval_all_variants_resized(
    tiny_run: tuple[Path, dict], make_task_cfg: Callable[..., DictConfig]
) -> None:
    ckpt, _ = tiny_run
    cfg = make_task_cfg("eval", f"ckpt_path={ckpt}", "variants=all", "~logger")
    rows = evaluate(cfg)
    # every variant of the model's task: MNIST addition (2 channels, 19 sums) and the
    # co-localisation sets (boxes, no labels) are not
    other_tasks = {"addition", "colocalisation", "colocalisation_t"}
    assert sorted(r["variant"] for r in rows) == sorted(set(data_variants()) - other_tasks)
    resized = {r["variant"]: (r["canvas"], r["resized"]) for r in rows}
    assert resized["rts"] == (42, True) and resized["cluttered"] == (60, True)
    assert resized["mnist"] == (28, False)
    assert all(0.0 <= r["error_pct"] <= 100.0 for r in rows)


def test_eval_errors_name_the_bad_value(
    tiny_run: tuple[Path, dict], make_task_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    ckpt, _ = tiny_run
    with pytest.raises(ConfigError, match=r"variants=\['rotatd'\].*valid"):
        select_variants(["rotatd"], "rotated", 28)
    with pytest.raises(ConfigError, match=r"variants=\['addition', 'colocalisation'\] are not"):
        select_variants(["rts", "addition", "colocalisation"], "rotated", 28)
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(make_task_cfg("eval", f"ckpt_path={tmp_path / 'nope.ckpt'}", "~logger"))
    assert json.loads((tmp_path / "eval" / "failure.json").read_text())["error"] == (
        "CheckpointError"
    )
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="no stnlab run config"):
        load_checkpoint_net(foreign)
    with pytest.raises(ConfigError, match="device='cuda:x'"):
        evaluate(make_task_cfg("eval", f"ckpt_path={ckpt}", "device=cuda:x", "~logger"))


def test_eval_of_a_checkpoint_from_before_variant_names(
    tiny_run: tuple[Path, dict], make_task_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Older checkpoints carry no data.variant: Hydra's record in the run folder names it."""
    ckpt, metrics = tiny_run
    checkpoint = torch.load(ckpt, weights_only=False)
    del checkpoint["stnlab_config"]["data"]["variant"]
    old = tmp_path / "old_run" / "checkpoints" / "best.ckpt"
    old.parent.mkdir(parents=True)
    torch.save(checkpoint, old)
    (old.parents[1] / ".hydra").mkdir()
    (old.parents[1] / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n      data: rotated\n"
    )
    rows = evaluate(make_task_cfg("eval", f"ckpt_path={old}", "~logger"))
    assert [r["variant"] for r in rows] == ["rotated", "mnist", "projective", "elastic"]
    assert rows[0]["error_pct"] == pytest.approx(metrics["test/err"], abs=1e-3)
    assert rows[0]["paper_pct"] == 0.7


def test_pose_columns_are_empty_without_an_input_transformer(tmp_path: Path) -> None:
    row = {
        "model": "CNN",
        "variant": "rotated",
        "column": "R",
        "own": True,
        "canvas": 28,
        "resized": False,
        "samples": 10,
        "errors": 1,
        "error_pct": 10.0,
        "paper_pct": 1.2,
        **dict.fromkeys(POSE_FIELDS),
    }
    csv_path, md_path = write_results([row], tmp_path, "CNN")
    (written,) = read_rows(csv_path)
    assert list(written) == FIELDS
    assert all(written[f] == "" for f in POSE_FIELDS)
    assert md_path.read_text().splitlines()[-1].endswith("| 1.20 | – | – | – / – | – | – / – |")


def test_eval_of_a_checkpoint_with_the_old_data_key_names(
    tiny_run: tuple[Path, dict], make_task_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Checkpoints written before the rename say data.name / data.dataset: still read."""
    ckpt, metrics = tiny_run
    checkpoint = torch.load(ckpt, weights_only=False)
    data = checkpoint["stnlab_config"]["data"]
    data["name"], data["dataset"] = data.pop("variant"), data.pop("source")
    old = tmp_path / "renamed" / "checkpoints" / "best.ckpt"
    old.parent.mkdir(parents=True)
    torch.save(checkpoint, old)
    rows = evaluate(make_task_cfg("eval", f"ckpt_path={old}", "~logger", "variants=[mnist]"))
    assert [r["variant"] for r in rows] == ["rotated", "mnist"]
    assert rows[0]["error_pct"] == pytest.approx(metrics["test/err"], abs=1e-3)

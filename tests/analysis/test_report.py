"""src/report.py: runs → Table-1 layout with mean ± std per cell; the paper's mapping."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from stnlab.analysis.paper import PAPER_TABLE1, dataset_label, model_label, paper_error
from stnlab.analysis.report import build_report, find_runs
from stnlab.errors import ConfigError

CNN = {"backbone": {"_target_": "stnlab.models.CNN"}, "transformer": None}
ST_CNN = {
    "backbone": {"_target_": "stnlab.models.CNN"},
    "transformer": {
        "_target_": "stnlab.models.SpatialTransformer",
        "transform": {"_target_": "stnlab.geometry.AffineTransform"},
    },
    "transformer_at": "input",
}


def fake_run(folder: Path, net: dict, data: str, seed: int, err: float | None) -> Path:
    """A run folder as src/train.py leaves it: .hydra/{config,overrides}.yaml + metrics."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "data": {"name": data}, "model": {"net": net}}
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    OmegaConf.save(
        OmegaConf.create([f"seed={seed}", f"data={data}"]), folder / ".hydra" / "overrides.yaml"
    )
    if err is None:
        (folder / "failure.json").write_text(json.dumps({"error": "NonFiniteLossError"}))
    else:
        (folder / "metrics.json").write_text(
            json.dumps({"test/err": err, "test/acc": 1 - err / 100})
        )
    return folder


def test_report_mean_and_std_over_three_runs(tmp_path: Path) -> None:
    errs = [1.0, 2.0, 4.0]
    runs = [
        fake_run(tmp_path / f"cnn_{s}", CNN, "rts", s, e)
        for s, e in zip((1, 2, 3), errs, strict=True)
    ]
    sweep = tmp_path / "sweep"  # a multirun folder: found recursively
    fake_run(sweep / "0", ST_CNN, "rts", 1, 0.9)
    fake_run(sweep / "1", ST_CNN, "rts", 2, None)  # failed: left out of the mean
    rows = build_report([*map(str, runs), str(sweep)], tmp_path / "out", "t")
    by_cell = {(r["model"], r["column"]): r for r in rows}
    cnn = by_cell[("CNN", "RTS")]
    assert cnn["n"] == 3
    assert cnn["mean_err"] == pytest.approx(statistics.fmean(errs))  # 2.3333
    assert cnn["std_err"] == pytest.approx(statistics.stdev(errs))  # sample std 1.5275
    assert cnn["paper_err"] == 0.8
    st = by_cell[("ST-CNN Aff", "RTS")]
    assert (st["n"], st["failed"], st["std_err"]) == (1, 1, None)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| CNN | 2.33 ± 1.53 (n=3) [0.8] |" in md
    assert "| ST-CNN Aff | 0.90 [0.5] |" in md
    assert "1 run(s) without a result" in md
    with open(tmp_path / "out" / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["model"], r["column"]) for r in table] == [("CNN", "RTS"), ("ST-CNN Aff", "RTS")]
    assert float(table[0]["std_err"]) == pytest.approx(1.5275, abs=1e-4)
    assert (tmp_path / "out" / "report.png").stat().st_size > 5000


def test_report_flags_cells_mixing_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = fake_run(tmp_path / "a", CNN, "rotated", 1, 2.0)
    b = fake_run(tmp_path / "b", CNN, "rotated", 1, 3.0)
    OmegaConf.save(OmegaConf.create(["model.optimizer.lr=0.1"]), b / ".hydra" / "overrides.yaml")
    rows = build_report([str(a), str(b)], tmp_path / "out")
    assert rows[0]["mixed"] and "not seed-to-seed" in caplog.text
    assert "2.50 ± 0.71 (n=2) * [1.2]" in (tmp_path / "out" / "report.md").read_text()


def test_report_skips_other_tasks_and_keeps_sources_apart(tmp_path: Path) -> None:
    fake_run(tmp_path / "mnist", CNN, "rotated", 1, 2.0)
    fashion = fake_run(tmp_path / "fashion", CNN, "rotated", 1, 9.0)
    config = OmegaConf.load(fashion / ".hydra" / "config.yaml")
    config.data.dataset = "fashion_mnist"
    OmegaConf.save(config, fashion / ".hydra" / "config.yaml")
    # a run from before data configs had a name: Hydra's record of data=… decides
    old = fake_run(tmp_path / "old", CNN, "rts", 1, 5.0)
    OmegaConf.save(
        OmegaConf.create({"seed": 1, "model": {"net": CNN}, "data": {}}),
        old / ".hydra" / "config.yaml",
    )
    OmegaConf.save(
        OmegaConf.create({"hydra": {"runtime": {"choices": {"data": "rts"}}}}),
        old / ".hydra" / "hydra.yaml",
    )
    evaluation = tmp_path / "eval_run" / ".hydra"  # src/eval.py's folder: not a training run
    evaluation.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"ckpt_path": "x.ckpt"}), evaluation / "config.yaml")
    rows = build_report([tmp_path], tmp_path / "out")
    cells = {(r["model"], r["column"]): (r["mean_err"], r["paper_err"]) for r in rows}
    assert cells == {
        ("CNN", "R"): (2.0, 1.2),
        ("CNN", "R fashion_mnist"): (9.0, None),  # the paper's numbers are MNIST's
        ("CNN", "RTS"): (5.0, 0.8),
    }
    with pytest.raises(ConfigError, match="no training run among 1 folders"):
        build_report([tmp_path / "eval_run"], tmp_path / "out2")


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        find_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no training run under"):
        find_runs([tmp_path / "empty"])


@pytest.mark.parametrize(
    ("net", "label"),
    [
        (CNN, "CNN"),
        (ST_CNN, "ST-CNN Aff"),
        ({**ST_CNN, "backbone": {"_target_": "stnlab.models.FCN"}}, "ST-FCN Aff"),
        ({**ST_CNN, "transformer_at": "features"}, "ST-CNN Aff @features"),
        (
            {**ST_CNN, "transformer": {**ST_CNN["transformer"], "num_transformers": 2}},
            "2×ST-CNN Aff",
        ),
    ],
)
def test_model_labels(net: dict, label: str) -> None:
    assert model_label({"model": {"net": net}}) == label


def test_dataset_labels_and_paper_cells() -> None:
    assert dataset_label("cluttered") == "TC" and dataset_label("translated") == "translated"
    assert dataset_label("rts", "cifar10") == "RTS cifar10"
    assert paper_error("ST-CNN Aff", "TC") == 1.7 and paper_error("CNN", "RTS cifar10") is None
    assert sum(len(cells) for cells in PAPER_TABLE1.values()) == 36


def test_report_shows_the_pose_undone_beside_st_cells(tmp_path: Path) -> None:
    for seed, (err, pose) in enumerate([(1.0, 0.6), (2.0, 0.8)], start=1):
        run = fake_run(tmp_path / f"st_{seed}", ST_CNN, "rts", seed, err)
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**metrics, "val/pose/undone": pose}))
    fake_run(tmp_path / "cnn", CNN, "rts", 1, 3.0)  # no transformer: no pose figure
    rows = build_report([str(tmp_path)], tmp_path / "out")
    by_model = {r["model"]: r for r in rows}
    assert by_model["ST-CNN Aff"]["mean_pose"] == pytest.approx(0.7)
    assert by_model["CNN"]["mean_pose"] is None
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| ST-CNN Aff | 1.50 ± 0.71 (n=2) {pose 0.70} [0.5] |" in md
    assert "| CNN | 3.00 [0.8] |" in md


def test_report_shows_zoom_ink_and_rotation_beside_st_cells(tmp_path: Path) -> None:
    figures = {
        "val/pose/undone": 0.8,
        "val/pose/zoom": 0.9,
        "val/pose/digit_kept": 0.98,
        "val/pose/clutter_kept": 0.15,
    }
    run = fake_run(tmp_path / "tc", ST_CNN, "cluttered", 1, 1.2)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, **figures}))
    rotated = fake_run(tmp_path / "r", ST_CNN, "rotated", 1, 0.9)
    metrics = json.loads((rotated / "metrics.json").read_text())
    turned = {"val/pose/rotation_undone": 0.72, "val/pose/rotation_undone_upright": 0.75}
    (rotated / "metrics.json").write_text(json.dumps({**metrics, **turned}))
    rows = build_report([str(tmp_path)], tmp_path / "out")
    by_column = {r["column"]: r for r in rows}
    assert by_column["TC"]["mean_clutter_kept"] == pytest.approx(0.15)
    assert by_column["TC"]["mean_rotation"] is None
    assert by_column["R"]["mean_upright"] == pytest.approx(0.75)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "1.20 {pose 0.80, zoom 0.90, digit kept 0.98, clutter kept 0.15} [1.7]" in md
    assert "0.90 {rot 0.72, rot w/o 0,1,8 0.75} [0.7]" in md
    with open(tmp_path / "out" / "report.csv", newline="") as f:
        header = next(csv.reader(f))
    assert {"mean_zoom", "mean_digit_kept", "mean_clutter_kept", "mean_upright"} <= set(header)


def fake_colocalisation_run(folder: Path, digit: int, clutter: int, found: float, test: float):
    """A co-localisation run folder: its config (``data.digit`` interpolated, as the
    presets write it) and metrics.json."""
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "digit": digit,
        "seed": 1,
        "data": {"digit": "${digit}", "distortion": {"num_patches": clutter}},
        "model": {"_target_": "stnlab.colocalisation.ColocalisationModule", "net": {}},
    }
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    metrics = {"train/coloc/hit_rate": found, "test/coloc/hit_rate": test}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_puts_colocalisation_runs_in_the_table_5_layout(tmp_path: Path) -> None:
    fake_colocalisation_run(tmp_path / "t_3", 3, 0, 1.0, 0.9)
    fake_colocalisation_run(tmp_path / "tc_3a", 3, 16, 0.8, 0.4)
    fake_colocalisation_run(tmp_path / "tc_3b", 3, 16, 0.6, 0.2)  # a repeat: the mean
    fake_colocalisation_run(tmp_path / "tc_7", 7, 16, 0.5, 0.3)
    out = tmp_path / "out"
    assert build_report([tmp_path], out) == []  # no Table-1 run
    assert not (out / "report.md").exists()
    md = (out / "colocalisation.md").read_text()
    assert "| 3 | 100 (90) | 70 (30) n=2 |" in md
    assert "| 7 | – | 50 (30) |" in md
    assert "| mean | 100.0 (90.0) | 60.0 (30.0) |" in md  # TC: the mean of the digits' means
    assert "| paper | 100 | 75–93 |" in md
    with open(out / "colocalisation.csv") as f:
        rows = {(r["digit"], r["column"]): r for r in csv.DictReader(f)}
    assert float(rows[("3", "TC")]["found"]) == pytest.approx(70.0)
    assert rows[("3", "TC")]["n"] == "2"
    # beside Table-1 runs, both tables are written
    fake_run(tmp_path / "cnn", CNN, "rotated", 1, 2.0)
    rows_1 = build_report([tmp_path], tmp_path / "both")
    assert [(r["model"], r["column"]) for r in rows_1] == [("CNN", "R")]
    assert (tmp_path / "both" / "report.md").is_file()
    assert (tmp_path / "both" / "colocalisation.md").is_file()

"""Sweep summaries, and a multirun in which one job fails while the others finish."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cli_helper import run_train
from stnlab.analysis.sweep import SweepSummary, main, summarize_sweep, sweep_failed


def _job(sweep: Path, num: int, overrides: list[str], **files: dict) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    for name, content in files.items():
        (job / f"{name}.json").write_text(json.dumps(content))


def test_summary_sorts_by_the_metric_and_lists_failures_last(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["model/loc_net=fc", "seed=1"], metrics={"val/acc_best": 0.91, "test/err": 9.5})
    _job(
        sweep,
        1,
        ["model/loc_net=conv_small", "seed=1"],
        failure={
            "error": "NonFiniteLossError",
            "message": "the training loss became nan at global step 7\nmore",
        },
    )
    _job(
        sweep,
        2,
        ["model/loc_net=conv_large", "seed=1"],
        metrics={"val/acc_best": 0.97, "test/err": 3.1},
    )
    _job(sweep, 10, ["model/loc_net=fc", "seed=2"])  # killed: neither file
    csv_path, md_path, rows = summarize_sweep(sweep)
    assert [r["job"] for r in rows] == ["2", "0", "1", "10"]
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [
        "job",
        "model/loc_net",
        "seed",
        "status",
        "val/acc_best",
        "test/acc",
        "test/err",
        "test/loss",
        "error",
    ]
    assert [t["status"] for t in table] == ["ok", "ok", "failed", "unfinished"]
    assert table[0]["val/acc_best"] == "0.9700" and table[1]["test/err"] == "9.5000"
    assert table[2]["error"] == "NonFiniteLossError: the training loss became nan at global step 7"
    md = md_path.read_text()
    assert "4 jobs, 2 finished" in md and md.count("\n| ") == 5  # header + 4 rows
    # Errors are minimised: sorted the other way round.
    _, _, by_err = summarize_sweep(sweep, metric="test/err")
    assert [r["job"] for r in by_err[:2]] == ["2", "0"]
    main([str(sweep), "--metric", "test/err"])
    assert "Sorted by `test/err` (lower is better)" in capsys.readouterr().out


def test_summary_of_a_folder_without_jobs_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="holds no job directories"):
        summarize_sweep(tmp_path)


def test_sweep_exit_status_rule() -> None:
    ok, failed = {"status": "ok"}, {"status": "failed"}
    assert not sweep_failed([ok, ok], search=False)
    assert sweep_failed([ok, failed], search=False)  # a grid: any failed job
    assert not sweep_failed([ok, failed], search=True)  # a search: failed trials are normal
    assert sweep_failed([failed, failed], search=True)  # … unless every trial failed


@pytest.mark.parametrize(
    ("sweeper", "statuses", "exits"),
    [
        ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper", ["ok", "ok"], False),
        ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper", ["ok", "failed"], True),
        (
            "hydra_plugins.stnlab_sweepers.optuna.OptunaSweeper",
            ["ok", "failed"],
            False,
        ),
        ("hydra_plugins.stnlab_sweepers.optuna.OptunaSweeper", ["failed"] * 2, True),
    ],
)
def test_sweep_end_exits_with_1_after_writing_the_summary(
    tmp_path: Path, sweeper: str, statuses: list[str], exits: bool
) -> None:
    sweep = tmp_path / "sweep"
    for num, status in enumerate(statuses):
        result = (
            {"metrics": {"val/acc_best": 0.9}}
            if status == "ok"
            else {"failure": {"error": "ConfigError", "message": "bad"}}
        )
        _job(sweep, num, [f"seed={num}"], **result)
    config = OmegaConf.create(
        {
            "optimized_metric": None,
            "hydra": {"sweep": {"dir": str(sweep)}, "sweeper": {"_target_": sweeper}},
        }
    )
    if exits:
        with pytest.raises(SystemExit) as info:
            SweepSummary().on_multirun_end(config)
        assert info.value.code == 1
    else:
        SweepSummary().on_multirun_end(config)
    assert (sweep / "summary.md").is_file()


@pytest.mark.e2e
def test_multirun_with_a_failing_job_keeps_and_summarises_the_others(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train(
        fake_mnist_root,
        "-m",
        "model=cnn",
        "debug=limit",
        "trainer.max_epochs=1",
        "logger=csv",
        "data.batch_size=32",
        "data.val_size=100,100000,50",  # the second job cannot split 600 images that way
        f"hydra.sweep.dir={sweep}",
    )
    # Every job ran and the summary was written, then the grid says it failed.
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "job 1 failed: data.val_size=100000 must be between 1 and 599" in proc.stderr
    assert "1 of 3 jobs failed" in proc.stderr and "Traceback" not in proc.stderr
    assert (sweep / "0" / "metrics.json").exists() and (sweep / "2" / "metrics.json").exists()
    failure = json.loads((sweep / "1" / "failure.json").read_text())
    assert failure["error"] == "ConfigError"
    with open(sweep / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["status"] for t in table] == ["ok", "ok", "failed"]
    assert [t["data.val_size"] for t in table][2] == "100000"
    assert all(0.0 <= float(t["val/acc_best"]) <= 1.0 for t in table[:2])

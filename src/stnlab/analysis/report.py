"""Gather training runs into the paper's Table-1 layout: ``report.md``, ``report.csv``, PNG.

A run is a folder written by ``src/train.py``: ``.hydra/config.yaml`` says which cell it
belongs to (model → row, data variant → column, see :mod:`stnlab.analysis.paper`) and
``metrics.json`` holds its ``test/err``. Runs in the same cell are taken as repeats (e.g.
seeds): the cell shows mean ± sample standard deviation. Runs of one cell whose overrides
differ in more than the seed are flagged, since their spread is then not seed noise.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stnlab.analysis import paper
from stnlab.analysis.tables import write_csv
from stnlab.checkpoints import read_yaml_data
from stnlab.errors import ConfigError
from stnlab.progress import track

log = logging.getLogger(__name__)

METRIC = "test/err"
POSE_METRIC = "val/pose/undone"  # the share of pose spread the transformer removed (val set)
FIELDS = [
    "model",
    "column",
    "n",
    "mean_err",
    "std_err",
    "paper_err",
    "mean_pose",
    "errors",
    "failed",
    "runs",
]
_NOT_SETTINGS = ("seed=", "hydra.", "ckpt_path=", "trainer.enable_progress_bar=", "logger")


def _is_run(folder: Path) -> bool:
    return (folder / ".hydra" / "config.yaml").is_file()


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders under ``paths``: each a run folder or a folder of them (e.g. a multirun)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ConfigError(f"runs: {path} is not a folder (give run or multirun folders)")
        if _is_run(path):
            found.append(path)
            continue
        nested = sorted(p.parent.parent for p in path.rglob(".hydra/config.yaml"))
        if not nested:
            raise ConfigError(
                f"runs: no training run under {path} (a run folder holds .hydra/config.yaml "
                "and metrics.json, as src/train.py writes them)"
            )
        found.extend(nested)
    return list(dict.fromkeys(found))


def read_run(folder: Path) -> dict[str, Any]:
    """One run: its cell (``model``, Table-1 ``column``), ``seed``, ``error`` (``None`` if none)."""
    config = read_yaml_data(folder / ".hydra" / "config.yaml")
    if not isinstance(config, dict):
        raise ConfigError(f"{folder}/.hydra/config.yaml is not a run config (not a mapping)")
    name = paper.run_variant(config, folder)
    source = paper.run_source(config)
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = read_yaml_data(overrides_file) if overrides_file.is_file() else []
    error = pose = None
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file() and not (folder / "failure.json").is_file():
        metrics = json.loads(metrics_file.read_text())
        value = metrics.get(METRIC)
        error = float(value) if value is not None else None
        undone = metrics.get(POSE_METRIC)
        pose = float(undone) if isinstance(undone, int | float) else None
    return {
        "folder": folder,
        "model": paper.model_label(config),
        "column": paper.dataset_label(name, source),
        "seed": config.get("seed"),
        "error": error,
        "pose": pose,
        "setting": sorted(str(o) for o in overrides if not str(o).startswith(_NOT_SETTINGS)),
    }


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell with ``n``, ``mean_err``, ``std_err`` (sample std; ``None`` for n < 2)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["model"], run["column"]), []).append(run)

    def order(key: tuple[str, str]) -> tuple[int, str, int, str]:
        row, col = key
        return (_rank(row, paper.ROW_ORDER), row, _rank(col, paper.COLUMN_ORDER), col)

    rows = []
    for key in sorted(cells, key=order):
        members = cells[key]
        errors = [m["error"] for m in members if m["error"] is not None]
        poses = [m["pose"] for m in members if m["error"] is not None and m.get("pose") is not None]
        settings = {tuple(m["setting"]) for m in members}
        if len(settings) > 1:
            log.warning(
                "cell %s / %s mixes runs with different overrides %s: its std is not "
                "seed-to-seed spread",
                *key,
                sorted(settings),
            )
        rows.append(
            {
                "model": key[0],
                "column": key[1],
                "n": len(errors),
                "mean_err": statistics.fmean(errors) if errors else None,
                "std_err": statistics.stdev(errors) if len(errors) > 1 else None,
                "paper_err": paper.paper_error(*key),
                "mean_pose": statistics.fmean(poses) if poses else None,
                "errors": errors,
                "failed": len(members) - len(errors),
                "runs": [str(m["folder"]) for m in members],
                "mixed": len(settings) > 1,
            }
        )
    return rows


def _cell_text(row: dict[str, Any] | None, paper: float | None) -> str:
    paper_text = f" [{paper:g}]" if paper is not None else ""
    if row is None or row["mean_err"] is None:
        return f"–{paper_text}" if paper is not None else ""
    text = f"{row['mean_err']:.2f}"
    if row["std_err"] is not None:
        text += f" ± {row['std_err']:.2f} (n={row['n']})"
    if row["mixed"]:
        text += " *"
    if row.get("mean_pose") is not None:
        text += f" {{pose {row['mean_pose']:.2f}}}"
    return text + paper_text


def _rank(label: str, order: list[str]) -> int:
    """Position of ``label`` in the paper's ``order``; labels the paper lacks come last."""
    return order.index(label) if label in order else len(order)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """The Table-1 columns present in ``rows``: the paper's order, then the rest by name."""
    present = {r["column"] for r in rows}
    return sorted(present, key=lambda c: (_rank(c, paper.COLUMN_ORDER), c))


def markdown_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """Table 1's layout: models × datasets, ``mean ± std (n) [paper]`` test error % per cell."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    columns = _columns(rows)
    by_cell = {(r["model"], r["column"]): r for r in rows}
    lines = [f"# {title}", ""] if title else []
    lines += ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for model in models:
        cells = [_cell_text(by_cell.get((model, c)), paper.paper_error(model, c)) for c in columns]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Test error %: measured mean ± sample std over n runs, [the paper's number]. "
        + (
            "{pose u} = the share of the validation digits' pose spread the transformer "
            "undid (val/pose/undone, mean over the runs; 1 = all in one pose, 0 = none). "
            if any(r.get("mean_pose") is not None for r in rows)
            else ""
        )
        + ("* = runs with different overrides. " if any(r["mixed"] for r in rows) else "")
        + (
            f"{sum(r['failed'] for r in rows)} run(s) without a result are left out."
            if any(r["failed"] for r in rows)
            else ""
        ),
    ]
    return "\n".join(lines).rstrip() + "\n"


def plot_report(rows: list[dict[str, Any]], title: str = "") -> Any:
    """Grouped bars: per dataset, each model's mean error (± std) with the paper's as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r["mean_err"] is not None]
    models = list(dict.fromkeys(r["model"] for r in measured))
    columns = _columns(measured)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(columns) * max(1, len(models)) / 2, 3.8))
    width = 0.8 / max(1, len(models))
    by_cell = {(r["model"], r["column"]): r for r in measured}
    for i, model in enumerate(models):
        xs, means, stds, paper_x, paper_y = [], [], [], [], []
        for j, col in enumerate(columns):
            row = by_cell.get((model, col))
            if row is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            xs.append(x)
            means.append(row["mean_err"])
            stds.append(row["std_err"])
            if row["paper_err"] is not None:
                paper_x.append(x)
                paper_y.append(row["paper_err"])
        bars = ax.bar(xs, means, width * 0.9, label=model)
        spread = [(x, m, s) for x, m, s in zip(xs, means, stds, strict=True) if s is not None]
        if spread:  # ± std where a cell has several runs; none for a single run
            ex, em, es = zip(*spread, strict=True)
            ax.errorbar(ex, em, yerr=es, fmt="none", ecolor="black", capsize=3)
        ax.scatter(
            paper_x,
            paper_y,
            color=bars.patches[0].get_facecolor(),
            edgecolor="black",
            marker="D",
            s=22,
            zorder=3,
        )
    ax.scatter([], [], color="white", edgecolor="black", marker="D", s=22, label="paper")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("test error %")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def write_report(
    rows: list[dict[str, Any]], out_dir: str | Path, title: str = ""
) -> tuple[Path, Path, Path]:
    """Write ``report.md``, ``report.csv`` (one row per cell) and ``report.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, table, png = out / "report.md", out / "report.csv", out / "report.png"
    md.write_text(markdown_table(rows, title))
    records = [
        {
            **row,
            "errors": ";".join(f"{e:.4f}" for e in row["errors"]),
            "runs": ";".join(row["runs"]),
        }
        for row in rows
    ]
    write_csv(table, records, FIELDS)
    plot_report(rows, title).savefig(png, dpi=110, bbox_inches="tight")
    return md, table, png


def is_training_run(folder: Path) -> bool:
    """Whether ``folder``'s config is a training run's (eval, robustness … runs are not)."""
    config = read_yaml_data(folder / ".hydra" / "config.yaml")
    return isinstance(config, dict) and "model" in config and "data" in config


def build_report(paths: Iterable[str | Path], out_dir: str | Path, title: str = "") -> list[dict]:
    """Find the runs under ``paths``, aggregate them per cell and write the three files.

    Folders of other tasks found below ``paths`` (eval, robustness, …) are skipped. A bar
    on a terminal counts the folders read.
    """
    paths = list(paths)
    folders = find_runs(paths)
    runs = [read_run(f) for f in track(folders, "report: reading runs") if is_training_run(f)]
    skipped = len(folders) - len(runs)
    if skipped:
        log.warning("skipped %d folder(s) that are not training runs", skipped)
    if not runs:
        raise ConfigError(
            f"runs={list(map(str, paths))}: no training run among {len(folders)} folders"
        )
    rows = aggregate(runs)
    write_report(rows, out_dir, title)
    return rows

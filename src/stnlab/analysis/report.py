"""Gather training runs into the paper's Table-1 layout: ``report.md``, ``report.csv``, PNG;
co-localisation runs into the paper's Table-5 layout: ``colocalisation.md`` and ``.csv``.

A run is a folder written by ``src/train.py``: ``.hydra/config.yaml`` says which cell it
belongs to (model → row, data variant → column, see :mod:`stnlab.analysis.paper`) and
``metrics.json`` holds its ``test/err``. Runs in the same cell are taken as repeats (e.g.
seeds): the cell shows mean ± sample standard deviation. Runs of one cell whose overrides
differ in more than the seed are flagged, since their spread is then not seed noise.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stnlab.analysis import paper
from stnlab.analysis.tables import output_files, write_csv
from stnlab.checkpoints import read_json_data, read_yaml_data, run_source, run_variant
from stnlab.errors import CheckpointError, ConfigError
from stnlab.progress import track
from stnlab.temp_files import atomic_path, write_text

log = logging.getLogger(__name__)

METRIC = "test/err"
FIGURES = {
    "pose": "val/pose/undone",  # the share of pose spread the transformer removed (val set)
    "rotation": "val/pose/rotation_undone",  # the share of the angles' spread removed
    "upright": "val/pose/rotation_undone_upright",  # the same without the digits 0, 1, 8
    "zoom": "val/pose/zoom",  # how much of the output frame the digit's box fills
    "digit_kept": "val/pose/digit_kept",  # the share of the digit's ink in the window
    "clutter_kept": "val/pose/clutter_kept",  # the share of the clutter's ink in the window
}
"""What a cell shows beside its error: ``mean_<name>`` over the runs, from their final
validation metrics (docs/what_the_transformer_does.md)."""
FIELDS = [
    "model",
    "column",
    "n",
    "mean_err",
    "std_err",
    "paper_err",
    *(f"mean_{name}" for name in FIGURES),
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


def plain_value(config: Any, dotted: str, default: Any = None) -> Any:
    """``config[a][b]…`` for ``dotted`` = ``a.b…`` in a run's config read as data; a value
    that is a plain reference to another key (``${digit}``) is followed. Nothing else is
    resolved: ``${oc.env:…}`` or any resolver gives ``default``, never a secret's value."""
    value: Any = config
    for _ in range(10):
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str) or "${" not in value:
            return default if value is None else value
        reference = re.fullmatch(r"\$\{([\w.]+)\}", value)
        if reference is None:
            return default
        value, dotted = config, reference.group(1)
    return default


def run_metrics(folder: Path) -> dict[str, Any]:
    """A finished run's ``metrics.json`` as a dict (``{}`` for a failed or unfinished run);
    a file that is not a JSON mapping raises a one-line
    :class:`~stnlab.errors.CheckpointError`."""
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file() or (folder / "failure.json").is_file():
        return {}
    metrics = read_json_data(metrics_file)
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{metrics_file} is not a mapping of metric → value")
    return metrics


def read_run(folder: Path, config: Any) -> dict[str, Any]:
    """One run (``config``: its ``.hydra/config.yaml``, read): its cell (``model``,
    Table-1 ``column``), ``seed``, ``error`` (``None`` if none)."""
    if not isinstance(config, dict):
        raise ConfigError(f"{folder}/.hydra/config.yaml is not a run config (not a mapping)")
    name = run_variant(config, folder)
    source = run_source(config)
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = read_yaml_data(overrides_file) if overrides_file.is_file() else []
    metrics = run_metrics(folder)
    value = metrics.get(METRIC)
    error = float(value) if isinstance(value, int | float) else None
    figures: dict[str, float | None] = {
        figure: float(v) if isinstance(v := metrics.get(key), int | float) else None
        for figure, key in FIGURES.items()
    }
    return {
        "folder": folder,
        "model": paper.model_label(config),
        "column": paper.dataset_label(name, source),
        "seed": config.get("seed"),
        "error": error,
        **figures,
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
        means = {}
        for name in FIGURES:
            values = [
                m[name] for m in members if m["error"] is not None and m.get(name) is not None
            ]
            means[f"mean_{name}"] = statistics.fmean(values) if values else None
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
                **means,
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
    shown = [
        f"{CELL_NAMES[name]} {row[f'mean_{name}']:.2f}"
        for name in FIGURES
        if row.get(f"mean_{name}") is not None
    ]
    if shown:
        text += " {" + ", ".join(shown) + "}"
    return text + paper_text


CELL_NAMES = {
    "pose": "pose",
    "rotation": "rot",
    "upright": "rot w/o 0,1,8",
    "zoom": "zoom",
    "digit_kept": "digit kept",
    "clutter_kept": "clutter kept",
}


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
            "undid (val/pose/undone, mean over the runs; 1 = all in one pose, 0 = none); "
            "rot = the same for the digits' angles alone (rot w/o 0,1,8: without the "
            "digits that have no upright pose); zoom = the share of the transformer's "
            "output frame the digit's box fills; digit kept, clutter kept = the share of "
            "the digit's and the clutter's ink inside the transformer's window. "
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
    md, table, png = output_files(out_dir, "report.md", "report.csv", "report.png")
    write_text(md, markdown_table(rows, title))
    records = [
        {
            **row,
            "errors": ";".join(f"{e:.4f}" for e in row["errors"]),
            "runs": ";".join(row["runs"]),
        }
        for row in rows
    ]
    write_csv(table, records, FIELDS)
    with atomic_path(png, "picture") as tmp:
        plot_report(rows, title).savefig(tmp, dpi=110, bbox_inches="tight")
    return md, table, png


COLOCALISATION_MODULE = "stnlab.colocalisation.ColocalisationModule"
COLOCALISATION_TITLE = "Co-localisation (Table 5 layout)"
COLOCALISATION_FIELDS = ["digit", "column", "n", "found", "test", "search", "paper", "runs"]


def is_colocalisation_run(config: dict[str, Any]) -> bool:
    """Whether a run config trained :class:`~stnlab.colocalisation.ColocalisationModule`."""
    return (config.get("model") or {}).get("_target_") == COLOCALISATION_MODULE


def read_colocalisation_run(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """One co-localisation run (``config``: its ``.hydra/config.yaml``, read): ``digit``,
    ``column`` (``T``, or ``TC`` with clutter) and, as fractions (``None`` without a
    result), ``found`` (``train/coloc/hit_rate``: the optimisation set, the paper's
    measure), ``test`` (held-out images) and ``search`` (the searched boxes)."""
    digit = plain_value(config, "data.digit")  # ${digit} in the presets
    clutter = plain_value(config, "data.distortion.num_patches", 0)
    metrics = run_metrics(folder)

    def value(key: str) -> float | None:
        v = metrics.get(key)
        return float(v) if isinstance(v, int | float) else None

    return {
        "folder": folder,
        "digit": digit,
        "column": "TC" if clutter else "T",  # num_patches 0 (or none): no clutter
        "found": value("train/coloc/hit_rate"),
        "test": value("test/coloc/hit_rate"),
        "search": value("train/coloc/search_hit_rate"),
    }


def colocalisation_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (digit, T/TC): ``n`` runs with a result and the means (in %) of
    ``found``, ``test`` and ``search`` over them, beside the paper's ``(low, high)``."""
    cells: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["digit"], run["column"]), []).append(run)
    rows = []
    for (digit, column), members in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        done = [m for m in members if m["found"] is not None]

        def mean(key: str, done: list[dict[str, Any]] = done) -> float | None:
            values = [m[key] for m in done if m[key] is not None]
            return 100.0 * statistics.fmean(values) if values else None

        rows.append(
            {
                "digit": digit,
                "column": column,
                "n": len(done),
                "found": mean("found"),
                "test": mean("test"),
                "search": mean("search"),
                "paper": paper.PAPER_COLOCALISATION.get(column),
                "runs": [str(m["folder"]) for m in members],
            }
        )
    return rows


def colocalisation_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """The paper's Table-5 layout: digits × (T, TC), ``found % (test %)`` per cell."""
    columns = [c for c in ("T", "TC") if any(r["column"] == c for r in rows)]
    by_cell = {(r["digit"], r["column"]): r for r in rows}
    digits = list(dict.fromkeys(r["digit"] for r in rows))

    def text(row: dict[str, Any] | None) -> str:
        if row is None or row["found"] is None:
            return "–"
        test = f" ({row['test']:.0f})" if row["test"] is not None else ""
        return f"{row['found']:.0f}{test}" + (f" n={row['n']}" if row["n"] > 1 else "")

    def paper_text(column: str) -> str:
        low, high = paper.PAPER_COLOCALISATION[column]
        return f"{low:g}" if low == high else f"{low:g}–{high:g}"

    lines = [f"# {title}", ""] if title else []
    lines += ["| digit | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for digit in digits:
        cells = [text(by_cell.get((digit, c))) for c in columns]
        lines.append(f"| {digit} | " + " | ".join(cells) + " |")
    means = []
    for c in columns:
        found = [r["found"] for r in rows if r["column"] == c and r["found"] is not None]
        test = [r["test"] for r in rows if r["column"] == c and r["test"] is not None]
        if found and test:
            means.append(f"{statistics.fmean(found):.1f} ({statistics.fmean(test):.1f})")
        else:
            means.append("–")
    lines.append("| mean | " + " | ".join(means) + " |")
    lines.append("| paper | " + " | ".join(paper_text(c) for c in columns) + " |")
    lines += [
        "",
        "% of the optimisation set's images localised (IoU > 0.5; train/coloc/hit_rate at the "
        "last epoch, the paper's measure) and in brackets of the held-out test images "
        "(test/coloc/hit_rate). The paper gives T as 100% and TC as a range over the classes.",
    ]
    return "\n".join(lines) + "\n"


def write_colocalisation(
    rows: list[dict[str, Any]], out_dir: str | Path, title: str = ""
) -> tuple[Path, Path]:
    """Write ``colocalisation.md`` and ``colocalisation.csv`` (one row per digit and T/TC)."""
    md, table = output_files(out_dir, "colocalisation.md", "colocalisation.csv")
    write_text(md, colocalisation_table(rows, title))
    records = [
        {
            **row,
            "paper": "" if row["paper"] is None else "–".join(f"{v:g}" for v in row["paper"]),
            "runs": ";".join(row["runs"]),
        }
        for row in rows
    ]
    write_csv(table, records, COLOCALISATION_FIELDS)
    return md, table


def is_training_run(config: Any) -> bool:
    """Whether a run folder's config is a training run's (eval, robustness … are not)."""
    return isinstance(config, dict) and "model" in config and "data" in config


def build_report(paths: Iterable[str | Path], out_dir: str | Path, title: str = "") -> list[dict]:
    """Find the runs under ``paths``, aggregate them per cell and write the three files
    (and, for co-localisation runs, ``colocalisation.md`` and ``.csv``). Returns the
    Table-1 cells (empty when every run is a co-localisation run).

    Folders of other tasks found below ``paths`` (eval, robustness, …) are skipped. A bar
    on a terminal counts the folders read.
    """
    paths = list(paths)
    folders = find_runs(paths)
    runs, colocalisation, damaged = [], [], 0
    for folder in track(folders, "report: reading runs"):
        try:
            config = read_yaml_data(folder / ".hydra" / "config.yaml")
            if not is_training_run(config):
                continue
            if is_colocalisation_run(config):
                colocalisation.append(read_colocalisation_run(folder, config))
            else:
                runs.append(read_run(folder, config))
        except CheckpointError as err:  # a damaged or crafted run file: that run only
            log.warning("skipped %s: %s", folder, err)
            damaged += 1
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            log.warning(
                "skipped %s: its config is not a run's (%s: %s)", folder, type(err).__name__, err
            )
            damaged += 1
    skipped = len(folders) - len(runs) - len(colocalisation) - damaged
    if skipped:
        log.warning("skipped %d folder(s) that are not training runs", skipped)
    if not runs and not colocalisation:
        raise ConfigError(
            f"runs={list(map(str, paths))}: no training run among {len(folders)} folders"
        )
    rows = aggregate(runs)
    if rows:
        write_report(rows, out_dir, title)
    if colocalisation:
        write_colocalisation(colocalisation_rows(colocalisation), out_dir, COLOCALISATION_TITLE)
    return rows

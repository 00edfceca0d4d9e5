"""One table for a whole multirun: every job's overrides, status and final metrics.

``python -m stnlab.analysis.sweep outputs/train/multiruns/<time>`` (Hydra also writes it at
the end of every ``-m`` run) reads each job directory of the sweep (``.hydra/overrides.yaml``
plus ``metrics.json``, or ``failure.json`` for a job that failed) and writes
``summary.csv`` and ``summary.md`` in the sweep directory, sorted by the optimised metric,
best first; failed and unfinished jobs come last with their reason. A grid with a failed
job, or a search in which every trial failed, then exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from hydra.experimental.callback import Callback as HydraCallback

from stnlab.callbacks.pruning import PRUNED_ATTR
from stnlab.checkpoints import read_json_data, read_yaml_data
from stnlab.errors import CheckpointError
from stnlab.temp_files import atomic_path, write_text

log = logging.getLogger(__name__)

REPORTED = ("val/acc_best", "test/acc", "test/err", "test/loss")
FINISHED = ("ok", "pruned")
"""Job statuses that are results: a search's pruned trial stopped early by design."""


def lower_is_better(metric: str) -> bool:
    """``*loss`` and ``*err`` are minimised; accuracies are maximised."""
    return metric.endswith(("loss", "err", "loss_epoch"))


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(
        jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
    )


def read_job(job_dir: Path) -> dict[str, Any]:
    """``{"job", "overrides": {key: value}, "status", "error", metrics…}`` of one job dir.

    ``status``: ``ok`` (``metrics.json``), ``pruned`` (an Optuna trial its pruner stopped
    early, ``pruned_at_epoch`` in its metrics), ``failed`` (``failure.json``; the newer of the
    two when a rerun left both), ``terminated`` (cut off by SIGTERM; ``error`` says how to
    resume), ``unfinished``, or ``unreadable`` (a damaged file, named in ``error``)."""
    row: dict[str, Any] = {"job": job_dir.name, "overrides": {}, "error": ""}
    try:
        raw = read_yaml_data(job_dir / ".hydra" / "overrides.yaml") or []
        for item in raw if isinstance(raw, list) else []:
            key, _, value = str(item).partition("=")
            row["overrides"][key] = value
        metrics_file, failure_file = job_dir / "metrics.json", job_dir / "failure.json"
        metrics = read_json_data(metrics_file) if metrics_file.is_file() else None
        failure = read_json_data(failure_file) if failure_file.is_file() else None
    except CheckpointError as err:  # a damaged job file: this job's row says so
        return {**row, "status": "unreadable", "error": str(err)}
    rerun = isinstance(failure, dict) and isinstance(metrics, dict)
    if rerun and failure_file.stat().st_mtime >= metrics_file.stat().st_mtime:
        metrics = None  # a rerun that failed: the latest attempt counts
    if isinstance(metrics, dict):
        row["status"] = "pruned" if PRUNED_ATTR in metrics else "ok"
        row.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    elif isinstance(failure, dict):
        cut_off = failure.get("error") == "TerminatedError"
        row["status"] = "terminated" if cut_off else "failed"
        row["error"] = f"{failure.get('error')}: {failure.get('message', '')}".splitlines()[0]
    else:
        row["status"] = "unfinished"  # still running, or killed
    return row


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def summarize_sweep(
    sweep_dir: str | Path, metric: str = "val/acc_best"
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Write ``summary.csv`` and ``summary.md`` for ``sweep_dir``; return both paths and rows.

    Rows are sorted by ``metric`` (best first: lowest for losses and errors); jobs without
    it (failed, unfinished) follow in job order.
    """
    sweep = Path(sweep_dir)
    jobs = _job_dirs(sweep)
    if not jobs:
        raise FileNotFoundError(
            f"{sweep} holds no job directories (no */.hydra/overrides.yaml); pass the folder "
            "a multirun printed, e.g. outputs/train/multiruns/<date_time>"
        )
    rows = [read_job(job) for job in jobs]
    sign = 1.0 if lower_is_better(metric) else -1.0

    def order(row: dict[str, Any]) -> tuple[int, float]:
        value = row.get(metric)
        if isinstance(value, int | float) and not math.isnan(value):
            return (0, sign * value)
        return (1, 0.0)

    rows.sort(key=order)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["overrides"] if k not in keys]
    varying = [k for k in keys if len({r["overrides"].get(k, "") for r in rows}) > 1] or keys
    metrics = [metric, *(m for m in REPORTED if m != metric)]
    header = ["job", *varying, "status", *metrics, "error"]
    table = [
        [row["job"], *(row["overrides"].get(k, "") for k in varying), row["status"]]
        + [_format(row.get(m, "")) for m in metrics]
        + [row["error"]]
        for row in rows
    ]
    csv_path, md_path = sweep / "summary.csv", sweep / "summary.md"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table)
    failed = [r for r in rows if r["status"] not in FINISHED]
    lines = [
        f"# Sweep {sweep.name}: {len(rows)} jobs, {len(rows) - len(failed)} finished",
        "",
        f"Sorted by `{metric}` ({'lower' if sign > 0 else 'higher'} is better).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in table),
    ]
    write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path, rows


def sweep_failed(rows: list[dict[str, Any]], search: bool) -> bool:
    """Whether a finished multirun counts as failed (its command then exits with 1).

    A grid fails when any job did not finish: every job is a result someone asked for. A
    search (Optuna and other sweepers that propose trials) fails only when no trial
    finished; a failed trial is a normal outcome there, recorded and searched around.
    """
    failed = [r for r in rows if r["status"] not in FINISHED]
    return bool(failed) and (not search or len(failed) == len(rows))


def report_sweep(
    sweep_dir: str | Path, metric: str, *, search: bool = False, terminated: bool = False
) -> None:
    """Write the summary of the multirun in ``sweep_dir`` sorted by ``metric``, log each
    job that did not finish, and exit with status 1 when the sweep failed
    (:func:`sweep_failed`; ``search``: its jobs are a search's trials).

    ``terminated``: the sweep was stopped by SIGTERM; the summary names the jobs cut off
    and the process exits with status 143.
    """
    try:
        _, md_path, rows = summarize_sweep(sweep_dir, metric)
    except FileNotFoundError as err:
        log.warning("no sweep summary: %s", err)
        if terminated:
            sys.exit(143)
        return
    failed = [r for r in rows if r["status"] not in FINISHED]
    log.info("sweep summary: %s", md_path)
    for row in failed:
        log.error(
            "job %s (%s) %s %s",
            row["job"],
            " ".join(f"{k}={v}" for k, v in row["overrides"].items()),
            row["status"],
            row["error"],
        )
    # on stderr like every user-facing error (Hydra's own log goes to stdout)
    if terminated:
        cut = [r["job"] for r in rows if r["status"] in ("terminated", "unfinished")]
        print(
            f"Error: the sweep was terminated by SIGTERM; jobs cut off: {', '.join(cut) or 'none'}"
            f"; see {md_path} (each cut-off job says how to resume it)",
            file=sys.stderr,
        )
        sys.exit(143)
    if sweep_failed(rows, search):
        what = "trials" if search else "jobs"
        print(f"Error: {len(failed)} of {len(rows)} {what} failed; see {md_path}", file=sys.stderr)
        sys.exit(1)


def report_multirun(config: Any, terminated: bool = False) -> None:
    """:func:`report_sweep` for the multirun of ``config`` (its Hydra config)."""
    sweeper = str(config.hydra.get("sweeper", {}).get("_target_", ""))
    report_sweep(
        config.hydra.sweep.dir,
        config.get("optimized_metric") or "val/acc_best",
        search=not sweeper.endswith("BasicSweeper"),
        terminated=terminated,
    )


def _is_helper(proc: psutil.Process) -> bool:
    """A process the launcher keeps beside its workers (loky's resource tracker): it ends
    with this process and must not be signalled, or it reports leaks it no longer tracks."""
    with contextlib.suppress(psutil.Error):
        return any("resource_tracker" in part for part in proc.cmdline())
    return False


def stop_workers(wait_s: float = 120.0) -> list[int]:
    """Pass SIGTERM on to this process's worker processes (a parallel launcher's), wait up
    to ``wait_s`` for them to save and exit, then kill what is left of them and their own
    children. Returns the PIDs signalled."""
    me = psutil.Process()
    workers = [child for child in me.children() if not _is_helper(child)]
    below = [p for worker in workers for p in _children(worker)]
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(workers, timeout=wait_s)
    for proc in alive + below:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running():
                proc.kill()
    return [worker.pid for worker in workers]


def _children(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return proc.children(recursive=True)
    return []


class SweepSummary(HydraCallback):
    """Hydra callback: when a multirun ends, write its summary and report failures.

    Runs after every job, so all jobs run and the summary is written first; then a grid
    with a failed job, or a search in which every trial failed, exits with status 1
    (:func:`report_multirun`), so that a script or CI can tell.

    SIGTERM to the sweep's process stops its workers (:func:`stop_workers`: each saves a
    checkpoint and records how to resume), writes the summary with the jobs cut off and
    exits with status 143. A job running in this process (the basic launcher) handles the
    signal itself, and :func:`stnlab.tasks.runner.run` then ends the sweep the same way.
    """

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM: still stopping
            stop_workers()
            report_multirun(config, terminated=True)

        signal.signal(signal.SIGTERM, on_sigterm)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        report_multirun(config)


def main(argv: list[str] | None = None) -> None:
    """``python -m stnlab.analysis.sweep SWEEP_DIR [--metric val/acc_best]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory")
    parser.add_argument("--metric", default="val/acc_best", help="sort key (default: %(default)s)")
    args = parser.parse_args(argv)
    csv_path, md_path, _ = summarize_sweep(args.sweep_dir, args.metric)
    print(md_path.read_text(), end="")
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()

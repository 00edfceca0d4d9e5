"""Where a job runs: Hydra multirun context for loggers, and DDP re-launch inside Hydra.

Lightning's ``ddp`` strategy starts ranks 1…N-1 by running the script again. Its Hydra
support replays ``sys.argv``, which inside a multirun (``-m``) replays the *whole sweep* in
every child, each in new directories. :func:`install_ddp_relaunch` replaces that command
with one that runs exactly the current job as a single run, in the job's own directory:
``python src/train.py <this job's overrides> hydra.run.dir=<job dir>``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, open_dict


@dataclass(frozen=True)
class JobContext:
    """The Hydra job this process runs."""

    multirun: bool
    overrides: tuple[str, ...]  # this job's task overrides, e.g. ("model/loc_net=fc",)
    sweep_name: str | None  # the sweep folder's name, e.g. "2026-11-24_18-00-00"
    job_num: int | None


def job_context() -> JobContext | None:
    """The current Hydra job, or ``None`` outside ``@hydra.main`` (tests, notebooks)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return JobContext(
        multirun=multirun,
        overrides=tuple(hc.overrides.task),
        sweep_name=Path(str(hc.sweep.dir)).name if multirun else None,
        job_num=int(hc.job.num) if multirun else None,
    )


def sweep_group(ctx: JobContext, task_name: str = "train") -> str:
    """W&B group of a sweep's jobs: ``<task>/<sweep folder name>``, e.g. ``train/2026-…``."""
    return f"{task_name}/{ctx.sweep_name}"


def name_wandb_run(cfg: DictConfig, ctx: JobContext | None) -> None:
    """Name the W&B run as its folder: a single run by its run folder's name, a multirun's
    job ``<sweep folder>/<n>``, grouped by sweep and tagged with its overrides.

    Leaves a ``group`` or ``name`` the user set alone. Tags are cut to W&B's 64 characters.
    """
    node = (cfg.get("logger") or {}).get("wandb")
    if node is None:
        return
    with open_dict(cfg):
        if ctx is None or not ctx.multirun:
            if node.get("name") is None:
                node.name = Path(str(cfg.paths.output_dir)).name
            return
        if node.get("group") is None:
            node.group = sweep_group(ctx, str(cfg.get("task_name") or "train"))
        if node.get("name") is None:
            node.name = f"{ctx.sweep_name}/{ctx.job_num}"
        tags = list(node.get("tags") or [])
        node.tags = tags + [o[:64] for o in ctx.overrides if o[:64] not in tags]


def ddp_child_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and cwd that start DDP rank ``local_rank`` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    import __main__

    hc = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += list(hc.overrides.task)
    command += [
        f'hydra.run.dir="{hc.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",  # rank 0 wrote .hydra/ already
    ]
    return command, hc.runtime.cwd


def install_ddp_relaunch() -> None:
    """Make Lightning's script launcher start DDP children with :func:`ddp_child_command`."""
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = ddp_child_command


# Set by Lightning's launcher in the process that starts the DDP children.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def ddp_job_scope() -> Iterator[None]:
    """Leave no DDP state behind a job, so the next job of a multirun starts its own ranks.

    Lightning's launcher writes ``LOCAL_RANK`` & co. into ``os.environ`` of the launching
    process and keeps the process group; the next job in the same process would then take
    itself for an externally started rank and wait for peers that never come. This scope
    destroys the process group and restores those variables when the job ends.
    """
    saved = {key: os.environ.get(key) for key in _DDP_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

"""experiment=<cell> presets: one per Table-1 cell, the fast schedule at budget=0.02 by default,
the paper's schedule one override away, the budget knob."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from stnlab.analysis.paper import PAPER_TABLE1, dataset_label, model_label
from stnlab.tasks import train

PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))


def test_one_preset_per_table_cell() -> None:
    # fcn, cnn × R RTS P E TC; stn_fcn, stn_cnn × aff/proj/tps × R RTS P E, + aff on TC
    assert len(PRESETS) == 2 * 5 + 2 * (3 * 4 + 1)
    assert {"cnn_tc", "stn_cnn_aff_tc", "stn_fcn_tps_e", "fcn_r"} <= set(PRESETS)
    assert QUICK_PRESETS.issubset(PRESETS)


def test_presets_cover_36_distinct_cells_with_the_fast_schedule(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """Each preset composed once: its Table-1 cell, the paper's number in its comment, the
    fast schedule's 3,000 steps (the README's Table 1), the RTS pooling of the ST models."""
    cells = set()
    for name in PRESETS:
        resolved = OmegaConf.to_container(make_cfg(f"experiment={name}"), resolve=True)
        row, column = model_label(resolved), dataset_label(resolved["data"]["variant"])
        cells.add((row, column))
        paper = PAPER_TABLE1[row][column]
        comment = (Path(__file__).parents[1] / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert re.search(rf"the paper reports {paper}% test error", comment), (name, row, column)
        # the fast schedule at budget=0.02: 3,000 steps, warm-up then cosine decay
        assert resolved["budget"] == 0.02, name
        assert resolved["trainer"]["max_steps"] == 3_000, name
        assert resolved["model"]["scheduler"]["total_steps"] == 3_000, name
        assert resolved["model"]["optimizer"]["_target_"] == "torch.optim.AdamW", name
        assert resolved["model"]["scheduler_interval"] == "step", name
        post_pool = resolved["model"]["net"]["post_pool"] == 2
        assert ("ST" in row and column == "RTS") == post_pool, name
    assert len(cells) == len(PRESETS) == 36
    assert cells == {(row, col) for row, cols in PAPER_TABLE1.items() for col in cols}


# Trained by the default run: every model (FCN, CNN, ST-FCN, ST-CNN), every transform family
# (affine, projective, TPS) and every data column (R, RTS, P, E, TC) at least once. The other
# presets train under the e2e marker (`-m e2e`; CI runs them all).
QUICK_PRESETS = {"fcn_r", "cnn_tc", "stn_cnn_aff_rts", "stn_fcn_proj_p", "stn_cnn_tps_e"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=() if n in QUICK_PRESETS else pytest.mark.e2e) for n in PRESETS],
)
def test_preset_runs_one_batch(name: str, make_cfg: Callable[..., DictConfig]) -> None:
    metrics = train(make_cfg(f"experiment={name}", "debug=fdr"))
    assert 0.0 <= metrics["test/err"] <= 100.0


@pytest.mark.parametrize(
    ("budget", "steps", "milestones"),
    [(1.0, 150_000, [50_000, 100_000]), (0.01, 1500, [500, 1000]), (0.002, 300, [100, 200])],
)
def test_budget_scales_the_schedule_alike(
    budget: float, steps: int, milestones: list[int], make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg("experiment=stn_cnn_aff_rts", "schedule=paper", f"budget={budget}")
    assert cfg.trainer.max_steps == steps
    assert list(cfg.model.scheduler.milestones) == milestones
    assert cfg.data.batch_size == 32  # the test's override wins over the paper's 256


def test_budget_trains_that_many_steps_with_the_lr_divided(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg(
        "experiment=cnn_r", "schedule=paper", "budget=0.0001", "+trainer.limit_val_batches=1"
    )
    assert cfg.trainer.max_steps == 15
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    import torch

    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 15
    # milestones at 5 and 10 steps: 0.01 → 0.001 → 0.0001
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-4)


def test_bad_budget_is_refused(make_cfg: Callable[..., DictConfig]) -> None:
    from stnlab.errors import ConfigError

    cfg = make_cfg("experiment=cnn_r", "budget=0")
    with pytest.raises(ConfigError, match="budget=0"):
        train(cfg)

"""experiment=rotation/stn_cnn_sim: the recipe that turns R's digits upright, as documented."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from stnlab.tasks.train import train


def test_the_rotation_preset_is_the_documented_recipe_and_runs(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("experiment=rotation/stn_cnn_sim")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    transformer = resolved["model"]["net"]["transformer"]
    assert transformer["transform"]["_target_"] == "stnlab.geometry.SimilarityTransform"
    assert transformer["loc_net"]["input_pool"] == 1
    assert resolved["data"]["distortion"]["max_angle"] == 90.0  # R: ±90°
    assert resolved["trainer"]["max_steps"] == 3_000  # the fast schedule at budget=0.02
    assert resolved["model"]["loc_lr_mult"] == 0.33
    metrics = train(make_cfg("experiment=rotation/stn_cnn_sim", "debug=fdr"))
    assert 0.0 <= metrics["test/err"] <= 100.0
    assert "val/pose/rotation_undone" in metrics

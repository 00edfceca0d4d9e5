"""Config helpers: the W&B online/offline decision (credentials; the server is stubbed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stnlab import loggers as config
from stnlab.config import compose_config
from stnlab.errors import ConfigError
from stnlab.loggers import wandb_mode

KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a W&B API key


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No W&B mode or key, an empty ``NETRC``, and a W&B server that answers (stubbed)."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.ai")
    monkeypatch.setattr(config, "wandb_server_problem", lambda url, timeout_s: None)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_offline_without_credentials_and_the_server_is_not_asked(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(url: str, timeout_s: float) -> None:
        raise AssertionError(f"asked {url} without credentials")

    monkeypatch.setattr(config, "wandb_server_problem", no_network)
    assert wandb_mode() == "offline"


def test_online_with_an_api_key_or_a_login(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    clean_env.chmod(0o600)
    assert wandb_mode() is None  # online: W&B's own settings decide the rest
    clean_env.unlink()
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert wandb_mode() is None


def test_wandb_mode_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode() is None


def test_a_login_for_another_host_does_not_count(clean_env: Path) -> None:
    clean_env.write_text(f"machine example.com\n  login user\n  password {KEY}\n")
    clean_env.chmod(0o600)
    assert wandb_mode() == "offline"


def test_a_key_wandb_would_reject_is_a_config_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    with pytest.raises(ConfigError, match="WANDB_API_KEY invalid: API key must have 40"):
        wandb_mode()


@pytest.mark.parametrize("value", ["soon", "0", "-2"])
def test_the_probe_timeout_must_be_positive_seconds(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv(config.PROBE_TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match="STNLAB_WANDB_PROBE_TIMEOUT"):
        wandb_mode()


def test_the_quickstart_defaults(tmp_path: Path) -> None:
    """`python src/train.py`: the window ST-CNN on cluttered MNIST, 5 epochs of the fast
    recipe."""
    cfg = compose_config("train", [], output_dir=tmp_path, data_dir=tmp_path)
    assert cfg.data.variant == "cluttered" and cfg.data.canvas_size == 60
    transformer = cfg.model.net.transformer
    assert transformer._target_ == "stnlab.models.SpatialTransformer"
    assert transformer.transform._target_ == "stnlab.geometry.AttentionTransform"
    # a 24-pixel output; the window starts at 22 of the canvas's 60 pixels, spans 15 to 23
    assert transformer.output_size == 24 == cfg.model.net.backbone.input_size
    assert transformer.init_scale == pytest.approx(22 / 60)
    assert list(transformer.transform.scale_range) == pytest.approx([0.25, 23 / 60])
    assert transformer.loc_net.input_pool == 2
    assert cfg.trainer.max_epochs == 5 and "max_steps" not in cfg.trainer
    assert cfg.model.optimizer._target_ == "torch.optim.AdamW"
    assert (cfg.model.optimizer.lr, cfg.model.optimizer.weight_decay) == (0.01, 0.03)
    assert cfg.model.scheduler._target_ == "stnlab.schedules.WarmupDecayLR"
    assert cfg.model.scheduler_interval == "step"
    assert (cfg.model.loc_lr_mult, cfg.model.label_smoothing) == (0.33, 0.05)
    assert cfg.callbacks.transform_grid.every_n_epochs == 1


def test_the_fast_schedule_is_its_epoch_recipe_counted_in_steps(tmp_path: Path) -> None:
    def model_of(*overrides: str) -> dict:
        cfg = compose_config("train", list(overrides), output_dir=tmp_path, data_dir=tmp_path)
        return OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[return-value]

    steps = model_of("experiment=stn_cnn_aff_rts")  # presets: fast at budget=0.02
    epochs = model_of("experiment=stn_cnn_aff_rts", "schedule=fast_epochs")
    assert steps["scheduler"].pop("total_steps") == 3000
    assert epochs["scheduler"].pop("total_steps") == -1
    assert steps == epochs
    paper = model_of("experiment=stn_cnn_aff_rts", "schedule=paper", "budget=0.01")
    assert paper["optimizer"]["_target_"] == "torch.optim.SGD"
    assert paper["scheduler"]["milestones"] == [500, 1000]


@pytest.mark.parametrize(
    "family", ["translation", "attention", "attention_window", "similarity", "affine", "tps"]
)
def test_every_transform_family_builds_with_the_default_model(family: str, tmp_path: Path) -> None:
    """`python src/train.py -m model/transform=…` sweeps families of the Quickstart's model:
    its window starts zoomed in, so every family but translation must start there."""
    overrides = [f"model/transform={family}"]
    if family == "translation":  # cannot zoom: it starts at the whole canvas
        overrides.append("model.net.transformer.init_scale=1.0")
    cfg = compose_config("train", overrides, output_dir=tmp_path, data_dir=tmp_path)
    net = instantiate(cfg.model.net)
    assert net.transformer.transform.name == family.split("_")[0]
    with torch.no_grad():  # shapes only
        assert net(torch.rand(2, 1, 60, 60)).shape == (2, 10)
        assert net.transformer(torch.rand(2, 1, 60, 60)).shape == (2, 1, 24, 24)

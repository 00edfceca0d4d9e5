"""Config helpers: the W&B online/offline decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from stnlab.config import wandb_offline


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_offline_without_credentials(clean_env: Path) -> None:
    assert wandb_offline() is True


def test_online_with_an_api_key_or_a_login(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    clean_env.chmod(0o600)
    assert wandb_offline() is False
    clean_env.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    assert wandb_offline() is False


def test_wandb_mode_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline() is True
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_offline() is False


def test_a_login_for_another_host_does_not_count(clean_env: Path) -> None:
    clean_env.write_text("machine example.com\n  login user\n  password abc\n")
    clean_env.chmod(0o600)
    assert wandb_offline() is True

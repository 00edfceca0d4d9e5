"""The train and eval benchmarks run end to end (tiny settings) and print their JSON line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from stnlab.bench.__main__ import main
from stnlab.bench.train import CASES, compose_case


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_bench_train_reports_the_three_pipelines(fake_mnist: Path, capsys) -> None:
    argv = [
        "train",
        "--cases",
        "small/rotated",
        "--windows",
        "2",
        "--window-batches",
        "1",
        "--warmup",
        "1",
        "--workers",
        "0",
        "--data-dir",
        str(fake_mnist),
        "--override",
        "data.val_size=100",
        "--override",
        "data.batch_size=32",
    ]
    assert main(argv) == 0
    result = _last_json(capsys.readouterr().out)["small/rotated"]
    for key in ("limit_samples_per_s", "stnlab_samples_per_s", "peer_samples_per_s"):
        assert result[key] > 0
    assert result["stnlab_over_limit"] == pytest.approx(
        result["stnlab_samples_per_s"] / result["limit_samples_per_s"], rel=5e-3, abs=6e-4
    )  # ratios are rounded to 3 decimals, rates to 0.1
    assert result["stnlab_over_peer"] == pytest.approx(
        result["stnlab_samples_per_s"] / result["peer_samples_per_s"], rel=5e-3, abs=6e-4
    )


def test_the_small_case_is_tutorial_sized(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    sizes = {}
    for name, overrides in CASES.items():
        cfg = compose_case(overrides, str(tmp_path), str(tmp_path / "out"))
        sizes[name] = sum(p.numel() for p in instantiate(cfg.model).parameters())
    assert 25_000 <= sizes["small/rotated"] <= 35_000
    assert sizes["stn_cnn/rts"] > 5 * sizes["small/rotated"]


def test_bench_eval_times_every_fixed_test_set(fake_mnist: Path, capsys) -> None:
    argv = ["eval", "--variants", "mnist", "rts", "--data-dir", str(fake_mnist)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = _last_json(out)
    assert result["samples"] == 400 and result["seconds"] > 0  # 2 variants × 200 test digits
    assert "rts" in out and "model input 28×28" in out


def test_channels_last_gives_the_same_logits(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    nets = []
    for flag in ("false", "true"):
        cfg = compose_case(
            ["model=stn_cnn", f"model.net.channels_last={flag}"], str(tmp_path), str(tmp_path)
        )
        torch.manual_seed(0)
        nets.append(instantiate(cfg.model).net.eval())
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(nets[0](x), nets[1](x), atol=1e-5)


def test_bench_train_on_a_missing_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device is available here"):
        main(["train", "--device", "cuda"])

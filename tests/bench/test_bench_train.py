"""The train and eval benchmarks run end to end (tiny settings, a controlled clock) and print
their JSON line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from stnlab.bench import train as train_bench
from stnlab.bench.__main__ import main
from stnlab.bench.train import CASES, compose_case


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_bench_train_reports_the_three_pipelines(
    fake_mnist: Path, capsys, monkeypatch: pytest.MonkeyPatch, ticking_clock: Callable
) -> None:
    clock = ticking_clock()
    # each pipeline runs for real; its clock ticks at its own pace (one tick per window)
    for name, tick in {"limit_rates": 0.25, "stnlab_rates": 1.0, "peer_rates": 0.5}.items():
        pipeline = getattr(train_bench, name)

        def at_pace(*args: object, tick: float = tick, pipeline: Callable = pipeline) -> object:
            clock.tick = tick
            return pipeline(*args)

        monkeypatch.setattr(train_bench, name, at_pace)
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
    out = capsys.readouterr().out
    assert _last_json(out)["small/rotated"] == {
        "limit_samples_per_s": 128.0,  # 32 samples per 0.25 s window
        "stnlab_samples_per_s": 32.0,
        "peer_samples_per_s": 64.0,
        "stnlab_over_limit": 0.25,
        "stnlab_over_peer": 0.5,
    }
    row = next(line for line in out.splitlines() if line.startswith("small/rotated "))
    spans = ["128", "(128–128)", "32", "(32–32)", "64", "(64–64)", "(0)"]
    assert row.split()[1:] == [*spans, "0.25", "0.50"]


def test_the_small_case_is_tutorial_sized(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    sizes = {}
    for name, overrides in CASES.items():
        cfg = compose_case(overrides, str(tmp_path), str(tmp_path / "out"))
        sizes[name] = sum(p.numel() for p in instantiate(cfg.model).parameters())
    assert 25_000 <= sizes["small/rotated"] <= 35_000
    assert sizes["stn_cnn/rts"] > 5 * sizes["small/rotated"]


def test_bench_eval_times_every_fixed_test_set(
    fake_mnist: Path, capsys, ticking_clock: Callable
) -> None:
    ticking_clock(0.25)
    argv = ["eval", "--variants", "mnist", "rts", "--data-dir", str(fake_mnist)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert _last_json(out) == {"samples": 400, "seconds": 1.0}  # 2 variants × 200 test digits
    # three clock reads per variant: start, rendered, done
    assert [line.split()[:4] for line in out.splitlines()[2:4]] == [
        ["mnist", "200", "0.25", "0.25"],
        ["rts", "200", "0.25", "0.25"],
    ]
    assert "model input 60×60" in out  # a fresh model of the default config (cluttered)


def test_channels_last_gives_the_same_logits(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    nets = []
    for flag in ("false", "true"):
        cfg = compose_case(
            ["model=stn_cnn", "data=rotated", f"model.net.channels_last={flag}"],
            str(tmp_path),
            str(tmp_path),
        )
        torch.manual_seed(0)
        nets.append(instantiate(cfg.model).net.eval())
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(nets[0](x), nets[1](x), atol=1e-5)


def test_bench_train_on_a_missing_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device is available here"):
        main(["train", "--device", "cuda"])


def test_stnlab_windows_that_outlast_an_epoch_are_all_timed(
    fake_mnist: Path, tmp_path: Path, ticking_clock: Callable
) -> None:
    """The small case's windows are longer than an epoch: each must still be timed."""
    ticking_clock(1.0)  # one tick per training batch
    cfg = compose_case(
        [*CASES["small/rotated"], "data.val_size=100", "data.batch_size=32"],
        str(fake_mnist),
        str(tmp_path / "out"),
    )
    args = SimpleNamespace(warmup=1, windows=4, device="cpu")
    rates = train_bench.stnlab_rates(cfg, args, 5, str(tmp_path))
    # 1 + 4 × 5 batches: more than the 16 batches of an epoch of the 500 fake digits
    assert len(rates.rates) == 4
    assert rates.median == pytest.approx(32.0)  # 5 batches of 32 per 5 ticks


def test_paired_windows_alternate_with_the_limit(
    fake_mnist: Path, tmp_path: Path, ticking_clock: Callable
) -> None:
    """--paired: a limit window after each stnlab window, each timed on its own side."""
    ticking_clock(1.0)  # stnlab: one tick per training batch; limit: one tick per window
    cfg = compose_case(
        [*CASES["small/rotated"], "data.val_size=100", "data.batch_size=32"],
        str(fake_mnist),
        str(tmp_path / "out"),
    )
    args = SimpleNamespace(warmup=1, windows=3, device="cpu")
    limit, ours = train_bench.paired_rates(cfg, args, 5, str(tmp_path))
    # 3 windows each (the fit crosses an epoch end: 1 + 3 × 5 + limit > 16 batches)
    assert ours.rates == pytest.approx((32.0, 32.0, 32.0))  # 5 × 32 samples per 5 ticks
    assert limit.rates == pytest.approx((160.0, 160.0, 160.0))  # 5 × 32 samples per tick


def test_bench_train_paired_reports_the_ratio_of_each_pair(
    fake_mnist: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stnlab.bench.timing import WindowRates

    def paired(*args: object) -> tuple[WindowRates, WindowRates]:
        return WindowRates((100.0, 200.0, 400.0)), WindowRates((90.0, 190.0, 200.0))

    monkeypatch.setattr(train_bench, "paired_rates", paired)
    monkeypatch.setattr(train_bench, "limit_rates", lambda *a: pytest.fail("ran unpaired"))
    argv = ["train", "--paired", "--cases", "small/rotated", "--windows", "3"]
    argv += ["--window-batches", "1", "--warmup", "1", "--workers", "0"]
    argv += ["--data-dir", str(fake_mnist), "--override", "data.val_size=100"]
    assert main(argv) == 0
    row = _last_json(capsys.readouterr().out)["small/rotated"]
    # pairs 0.9, 0.95, 0.5: their median, not the ratio of the medians (190 / 200)
    assert row["stnlab_over_limit"] == 0.9
    assert (row["stnlab_over_limit_low"], row["stnlab_over_limit_high"]) == (0.5, 0.95)


def test_floor_windows_alternate_with_the_limit(
    fake_mnist: Path, tmp_path: Path, ticking_clock: Callable
) -> None:
    """--floor: Lightning's bare loop, a limit window after each of its windows; it writes
    nothing but its rates (no checkpoints, no logs)."""
    from stnlab.config_checks import instantiate_checked

    ticking_clock(1.0)  # floor: one tick per training batch; limit: one tick per window
    cfg = compose_case(
        [*CASES["small/rotated"], "data.val_size=100", "data.batch_size=32"],
        str(fake_mnist),
        str(tmp_path / "out"),
    )
    dm = instantiate_checked(cfg.data, "data")
    dm.setup("fit")
    args = SimpleNamespace(warmup=1, windows=3, device="cpu")
    (tmp_path / "floor").mkdir()
    limit, floor = train_bench.floor_rates(cfg, dm, args, 5, str(tmp_path / "floor"))
    assert floor.rates == pytest.approx((32.0, 32.0, 32.0))  # 5 × 32 samples per 5 ticks
    assert limit.rates == pytest.approx((160.0, 160.0, 160.0))  # 5 × 32 samples per tick
    written = sorted(p.name for p in (tmp_path / "floor").rglob("*") if p.is_file())
    assert written == ["floor_rates.json"]


def test_bench_train_floor_reports_the_ratio_of_each_pair(
    fake_mnist: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stnlab.bench.timing import WindowRates

    def floor(*args: object) -> tuple[WindowRates, WindowRates]:
        return WindowRates((100.0, 200.0, 400.0)), WindowRates((99.0, 150.0, 380.0))

    def paired(*args: object) -> tuple[WindowRates, WindowRates]:
        return WindowRates((100.0, 100.0, 100.0)), WindowRates((90.0, 90.0, 90.0))

    monkeypatch.setattr(train_bench, "floor_rates", floor)
    monkeypatch.setattr(train_bench, "paired_rates", paired)
    argv = ["train", "--paired", "--floor", "--cases", "small/rotated", "--windows", "3"]
    argv += ["--window-batches", "1", "--warmup", "1", "--workers", "0"]
    argv += ["--data-dir", str(fake_mnist), "--override", "data.val_size=100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = _last_json(out)["small/rotated"]
    # pairs 0.99, 0.75, 0.95: their median and range; the floor's median rate
    assert row["floor_over_limit"] == 0.95
    assert (row["floor_over_limit_low"], row["floor_over_limit_high"]) == (0.75, 0.99)
    assert row["floor_samples_per_s"] == 150.0
    assert row["stnlab_over_limit"] == 0.9
    assert "floor: Lightning's bare loop / limit of each pair of windows: median 0.950" in out
    assert "paired: stnlab / limit of each pair of windows: median 0.900" in out

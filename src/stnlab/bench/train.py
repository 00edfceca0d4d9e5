"""Training throughput: stnlab's ``Trainer.fit`` path against the compute limit and a peer.

For each case (a model and a data variant) and the same model and batch size, in one
process, each after warm-up, as the median of several timed windows in samples per second:

* **limit**: a plain PyTorch loop (forward, backward, optimiser step) over a few batches
  of canvases rendered beforehand and already on the device: no data work at all;
* **stnlab**: the real ``Trainer.fit`` of ``src/train.py`` (on-device distortions, logging
  and the default callbacks; progress bar off), timed between training batches;
* **peer**: a plain loop fed by a ``DataLoader`` over a per-sample ``transforms.v2``
  pipeline of the same distortion family (``stnlab.bench.data``), at its fastest
  ``num_workers``.

``--paired`` measures stnlab against the limit in alternating windows inside the one
``Trainer.fit`` (a stnlab window, then a limit window right after it, and so on): the ratio
of each pair is taken a few seconds apart, so a machine whose speed drifts from one minute
to the next (a shared VM) moves both sides of it alike. Without it the limit runs before
the fit and the ratio carries that drift.

``--floor`` adds **Lightning's bare loop**: a ``Trainer.fit`` of a LightningModule that
holds nothing of stnlab's (cross-entropy on the limit's pre-rendered canvases, the same
network and optimiser; no data module, distortions, metrics, logging, scheduler or
callbacks), paired with limit windows in the same way. Its ratio to the limit is what
Lightning's own loop costs; what stnlab adds is the rest of stnlab's gap.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from stnlab.bench.data import PerSampleDigits, add_config_arguments, peer_transform
from stnlab.bench.timing import WindowRates, endless, now, synchronize, timed_windows
from stnlab.config import compose_config
from stnlab.config_checks import instantiate_checked, validate_config
from stnlab.data.datamodule import to_float
from stnlab.module import STNLitModule

CASES: dict[str, list[str]] = {
    "stn_cnn/rts": ["model=stn_cnn", "data=rts"],
    "stn_cnn/cluttered": ["model=stn_cnn", "data=cluttered"],
    "small/rotated": ["model=stn_small", "data=rotated"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--windows", type=int, default=5, help="timed windows per figure")
    parser.add_argument(
        "--window-batches", type=int, default=0, help="batches per window (0: about 2 s each)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where all three pipelines run"
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="time the limit in windows alternating with stnlab's, inside the one fit",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time Lightning's bare loop (no stnlab code) against the limit, paired",
    )
    add_config_arguments(parser)


def compose_case(overrides: list[str], data_dir: str, output_dir: str) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, as ``src/train.py`` would compose and check it."""
    cfg = compose_config("train", overrides, output_dir=output_dir, data_dir=data_dir)
    validate_config(cfg)
    return cfg


class WindowTimer(L.Callback):
    """Times windows of training batches inside ``Trainer.fit``; writes rates to a JSON file.

    The time between two ``on_train_batch_start`` calls of the same epoch covers everything
    a training step costs: forward, backward, optimiser, logging, callbacks, and fetching,
    moving and distorting the next batch. The interval that spans an epoch's end
    (validation, checkpoints, epoch-end callbacks) is left out, as the limit loop has none
    of that: a window is ``window_batches`` within-epoch intervals, after ``warmup``.

    With ``paired``, one window of the limit loop (a fresh model of the same config, its
    own optimiser, pre-rendered canvases; see :func:`limit_rates`) runs after each timed
    window, untimed by the stnlab side; ``limit_window`` gives that loop ready-made (a
    function as :func:`limit_window_of` returns), for a fit without stnlab's module.
    The file holds ``{"stnlab": [...], "limit": [...]}`` (the limit's list empty without
    ``paired`` or ``limit_window``).
    """

    def __init__(
        self,
        out_file: str,
        warmup: int,
        windows: int,
        window_batches: int,
        paired: bool = False,
        limit_window: Callable[[int], float] | None = None,
    ) -> None:
        self.out_file, self.warmup, self.paired = out_file, warmup, paired
        self.windows, self.window_batches = windows, window_batches
        self.rates: list[float] = []
        self.limit: list[float] = []
        self._limit_window = limit_window
        self._intervals = 0  # within-epoch intervals so far
        self._window = [0.0, 0]  # seconds and samples of the window being timed
        self._last: tuple[int, float, int] | None = None  # (epoch, time, samples) of the last batch

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.paired:
            self._limit_window = paired_limit(trainer, pl_module, self.window_batches)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, i: int) -> None:
        epoch = trainer.current_epoch
        closes = self._last is not None and self._last[0] == epoch  # an interval ends here
        at_boundary = closes and (self._intervals + 1 - self.warmup) % self.window_batches == 0
        if at_boundary and self._intervals + 1 >= self.warmup:
            synchronize(pl_module.device)  # window boundaries only: GPU work stays queued
        t = now()
        last = self._last if closes else None
        if last is not None:
            self._intervals += 1
            if self._intervals > self.warmup:
                self._window[0] += t - last[1]
                self._window[1] += last[2]
                if at_boundary:
                    self.rates.append(self._window[1] / self._window[0])
                    self._window = [0.0, 0]
                    if self._limit_window is not None and len(self.limit) < self.windows:
                        self.limit.append(self._limit_window(0 if self.limit else self.warmup))
                        t = now()  # the next interval starts after the limit's window
        self._last = (epoch, t, len(batch[1]) * trainer.world_size)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        rates = {"stnlab": self.rates[: self.windows], "limit": self.limit[: self.windows]}
        Path(self.out_file).write_text(json.dumps(rates))


def paired_limit(trainer: L.Trainer, pl_module: Any, window_batches: int) -> Callable[[int], float]:
    """The limit loop for a paired stnlab run (:func:`limit_window_of` with the run's
    config, data module and device)."""
    cfg = OmegaConf.create(pl_module.run_config)
    return limit_window_of(cfg, trainer.datamodule, pl_module.device, window_batches)


def limit_window_of(
    cfg: DictConfig, dm: Any, device: torch.device, window_batches: int
) -> Callable[[int], float]:
    """The limit loop, a window at a time: ``window(warmup)`` → samples/s of one window of
    ``window_batches`` steps after ``warmup`` untimed ones.

    A fresh model of ``cfg`` (seeded as :func:`limit_rates` seeds it, without touching the
    caller's random state), its own optimiser, and canvases rendered once from ``dm``'s
    training digits with a generator of their own."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        step = _train_step(instantiate_checked(cfg.model, "model"), device)
    batches = endless(limit_batches(cfg, dm, device))

    def window(warmup: int) -> float:
        return timed_windows(
            lambda: step(*next(batches)),
            warmup=warmup,
            windows=1,
            window_batches=window_batches,
            device=device,
        ).median

    return window


def _train_step(
    module: STNLitModule, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], int]:
    net = module.net.to(device).train()
    optimizer = module.make_optimizer()

    def step(x: torch.Tensor, y: torch.Tensor) -> int:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(y)

    return step


def _timed_loop(
    step: Callable[[torch.Tensor, torch.Tensor], int],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    args: argparse.Namespace,
    wb: int,
    device: torch.device,
) -> WindowRates:
    """The plain loop of the limit and peer pipelines: ``step`` on each of ``batches``."""
    return timed_windows(
        lambda: step(*next(batches)),
        warmup=args.warmup,
        windows=args.windows,
        window_batches=wb,
        device=device,
    )


def limit_batches(
    cfg: DictConfig, dm: Any, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four training batches of ``cfg.data.batch_size`` canvases ``(B, C, S, S)`` and labels
    ``(B,)``, rendered once on ``device`` with a generator of their own (the data module's
    training generator is left as it was)."""
    images, labels = dm.train_set.tensors
    gen = torch.Generator().manual_seed(0)
    distortions = torch.Generator(device=device).manual_seed(0)
    batches = []
    for _ in range(4):
        idx = torch.randperm(len(images), generator=gen)[: cfg.data.batch_size]
        digits = to_float(images[idx].to(device))
        batches.append((dm.distortion(digits, distortions), labels[idx].to(device)))
    return batches


def limit_rates(cfg: DictConfig, dm: Any, args: argparse.Namespace, wb: int) -> WindowRates:
    """Plain loop over pre-rendered canvases already on the device."""
    device = torch.device(getattr(args, "device", "cpu"))
    L.seed_everything(cfg.seed, verbose=False)
    step = _train_step(instantiate_checked(cfg.model, "model"), device)
    return _timed_loop(step, endless(limit_batches(cfg, dm, device)), args, wb, device)


def stnlab_rates(cfg: DictConfig, args: argparse.Namespace, wb: int, tmp: str) -> WindowRates:
    """The real ``Trainer.fit`` path with the default callbacks and logger."""
    return WindowRates(tuple(_timed_fit(cfg, args, wb, tmp, paired=False)["stnlab"]))


def paired_rates(
    cfg: DictConfig, args: argparse.Namespace, wb: int, tmp: str
) -> tuple[WindowRates, WindowRates]:
    """``(limit, stnlab)`` from alternating windows inside the one ``Trainer.fit``."""
    rates = _timed_fit(cfg, args, wb, tmp, paired=True)
    return WindowRates(tuple(rates["limit"])), WindowRates(tuple(rates["stnlab"]))


class BareLightning(L.LightningModule):
    """Lightning's own training loop around ``module``'s network and nothing of stnlab's:
    cross-entropy on ready batches and the same optimiser (:meth:`STNLitModule.make_optimizer`);
    no metrics, logging or scheduler. The floor that ``--floor`` times."""

    def __init__(self, module: STNLitModule) -> None:
        super().__init__()
        self.net = module.net
        self._make_optimizer = module.make_optimizer  # builds over this same network

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """Cross-entropy of canvases ``(B, C, S, S)`` against labels ``(B,)``."""
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._make_optimizer()


def floor_rates(
    cfg: DictConfig, dm: Any, args: argparse.Namespace, wb: int, tmp: str
) -> tuple[WindowRates, WindowRates]:
    """``(limit, floor)`` from alternating windows inside one ``Trainer.fit`` of
    :class:`BareLightning` over the limit's pre-rendered canvases: the cost of Lightning's
    loop alone (no data module, callbacks, logger, progress bar or checkpoints). Like the
    limit loop, it runs at full precision whatever ``trainer.precision`` says."""
    device = torch.device(args.device)
    out = Path(tmp) / "floor_rates.json"
    timer = WindowTimer(
        str(out),
        args.warmup,
        args.windows,
        wb,
        limit_window=limit_window_of(cfg, dm, device, wb),
    )
    L.seed_everything(cfg.seed, verbose=False)
    module = BareLightning(instantiate_checked(cfg.model, "model"))
    batches = limit_batches(cfg, dm, device)
    steps = args.warmup + args.windows * wb + 1
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
    )
    # one epoch of `steps` batches, each one of the canvases already on the device
    loader = DataLoader([batches[i % len(batches)] for i in range(steps)], batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    rates = json.loads(out.read_text())
    return WindowRates(tuple(rates["limit"])), WindowRates(tuple(rates["stnlab"]))


def _timed_fit(
    cfg: DictConfig, args: argparse.Namespace, wb: int, tmp: str, *, paired: bool
) -> dict[str, list[float]]:
    from stnlab.tasks import train

    out = Path(tmp) / "rates.json"
    total = args.warmup + args.windows * wb + 1
    total += total // 100 + 2  # room for the intervals left out at epoch ends
    with open_dict(cfg):
        cfg.test = False
        # Steps, not one epoch: a small model's windows outlast an epoch (214 batches
        # of rotated MNIST), and every window must be timed. WindowTimer leaves out the
        # interval of each epoch end (2 validation batches, epoch-end callbacks).
        cfg.trainer.max_epochs = -1
        cfg.trainer.max_steps = total
        cfg.trainer.limit_val_batches = 2
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_model_summary = False
        cfg.callbacks.bench_timer = {
            "_target_": "stnlab.bench.train.WindowTimer",
            "out_file": str(out),
            "warmup": args.warmup,
            "windows": args.windows,
            "window_batches": wb,
            "paired": paired,
        }
    train(cfg)
    return json.loads(out.read_text())


def peer_rates(
    cfg: DictConfig, dm: Any, args: argparse.Namespace, wb: int, variant: str
) -> tuple[WindowRates, int]:
    """Per-sample torchvision pipeline feeding a plain loop; the fastest ``num_workers``."""
    images, labels = dm.train_set.tensors
    transform, clutter = peer_transform(variant)
    dataset = PerSampleDigits(images, labels, transform, clutter)
    best: tuple[WindowRates, int] | None = None
    device = torch.device(args.device)
    for workers in args.workers:
        L.seed_everything(cfg.seed, verbose=False)
        step = _train_step(instantiate_checked(cfg.model, "model"), device)
        loader = DataLoader(
            dataset,
            batch_size=cfg.data.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=True,
            pin_memory=device.type == "cuda",
        )
        batches = endless(loader)
        rates = _timed_loop(step, batches, args, wb, device)
        if best is None or rates.median > best[0].median:
            best = (rates, workers)
        batches.close()
    assert best is not None
    return best


def _window_batches(
    cfg: DictConfig, dm: Any, args: argparse.Namespace
) -> tuple[int, WindowRates | None]:
    """Batches per window: as given, or enough for about two seconds of limit steps; with
    the rates of that probe run, if one ran."""
    if args.window_batches > 0:
        return args.window_batches, None
    probe_args = argparse.Namespace(warmup=args.warmup, windows=1, device=args.device)
    probe = limit_rates(cfg, dm, probe_args, 2)
    return max(2, round(2.0 * probe.median / cfg.data.batch_size)), probe


def _report_pairs(
    row: dict[str, float], key: str, side: WindowRates, limit: WindowRates, label: str
) -> None:
    """Put the median and range of the pair ratios ``side / limit`` (window by window) into
    ``row`` as ``{key}_over_limit``, ``_low`` and ``_high``, and print them."""
    pairs = WindowRates(tuple(s / lim for s, lim in zip(side.rates, limit.rates, strict=True)))
    row[f"{key}_over_limit"] = round(pairs.median, 3)
    row[f"{key}_over_limit_low"] = round(pairs.low, 3)
    row[f"{key}_over_limit_high"] = round(pairs.high, 3)
    print(
        f"  ({label} / limit of each pair of windows: median {pairs.median:.3f}, "
        f"range {pairs.low:.3f}–{pairs.high:.3f})"
    )


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here (use --device cpu)")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} "
        f"threads, device {_device_name(args.device)}, median of {args.windows} windows after "
        f"{args.warmup} warm-up "
        "batches; samples/s"
    )
    columns = ("limit", "stnlab", "peer (workers)", "/limit", "/peer")
    widths = (24, 24, 28, 7, 6)
    print(f"{'case':<18} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    results: dict[str, dict[str, float]] = {}
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    for name in args.cases:
        variant = CASES[name][1].split("=", 1)[1]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_case(
                [*CASES[name], f"trainer.accelerator={accelerator}", *args.override],
                args.data_dir,
                tmp,
            )
            dm = instantiate_checked(cfg.data, "data")
            dm.prepare_data()
            dm.setup("fit")
            wb, probe = _window_batches(cfg, dm, args)
            if args.paired:
                limit, ours = paired_rates(cfg.copy(), args, wb, tmp)
            else:
                limit = limit_rates(cfg, dm, args, wb)
                ours = stnlab_rates(cfg.copy(), args, wb, tmp)
            floor = floor_rates(cfg, dm, args, wb, tmp) if args.floor else None
            peer, workers = peer_rates(cfg, dm, args, wb, variant)
            first_warmup = (probe or limit).warmup_seconds  # with any compile time
            if first_warmup is not None:
                print(f"  ({name}: {args.warmup} warm-up steps took {first_warmup:.1f} s)")
        row = {
            "limit_samples_per_s": round(limit.median, 1),
            "stnlab_samples_per_s": round(ours.median, 1),
            "peer_samples_per_s": round(peer.median, 1),
            "stnlab_over_limit": round(ours.median / limit.median, 3),
            "stnlab_over_peer": round(ours.median / peer.median, 3),
        }
        if args.paired:  # the ratio of each pair of windows, and their spread
            _report_pairs(row, "stnlab", ours, limit, f"{name}, paired: stnlab")
        if floor is not None:
            row["floor_samples_per_s"] = round(floor[1].median, 1)
            _report_pairs(row, "floor", floor[1], floor[0], f"{name}, floor: Lightning's bare loop")
        results[name] = row
        span = {
            k: f"{v.median:,.0f} ({v.low:,.0f}–{v.high:,.0f})"
            for k, v in (("limit", limit), ("stnlab", ours), ("peer", peer))
        }
        print(
            f"{name:<18} {span['limit']:>24} {span['stnlab']:>24} "
            f"{span['peer'] + f' ({workers})':>28} {row['stnlab_over_limit']:>7.2f} "
            f"{row['stnlab_over_peer']:>6.2f}"
        )
    return results

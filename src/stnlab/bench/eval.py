"""Evaluation time: one checkpoint on every fixed test set (7 variants × 10k digits).

Renders each variant's fixed test set exactly as training runs do (``data.eval_seed``),
resizes canvases to the model's input size where they differ, and classifies them in
batches of ``data.eval_batch_size`` without gradients. The time counts rendering and
inference; the last line is ``{"seconds": …, "samples": …}``.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
import torch.nn.functional as F

from stnlab.bench.data import add_config_arguments
from stnlab.bench.timing import now
from stnlab.bench.train import compose_case
from stnlab.checkpoints import load_checkpoint_net
from stnlab.config import data_variants
from stnlab.config_checks import instantiate_checked

ALL_VARIANTS = data_variants(single_digit=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", default=None, help="checkpoint (default: a fresh ST-CNN)")
    parser.add_argument("--variants", nargs="+", default=ALL_VARIANTS, choices=ALL_VARIANTS)
    parser.add_argument("--batch-size", type=int, default=256)
    add_config_arguments(parser)


def load_model(ckpt: str | None, overrides: list[str], data_dir: str) -> tuple[Any, int]:
    """The checkpoint's network (or a fresh default ST-CNN) in eval mode, and its input size."""
    if ckpt is None:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_case(overrides, data_dir, tmp)
        model = instantiate_checked(cfg.model, "model")
        size = int(cfg.data.canvas_size)
    else:
        model, run_config = load_checkpoint_net(ckpt)
        size = int(run_config["data"]["canvas_size"])
    return model.eval(), size


def run(args: argparse.Namespace) -> dict[str, float]:
    model, size = load_model(args.ckpt, args.override, args.data_dir)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; model input "
        f"{size}×{size}, batch {args.batch_size}"
    )
    print(f"{'variant':<11} {'samples':>8} {'render s':>9} {'infer s':>8} {'error %':>8}")
    total_seconds, total_samples = 0.0, 0
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_case([f"data={variant}", *args.override], args.data_dir, tmp)
        dm = instantiate_checked(cfg.data, "data")
        dm.prepare_data()
        start = now()
        dm.setup("test")
        rendered = now()
        images, labels = dm.test_set.tensors
        wrong = 0
        with torch.inference_mode():
            for first in range(0, len(images), args.batch_size):
                x = images[first : first + args.batch_size]
                if x.shape[-1] != size:
                    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
                logits = model(x)
                wrong += int((logits.argmax(1) != labels[first : first + args.batch_size]).sum())
        done = now()
        total_seconds += done - start
        total_samples += len(images)
        print(
            f"{variant:<11} {len(images):>8} {rendered - start:>9.2f} {done - rendered:>8.2f} "
            f"{100 * wrong / len(images):>8.2f}"
        )
    print(f"{'all':<11} {total_samples:>8} {total_seconds:>18.2f}")
    return {"seconds": round(total_seconds, 2), "samples": total_samples}

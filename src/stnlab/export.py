"""A checkpoint's network exported for use without stnlab: ``src/export.py``.

:func:`export_program` / :func:`export_onnx` / :func:`export_torchscript` write the
network (transformer included) as a ``torch.export`` (the default, ``pt2``), ONNX or
TorchScript file (deprecated in recent torch) and check that it reproduces the logits;
:func:`export_checkpoint` does it for a checkpoint.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stnlab.checkpoints import load_checkpoint_net
from stnlab.checks import check_not_input
from stnlab.errors import CheckpointError, ConfigError
from stnlab.temp_files import atomic_path


def _check_same(net: nn.Module, exported: Any, example: Tensor, what: str) -> float:
    with torch.inference_mode():
        want = net(example)
        got = exported(example)
    if not want.isfinite().all():
        raise CheckpointError(f"the checkpoint's network gives non-finite logits; no {what} export")
    diff = float((want - torch.as_tensor(got)).abs().max())
    if not diff <= 1e-4:  # NaN fails too
        raise RuntimeError(f"the {what} export gives other logits (max difference {diff:.3g})")
    return diff


def export_torchscript(net: nn.Module, example: Tensor, path: str | Path) -> float:
    """Trace ``net`` on ``example`` ``(B, C, S, S)`` into ``path``; return the largest
    logit difference to the eager network on a fresh batch (must be ≤ 1e-4).

    TorchScript is deprecated in recent torch releases; :func:`export_program` is the default.
    """
    net = net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks; checked below
        traced = torch.jit.trace(net, example, check_trace=False)
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    return _check_same(net, loaded, torch.rand(3, *example.shape[1:]), "TorchScript")


def export_onnx(net: nn.Module, example: Tensor, path: str | Path) -> float:
    """Write ``net`` as ONNX (opset 17, dynamic batch) and check it with onnxruntime.

    Needs the ``onnx``, ``onnxscript`` and ``onnxruntime`` packages (``pip install -e
    ".[export]"``); returns the largest logit difference to the eager network.
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(
            'format=onnx needs onnx, onnxscript and onnxruntime: pip install -e ".[export]"'
        ) from None
    net = net.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
            opset_version=17,
            dynamo=True,
            external_data=False,  # one self-contained file
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])

    return _check_same(net, run, torch.rand(3, *example.shape[1:]), "ONNX")


def export_program(net: nn.Module, example: Tensor, path: str | Path) -> float:
    """Save ``net`` as a ``torch.export`` program (``.pt2``, dynamic batch), the format
    PyTorch recommends now that TorchScript is deprecated; load it with
    ``torch.export.load(path).module()``. Returns the largest logit difference."""
    net = net.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
    return _check_same(net, loaded, torch.rand(3, *example.shape[1:]), "torch.export")


EXPORTERS = {
    "pt2": (export_program, ".pt2"),
    "onnx": (export_onnx, ".onnx"),
    "torchscript": (export_torchscript, ".pt"),
}

# The oldest torch each format works with, where that is newer than the package's floor
# (pyproject: torch>=2.4, which has torch.export's Dim, save and load, and torch.jit.trace).
# format=onnx calls torch.onnx.export(dynamo=True, dynamic_shapes=…, external_data=…): the
# torch.export-based exporter, previewed in torch 2.5 and documented from 2.6 on.
MIN_TORCH = {"onnx": (2, 6)}


def torch_release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a torch version string: ``"2.5.1+cpu"`` → ``(2, 5)``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"cannot read a torch version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def check_torch_supports(fmt: str) -> None:
    """Raise :class:`ConfigError` (one line) when the installed torch is older than
    ``fmt`` needs, naming both versions."""
    need = MIN_TORCH.get(fmt)
    if need is None or torch_release(torch.__version__) >= need:
        return
    wanted = ".".join(map(str, need))
    raise ConfigError(
        f"format={fmt} needs torch>={wanted}, but torch {torch.__version__} is installed: "
        f"pip install 'torch>={wanted}' (or pip install -e \".[export]\"), "
        f"or use format=pt2"
    )


def export_checkpoint(
    ckpt_path: str | Path, fmt: str, out_dir: str | Path, output: str | Path | None = None
) -> tuple[Path, float]:
    """Export a checkpoint's network as ``fmt`` (``pt2`` | ``onnx`` | ``torchscript``).

    The file goes to ``output`` or ``<out_dir>/model.<pt2|onnx|pt>``, written and checked
    beside it and renamed over it only once the check passed (an earlier export stays
    intact when it fails); ``output`` may not be the checkpoint itself, through links or
    not. Returns the file and the largest
    logit difference to the eager network. The exported model takes ``(B, C, S, S)``
    images in ``[0, 1]`` (normalisation is inside) and returns logits ``(B, K)``.
    """
    if fmt not in EXPORTERS:
        raise ConfigError(f"format={fmt!r} is unknown; valid: {list(EXPORTERS)}")
    check_torch_supports(fmt)
    exporter, suffix = EXPORTERS[fmt]
    net, config = load_checkpoint_net(ckpt_path)
    data = config["data"]
    size, channels = int(data["canvas_size"]), int(data["channels"])
    target = Path(output) if output else Path(out_dir) / f"model{suffix}"
    check_not_input(target, {"ckpt_path": ckpt_path}, "output")
    with atomic_path(target, f"{fmt} export") as tmp:
        diff = exporter(net, torch.rand(2, channels, size, size), tmp)
    return target, diff

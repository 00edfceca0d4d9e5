"""A checkpoint is data: crafted ones are refused by every command, before anything runs.

Each payload names a callable that would leave a trace (a file, a process, a socket) if
it were ever called; every test checks the refusal names the key path and target, and
that no trace exists afterwards.
"""

from __future__ import annotations

import copy
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from cli_helper import run_train
from stnlab import tasks
from stnlab.analysis.report import build_report
from stnlab.bench.eval import load_model
from stnlab.checkpoints import (
    ALLOWED_TARGETS,
    AtomicCheckpointIO,
    build_from_data,
    load_checkpoint_net,
    read_checkpoint,
)
from stnlab.errors import CheckpointError
from stnlab.export import export_checkpoint
from stnlab.prediction import predict_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_ckpt(tiny_run: tuple[Path, dict]) -> Path:
    """An honest ST-CNN checkpoint: the last.ckpt of the shared ``tiny_run`` (a few synthetic
    batches; tests/conftest.py). Crafted copies are written elsewhere; it is never changed."""
    return tiny_run[0].parent / "last.ckpt"


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = value


def payloads(trace: Path) -> dict[str, tuple[str, Any, str]]:
    """name → (where in stnlab_config, the node put there, text the refusal must name)."""
    touch = f"{sys.executable} -c \"open('{trace}', 'w')\""
    return {
        "builtins.open": (
            "model.net",
            {"_target_": "builtins.open", "_args_": [str(trace), "w"]},
            "model.net._target_='builtins.open'",
        ),
        "os.system": (
            "model.net",
            {"_target_": "os.system", "_args_": [touch]},
            "model.net._target_='os.system'",
        ),
        "subprocess.Popen": (
            "model.net.backbone",
            {"_target_": "subprocess.Popen", "_args_": [["touch", str(trace)]]},
            "model.net.backbone._target_='subprocess.Popen'",
        ),
        "torch.hub": (
            "model.net",
            {
                "_target_": "torch.hub.load_state_dict_from_url",
                "url": "http://127.0.0.1:9/payload.pt",
                "model_dir": str(trace),
                "weights_only": False,
            },
            "torch.hub.load_state_dict_from_url",
        ),
        "nested three deep": (
            "model.net.transformer.loc_net.extra",
            {"a": {"b": {"c": {"_target_": "os.system", "_args_": [touch]}}}},
            "model.net.transformer.loc_net.extra.a.b.c._target_='os.system'",
        ),
        "partial in a list": (
            "model.net.backbone.channels",
            [8, {"_target_": "builtins.exec", "_partial_": True, "_args_": ["1"]}],
            "model.net.backbone.channels[1]._target_='builtins.exec'",
        ),
        "data target": (
            "data.distortion",
            {"_target_": "builtins.open", "_args_": [str(trace), "w"]},
            "data.distortion._target_='builtins.open'",
        ),
        "interpolation": (
            "data.name",
            "${oc.env:HOME}",
            "stnlab_config.data.name='${oc.env:HOME}' is an interpolation",
        ),
    }


def craft(clean: Path, folder: Path, where: str, node: Any) -> Path:
    """A copy of ``clean`` whose stored config has ``node`` at ``where``."""
    checkpoint = torch.load(clean, map_location="cpu", weights_only=True)
    config = copy.deepcopy(checkpoint["stnlab_config"])
    _set(config, where, node)
    checkpoint["stnlab_config"] = config
    run = folder / "crafted_run" / "checkpoints"
    run.mkdir(parents=True)
    path = run / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and block) every outgoing socket connection of this process."""
    calls: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        calls.append(address)
        raise OSError("network blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return calls


def _digit_png(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = 255
    Image.fromarray(pixels).save(folder / "one.png")
    return folder


COMMANDS = ["train resume", "eval", "predict", "export", "robustness", "bench eval"]


def run_command(
    name: str,
    ckpt: Path,
    tmp_path: Path,
    make_cfg: Callable[..., DictConfig],
    make_task_cfg: Callable[..., DictConfig],
) -> None:
    out = tmp_path / "out"
    if name == "train resume":
        tasks.train(make_cfg("model=stn_cnn", "data=rotated", "debug=fdr", f"ckpt_path={ckpt}"))
    elif name == "eval":
        tasks.evaluate(make_task_cfg("eval", f"ckpt_path={ckpt}", "device=cpu"))
    elif name == "predict":
        predict_files(ckpt, _digit_png(tmp_path / "images"), out)
    elif name == "export":
        export_checkpoint(ckpt, "torchscript", out, None)
    elif name == "robustness":
        tasks.robustness(make_task_cfg("robustness", f"ckpts=[{ckpt}]", "device=cpu"))
    elif name == "bench eval":
        load_model(str(ckpt), [], str(tmp_path))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_every_payload(
    command: str,
    clean_ckpt: Path,
    tmp_path: Path,
    make_cfg: Callable[..., DictConfig],
    make_task_cfg: Callable[..., DictConfig],
    no_network: list[Any],
) -> None:
    trace = tmp_path / "TRACE"
    for name, (where, node, named) in payloads(trace).items():
        folder = tmp_path / name.replace(" ", "_").replace(".", "_")
        ckpt = craft(clean_ckpt, folder, where, node)
        before = ckpt.read_bytes()
        with pytest.raises(CheckpointError) as err:
            run_command(command, ckpt, folder, make_cfg, make_task_cfg)
        message = str(err.value)
        assert named in message, (name, message)
        assert "refused" in message or "interpolation" in message
        assert not trace.exists(), f"{name} ran through {command}"
        assert ckpt.read_bytes() == before  # the file itself is left alone
        assert not (folder / "out").exists() or not any((folder / "out").iterdir())
    assert no_network == []


@pytest.mark.e2e
def test_refused_through_the_predict_cli(
    clean_ckpt: Path, fake_mnist: Path, tmp_path: Path
) -> None:
    """The example of the issue, end to end: `builtins.open` would truncate a file."""
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    ckpt = craft(
        clean_ckpt,
        tmp_path,
        "model.net",
        {"_target_": "builtins.open", "_args_": [str(victim), "w"]},
    )
    images = _digit_png(tmp_path / "images")
    proc = run_train(
        fake_mnist,
        f"ckpt_path={ckpt}",
        f"input={images}",
        f"hydra.run.dir={tmp_path / 'predict_run'}",
        script="predict.py",
    )
    assert proc.returncode != 0
    assert "model.net._target_='builtins.open'" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert victim.read_text() == "keep me"


def test_lightning_resume_reads_tensors_only(tmp_path: Path) -> None:
    """Lightning's own read (resume) goes through the same checks: no pickled objects."""

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(tmp_path / "TRACE"), "w"))

    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not (tmp_path / "TRACE").exists()


def test_wandb_id_from_a_checkpoint_must_be_an_id(clean_ckpt: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(clean_ckpt, map_location="cpu", weights_only=True)
    checkpoint["stnlab_wandb_id"] = "${oc.env:HOME}"
    path = tmp_path / "odd_id.ckpt"
    torch.save(checkpoint, path)
    assert "stnlab_wandb_id" not in read_checkpoint(path)


def test_honest_checkpoints_still_load(clean_ckpt: Path) -> None:
    net, config = load_checkpoint_net(clean_ckpt)
    x = torch.rand(2, 1, 28, 28)
    assert net(x).shape == (2, 10)
    assert config["model"]["net"]["_target_"] == "stnlab.models.STNClassifier"


def test_build_from_data_honours_partial_and_args() -> None:
    sgd = build_from_data({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5})
    optimizer = sgd(params=[torch.nn.Parameter(torch.zeros(1))])
    assert optimizer.param_groups[0]["lr"] == 0.5
    with pytest.raises(CheckpointError, match=r"cfg\.x\._target_='os\.getcwd'"):
        build_from_data({"x": {"_target_": "os.getcwd"}}, "cfg")


def test_every_shipped_target_is_allowed() -> None:
    """The allow-list covers what conf/ builds (Hydra's own launchers, sweepers and callbacks
    aside: Hydra's plugin system builds those, never a checkpoint)."""
    targets = set()
    for file in (ROOT / "conf").rglob("*.yaml"):
        if "hydra" in file.relative_to(ROOT / "conf").parts:
            continue
        for line in file.read_text().splitlines():
            if line.strip().startswith("_target_:"):
                targets.add(line.split(":", 1)[1].split("#")[0].strip())
    targets = {t for t in targets if not t.startswith("hydra_plugins.")}
    assert targets, "no _target_ found in conf/"
    assert targets <= ALLOWED_TARGETS, targets - ALLOWED_TARGETS


def test_report_never_resolves_a_run_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report.py reads run folders as data: interpolations stay text, targets stay names."""
    monkeypatch.setenv("STNLAB_SECRET_FOR_TEST", "leaked-value")
    run = tmp_path / "runs" / "0"
    (run / ".hydra").mkdir(parents=True)
    config = {
        "seed": 1,
        "data": {"name": "${oc.env:STNLAB_SECRET_FOR_TEST}", "dataset": "mnist"},
        "model": {
            "net": {
                "backbone": {"_target_": "os.system", "_args_": ["touch TRACE"]},
                "transformer": None,
            }
        },
    }
    OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")
    OmegaConf.save(
        OmegaConf.create(["x=${oc.env:STNLAB_SECRET_FOR_TEST}"]), run / ".hydra" / "overrides.yaml"
    )
    (run / "metrics.json").write_text('{"test/err": 2.0}')
    rows = build_report([tmp_path / "runs"], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "leaked-value" not in text
    assert "leaked-value" not in (tmp_path / "report" / "report.csv").read_text()
    assert len(rows) == 1
    assert not (tmp_path / "TRACE").exists()

"""A W&B server that cannot be reached (issue #13, part 7): decided before training.

With credentials, the server is asked once, with a timeout, before a run goes online: no
answer → offline with one warning that names ``wandb sync``; with ``WANDB_MODE=online``
→ one error line. Only 127.0.0.1 is contacted: a closed port, and a socket that listens
but never answers (the kernel completes the connection, nobody reads or replies).
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from cli_helper import ROOT, cli_env
from stnlab.errors import ConfigError
from stnlab.loggers import PROBE_TIMEOUT_ENV, settle_wandb_mode, wandb_mode, wandb_server_problem
from stnlab.tasks import train

KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a W&B API key
WARNING = "cannot be reached"
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
TINY = [
    "debug=limit",  # fast_dev_run (debug=fdr) drops every logger; this one keeps W&B
    "trainer.max_epochs=1",
    "data.val_size=100",
    "data.batch_size=32",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=wandb",
]


@pytest.fixture
def closed_url() -> str:
    """The address of a port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """The address of a socket that accepts connections (backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An API key, no proxy, a 1 s probe and no cached answers from other tests."""
    for var in ("WANDB_MODE", *_PROXIES):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv(PROBE_TIMEOUT_ENV, "1")
    wandb_server_problem.cache_clear()
    yield
    wandb_server_problem.cache_clear()


@pytest.mark.parametrize("server", ["closed_url", "silent_url"])
def test_an_unreachable_server_means_offline_with_one_warning(
    server: str,
    request: pytest.FixtureRequest,
    with_key: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    url = request.getfixturevalue(server)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    run_dir = str(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="stnlab.loggers"):
        assert wandb_mode(run_dir) == "offline"  # a silent server: only the timeout ends it
        assert wandb_mode(run_dir) == "offline"  # resolved again: cached, no second warning
    warnings = [r.getMessage() for r in caplog.records if r.name == "stnlab.loggers"]
    assert len(warnings) == 1, warnings
    assert f"W&B server {url} {WARNING}" in warnings[0]
    assert f"wandb sync {run_dir}/wandb/offline-run-*" in warnings[0]


def test_wandb_mode_online_and_no_server_is_a_config_error(
    with_key: None, silent_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", silent_url)
    monkeypatch.setenv("WANDB_MODE", "online")
    cfg = OmegaConf.create({"logger": {"wandb": {"save_dir": str(tmp_path)}}})
    cfg.logger.wandb.mode = "${wandb_mode:${.save_dir}}"
    with pytest.raises(ConfigError, match=r"WANDB_MODE=online but the W&B server") as err:
        settle_wandb_mode(cfg)
    assert "\n" not in str(err.value)
    assert f"wandb sync {tmp_path}/wandb/offline-run-*" in str(err.value)


def test_wandb_mode_disabled_writes_no_wandb_files(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = make_cfg("logger=wandb", "debug=limit", "trainer.max_epochs=1")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "metrics.json").exists()
    assert not (out / "wandb").exists()
    assert os.environ["WANDB_MODE"] == "disabled"  # not turned into "dryrun" for the next job


def _train_cli(data_root: Path, run_dir: Path, **env: str) -> subprocess.CompletedProcess:
    environ = cli_env(data_root, WANDB_API_KEY=KEY, **env)
    # this checkout's stnlab, also where the installed one is another checkout's
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), environ["PYTHONPATH"]])
    for var in ("WANDB_MODE", *_PROXIES):
        if var not in env:
            environ.pop(var, None)
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, f"hydra.run.dir={run_dir}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=600)


@pytest.mark.e2e
def test_cli_falls_back_to_offline_and_trains(
    fake_mnist_root: Path, closed_url: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = _train_cli(fake_mnist_root, run_dir, WANDB_BASE_URL=closed_url)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert output.count(WARNING) == 1, output[-3000:]
    assert f"wandb sync {run_dir}/wandb/offline-run-*" in output
    assert "train/acc" in json.loads((run_dir / "metrics.json").read_text())
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1


@pytest.mark.parametrize("value", ["", "offlien"])
def test_wandb_mode_w_and_b_rejects_is_one_line(
    with_key: None, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WANDB_MODE", value)
    with pytest.raises(
        ConfigError, match=rf"WANDB_MODE='{value}' is not a W&B mode; valid: online"
    ):
        wandb_mode()


@pytest.fixture
def web_page_url() -> Iterator[str]:
    """A local web server that is not W&B: pages for GET/HEAD, an HTML 501 page for POST."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(ROOT / "conf"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.e2e
def test_cli_with_a_server_that_is_not_wandb_stops_with_one_line(
    fake_mnist_root: Path, web_page_url: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = _train_cli(fake_mnist_root, run_dir, WANDB_BASE_URL=web_page_url)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "<html" not in proc.stderr.lower()
    errors = [line for line in proc.stderr.splitlines() if "answered with a web page" in line]
    assert len(errors) == 1 and web_page_url in errors[0], proc.stderr[-3000:]
    assert "WANDB_MODE=offline" in errors[0]
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("mode", "says"),
    [("online", "WANDB_MODE=online but the W&B server"), ("", "WANDB_MODE='' is not a W&B mode")],
)
def test_cli_with_an_unusable_wandb_mode_stops_with_one_line_before_training(
    fake_mnist_root: Path, closed_url: str, tmp_path: Path, mode: str, says: str
) -> None:
    run_dir = tmp_path / "run"
    proc = _train_cli(fake_mnist_root, run_dir, WANDB_BASE_URL=closed_url, WANDB_MODE=mode)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if says in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert (closed_url if mode else "unset WANDB_MODE") in errors[0]
    assert not (run_dir / "checkpoints").exists()  # stopped before training
    assert json.loads((run_dir / "failure.json").read_text())["error"] == "ConfigError"

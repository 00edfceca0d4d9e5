"""The loggers' owner: the W&B online/offline decision, resumed W&B runs, finishing W&B,
and every logger's history across a resume.

* :func:`wandb_mode` (the ``${wandb_mode:…}`` resolver of ``conf/logger/wandb.yaml``) looks
  up credentials the way W&B does and, before a run would go online, asks the W&B server
  once whether it answers; :func:`settle_wandb_mode` makes that decision at start-up,
  before any data or model work.
* :func:`resume_wandb_id` / :func:`start_resumed_wandb`: a resumed run logs into its W&B
  run; :func:`close_wandb` finishes the run so the next job of a multirun gets its own.
* :func:`log_final_hparams`: TensorBoard's HParams view compares a sweep's jobs by their
  config and final metrics (``hp/*``).
* :func:`keep_csv_history`: TensorBoard adds a new event file beside the old ones and W&B
  resumes the same run id (offline: a second ``offline-run-*`` folder that ``wandb sync``
  merges), but Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts;
  this puts the rows from before the resumed step back.
"""

from __future__ import annotations

import csv
import functools
import http.client
import logging
import netrc
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from stnlab.checks import check_range
from stnlab.errors import ConfigError
from stnlab.temp_files import atomic_path

log = logging.getLogger(__name__)

WANDB_DEFAULT_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_ENV = "STNLAB_WANDB_PROBE_TIMEOUT"
PROBE_TIMEOUT_S = 5.0
_SYNC_HINT = "wandb sync {}/wandb/offline-run-*"
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "shared", "run")
"""The values W&B accepts for ``WANDB_MODE``."""
_warned_dirs: set[str] = set()


def wandb_base_url() -> str:
    """The W&B server a run would use: ``WANDB_BASE_URL``, else W&B's settings files
    (``wandb login --host``), else ``https://api.wandb.ai``."""
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url
    try:  # W&B's private settings object: any failure of it falls back to the default
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url or WANDB_DEFAULT_URL)
    except Exception as err:
        log.debug("W&B's settings could not be read (%s); using %s", err, WANDB_DEFAULT_URL)
        return WANDB_DEFAULT_URL


def _netrc_has_login(base_url: str) -> bool:
    host = urlparse(base_url).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_credentials(base_url: str) -> bool:
    """True when W&B would find credentials for ``base_url``; reads files, no network.

    Asks W&B's own lookup (``wandb.sdk.lib.wbauth``, without storing anything in the
    session): ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE``, ``.netrc`` (``NETRC``,
    ``~/.netrc``, ``~/_netrc``), then the ``api_key`` of W&B's settings files. With a wandb
    too old to have that module, or where the private call fails in any other way:
    ``WANDB_API_KEY`` or a ``.netrc`` entry for the host.
    W&B has no public helper that answers without side effects: ``wandb.login(prompt=
    False)`` writes its settings file, ``wandb.api.api_key`` is deprecated.

    Raises :class:`ConfigError` for a key or server address W&B would reject.
    """
    try:
        from wandb.errors import AuthenticationError
        from wandb.sdk.lib import wbauth
    except ImportError:
        return bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_login(base_url)
    try:
        auth = wbauth.authenticate_session(
            host=base_url, source="stnlab", prompt=False, update_session=False
        )
    except (AuthenticationError, ValueError) as err:
        raise ConfigError(
            f"W&B credentials for {base_url} are unusable: {err} Fix WANDB_API_KEY, "
            "WANDB_BASE_URL or ~/.netrc (`wandb login`), or log offline with WANDB_MODE=offline."
        ) from None
    except Exception as err:  # the private API changed under stnlab: the public lookup
        log.debug("W&B's credential lookup failed (%s); reading WANDB_API_KEY and .netrc", err)
        return bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_login(base_url)
    return auth is not None


def probe_timeout_s() -> float:
    """Seconds the W&B server may take to answer: ``STNLAB_WANDB_PROBE_TIMEOUT``, default 5."""
    text = os.environ.get(PROBE_TIMEOUT_ENV, "")
    try:
        timeout = float(text) if text else PROBE_TIMEOUT_S
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise ConfigError(f"{PROBE_TIMEOUT_ENV}={text!r} must be a number of seconds > 0")
    return timeout


@functools.cache
def wandb_server_problem(url: str, timeout_s: float) -> str | None:
    """Why the W&B server at ``url`` cannot be reached, or ``None`` when it answers.

    One HTTP request through the environment's proxy settings (``HTTPS_PROXY``,
    ``NO_PROXY``), bounded to ``timeout_s`` in all, name lookup included. Any HTTP status
    is an answer, and so is a certificate W&B may accept with its own CA settings.
    Cached per process, so a multirun asks once.
    """
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout_s):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except urllib.error.URLError as err:
            answered = isinstance(err.reason, ssl.SSLCertVerificationError)
            outcome.append(None if answered else str(err.reason))
        except (OSError, http.client.HTTPException) as err:  # timeouts, resets, garbage
            outcome.append(str(err) or type(err).__name__)

    # A daemon thread: a name lookup that hangs must neither delay the run nor its exit.
    thread = threading.Thread(target=ask, name="stnlab-wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


def wandb_mode(save_dir: str = "") -> str | None:
    """The ``mode`` for ``wandb.init``: ``"disabled"``, ``"offline"``, or ``None`` (online).

    ``WANDB_MODE`` set to anything W&B rejects (an empty value too) is a
    :class:`ConfigError`. ``WANDB_MODE=disabled`` → ``"disabled"`` (no W&B files);
    ``offline`` / ``dryrun`` → ``"offline"``. Without credentials → ``"offline"``, so a
    fresh machine works and ``wandb sync`` uploads later. With credentials, or
    ``WANDB_MODE=online``, the server is asked first (:func:`wandb_server_problem`,
    ``STNLAB_WANDB_PROBE_TIMEOUT`` seconds): when it does not answer the run logs offline,
    with one warning per ``save_dir`` that names the ``wandb sync`` command, or, with
    ``WANDB_MODE=online``, stops with a :class:`ConfigError`. ``None`` leaves the mode to
    W&B (online unless ``wandb offline``).
    """
    raw = os.environ.get("WANDB_MODE")
    mode = (raw or "").lower()
    if raw is not None and mode not in WANDB_MODES:
        raise ConfigError(
            f"WANDB_MODE={raw!r} is not a W&B mode; valid: online, offline, disabled "
            "(or unset it: `unset WANDB_MODE`)"
        )
    if mode == "disabled":
        return "disabled"
    if mode in ("offline", "dryrun"):
        return "offline"
    url = wandb_base_url()
    if mode != "online" and not wandb_credentials(url):
        return "offline"
    problem = wandb_server_problem(url, probe_timeout_s())
    if problem is None:
        return None
    run_dir = save_dir or "<run dir>"
    if mode == "online":
        raise ConfigError(
            f"WANDB_MODE=online but the W&B server {url} cannot be reached ({problem}): check "
            "the network or HTTPS_PROXY, or log offline (WANDB_MODE=offline) and upload later "
            f"with `{_SYNC_HINT.format(run_dir)}`"
        )
    if run_dir not in _warned_dirs:
        _warned_dirs.add(run_dir)
        log.warning(
            "W&B server %s cannot be reached (%s); logging offline. Upload later with: %s",
            url,
            problem,
            _SYNC_HINT.format(run_dir),
        )
    return "offline"


def settle_wandb_mode(cfg: DictConfig) -> None:
    """Make the W&B decision of ``cfg.logger.wandb`` now, before any data or model work.

    An unreachable server then costs seconds at start-up instead of a run that dies in
    ``wandb.init``, and a :class:`ConfigError` (``WANDB_MODE=online``) reaches the entry
    point as a one-line message; inside the resolver OmegaConf would wrap it. The
    logger's ``${wandb_mode:…}`` reuses the cached answer. A mode set by hand is left alone.
    """
    node = (cfg.get("logger") or {}).get("wandb")
    if node is not None and OmegaConf.is_interpolation(node, "mode"):
        wandb_mode(str(node.get("save_dir") or ""))


HPARAM_METRICS = ("test/err", "test/acc", "val/acc_best", "val/pose/undone")
"""The final metrics beside a run's config in TensorBoard's HParams view, as
``hp/test_err`` …: their own tags, so the curves of ``test/err`` … keep one point each."""
_NOT_HPARAMS = ("paths", "hydra", "callbacks", "logger")  # what is shown, not what is trained


def log_final_hparams(loggers: list[Any], config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Give every TensorBoard logger the run's ``config`` (nested, as resolved) with its
    final ``metrics`` (:data:`HPARAM_METRICS` that are present), for the HParams view.

    TensorBoard keeps one HParams record per run, so it is written once, at the end
    (``conf/logger/tensorboard.yaml`` turns Lightning's placeholder ``hp_metric`` off).
    W&B shows the config and the final metrics (its run summary) without help.
    """
    final = {
        f"hp/{key.replace('/', '_')}": float(metrics[key])
        for key in HPARAM_METRICS
        if isinstance(metrics.get(key), (int, float))
    }
    params = {k: v for k, v in config.items() if k not in _NOT_HPARAMS}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and final:
            logger.log_hyperparams(params, metrics=final)
            logger.save()


def keep_csv_history(loggers: list[Any], resume_step: int) -> None:
    """Keep each CSV logger's ``metrics.csv`` rows logged before ``resume_step``.

    Rows at or after ``resume_step`` were logged after the checkpoint being resumed and
    will be logged again, so they are dropped. Call before training starts.
    """
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") and int(float(r["step"])) < resume_step]
        writer = logger.experiment  # Lightning deletes the old file here
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(rows)
        writer.metrics_keys = sorted(header)
        log.info("kept %d rows of %s from before step %d", len(rows), path, resume_step)


def resume_wandb_run(cfg: DictConfig, checkpoint: dict[str, Any] | None) -> bool:
    """Log into the checkpoint's W&B run (same id) when resuming, unless an id is set."""
    run_id = (checkpoint or {}).get("stnlab_wandb_id")
    node = (cfg.get("logger") or {}).get("wandb")
    if run_id and node is not None and node.get("id") is None:
        with open_dict(cfg):
            node.id = run_id
        log.info("resuming W&B run %s", run_id)
        return True
    return False


def start_resumed_wandb(
    loggers: list[Any], cfg: DictConfig, wait_s: float = 30.0, poll_s: float = 5.0
) -> list[Any]:
    """Open the resumed W&B run now, waiting while a killed process still holds its id.

    W&B answers "run ID … is in use" while another client of the same W&B service still
    holds the run: after ``kill -9`` the dead process's service lingers for a few seconds,
    and a process started from one that ran W&B shares its service (``WANDB_SERVICE``).
    Retry for up to ``wait_s``; if the id is still held, log to a new run (same group and
    tags) rather than fail the resumed training.
    """
    out = []
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or getattr(rank_zero_only, "rank", 0) != 0:
            out.append(logger)
            continue
        deadline = time.monotonic() + wait_s
        while True:
            try:
                _ = logger.experiment
                out.append(logger)
                break
            except Exception as err:
                if "in use" not in str(err):
                    raise
                if time.monotonic() >= deadline:
                    log.warning(
                        "W&B run %s is still held by the interrupted process (%s); logging "
                        "the resumed part to a new W&B run",
                        cfg.logger.wandb.id,
                        err,
                    )
                    with open_dict(cfg):
                        cfg.logger.wandb.id = None
                    node = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
                    kwargs = {k: v for k, v in node.items() if k not in WATCH_KEYS}
                    fresh = without_unset_wandb_settings([instantiate(kwargs)])[0]
                    out.append(fresh)
                    break
                time.sleep(poll_s)
    return out


def close_wandb() -> None:
    """Finish the active W&B run, if any, so the next job of a multirun gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def log_table(
    loggers: list[Any],
    key: str,
    rows: list[dict[str, Any]],
    metrics: dict[str, float],
    image: Path | None = None,
) -> None:
    """Send scalar ``metrics`` to every logger; ``rows`` (a table) and ``image`` to W&B."""
    for logger in loggers:
        logger.log_metrics(metrics)
        if isinstance(logger, WandbLogger) and rows:
            columns = list(rows[0])
            logger.log_table(key=key, columns=columns, data=[[r[c] for c in columns] for r in rows])
            if image is not None:  # uint8 pixels: W&B saves float images as black PNGs
                from PIL import Image

                pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.uint8)
                logger.log_image(key=f"{key}_plot", images=[pixels])
        logger.save()
        logger.finalize("success")


def without_unset_wandb_settings(loggers: list[Any]) -> list[Any]:
    """``loggers``, each ``WandbLogger`` without the ``anonymous=None`` that Lightning passes
    to ``wandb.init`` unasked (W&B warns that the setting has no effect whenever it is given).
    Lightning keeps these arguments in ``WandbLogger._wandb_init``; where that changes,
    nothing is dropped."""
    for logger in loggers:
        init = getattr(logger, "_wandb_init", None)
        wandb_init = isinstance(logger, WandbLogger) and isinstance(init, dict)
        if wandb_init and "anonymous" in init and init["anonymous"] is None:
            del init["anonymous"]
    return loggers


WATCH_KEYS = ("watch", "watch_log_freq")
"""``logger.wandb`` keys that are stnlab's, not ``WandbLogger``'s: :func:`watch_model`."""
WATCH_CHOICES = (None, "gradients", "parameters", "all")


def wandb_watch(cfg: DictConfig) -> tuple[str | None, int]:
    """``(logger.wandb.watch, logger.wandb.watch_log_freq)``, checked at start-up: what
    :func:`watch_model` logs (``None``: nothing) and every how many steps."""
    node = (cfg.get("logger") or {}).get("wandb") or {}
    what = node.get("watch")
    if what not in WATCH_CHOICES:
        raise ConfigError(
            f"logger.wandb.watch={what!r} must be null, 'gradients', 'parameters' or 'all'"
        )
    freq = node.get("watch_log_freq", 100)
    check_range("logger.wandb.watch_log_freq", freq, integer=True, minimum=1)
    return what, int(freq)


def watch_model(loggers: list[Any], model: Any, what: str | None, freq: int) -> None:
    """``wandb.watch`` the model's gradients and/or parameters (``what``: gradients,
    parameters, all; ``None``: nothing), histograms every ``freq`` steps, in every W&B run."""
    if what is None:
        return
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.watch(model, log=what, log_freq=freq, log_graph=False)

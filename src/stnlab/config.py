"""Config-time helpers: OmegaConf resolvers used by ``conf/`` and start-up checks."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """True unless W&B credentials are configured (``WANDB_API_KEY`` or ``wandb login``).

    ``WANDB_MODE=offline|disabled|dryrun`` forces offline; ``WANDB_MODE=online`` forces
    online. Otherwise the run goes online exactly when an API key is found, so a fresh
    machine with no account works out of the box and ``wandb sync`` uploads later.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host or "api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def register_resolvers() -> None:
    """Register stnlab's OmegaConf resolvers (idempotent)."""
    resolvers = {
        "wandb_offline": wandb_offline,
        "floordiv": lambda a, b: int(a) // int(b),  # ${floordiv:${data.canvas_size},2}
        "mul": lambda a, b: int(a) * int(b),
        # ${fraction_of:${trainer.max_epochs},0.6}: an epoch count at 60% of training (>= 1)
        "fraction_of": lambda n, f: max(1, round(int(n) * float(f))),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()

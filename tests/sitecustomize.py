"""Imported by every Python process whose PYTHONPATH holds ``tests/`` (test subprocesses).

With ``STNLAB_TEST_TRUST_MNIST=<data root>`` set (see ``cli_helper.cli_env``) the synthetic
MNIST files under that root are trusted by their own checksums, in the CLI process and in
every worker it starts (DDP ranks, joblib and submitit jobs). Without it: nothing happens.
"""

import os

if os.environ.get("STNLAB_TEST_TRUST_MNIST"):
    from cli_helper import trust_synthetic_mnist

    trust_synthetic_mnist(os.environ["STNLAB_TEST_TRUST_MNIST"])

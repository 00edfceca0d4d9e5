"""The Optuna sweeper of ``hparams_search=…``: hydra-optuna-sweeper's, ending every search
with its summary.

hydra-optuna-sweeper asks the study for its best trial when the search ends, which raises
when no trial finished. Then neither the summary nor a readable error would appear: this
sweeper writes the sweep's summary instead and stops with one line (exit status 1), as a
grid sweep with failed jobs does (:func:`stnlab.analysis.sweep.report_multirun`).

Hydra imports every module under ``hydra_plugins`` at start-up; without the sweep extra
(``pip install -e ".[sweep]"``) this one defines nothing.
"""

from __future__ import annotations

from typing import Any

from stnlab.analysis.sweep import report_multirun

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _Base
except ImportError:  # the sweep extra is not installed
    _Base = None

if _Base is not None:

    class OptunaSweeper(_Base):
        """hydra-optuna-sweeper's ``OptunaSweeper``; a search in which no trial finished
        ends with the summary and one error line instead of Optuna's ``ValueError``."""

        def sweep(self, arguments: list[str]) -> Any:
            try:
                return super().sweep(arguments)
            except ValueError:
                report_multirun(self.sweeper.config)  # exits with 1 when every trial failed
                raise

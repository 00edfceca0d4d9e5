"""The commands' tasks, one module each, all run by :mod:`stnlab.tasks.runner`.

Tests call them in-process with a composed config; the entry points under ``src/`` add
only ``@hydra.main`` and :func:`~stnlab.tasks.runner.run`.
"""

from stnlab.tasks.evaluate import evaluate, robustness
from stnlab.tasks.export import export
from stnlab.tasks.gallery import gallery
from stnlab.tasks.predict import predict
from stnlab.tasks.report import report
from stnlab.tasks.train import train, train_job

__all__ = [
    "evaluate",
    "export",
    "gallery",
    "predict",
    "report",
    "robustness",
    "train",
    "train_job",
]

"""The paper's Table 1 (Jaderberg et al. 2015, test error %) and how a run maps onto it.

A run's *row* is its model (``CNN``, ``ST-CNN Aff``, …) and its *column* its data variant
(``R``, ``RTS``, …), both read from the run's config, so any run (an ``experiment=``
preset or a hand-made one) lands in the right cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# data.variant → Table-1 column; variants outside the table keep their own name.
COLUMNS: dict[str, str] = {
    "rotated": "R",
    "rts": "RTS",
    "projective": "P",
    "elastic": "E",
    "cluttered": "TC",
}
COLUMN_ORDER = ["R", "RTS", "P", "E", "TC"]
ROW_ORDER = [
    "FCN",
    "CNN",
    "ST-FCN Aff",
    "ST-FCN Proj",
    "ST-FCN TPS",
    "ST-CNN Aff",
    "ST-CNN Proj",
    "ST-CNN TPS",
]
# The paper lists one TC number per ST model kind; we attach it to the affine row.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "FCN": {"R": 2.1, "RTS": 5.2, "P": 3.1, "E": 3.2, "TC": 13.2},
    "CNN": {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 1.4, "TC": 3.5},
    "ST-FCN Aff": {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 2.7, "TC": 2.0},
    "ST-FCN Proj": {"R": 1.3, "RTS": 0.9, "P": 1.4, "E": 2.6},
    "ST-FCN TPS": {"R": 1.1, "RTS": 0.8, "P": 1.4, "E": 2.4},
    "ST-CNN Aff": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.2, "TC": 1.7},
    "ST-CNN Proj": {"R": 0.8, "RTS": 0.6, "P": 0.8, "E": 1.3},
    "ST-CNN TPS": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.1},
}
# MNIST addition (the paper's appendix, Table 4), test error %: the text gives one number
# per model, without saying which transform family produced it, so it stands beside every
# family's row. The paper has no ST-CNN models on this task.
PAPER_ADDITION: dict[str, float] = {"FCN": 47.7, "CNN": 14.7, "ST-FCN": 18.5, "2×ST-FCN": 5.8}
# Co-localisation (appendix A.2, Table 5), % of the 100 images localised (IoU > 0.5): the
# text gives T as 100% and TC as "between 75-93%" over the ten classes; the per-class
# numbers are an image in every copy we could read. (low, high) over the classes.
PAPER_COLOCALISATION: dict[str, tuple[float, float]] = {"T": (100.0, 100.0), "TC": (75.0, 93.0)}
_FAMILY_LABELS = {
    "AffineTransform": "Aff",
    "ProjectiveTransform": "Proj",
    "TPSTransform": "TPS",
}


def _short(target: str | None) -> str:
    return (target or "").rsplit(".", 1)[-1]


def model_label(config: Mapping[str, Any]) -> str:
    """The Table-1 row of a run config: ``FCN``, ``CNN``, ``ST-CNN Aff``, ``ST-FCN TPS``, …

    Models outside the table get a descriptive label of the same shape (``ST-CNN
    Similarity``, ``ST-CNN Aff @features``, ``IC-ST-CNN Aff``, ``2×ST-CNN Aff``).
    """
    net = config["model"]["net"]
    backbone = _short(net["backbone"].get("_target_")).upper()
    transformer = net.get("transformer")
    if not transformer:
        return backbone
    family = _short(transformer["transform"].get("_target_"))
    label = _FAMILY_LABELS.get(family, family.removesuffix("Transform"))
    prefix = "IC-ST" if _short(transformer.get("_target_")).startswith("IC") else "ST"
    copies = int(transformer.get("num_transformers") or 1)
    prefix = f"{copies}×{prefix}" if copies > 1 else prefix
    where = " @features" if net.get("transformer_at") == "features" else ""
    return f"{prefix}-{backbone} {label}{where}"


def dataset_label(name: str | None, source: str | None = "mnist") -> str:
    """A data variant's Table-1 column (``rts`` → ``RTS``); other names are kept.

    Images other than MNIST get their source appended (``R fashion_mnist``): the paper's
    numbers are for MNIST only, so :func:`paper_error` has none for such a column.
    """
    label = COLUMNS.get(name or "", name or "?")
    return label if source in (None, "mnist") else f"{label} {source}"


def paper_error(row: str, column: str) -> float | None:
    """The paper's test error % for a cell, or ``None`` where the paper has none.

    >>> paper_error("ST-CNN Aff", "RTS"), paper_error("2×ST-FCN TPS", "addition")
    (0.5, 5.8)
    """
    if column == "addition":
        return PAPER_ADDITION.get(row.split(" ")[0])
    return PAPER_TABLE1.get(row, {}).get(column)

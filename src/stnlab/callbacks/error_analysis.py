"""What the model gets wrong on the test set: a confusion matrix and a table of samples,
misclassified ones first, with what the transformer made of each."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from stnlab.callbacks.pictures import publish_picture
from stnlab.checks import check_range
from stnlab.image_grid import figure_pixels, to_bytes, to_rgb, to_uint8
from stnlab.temp_files import atomic_path

log = logging.getLogger(__name__)

COLUMNS = ("index", "label", "prediction", "probability", "label_probability", "correct")
"""The columns of ``test_predictions.csv`` (and, with the two images, of the W&B table)."""


@dataclass
class Samples:
    """Test samples kept for the table: ``images`` ``(K, C, H, W)`` ``uint8`` and, per
    sample, its index in the test set, label, prediction, the prediction's probability
    and the label's probability (all ``(K,)``), ordered by :func:`rank`."""

    images: Tensor
    index: Tensor
    label: Tensor
    prediction: Tensor
    probability: Tensor
    label_probability: Tensor

    def cat(self, other: Samples) -> Samples:
        """These samples followed by ``other``'s."""
        return Samples(
            *(torch.cat((a, b)) for a, b in zip(_parts(self), _parts(other), strict=True))
        )

    def take(self, order: Tensor) -> Samples:
        """The samples at ``order`` ``(K,)``, in that order."""
        return Samples(*(t[order] for t in _parts(self)))


def _parts(samples: Samples) -> list[Tensor]:
    return [getattr(samples, f.name) for f in fields(samples)]


def rank(label: Tensor, prediction: Tensor, probability: Tensor) -> Tensor:
    """The order of the table, as a score (higher first) ``(N,)``: misclassified samples
    first, the most confident mistakes on top, then correct ones, least confident first.

    >>> rank(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3]), torch.tensor([0.9, 0.6, 0.5]))
    tensor([0.1000, 1.6000, 0.5000])
    """
    wrong = prediction != label
    return torch.where(wrong, 1.0 + probability, 1.0 - probability)


class ErrorAnalysisCallback(L.Callback):
    """At the end of testing: the confusion matrix and the ``num_samples`` test samples
    that matter most (misclassified first, most confident mistakes on top, then the least
    confident correct ones).

    Writes to ``dirpath``: ``confusion_matrix.csv`` (rows: label, columns: prediction)
    and ``.png``, ``test_predictions.csv`` (:data:`COLUMNS`) and ``test_predictions.png``
    (each sample's input and transformed image with ``label → prediction (probability)``).
    The two pictures go to every W&B and TensorBoard logger (``confusion_matrix``,
    ``test_predictions``); W&B also gets ``test_predictions_table`` (a ``wandb.Table``
    with the images) and an interactive ``confusion_matrix_plot``.

    Needs the module's ``test_step`` to return the logits ``(B, num_classes)``; other
    modules are told once and skipped. The counts of the matrix are summed over DDP ranks;
    the table draws from rank 0's share of the test set.

    Args:
        dirpath: folder for the files (the run's ``test_analysis/`` in the default config).
        num_samples: rows of the table (and cells of its picture, at most 64).
        upscale: integer zoom of the images in the table.
    """

    def __init__(self, dirpath: str | Path, num_samples: int = 64, upscale: int = 2) -> None:
        check_range("callbacks.error_analysis.num_samples", num_samples, integer=True, minimum=1)
        self.dirpath = Path(dirpath)
        self.num_samples = num_samples
        self.upscale = upscale
        self._matrix: MulticlassConfusionMatrix | None = None
        self._kept: Samples | None = None
        self._seen = 0
        self._told = False

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._matrix, self._kept, self._seen = None, None, 0

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, Tensor) or outputs.ndim != 2:
            if not self._told:
                log.info("error analysis: test_step returns no logits; nothing logged")
                self._told = True
            return
        x, y = batch
        logits = outputs.detach()
        if self._matrix is None:
            self._matrix = MulticlassConfusionMatrix(num_classes=logits.shape[1])
            self._matrix = self._matrix.to(logits.device)
        probs = logits.float().softmax(dim=1)
        probability, prediction = probs.max(dim=1)
        self._matrix.update(prediction, y)
        # only this batch's candidates for the table leave the device
        score = rank(y, prediction, probability)
        pick = score.topk(min(self.num_samples, len(y))).indices
        batch_samples = Samples(
            images=to_bytes(x[pick]),
            index=self._seen + pick.cpu(),
            label=y[pick].cpu(),
            prediction=prediction[pick].cpu(),
            probability=probability[pick].cpu(),
            label_probability=probs[pick].gather(1, y[pick, None])[:, 0].cpu(),
        )
        self._seen += len(y)
        kept = batch_samples if self._kept is None else self._kept.cat(batch_samples)
        score = rank(kept.label, kept.prediction, kept.probability)
        self._kept = kept.take(score.topk(min(self.num_samples, len(score))).indices)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._matrix is None or self._kept is None or trainer.sanity_checking:
            return
        counts = self._matrix.compute().cpu()  # every rank: the counts are summed over ranks
        if trainer.global_rank != 0:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        self._write_confusion(trainer, counts)
        self._write_samples(trainer, pl_module, self._kept)

    # ---------------------------------------------------------------- confusion
    def _write_confusion(self, trainer: L.Trainer, counts: Tensor) -> None:
        classes = [str(i) for i in range(len(counts))]
        with (
            atomic_path(self.dirpath / "confusion_matrix.csv") as tmp,
            open(tmp, "w", newline="") as f,
        ):
            writer = csv.writer(f)
            writer.writerow(["label \\ prediction", *classes])
            for name, row in zip(classes, counts.tolist(), strict=True):
                writer.writerow([name, *row])
        errors = int(counts.sum() - counts.diag().sum())
        title = f"test confusion matrix: {errors} of {int(counts.sum())} misclassified"
        image = confusion_image(counts, title)
        publish_picture(
            trainer, "confusion_matrix", image, title, self.dirpath / "confusion_matrix.png"
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                rows = [
                    [classes[i], classes[j], int(counts[i, j])]
                    for i in range(len(classes))
                    for j in range(len(classes))
                ]
                table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows)
                fields = {"Actual": "Actual", "Predicted": "Predicted"}
                fields["nPredictions"] = "nPredictions"
                plot = wandb.plot_table(
                    "wandb/confusion_matrix/v1", table, fields, {"title": title}
                )
                logger.experiment.log({"confusion_matrix_plot": plot})

    # ------------------------------------------------------------------ samples
    def _write_samples(
        self, trainer: L.Trainer, pl_module: L.LightningModule, kept: Samples
    ) -> None:
        inputs = kept.images.float() / 255
        transformed = _transformed(pl_module, inputs)
        rows = [
            {
                "index": int(kept.index[i]),
                "label": int(kept.label[i]),
                "prediction": int(kept.prediction[i]),
                "probability": round(float(kept.probability[i]), 4),
                "label_probability": round(float(kept.label_probability[i]), 4),
                "correct": bool(kept.label[i] == kept.prediction[i]),
            }
            for i in range(len(kept.index))
        ]
        with (
            atomic_path(self.dirpath / "test_predictions.csv") as tmp,
            open(tmp, "w", newline="") as f,
        ):
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        wrong = sum(not r["correct"] for r in rows)
        title = f"test samples: {wrong} misclassified first, then the least confident"
        image = samples_image(inputs, transformed, rows, title)
        publish_picture(
            trainer, "test_predictions", image, title, self.dirpath / "test_predictions.png"
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                columns = ["input", "transformed", *COLUMNS]
                data = [
                    [
                        wandb.Image(_cell(inputs[i], self.upscale)),
                        None
                        if transformed is None
                        else wandb.Image(_cell(transformed[i], self.upscale)),
                        *(row[c] for c in COLUMNS),
                    ]
                    for i, row in enumerate(rows)
                ]
                logger.log_table(key="test_predictions_table", columns=columns, data=data)


def _transformed(pl_module: L.LightningModule, inputs: Tensor) -> Tensor | None:
    """What the network's transformer makes of ``inputs`` ``(K, C, H, W)``, on the CPU."""
    net = getattr(pl_module, "net", None)
    transformed_input = getattr(net, "transformed_input", None)
    if transformed_input is None:
        return None
    with torch.no_grad():
        out = transformed_input(inputs.to(pl_module.device))
    return None if out is None else out.float().cpu().clamp(0, 1)


def _cell(image: Tensor, zoom: int) -> np.ndarray:
    """``(C, H, W)`` in ``[0, 1]`` → ``uint8`` ``(H·zoom, W·zoom, 3)``."""
    pixels = to_uint8(to_rgb(image[None])[0])
    return pixels.repeat(zoom, axis=0).repeat(zoom, axis=1) if zoom > 1 else pixels


def confusion_image(counts: Tensor, title: str) -> np.ndarray:
    """The confusion matrix ``counts`` ``(K, K)`` (rows: label, columns: prediction) as a
    heat map with the counts written in: ``uint8`` ``(H, W, 3)``. The diagonal is left out
    of the colour scale, so the mistakes show."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    k = len(counts)
    off = counts.clone().double()
    off.fill_diagonal_(0)
    figure = Figure(figsize=(1.6 + 0.55 * k, 1.2 + 0.5 * k), dpi=100, layout="constrained")
    ax = figure.add_subplot(1, 1, 1)
    norm = LogNorm(vmin=1, vmax=max(2.0, float(off.max())))
    shown = np.ma.masked_less(off.numpy(), 1)  # zero off-diagonal cells stay white
    ax.imshow(shown, cmap="Reds", norm=norm)
    dark = float(off.max()) ** 0.5  # log scale: cells above the geometric middle are dark
    for i in range(k):
        for j in range(k):
            n = int(counts[i, j])
            if n:
                colour = "white" if i != j and n > dark else "black"
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title(title, fontsize=9)
    return figure_pixels(figure)


def samples_image(
    inputs: Tensor,
    transformed: Tensor | None,
    rows: list[dict[str, Any]],
    title: str,
    max_cells: int = 64,
) -> np.ndarray:
    """Up to ``max_cells`` samples, 8 to a row: each the input ``(C, H, W)`` beside its
    transformed image (when there is one) under ``label → prediction (probability)``,
    mistakes in red. ``uint8`` ``(H, W, 3)``."""
    from matplotlib.figure import Figure

    n = min(len(rows), max_cells)
    cols = min(8, n)
    lines = (n + cols - 1) // cols
    figure = Figure(figsize=(1.9 * cols, 1.25 * lines + 0.4), dpi=100, layout="constrained")
    for i in range(n):
        cell = _cell(inputs[i], 1)
        if transformed is not None:
            out = torch.nn.functional.interpolate(
                transformed[i : i + 1], size=inputs.shape[-2:], mode="nearest"
            )[0]
            bar = np.full((cell.shape[0], 2, 3), 255, dtype=np.uint8)
            cell = np.concatenate((cell, bar, _cell(out, 1)), axis=1)
        ax = figure.add_subplot(lines, cols, i + 1)
        ax.imshow(cell, interpolation="nearest")
        ax.set_axis_off()
        row = rows[i]
        colour = "black" if row["correct"] else "red"
        label = f"{row['label']} → {row['prediction']} ({row['probability']:.2f})"
        ax.set_title(label, fontsize=8, color=colour)
    figure.suptitle(title, fontsize=10)
    return figure_pixels(figure)

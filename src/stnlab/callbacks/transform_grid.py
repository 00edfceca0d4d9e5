"""Log what the transformer does: a fixed probe batch, inputs beside their transformed
images, every N epochs, and the same probes across all logged epochs (the evolution)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image
from torch import Tensor

from stnlab.callbacks.cadence import EveryNEpochs
from stnlab.callbacks.pictures import publish_picture
from stnlab.geometry import output_quad
from stnlab.image_grid import (
    BOX_COLOURS,
    draw_boxes,
    draw_quads,
    evolution,
    side_by_side,
    to_bytes,
)
from stnlab.temp_files import atomic_path

log = logging.getLogger(__name__)


class TransformGridCallback(EveryNEpochs):
    """Every ``every_n_epochs`` (and after the last epoch) log a transform grid.

    The probe batch is the first ``num_probes`` fixed validation images, so every grid of a
    run shows the same digits: inputs on the left, then one panel per parallel transformer
    (two-channel images, MNIST addition, in two colours). Each grid goes to
    ``<dirpath>/epoch_XXX.png`` and to every W&B and TensorBoard logger
    (``transform_grid``). After each grid the evolution is redrawn:
    ``<dirpath>/evolution.png``, one row per probe (the first ``evolution_probes``) with
    the first transformer's output at every logged epoch (at most 12 columns, evenly
    thinned). At the end of training ``<dirpath>/evolution.gif`` (the grids one after
    another) is written too, and both go to the loggers (``transform_evolution``; the GIF
    to W&B only, as TensorBoard needs moviepy for animations). The frames are kept in the
    checkpoint (``uint8``, a few kB per epoch), so a resumed run's evolution starts at its
    first epoch. Models without a transformer are told once and skipped.

    Args:
        dirpath: folder for the PNG files (the run's ``transform_grids/`` by default config).
        every_n_epochs: log after every N-th training epoch (must be >= 1).
        num_probes: number of probe images (a square number fills the grid).
        upscale: integer zoom of the PNG for legibility.
        evolution_probes: probes (rows) of the evolution picture.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_epochs: int = 5,
        num_probes: int = 16,
        upscale: int = 3,
        evolution_probes: int = 8,
    ) -> None:
        super().__init__(every_n_epochs, "callbacks.transform_grid")
        for name, value in (("num_probes", num_probes), ("evolution_probes", evolution_probes)):
            if value < 1:
                raise ValueError(f"callbacks.transform_grid.{name} must be >= 1, got {value}")
        self.dirpath = Path(dirpath)
        self.num_probes = num_probes
        self.upscale = upscale
        self.evolution_probes = evolution_probes
        self._warned = False
        self._inputs: Tensor | None = None  # uint8 (N, C, H, W) probes
        self._frames: list[tuple[int, Tensor]] = []  # (epoch, uint8 transformed probes)

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> bool:
        """Render the probe batch through the transformer and log it as ``epoch``."""
        net = getattr(pl_module, "net", None)
        transformed_inputs = getattr(net, "transformed_inputs", None)
        datamodule = getattr(trainer, "datamodule", None)
        if (
            transformed_inputs is None
            or datamodule is None
            or not hasattr(datamodule, "probe_batch")
        ):
            self._warn_once("the model or datamodule cannot show a transform; no grids logged")
            return False
        inputs, targets = datamodule.probe_batch(self.num_probes)
        inputs = inputs.to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            outputs = transformed_inputs(inputs)
            # A localiser (co-localisation) also shows where it cropped, beside the truth.
            found = net.boxes(inputs) if callable(getattr(net, "boxes", None)) else None
        pl_module.train(was_training)
        if outputs is None:
            self._warn_once("the model has no spatial transformer; no transform grids logged")
            return False
        if trainer.global_rank != 0:
            return True
        self._inputs = to_bytes(inputs)
        self._frames = [(e, f) for e, f in self._frames if e != epoch] + [
            (epoch, to_bytes(outputs[0]))
        ]
        shown = inputs
        caption = f"epoch {epoch}: inputs (left) → transformed (right)"
        titles = [f"epoch {epoch}: input", "transformer output"]
        transformer = getattr(net, "input_transformer", None)
        if found is None and transformer is not None:
            # outline the window the (first) transformer reads, turned as it reads it
            with torch.no_grad():
                family, theta = transformer.warp_params(inputs)
            shown = draw_quads(inputs, output_quad(family, theta, inputs.shape[-1]))
            caption = f"epoch {epoch}: inputs, the transformer's window in blue → its output"
            titles[0] = f"epoch {epoch}: input, window in blue"
        if found is not None:
            truth = ""
            if targets.ndim == 2 and targets.shape[1] == 4:  # the datamodule's true boxes
                shown = draw_boxes(shown, targets, BOX_COLOURS["true"])
                truth = " and the true box (green)"
            shown = draw_boxes(shown, found, BOX_COLOURS["found"])
            caption = f"epoch {epoch}: inputs with the crop's box (red){truth} → the crops"
        if len(outputs) > 1:
            caption = f"epoch {epoch}: inputs, then transformers 1–{len(outputs)} (left to right)"
            titles = [titles[0], *(f"transformer {k + 1}" for k in range(len(outputs)))]
        # uint8: W&B saves float images as black PNGs
        image = side_by_side(shown, *outputs, zoom=self.upscale, titles=titles, enlarge=True)
        publish_picture(trainer, "transform_grid", image, caption, self._path(f"epoch_{epoch:03d}"))
        self._write_evolution()
        return True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # the final grid, if not drawn yet
        if trainer.global_rank != 0 or not self._frames or trainer.fast_dev_run:
            return
        picture = self._write_evolution(gif=True)
        epochs = [e for e, _ in self._frames]
        caption = f"the probes at epochs {epochs[0]}–{epochs[-1]} (left: input)"
        publish_picture(trainer, "transform_evolution", picture, caption, path=None)
        gif = self.dirpath / "evolution.gif"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                video = wandb.Video(str(gif), format="gif", caption=caption)
                logger.experiment.log({"transform_evolution_gif": video})

    def _path(self, name: str) -> Path:
        return self.dirpath / f"{name}.png"

    def _write_evolution(self, gif: bool = False) -> Any:
        """Write ``evolution.png`` (and, with ``gif``, ``evolution.gif``) from the frames;
        return the picture."""
        assert self._inputs is not None
        inputs = self._inputs.float() / 255
        probes = min(self.evolution_probes, len(inputs))
        frames = [(e, f[:probes].float() / 255) for e, f in self._frames]
        picture = evolution(inputs[:probes], frames, zoom=max(1, self.upscale - 1))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path("evolution"), "picture") as tmp:
            Image.fromarray(picture).save(tmp)
        if gif:
            frames_gif = [
                Image.fromarray(
                    side_by_side(
                        inputs,
                        f.float() / 255,
                        zoom=self.upscale,
                        titles=[f"epoch {e}: input", "transformer output"],
                        enlarge=True,
                    )
                )
                for e, f in self._frames
            ]
            with atomic_path(self.dirpath / "evolution.gif", "picture") as tmp:
                frames_gif[0].save(
                    tmp, save_all=True, append_images=frames_gif[1:], duration=700, loop=0
                )
        return picture

    def state_dict(self) -> dict[str, Any]:
        """The probes and their transformed images so far (``uint8``), for a resumed run."""
        if self._inputs is None:
            return {}
        return {"inputs": self._inputs, "frames": [[e, f] for e, f in self._frames]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("inputs") is not None:
            self._inputs = state_dict["inputs"]
            self._frames = [(int(e), f) for e, f in state_dict.get("frames", [])]

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            log.warning("TransformGridCallback: %s", message)
            self._warned = True

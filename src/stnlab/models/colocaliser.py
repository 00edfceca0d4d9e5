"""Co-localisation (Jaderberg et al. 2015, appendix A.2): a spatial transformer crops each
image so that the crops of different images look alike to a frozen encoder, and unlike a
random crop of the same image. No class or box label is used.

Pure torch: :func:`triplet_hinge` is the loss, :class:`CropEncoder` the encoder ``e()``,
:class:`Colocaliser` the transformer and the encoder together, :func:`random_crop_matrix`
the rule that draws ``I_n^rand``, :func:`descriptor` how the encoder's layers are joined,
:func:`crop_grid` and :func:`choose_crops` the search whose boxes the transformer learns
(:meth:`Colocaliser.search_boxes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stnlab.checks import check_range
from stnlab.geometry import AttentionTransform, matrix_grid, output_box, sample
from stnlab.models.classifier import STNClassifier
from stnlab.models.transformer import SpatialTransformer


def triplet_hinge(
    crops: Tensor, negatives: Tensor, margin: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """The paper's co-localisation loss on embeddings ``crops`` ``(N, D)`` (``e(I_n^T)``)
    and ``negatives`` ``(N, D)`` (``e(I_n^rand)``, a random crop of the same image n):

    ``Σ_n Σ_{m≠n} max(0, ‖e_n − e_m‖² − ‖e_n − r_n‖² + α)`` over the ``N(N−1)`` ordered
    pairs. ``reduction="sum"`` is that sum, ``"mean"`` divides it by ``N(N−1)`` (the
    step size then does not depend on the batch size). Returns a scalar ``()``.

    >>> e = torch.tensor([[0.0], [1.0]])
    >>> triplet_hinge(e, torch.tensor([[2.0], [1.0]]), margin=1.0, reduction="sum")
    tensor(2.)
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    n = len(crops)
    if n < 2:
        raise ValueError(f"the triplet loss needs at least 2 images, got {n}")
    norms = crops.square().sum(dim=1)
    # (N, N): ‖e_n − e_m‖², expanded (cdist's gradient is NaN at the zero diagonal)
    between = (norms[:, None] + norms[None, :] - 2 * crops @ crops.T).clamp(min=0)
    to_random = (crops - negatives).square().sum(dim=1, keepdim=True)  # (N, 1)
    hinge = (between - to_random + margin).clamp(min=0)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=crops.device)
    total = hinge[off_diagonal].sum()
    return total / (n * (n - 1)) if reduction == "mean" else total


def random_crop_matrix(scale: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Attention warps ``(N, 3, 3)`` of random crops: scale ``scale`` ``(N,)`` (the side
    of the crop over the side of the image), centre uniform over the places where the crop
    lies inside the image (the centre of the image for a scale of 1 or more).

    >>> m = random_crop_matrix(torch.tensor([1.0, 0.5]))
    >>> m[:, 0, 0], m[0, :2, 2].abs().sum(), bool((m[1, :2, 2].abs() <= 0.5).all())
    (tensor([1.0000, 0.5000]), tensor(0.), True)
    """
    room = (1.0 - scale).clamp(min=0)  # |t| <= 1 − s keeps the crop inside
    unit = torch.rand(len(scale), 2, generator=generator, device=scale.device) * 2 - 1
    shift = unit.to(scale.dtype) * room.unsqueeze(1)
    matrix = torch.zeros(len(scale), 3, 3, dtype=scale.dtype, device=scale.device)
    matrix[:, 0, 0] = matrix[:, 1, 1] = scale
    matrix[:, :2, 2] = shift
    matrix[:, 2, 2] = 1.0
    return matrix


def crop_grid(scales: Sequence[float], steps: int) -> Tensor:
    """Attention θ ``(K, 3)`` ``(s, tx, ty)`` of candidate crops (:data:`CANDIDATE_FAMILY`),
    ``K = len(scales) · steps²``: for each scale (crop side over image side, in ``(0, 1]``),
    ``steps × steps`` centres spread evenly over the places where a crop of that scale
    lies inside the image.

    >>> theta = crop_grid([0.5, 1.0], 2)
    >>> theta.shape, theta[:4, 1].tolist(), theta[4:, 1:].abs().sum().item()
    (torch.Size([8, 3]), [-0.5, 0.5, -0.5, 0.5], 0.0)
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    thetas = []
    for scale in scales:
        if not 0 < scale <= 1:
            raise ValueError(f"every crop scale must be in (0, 1], got {scale}")
        room = 1.0 - scale
        centres = torch.linspace(-room, room, steps) if steps > 1 else torch.zeros(1)
        ty, tx = torch.meshgrid(centres, centres, indexing="ij")
        thetas.append(torch.stack((torch.full_like(tx, scale), tx, ty), dim=-1).view(-1, 3))
    return torch.cat(thetas)


CANDIDATE_FAMILY = AttentionTransform()
"""The unbounded attention family the search's candidates (:func:`crop_grid`) are θ of."""


def choose_crops(crops: Tensor, to_random: Tensor, margin: float = 1.0, sweeps: int = 3) -> Tensor:
    """One candidate crop per image that (locally) minimises the triplet hinge of
    :func:`triplet_hinge` over the ``N`` images: descriptors ``crops`` ``(N, K, D)`` of
    ``K`` candidate crops of each image, ``to_random`` ``(N, K)`` each candidate's squared
    distance to random crops of its image. Start: each image's candidate farthest from its
    random crops; then ``sweeps`` rounds of coordinate descent (each image in turn takes
    the candidate that minimises the hinge of every ordered pair it is in, the others'
    choices fixed). Returns the chosen indices ``(N,)``.

    >>> crops = torch.tensor([[[0.0], [5.0]], [[9.0], [5.0]]])  # 2 images, 2 candidates
    >>> choose_crops(crops, torch.full((2, 2), 4.0)).tolist()  # the alike pair wins
    [1, 1]
    """
    n = len(crops)
    choice = to_random.argmax(dim=1)
    norms = crops.square().sum(dim=2)  # (N, K)
    for _ in range(sweeps):
        changed = False
        for i in range(n):
            others = torch.arange(n, device=crops.device) != i
            chosen = crops[others, choice[others]]  # (N-1, D)
            between = (
                norms[i][:, None] + norms[others, choice[others]][None] - 2 * crops[i] @ chosen.T
            ).clamp(min=0)  # (K, N-1)
            as_anchor = (between - to_random[i][:, None] + margin).clamp(min=0)
            as_partner = (between - to_random[others, choice[others]][None] + margin).clamp(min=0)
            best = (as_anchor + as_partner).sum(dim=1).argmin()
            changed |= bool(best != choice[i])
            choice[i] = best
        if not changed:
            break
    return choice


def descriptor(layers: Sequence[Tensor], normalize: str | None = None) -> Tensor:
    """Concatenate activations ``layers`` (each ``(N, D_i)``) into descriptors ``(N, ΣD_i)``:
    raw (``None``), scaled to unit length (``"l2"``), or each layer scaled to unit length
    and the whole by ``1/√k`` (``"layer"``, ``k`` layers; unit length too). A zero row
    stays zero.

    >>> a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    >>> descriptor([a, b], "l2")
    tensor([[0.6000, 0.0000, 0.0000, 0.8000]])
    >>> descriptor([a, b], "layer") * 2**0.5
    tensor([[1.0000, 0.0000, 0.0000, 1.0000]])
    """
    if normalize == "layer":
        scaled = [nn.functional.normalize(a, dim=1) for a in layers]
        return torch.cat(scaled, dim=1) / len(layers) ** 0.5
    out = torch.cat(list(layers), dim=1)
    if normalize == "l2":
        return nn.functional.normalize(out, dim=1)
    if normalize is not None:
        raise ValueError(f"normalize must be None, 'l2' or 'layer', got {normalize!r}")
    return out


class CropEncoder(nn.Module):
    """The frozen encoder ``e()``: a trained classifier's activations as a descriptor.

    The paper concatenates the activations of the Sect. 4.1 CNN's layers, "two hidden
    layers and the classification layer without softmax". Here: every activation of the
    backbone's :meth:`~stnlab.models.CNN.layer_outputs` (the flattened conv features, each
    hidden FC layer, the logits), concatenated. Its weights never train: they are frozen,
    and the module stays in eval mode whatever ``train()`` asks.

    Args:
        classifier: a plain classifier (no transformer) whose backbone has
            ``layer_outputs``; its ``mean``/``std`` normalise the crops first. Its weights
            come from a trained checkpoint (the co-localisation module loads them).
        normalize: how the descriptor is scaled (the paper does not say): ``None`` (the raw
            activations: squared distances in the hundreds, so the margin α = 1 is
            negligible), ``"l2"`` (the concatenation scaled to unit length: squared
            distances in [0, 4]), ``"layer"`` (each layer scaled to unit length, then the
            concatenation by ``1/√k`` for ``k`` layers, so it has unit length too and the
            wide conv layer does not outweigh the hidden and logit layers).
    """

    NORMALIZE = (None, "l2", "layer")

    def __init__(self, classifier: STNClassifier, normalize: str | None = None) -> None:
        super().__init__()
        if normalize not in self.NORMALIZE:
            raise ValueError(f"normalize must be one of {self.NORMALIZE}, got {normalize!r}")
        self.normalize = normalize
        if classifier.transformer is not None:
            raise ValueError(
                "the co-localisation encoder is a plain classifier (transformer: null)"
            )
        if not hasattr(classifier.backbone, "layer_outputs"):
            raise ValueError(
                f"the encoder's backbone {type(classifier.backbone).__name__} has no "
                "layer_outputs; use stnlab.models.CNN (the paper's) or FCN"
            )
        self.classifier = classifier
        self.classifier.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> CropEncoder:
        """Stays in eval mode: the encoder is a fixed function."""
        return super().train(False)

    def forward(self, crops: Tensor) -> Tensor:
        """Crops ``(B, C, S, S)`` in ``[0, 1]`` → descriptors ``(B, D)``."""
        net = self.classifier
        x = (crops - net.mean) / net.std
        return descriptor([a.flatten(1) for a in net.backbone.layer_outputs(x)], self.normalize)


class Colocaliser(nn.Module):
    """A spatial transformer that crops each image, and the frozen encoder of the crops.

    Args:
        transformer: the localiser; the paper's family is attention (scale and shift, 3
            parameters), and its ``output_size`` is the crop's side (the encoder's input
            size, 28 for an MNIST classifier).
        encoder: the frozen :class:`CropEncoder`.
        negative_scale: the scale of the random crops ``I_n^rand``: ``None`` (default)
            takes the transformer's own scale for the same image (a crop of the same size
            at a random place, so only *where* the crop is can make it win), ``[low,
            high]`` a scale drawn uniformly in that range.
        search_scales: the crop scales :meth:`search_boxes` tries (crop side over image
            side), each at ``search_grid × search_grid`` places.
        search_grid: candidate centres per axis and scale.
        search_random_crops: random crops per image and scale that estimate
            ``‖e(I_n^T) − e(I_n^rand)‖²`` for each candidate.
        search_sweeps: rounds of coordinate descent in :func:`choose_crops`.
    """

    def __init__(
        self,
        transformer: SpatialTransformer,
        encoder: CropEncoder,
        negative_scale: Sequence[float] | None = None,
        search_scales: Sequence[float] = (0.25, 1 / 3, 0.45),
        search_grid: int = 7,
        search_random_crops: int = 8,
        search_sweeps: int = 3,
    ) -> None:
        super().__init__()
        if transformer.num_transformers != 1 or transformer.output_size is None:
            raise ValueError(
                "co-localisation needs one transformer with an output_size (the crop's side)"
            )
        if negative_scale is not None:
            low, high = (float(v) for v in negative_scale)
            if not 0 < low <= high:
                raise ValueError(
                    f"negative_scale must be [low, high], 0 < low <= high, got {negative_scale}"
                )
            negative_scale = (low, high)
        self.transformer = transformer
        self.encoder = encoder
        self.negative_scale = negative_scale
        self.register_buffer("candidates", crop_grid(search_scales, search_grid), persistent=False)
        check_range("search_random_crops", search_random_crops, integer=True, minimum=1)
        check_range("search_sweeps", search_sweeps, integer=True, minimum=0)
        self.search_random_crops = search_random_crops
        self.search_sweeps = search_sweeps

    @property
    def input_transformer(self) -> SpatialTransformer:
        """The transformer that warps the input image (pose recovery measures it)."""
        return self.transformer

    @property
    def crop_size(self) -> int:
        return int(self.transformer.output_size)  # type: ignore[arg-type]

    def crop(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``(B, C, H, H)`` → the transformer's crops ``(B, C, S, S)`` and its θ
        ``(B, P)``, from one localisation pass."""
        theta = self.transformer.predict_theta(x)
        side = self.crop_size
        crops = self.transformer.sampler(x, self.transformer.transform.grid(theta, (side, side)))
        return crops, theta

    def random_crops(
        self, x: Tensor, theta: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """One random crop ``(B, C, S, S)`` of each image ``x`` ``(B, C, H, H)``, its size
        by :attr:`negative_scale` (``theta`` ``(B, P)``: the transformer's)."""
        if self.negative_scale is None:
            scale = self.transformer.transform.to_matrix(theta.detach())[:, 0, 0].abs()
        else:
            low, high = self.negative_scale
            u = torch.rand(len(x), generator=generator, device=x.device, dtype=x.dtype)
            scale = low + (high - low) * u
        warp = random_crop_matrix(scale.to(x.dtype), generator)
        return sample(x, matrix_grid(warp, (self.crop_size, self.crop_size)))

    @torch.no_grad()
    def search_boxes(
        self, x: Tensor, margin: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """The candidate crop of each image ``x`` ``(B, C, H, H)`` that the triplet hinge
        prefers, found by search instead of descent (no label, no box): every crop of
        :attr:`candidates` is embedded, each candidate's distance to random crops of the
        same scale is estimated, and :func:`choose_crops` picks one per image. Returns their
        boxes ``(B, 4)`` in pixels of ``x``: what the transformer learns to predict, as
        descent on the hinge does not find them (docs/colocalisation.md).
        """
        b, k, side = len(x), len(self.candidates), self.crop_size
        grid = CANDIDATE_FAMILY.grid(self.candidates.to(x.dtype), (side, side))  # (K, S, S, 2)
        embedded = torch.stack(  # (B, K, D)
            [self.encoder(sample(img.expand(k, *img.shape[1:]), grid)) for img in x.unsqueeze(1)]
        )
        scales = self.candidates[:, 0]
        to_random = torch.empty(b, k, dtype=embedded.dtype, device=x.device)
        r = self.search_random_crops
        for scale in scales.unique():
            at = scales == scale
            warp = random_crop_matrix(scale.expand(b * r).to(x.dtype), generator)
            rand = self.encoder(sample(x.repeat_interleave(r, 0), matrix_grid(warp, (side, side))))
            rand = rand.view(b, r, -1)  # mean over r of ‖e − r‖² = ‖e‖² − 2 e·r̄ + mean ‖r‖²
            e = embedded[:, at]
            to_random[:, at] = (
                e.square().sum(2)
                - 2 * (e @ rand.mean(1).unsqueeze(2)).squeeze(2)
                + rand.square().sum(2).mean(1, keepdim=True)
            )
        chosen = self.candidates[choose_crops(embedded, to_random, margin, self.search_sweeps)]
        return output_box(CANDIDATE_FAMILY, chosen, x.shape[-1])

    def boxes_of(self, theta: Tensor, input_size: int) -> Tensor:
        """The box the crop of θ ``(B, P)`` covers on a square input of ``input_size``
        pixels: ``(B, 4)`` ``(x0, y0, x1, y1)`` in its pixels."""
        return output_box(self.transformer.transform, theta, input_size)

    def boxes(self, x: Tensor) -> Tensor:
        """The box each crop of ``x`` ``(B, C, H, H)`` covers: ``(B, 4)`` in pixels of ``x``."""
        return self.boxes_of(self.transformer.predict_theta(x), x.shape[-1])

    def transformed_inputs(self, x: Tensor) -> list[Tensor]:
        """The crops as a one-element list (what transform grids show)."""
        return [self.crop(x)[0]]

    def transformed_input(self, x: Tensor) -> Tensor:
        """The crops ``(B, C, S, S)``."""
        return self.transformed_inputs(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, H)`` → descriptors of their crops ``(B, D)``."""
        return self.encoder(self.crop(x)[0])

"""``src/predict.py`` on digits framed as people draw them: MNIST framing, batches, devices.

A small model is trained on ten synthetic glyphs framed as MNIST's digits were (fitted
into 20×20 keeping their aspect, centre of mass at the centre of 28×28), rendered here
independently of :mod:`stnlab.prediction` (supersampled, centred by the exact centre of
mass). The same glyphs drawn with wide margins, off-centre, small and large, thin and
thick, dark on white paper and light on black, must come out of ``framing=mnist`` as the
model classifies their originals.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image, ImageDraw

from cli_helper import mnist_arrays, trusted_mnist_spec, write_mnist_raw
from stnlab.checkpoints import load_checkpoint_net, read_checkpoint
from stnlab.config import compose_config
from stnlab.data import sources
from stnlab.errors import ConfigError
from stnlab.prediction import (
    MIN_INK_SPAN,
    centre_of_mass,
    fit_in_box,
    ink_box,
    load_image,
    mnist_frame,
    place_on_canvas,
    predict_files,
)
from stnlab.tasks import predict as predict_task
from stnlab.tasks import train

# ---------------------------------------------------------------- the glyphs

Shape = tuple[str, tuple[float, ...]]  # ("poly", x0, y0, x1, y1, …) or ("ring", inset)


def _rect(x0: float, y0: float, x1: float, y1: float) -> Shape:
    return ("poly", (x0, y0, x1, y0, x1, y1, x0, y1))


def glyph_shapes(label: int, w: float, aspect: float) -> list[Shape]:
    """Glyph ``label`` in its unit box (x right, y down), strokes ``w`` of the box's height
    thick; every glyph touches all four sides of its box, so its ink box is the box."""
    v = min(w / aspect, 0.45)  # a vertical stroke, in units of the box's width
    diagonal = [("poly", (1 - 1.4 * v, 0, 1, 0, 1.4 * v, 1, 0, 1))]  # top-right → bottom-left
    shapes: dict[int, list[Shape]] = {
        0: [("ring", (w,))],
        1: [_rect(0, 0, 1, 1)],  # a bar: its box is the stroke itself
        2: [_rect(0, 0, 1, w), _rect(0, 1 - w, 1, 1), *diagonal],  # Z
        3: [  # a mirrored E
            _rect(0, 0, 1, w),
            _rect(0, 0.5 - w / 2, 1, 0.5 + w / 2),
            _rect(0, 1 - w, 1, 1),
            _rect(1 - v, 0, 1, 1),
        ],
        4: [_rect(0, 0.5 - w / 2, 1, 0.5 + w / 2), _rect(0.5 - v / 2, 0, 0.5 + v / 2, 1)],
        5: [_rect(0, 0, v, 1), _rect(0, 1 - w, 1, 1)],  # L
        6: [_rect(0, 0, 1, w), _rect(0, 1 - w, 1, 1), _rect(0, 0, v, 1), _rect(1 - v, 0, 1, 1)],
        7: [_rect(0, 0, 1, w), ("poly", (1 - 1.4 * v, w, 1, w, 0.35 + 1.4 * v, 1, 0.35, 1))],
        8: [*diagonal, ("poly", (0, 0, 1.4 * v, 0, 1, 1, 1 - 1.4 * v, 1))],  # X
        9: [_rect(0, 0, 1, w), _rect(0.5 - v / 2, 0, 0.5 + v / 2, 1)],  # T
    }
    return shapes[label]


ASPECTS = (0.75, None, 0.8, 0.7, 1.0, 0.7, 1.0, 0.75, 0.8, 0.8)  # None: the bar's own


def glyph_aspect(label: int, w: float) -> float:
    """Width / height of glyph ``label``'s box with strokes ``w``."""
    return ASPECTS[label] or w * 1.2


def glyph_mask(label: int, w: float, width: int, height: int) -> np.ndarray:
    """Glyph ``label`` filling a ``width × height`` pixel box → ``(height, width)`` in {0, 1}."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for kind, values in glyph_shapes(label, w, glyph_aspect(label, w)):
        if kind == "ring":
            inset = values[0]
            draw.ellipse((0, 0, width - 1, height - 1), fill=255)
            draw.ellipse(
                (
                    inset * height,
                    inset * height,
                    width - 1 - inset * height,
                    height - 1 - inset * height,
                ),
                fill=0,
            )
        else:
            xy = [(values[i] * width, values[i + 1] * height) for i in range(0, len(values), 2)]
            draw.polygon(xy, fill=255)
    return np.asarray(image, dtype=np.float32) / 255.0


SUPER = 8  # supersampling: the glyphs are drawn 8× larger, then averaged down


def draw_glyph(
    label: int,
    w: float,
    canvas: tuple[int, int],
    box_height: float,
    centre: tuple[float, float],
) -> np.ndarray:
    """Ink coverage ``(H, W)`` in [0, 1] of glyph ``label`` on a ``canvas`` ``(H, W)``: its
    box ``box_height`` pixels tall, its centre of mass at ``centre`` (row, column) pixels
    from the top-left edge, anti-aliased by supersampling; what falls off the canvas is cut."""
    height = max(1, round(box_height * SUPER))
    width = max(1, round(box_height * glyph_aspect(label, w) * SUPER))
    mask = glyph_mask(label, w, width, height)
    total = mask.sum()
    com = (
        (mask.sum(1) @ (np.arange(height) + 0.5)) / total,
        (mask.sum(0) @ (np.arange(width) + 0.5)) / total,
    )
    big = np.zeros((canvas[0] * SUPER, canvas[1] * SUPER), dtype=np.float32)
    top, left = (round(c * SUPER - m) for c, m in zip(centre, com, strict=True))
    rows = slice(max(top, 0), min(top + height, big.shape[0]))
    cols = slice(max(left, 0), min(left + width, big.shape[1]))
    big[rows, cols] = mask[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return big.reshape(canvas[0], SUPER, canvas[1], SUPER).mean((1, 3))


def mnist_original(
    label: int, w: float, scale: float = 1.0, shift: tuple[float, float] = (0, 0)
) -> np.ndarray:
    """Glyph ``label`` as an MNIST digit ``(28, 28)``: fitted into 20×20 keeping its aspect
    (× ``scale``), its centre of mass at the centre of the frame (+ ``shift`` pixels)."""
    aspect = glyph_aspect(label, w)
    box_height = 20.0 * scale * min(1.0, 1.0 / aspect)
    return draw_glyph(label, w, (28, 28), box_height, (14 + shift[0], 14 + shift[1]))


def training_glyphs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST-framed glyphs ``(n, 28, 28)`` uint8 with random strokes, a little scale
    and shift jitter (what framing a drawing can leave), and their labels ``(n,)``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = np.stack(
        [
            mnist_original(
                int(label),
                rng.uniform(0.07, 0.22),
                rng.uniform(0.88, 1.08),
                tuple(rng.uniform(-1.5, 1.5, 2)),
            )
            for label in labels
        ]
    )
    return (images * 255).round().astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def glyph_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNN checkpoint trained (a few seconds of CPU) on MNIST-framed glyphs, written as
    MNIST's IDX files so that ``src/train.py``'s own pipeline trains it."""
    train_x, train_y = training_glyphs(600, 0)
    test_x, test_y = training_glyphs(200, 1)
    arrays = mnist_arrays((train_x, train_y), (test_x, test_y))
    root = write_mnist_raw(tmp_path_factory.mktemp("glyphs"), arrays)
    overrides = [
        "model=cnn",
        "data=mnist",
        "schedule=fast_epochs",
        "logger=csv",
        "trainer.max_epochs=3",
        "data.val_size=100",
        "data.batch_size=50",
        "data.eval_batch_size=200",
        "~callbacks.transform_grid",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sources.SPECS, "mnist", trusted_mnist_spec(root))
        cfg = compose_config("train", overrides, output_dir=root / "run", data_dir=root)
        result = train(cfg)
    GlobalHydra.instance().clear()
    assert result["test/acc"] > 0.97, result  # the glyphs are learned
    return Path(result["test_ckpt"])


# ------------------------------------------------- the glyphs as people draw them

# (canvas (H, W), box height in px, centre as a share of the canvas, stroke, light ink on black)
DRAWINGS = {
    "wide_margins": ((200, 200), 60, (0.5, 0.5), 0.14, False),
    "off_centre": ((160, 240), 50, (0.25, 0.2), 0.12, True),
    "small": ((120, 150), 15, (0.7, 0.65), 0.2, False),
    "large_thick": ((300, 220), 240, (0.5, 0.5), 0.2, True),
    "thin": ((90, 90), 70, (0.45, 0.55), 0.08, False),
    "corner": ((100, 180), 30, (0.2, 0.85), 0.15, True),
}


def write_drawings(folder: Path, labels: range = range(10)) -> list[tuple[int, float]]:
    """Every glyph drawn in every :data:`DRAWINGS` way, as 8-bit PNGs in ``folder`` (sorted
    by name in the order of the returned ``(label, stroke)`` of each file)."""
    folder.mkdir()
    made = []
    for name, (canvas, box_height, (cy, cx), w, light) in DRAWINGS.items():
        for label in labels:
            ink = draw_glyph(label, w, canvas, box_height, (cy * canvas[0], cx * canvas[1]))
            pixels = ink if light else 1.0 - 0.9 * ink  # dark ink: a little grey, as pencil
            file = folder / f"{name}_{label}.png"
            Image.fromarray((pixels * 255).round().astype(np.uint8)).save(file)
            made.append((file.name, label, w))
    return [(label, w) for _, label, w in sorted(made)]


def classify_originals(ckpt: Path, drawn: list[tuple[int, float]]) -> list[int]:
    """The model's classes for the MNIST-framed originals of ``drawn`` glyphs."""
    net, _ = load_checkpoint_net(ckpt)
    originals = torch.from_numpy(np.stack([mnist_original(label, w) for label, w in drawn]))
    with torch.inference_mode():
        return net(originals[:, None]).argmax(1).tolist()


def test_drawn_glyphs_are_classified_as_their_mnist_framed_originals(
    glyph_model: Path, tmp_path: Path
) -> None:
    drawn = write_drawings(tmp_path / "drawn")
    want = classify_originals(glyph_model, drawn)
    assert want == [label for label, _ in drawn]  # the originals are recognised
    framed = predict_files(glyph_model, tmp_path / "drawn", tmp_path / "mnist", framing="mnist")
    assert [r["status"] for r in framed] == ["ok"] * len(drawn)
    assert [r["predicted"] for r in framed] == want
    # the plain resize leaves most of these digits too small or squashed: the framing is
    # what makes them readable
    resized = predict_files(glyph_model, tmp_path / "drawn", tmp_path / "resize", framing="resize")
    same = sum(r["predicted"] == p for r, p in zip(resized, want, strict=True))
    assert same < 0.6 * len(drawn)


def test_framed_drawings_look_like_their_originals(tmp_path: Path) -> None:
    """Pixel for pixel, a drawing framed by ``mnist_frame`` is close to its original."""
    drawn = write_drawings(tmp_path / "drawn", range(0, 10, 3))
    for (label, w), file in zip(drawn, sorted((tmp_path / "drawn").iterdir()), strict=True):
        framed = load_image(file, channels=1, size=28)[0].numpy()
        original = mnist_original(label, w)
        overlap = (framed * original).sum() / np.sqrt((framed**2).sum() * (original**2).sum())
        assert overlap > 0.8, (file.name, overlap)


def test_batch_size_does_not_change_the_answers(glyph_model: Path, tmp_path: Path) -> None:
    write_drawings(tmp_path / "drawn", range(0, 10, 4))  # 18 images: batches of 7, 7, 4
    Image.new("L", (40, 30), 255).save(tmp_path / "drawn" / "zz_blank.png")
    runs = {}
    for batch_size in (1, 7, 64):
        out = tmp_path / f"out_{batch_size}"
        rows = predict_files(glyph_model, tmp_path / "drawn", out, batch_size=batch_size)
        with open(out / "predictions.csv", newline="") as f:
            table = list(csv.DictReader(f))
        runs[batch_size] = (rows, table, sorted(p.name for p in out.glob("*.png")))
    rows, table, pictures = runs[1]
    assert len(rows) == len(table) == len(pictures) == 19
    assert [r["status"] for r in rows] == ["ok"] * 18 + ["no_ink"]
    assert pictures[0].startswith("0000_") and pictures[-1] == "0018_zz_blank.png"
    for batch_size in (7, 64):
        other_rows, other_table, other_pictures = runs[batch_size]
        assert [r["predicted"] for r in other_rows] == [r["predicted"] for r in rows]
        assert [r["probability"] for r in other_rows[:18]] == pytest.approx(
            [r["probability"] for r in rows[:18]], abs=1e-5
        )
        assert [(r["file"], r["predicted"], r["status"]) for r in other_table] == [
            (r["file"], r["predicted"], r["status"]) for r in table
        ]
        assert other_pictures == pictures


# ------------------------------------------------------------- the geometry


def test_ink_box_is_the_ink_above_half_the_brightest_lead() -> None:
    picture = np.full((40, 50), 0.2, dtype=np.float32)  # grey paper after inversion
    picture[10:30, 15:22] = 1.0  # the stroke
    picture[9, 15:22] = 0.5  # a soft edge: below halfway between paper and ink
    picture[35, 40] = 0.35  # faint noise
    assert ink_box(picture, 0.2) == (10, 15, 30, 22)
    assert ink_box(np.full((8, 8), 0.7), 0.7) is None
    assert ink_box(np.full((8, 8), 0.7) + np.eye(8) * 0.04, 0.7) is None  # below MIN_INK_SPAN
    assert ink_box(np.eye(8) * MIN_INK_SPAN * 2, 0.0) == (0, 0, 8, 8)


@pytest.mark.parametrize(("height", "width"), [(120, 30), (30, 120), (9, 6), (50, 50), (7, 200)])
def test_fit_in_box_keeps_the_aspect_with_the_longer_side_20(height: int, width: int) -> None:
    picture = np.zeros((height + 20, width + 20), dtype=np.float32)
    picture[10 : 10 + height, 10 : 10 + width] = 1.0
    fitted = fit_in_box(picture, (10, 10, 10 + height, 10 + width))
    assert max(fitted.shape) == 20
    short = min(height, width) * 20 / max(height, width)
    assert abs(min(fitted.shape) - short) <= 0.5 and min(fitted.shape) >= 1
    assert fitted.shape[0] >= fitted.shape[1] if height >= width else True
    # the ink fills the fitted box (its edge pixels soft where the paper around it shows)
    assert ink_box(fitted, 0.0) == (0, 0, *fitted.shape) and fitted.max() < 1.01
    assert fitted[1:-1, 1:-1].min() > 0.99 if min(fitted.shape) > 2 else True


def test_centre_of_mass_counts_pixels_from_their_edges() -> None:
    picture = np.zeros((5, 4))
    picture[4, 3] = 1.0
    assert centre_of_mass(picture) == (4.5, 3.5)
    picture[0, 0] = 3.0
    assert centre_of_mass(picture) == pytest.approx((1.5, 1.25))
    assert centre_of_mass(np.zeros((6, 10))) == (3.0, 5.0)


def random_drawing(rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A lopsided glyph (stem, top bar, half a bottom bar; strokes 12% of its size) at a
    random place of grey paper, light-on-dark → the picture and its glyph's box
    ``(top, left, bottom, right)``."""
    h, w = (int(v) for v in rng.integers(40, 160, 2))
    bh, bw = int(rng.integers(8, h // 2)), int(rng.integers(8, w // 2))
    top, left = int(rng.integers(1, h - bh - 1)), int(rng.integers(1, w - bw - 1))
    t = max(2, round(0.12 * max(bh, bw)))
    picture = np.full((h, w), 0.1, dtype=np.float32)
    picture[top : top + bh, left : left + t] = 0.95
    picture[top : top + t, left : left + bw] = 0.95
    picture[top + bh - t : top + bh, left + bw // 2 : left + bw] = 0.95
    return picture, (top, left, top + bh, left + bw)


def test_mnist_frame_fits_20_and_centres_the_mass() -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        picture, (top, left, bottom, right) = random_drawing(rng)
        frame = mnist_frame(picture)
        assert frame is not None and frame.shape == (28, 28)
        assert frame.min() == 0.0  # the paper is black
        assert abs(frame.max() - 0.85) < 0.02  # the ink keeps its lead over the paper
        row, col = centre_of_mass(frame)
        assert abs(row - 14) <= 0.5 + 1e-4 and abs(col - 14) <= 0.5 + 1e-4
        r0, c0, r1, c1 = ink_box(frame, 0.0)
        assert max(r1 - r0, c1 - c0) in (19, 20, 21)  # 20, give or take the soft edge
        aspect = (bottom - top) / (right - left)
        assert (r1 - r0) / (c1 - c0) == pytest.approx(aspect, rel=0.15, abs=0.1)


def test_mnist_frame_leaves_a_blank_picture_alone() -> None:
    assert mnist_frame(np.zeros((30, 40), dtype=np.float32)) is None
    assert mnist_frame(np.full((30, 40), 0.6, dtype=np.float32)) is None
    faint = np.full((30, 40), 0.6, dtype=np.float32)
    faint[10:20, 10:12] = 0.63  # a span of 0.03: nothing to crop to
    assert mnist_frame(faint) is None


@pytest.mark.parametrize("canvas", [28, 42, 60])
def test_the_frame_sits_on_the_canvas_as_the_data_puts_digits(canvas: int) -> None:
    frames = torch.rand(3, 1, 28, 28)
    placed = place_on_canvas(frames, canvas)
    top = (canvas - 28) // 2  # RandomSimilarity with no shift: centre on centre
    assert placed.shape == (3, 1, canvas, canvas)
    assert torch.allclose(placed[..., top : top + 28, top : top + 28], frames, atol=1e-5)
    assert placed.sum().item() == pytest.approx(frames.sum().item(), abs=1e-2)


def test_blank_images_have_no_ink_with_either_framing(tmp_path: Path) -> None:
    faint = np.full((50, 70), 200, dtype=np.uint8)
    faint[20:30, 30:34] = 195  # a smudge of 5 grey levels
    Image.fromarray(faint).save(tmp_path / "smudge.png")
    Image.new("L", (50, 70), 255).save(tmp_path / "white.png")
    for name in ("smudge.png", "white.png"):
        for framing in ("mnist", "resize"):
            x = load_image(tmp_path / name, 1, 42, image_size=28, framing=framing)
            span = x[0, 7:35, 7:35].max() - x[0, 7:35, 7:35].min()
            assert span < MIN_INK_SPAN, (name, framing)


# ------------------------------------------------------------- bad values


def test_bad_values_get_one_clear_line(glyph_model: Path, tmp_path: Path) -> None:
    write_drawings(tmp_path / "drawn", range(1))

    def run(**options: object) -> list[dict]:
        return predict_files(glyph_model, tmp_path / "drawn", tmp_path / "out", **options)

    unknown = r"^framing='centred' is unknown; valid: auto, mnist, resize$"
    with pytest.raises(ConfigError, match=unknown):
        run(framing="centred")
    with pytest.raises(ConfigError, match=r"^batch_size=0 must be an integer >= 1"):
        run(batch_size=0)
    with pytest.raises(ConfigError, match=r"^batch_size=2\.5 must be an integer >= 1"):
        run(batch_size=2.5)
    with pytest.raises(ConfigError, match=r"^invert='maybe'; valid: auto, true, false$"):
        run(invert="maybe")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="framing=mnist frames grey digits, but this model"):
        load_image(tmp_path / "drawn" / "corner_0.png", channels=3, size=32, framing="mnist")
    # a model of another image source was not trained on MNIST-framed digits
    checkpoint = read_checkpoint(glyph_model)
    checkpoint["stnlab_config"]["data"]["source"] = "fashion_mnist"
    fashion = tmp_path / "fashion.ckpt"
    torch.save(checkpoint, fashion)
    with pytest.raises(
        ConfigError, match=r"trained on data.source=fashion_mnist; use framing=resize"
    ):
        predict_files(fashion, tmp_path / "drawn", tmp_path / "out", framing="mnist")
    rows = predict_files(fashion, tmp_path / "drawn", tmp_path / "out", framing="resize")
    assert len(rows) == len(DRAWINGS)
    # framing=auto (the default) resizes for that model and frames for the MNIST one
    assert predict_files(fashion, tmp_path / "drawn", tmp_path / "auto") == rows
    framed = predict_files(glyph_model, tmp_path / "drawn", tmp_path / "m", framing="mnist")
    assert predict_files(glyph_model, tmp_path / "drawn", tmp_path / "a") == framed


def test_the_task_reads_framing_batch_size_and_device(glyph_model: Path, tmp_path: Path) -> None:
    drawn = write_drawings(tmp_path / "drawn", range(2))

    def task_run(*overrides: str) -> list[dict]:
        cfg = compose_config(
            "predict",
            [f"ckpt_path={glyph_model}", f"input={tmp_path / 'drawn'}", *overrides],
            output_dir=tmp_path / f"run{len(list(tmp_path.iterdir()))}",
        )
        try:
            return predict_task(cfg)
        finally:
            GlobalHydra.instance().clear()

    rows = task_run("framing=mnist", "batch_size=5", "device=cpu")
    assert [r["predicted"] for r in rows] == classify_originals(glyph_model, drawn)
    with pytest.raises(ConfigError, match=r"^device='gpu' is not a device; valid: auto, cpu"):
        task_run("device=gpu")
    unknown = r"^framing='MNIST' is unknown; valid: auto, mnist, resize$"
    with pytest.raises(ConfigError, match=unknown):
        task_run("framing=MNIST")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^device='cuda' but no CUDA GPU is available"):
            task_run("device=cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_answers(glyph_model: Path, tmp_path: Path) -> None:
    write_drawings(tmp_path / "drawn", range(0, 10, 2))
    cpu = predict_files(glyph_model, tmp_path / "drawn", tmp_path / "cpu", device="cpu")
    gpu = predict_files(glyph_model, tmp_path / "drawn", tmp_path / "gpu", device="cuda")
    assert [r["predicted"] for r in gpu] == [r["predicted"] for r in cpu]
    assert [r["probability"] for r in gpu] == pytest.approx(
        [r["probability"] for r in cpu], abs=1e-4
    )


def test_glyph_originals_are_framed_like_mnist() -> None:
    """The test's own originals: longer side 20 px, centre of mass at the centre."""
    for label in range(10):
        original = mnist_original(label, 0.12)
        row, col = centre_of_mass(original)
        assert math.hypot(row - 14, col - 14) < 0.1
        top, left, bottom, right = ink_box(original, 0.0)
        assert max(bottom - top, right - left) in (19, 20, 21)  # edges fall between pixels

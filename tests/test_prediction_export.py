"""Predict on PNG/JPEG files and export (torch.export, ONNX, TorchScript): the
LightningModule's answers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from cli_helper import run_train
from stnlab.checkpoints import read_checkpoint
from stnlab.config import compose_config
from stnlab.errors import CheckpointError, ConfigError
from stnlab.export import EXPORTERS, MIN_TORCH, export_checkpoint, torch_release
from stnlab.prediction import (
    ink_span,
    load_image,
    load_images,
    predict_files,
    transparent_background,
)


@pytest.fixture
def trained(tiny_run: tuple[Path, dict]) -> Path:
    """The shared ST-CNN's best.ckpt (``tiny_run`` in tests/conftest.py); read, never changed."""
    return tiny_run[0]


def lightning_module(ckpt: Path) -> torch.nn.Module:
    """The STNLitModule as training built it, with the checkpoint's weights."""
    checkpoint = read_checkpoint(ckpt)
    module = instantiate(OmegaConf.create(checkpoint["stnlab_config"]["model"]))
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def write_images(folder: Path, fake_mnist: Path) -> list[np.ndarray]:
    """Three test digits as files: a dark-on-light PNG, a JPEG and a larger PNG."""
    from stnlab.data.sources import load_split

    folder.mkdir()
    digits = load_split(fake_mnist, "mnist", "test", allow_fetch=False)[0][:3].numpy()
    Image.fromarray(255 - digits[0]).save(folder / "a_dark_on_light.png")
    Image.fromarray(digits[1]).save(folder / "b.jpg", quality=95)
    Image.fromarray(digits[2]).resize((56, 56)).save(folder / "c_big.png")
    (folder / "notes.txt").write_text("not an image: skipped in a folder")
    return list(digits)


def test_predict_matches_the_lightning_module(
    trained: Path, fake_mnist: Path, tmp_path: Path
) -> None:
    digits = write_images(tmp_path / "images", fake_mnist)
    resized, files = load_images(tmp_path / "images", channels=1, size=28, framing="resize")
    assert [f.name for f in files] == ["a_dark_on_light.png", "b.jpg", "c_big.png"]
    assert resized.shape == (3, 1, 28, 28) and resized.min() >= 0.0 and resized.max() <= 1.0
    # the dark-on-light file was inverted back to MNIST's light-on-dark
    assert torch.allclose(resized[0, 0] * 255, torch.from_numpy(digits[0]).float(), atol=1)
    images, _ = load_images(tmp_path / "images", channels=1, size=28)  # framing=mnist
    assert images.shape == (3, 1, 28, 28) and not torch.allclose(images, resized, atol=0.1)
    rows = predict_files(trained, tmp_path / "images", tmp_path / "out")
    with torch.inference_mode():
        probs = lightning_module(trained)(images).softmax(1)
    assert [r["predicted"] for r in rows] == probs.argmax(1).tolist()
    assert [r["probability"] for r in rows] == pytest.approx(probs.max(1).values.tolist(), abs=1e-5)
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["predicted"]) for r in table] == probs.argmax(1).tolist()
    picture = Image.open(tmp_path / "out" / table[0]["image"])
    assert picture.width > 2 * picture.height * 0.9  # input beside transformed


def test_images_keep_the_training_size_on_larger_canvases(tmp_path: Path) -> None:
    Image.fromarray(np.full((50, 50), 255, dtype=np.uint8)).save(tmp_path / "white.png")
    x = load_image(tmp_path / "white.png", 1, 42, invert="false", image_size=28, framing="resize")
    assert x.shape == (1, 42, 42)
    # a centred 28×28 square
    assert x[0, 7:35, 7:35].min() > 1 - 1e-5 and float(x.sum()) == pytest.approx(28 * 28)
    # a bright border inverts grey images (auto) but never colour ones
    grey = load_image(tmp_path / "white.png", channels=1, size=28)
    colour = load_image(tmp_path / "white.png", channels=3, size=32, framing="resize")
    assert grey.max() == 0.0 and colour.shape == (3, 32, 32) and colour.min() == 1.0


def test_predict_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no PNG or JPEG"):
        load_images(tmp_path / "empty", 1, 28)
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ConfigError, match=r"x\.gif is not a PNG or JPEG"):
        load_images(tmp_path / "x.gif", 1, 28)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ConfigError, match=r"cannot read .*broken\.png"):
        load_images(tmp_path / "broken.png", 1, 28)
    with pytest.raises(ConfigError, match="does not exist"):
        load_images(tmp_path / "missing", 1, 28)


def test_16_bit_pngs_keep_their_range(fake_mnist: Path, tmp_path: Path) -> None:
    from stnlab.data.sources import load_split

    digit = load_split(fake_mnist, "mnist", "test", allow_fetch=False)[0][0].numpy()
    for name, pixels in {"light": digit, "dark": 255 - digit}.items():
        Image.fromarray(pixels).save(tmp_path / f"{name}_8.png")
        Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / f"{name}_16.png")
        assert Image.open(tmp_path / f"{name}_16.png").mode == "I;16"
        for channels, size, framing in (
            (1, 28, "mnist"),
            (1, 42, "mnist"),
            (1, 28, "resize"),
            (1, 42, "resize"),
            (3, 32, "resize"),
        ):
            eight, sixteen = (
                load_image(tmp_path / f"{name}_{bits}.png", channels, size, "auto", 28, framing)
                for bits in (8, 16)
            )
            assert sixteen.shape == (channels, size, size)
            assert torch.allclose(sixteen, eight, atol=1e-5), (name, channels, size, framing)
    # the dark-on-light 16-bit digit is inverted back to the 8-bit light-on-dark one
    light = load_image(tmp_path / "dark_16.png", 1, 28, framing="resize")[0]
    assert torch.allclose(light * 255, torch.from_numpy(digit).float(), atol=1e-3)


def alpha_only_images(alpha: np.ndarray) -> dict[str, Image.Image]:
    """A digit drawn only in the alpha channel ``alpha`` (H, W) uint8, in four encodings
    (the palette image is all-or-nothing: saved with ``transparency=0``)."""
    black_ink = np.where(alpha > 0, 0, 255).astype(np.uint8)  # white under transparent pixels
    white_ink = np.full_like(alpha, 255)
    palette = Image.new("P", alpha.shape[::-1])
    palette.putdata((alpha > 127).astype(np.uint8).ravel().tolist())
    palette.putpalette([255, 255, 255, 0, 0, 0])  # index 0: white, 1: black
    return {
        "LA black ink": Image.fromarray(np.dstack([np.zeros_like(alpha), alpha])),
        "RGBA black ink": Image.fromarray(np.dstack([black_ink, black_ink, black_ink, alpha])),
        "RGBA white ink": Image.fromarray(np.dstack([white_ink, white_ink, white_ink, alpha])),
        "P with transparency": palette,
    }


def test_a_digit_drawn_in_alpha_alone_comes_out_as_ink(fake_mnist: Path, tmp_path: Path) -> None:
    from stnlab.data.sources import load_split

    alpha = load_split(fake_mnist, "mnist", "test", allow_fetch=False)[0][0].numpy()
    Image.fromarray(alpha).save(tmp_path / "light.png")
    framed = load_image(tmp_path / "light.png", channels=1, size=28)  # framing=mnist
    for name, img in alpha_only_images(alpha).items():
        file = tmp_path / f"{name.replace(' ', '_')}.png"
        img.save(file, **({"transparency": 0} if img.mode == "P" else {}))
        x = load_image(file, channels=1, size=28, framing="resize")
        want = alpha / 255.0 if img.mode != "P" else (alpha > 127).astype(np.float64)
        # light-on-dark, as MNIST: ink exactly where the alpha channel is
        assert torch.allclose(x[0].double(), torch.from_numpy(want), atol=1e-5), name
        if img.mode != "P":  # framed as the same digit drawn in grey levels is
            assert torch.allclose(load_image(file, 1, 28), framed, atol=1e-5), name
    ink = np.zeros((6, 6))
    ink[2:4, 2:4] = 1.0
    assert transparent_background(np.zeros((6, 6, 3)), ink) == 1.0  # black ink: paper white
    assert transparent_background(np.ones((6, 6, 3)), ink) == 0.0  # white ink: black
    # a black digit on an opaque white card with a transparent margin: the colours draw it
    card = np.repeat(1.0 - ink[..., None], 3, axis=-1)
    assert transparent_background(card, np.pad(np.ones((4, 4)), 1)) == 1.0


def test_blank_and_uniform_images_get_no_class(
    trained: Path, fake_mnist: Path, tmp_path: Path
) -> None:
    write_images(tmp_path / "images", fake_mnist)
    blanks = {
        "d_white.png": Image.new("L", (28, 28), 255),
        "e_grey.png": Image.new("L", (40, 40), 128),
        "f_transparent.png": Image.new("RGBA", (28, 28), (0, 0, 0, 0)),
        "g_red.png": Image.new("RGB", (28, 28), (200, 30, 30)),
    }
    for name, img in blanks.items():
        img.save(tmp_path / "images" / name)
    rows = predict_files(trained, tmp_path / "images", tmp_path / "out")
    assert [r["status"] for r in rows] == ["ok"] * 3 + ["no_ink"] * 4
    assert all(isinstance(r["predicted"], int) for r in rows[:3])
    assert all(r["predicted"] is None and r["probability"] is None for r in rows[3:])
    assert all(r["ink"] < 0.05 for r in rows[3:]) and all(r["ink"] > 0.5 for r in rows[:3])
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["status"] for r in table] == ["ok"] * 3 + ["no_ink"] * 4
    assert [int(r["predicted"]) for r in table[:3]] == [r["predicted"] for r in rows[:3]]
    for row in table[3:]:
        assert row["predicted"] == "" and row["probability"] == ""
        assert (tmp_path / "out" / row["image"]).is_file()  # the picture is still written
    # on a canvas larger than the digit, the black margin around a grey image is not ink
    for framing in ("mnist", "resize"):
        grey = load_image(tmp_path / "images" / "e_grey.png", 1, 42, "auto", 28, framing)
        assert grey.max() > 0.4 and float(ink_span(grey[None], 28)[0]) < 1e-5


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "torchscript"])
def test_export_gives_the_lightning_module_logits(fmt: str, trained: Path, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    path, diff = export_checkpoint(trained, fmt, tmp_path)
    assert path.name == {"torchscript": "model.pt", "onnx": "model.onnx", "pt2": "model.pt2"}[fmt]
    assert diff <= 1e-4
    x = torch.rand(5, 1, 28, 28)
    with torch.inference_mode():
        want = lightning_module(trained)(x)
    if fmt == "torchscript":
        got = torch.jit.load(str(path))(x)
    elif fmt == "pt2":
        got = torch.export.load(str(path)).module()(x)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.equal(got.argmax(1), want.argmax(1))
    with pytest.raises(ConfigError, match="format='tflite' is unknown"):
        export_checkpoint(trained, "tflite", tmp_path)


def test_export_defaults_to_pt2_and_keeps_every_format() -> None:
    assert compose_config("export").format == "pt2"
    assert list(EXPORTERS) == ["pt2", "onnx", "torchscript"]


def test_torch_release_reads_local_and_dev_versions() -> None:
    assert torch_release("2.5.1+cpu") == (2, 5)
    assert torch_release("2.14.0.dev20260101+cu130") == (2, 14)
    assert torch_release(torch.__version__) >= (2, 4)
    with pytest.raises(ValueError, match="cannot read a torch version"):
        torch_release("unknown")


def test_onnx_on_too_old_a_torch_says_which_versions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The version gate runs before the checkpoint is read: one line naming both versions."""
    assert MIN_TORCH["onnx"] == (2, 6)
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(ConfigError) as caught:
        export_checkpoint(tmp_path / "never_read.ckpt", "onnx", tmp_path)
    message = str(caught.value)
    assert "format=onnx needs torch>=2.6, but torch 2.5.1+cpu is installed" in message
    assert "\n" not in message and "format=pt2" in message
    # pt2 and torchscript need nothing beyond the package's floor: the gate lets them by
    # (the missing checkpoint is what stops them here)
    for fmt in ("pt2", "torchscript"):
        with pytest.raises(CheckpointError, match=r"never_read\.ckpt") as other:
            export_checkpoint(tmp_path / "never_read.ckpt", fmt, tmp_path)
        assert "needs torch" not in str(other.value)
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    with pytest.raises(CheckpointError, match=r"never_read\.ckpt"):  # past the gate
        export_checkpoint(tmp_path / "never_read.ckpt", "onnx", tmp_path)


@pytest.mark.e2e
def test_cli_eval_predict_export(trained: Path, fake_mnist: Path, tmp_path: Path) -> None:
    """The entry points as a user runs them (their own processes, Hydra run folders)."""
    write_images(tmp_path / "images", fake_mnist)
    Image.new("L", (28, 28), 255).save(tmp_path / "images" / "d_blank.png")
    runs = {
        "eval.py": [f"ckpt_path={trained}", "logger=csv"],
        "predict.py": [
            f"ckpt_path={trained}",
            f"input={tmp_path / 'images'}",
            "batch_size=3",  # two batches: 3 images, then the blank one
            "device=cpu",
        ],
        "export.py": [f"ckpt_path={trained}"],
    }
    for script, overrides in runs.items():
        out = tmp_path / script
        done = run_train(fake_mnist, *overrides, f"hydra.run.dir={out}", script=script)
        assert done.returncode == 0, done.stderr[-2000:]
        if script == "predict.py":  # a blank image is flagged, not classified; exit 0
            lines = done.stdout.splitlines()
            assert [line.split("\t")[0].rsplit("/", 1)[-1] for line in lines] == [
                "a_dark_on_light.png",
                "b.jpg",
                "c_big.png",
                "d_blank.png",
            ]
            assert lines[3].split("\t")[1:] == [
                "-",
                "-",
                "no_ink: blank or uniform image (brightness span 0.000 < 0.05 after "
                "preprocessing), no class given",
            ]
            assert "1 of 4 images have no ink" in done.stderr
    assert len((tmp_path / "eval.py" / "results.csv").read_text().splitlines()) == 5
    assert (tmp_path / "predict.py" / "predictions.csv").is_file()
    assert (tmp_path / "export.py" / "model.pt2").is_file()  # the default format: pt2
    bad = run_train(
        fake_mnist, "ckpt_path=nope.ckpt", f"hydra.run.dir={tmp_path / 'bad'}", script="eval.py"
    )
    assert bad.returncode == 1
    assert "ckpt_path=nope.ckpt does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr

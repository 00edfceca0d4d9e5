"""Reliability III: a refused process touches nothing, no command destroys a file it was
given, resume never writes over a run's checkpoints.

Each refusal is checked for its one-line message and for the files it must leave alone
(checksums before and after).
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from cli_helper import run_train
from stnlab import export as export_module
from stnlab.analysis.report import build_report
from stnlab.analysis.sweep import read_job
from stnlab.errors import ConfigError, RefusedError, StorageError
from stnlab.export import export_checkpoint
from stnlab.run_folder import LOCK_NAME, RunFolderClaim, RunFolderLock
from stnlab.tasks.train import train
from stnlab.temp_files import atomic_path, write_text


def checksums(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_failed_atomic_write_keeps_the_earlier_file_and_leaves_no_temp_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "results.md"
    write_text(target, "the earlier result\n")
    with pytest.raises(StorageError) as info, atomic_path(target, "results table") as tmp:
        tmp.write_text("half of the new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    message = str(info.value)
    assert "\n" not in message
    assert f"could not write the results table {target} (No space left on device)" in message
    assert "the earlier one is intact" in message
    assert target.read_text() == "the earlier result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]
    # a first write that fails leaves nothing at all
    with pytest.raises(StorageError, match="nothing was written"), atomic_path(tmp_path / "x"):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]


def test_export_never_writes_over_its_checkpoint_and_keeps_the_old_export_on_failure(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg("model=stn_cnn", "data=rotated", "debug=limit", output_dir=tmp_path / "run")
    ckpt = Path(train(cfg)["test_ckpt"])
    before = checksums(ckpt.parent)

    # the checkpoint itself, a symlink to it and a hard link to it: refused, untouched
    link, hard = tmp_path / "link.pt2", tmp_path / "hard.pt2"
    link.symlink_to(ckpt)
    os.link(ckpt, hard)
    for output in (ckpt, link, hard):
        with pytest.raises(ConfigError) as info:
            export_checkpoint(ckpt, "pt2", tmp_path, output)
        message = str(info.value)
        assert message.startswith(f"output={output} is the command's own input ckpt_path=")
        assert "give output= another file" in message and "\n" not in message
    assert checksums(ckpt.parent) == before

    # a good export, then one that fails half-way on a full disk: the first stays intact
    target = tmp_path / "model.pt2"
    path, diff = export_checkpoint(ckpt, "pt2", tmp_path, target)
    assert path == target and diff <= 1e-4
    good = target.read_bytes()
    torch.export.load(str(target))  # a complete archive

    def full_disk(program: object, f: str, *args: object, **kwargs: object) -> None:
        Path(f).write_bytes(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export_module.torch.export, "save", full_disk)
    with pytest.raises(StorageError) as info:
        export_checkpoint(ckpt, "pt2", tmp_path, target)
    assert f"could not write the pt2 export {target} (No space left" in str(info.value)
    assert target.read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert checksums(ckpt.parent) == before


def finished_run(folder: Path) -> dict[str, str]:
    """A finished run's files in ``folder`` (their content does not matter here); returns
    their checksums."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("model:\n  name: the model it trained\n")
    (folder / ".hydra" / "overrides.yaml").write_text("- model=stn_cnn\n- seed=1\n")
    (folder / "train.log").write_text("[INFO] the run's log\n")
    (folder / "metrics.json").write_text('{"test/err": 0.0123}')
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    return checksums(folder)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("script", "overrides"),
    [
        ("train.py", ["model=cnn", "seed=7"]),
        ("eval.py", ["ckpt_path={run}/checkpoints/best.ckpt"]),
        ("report.py", ["runs=[{run}]"]),
    ],
)
def test_a_command_refused_a_held_folder_leaves_it_as_it_was(
    fake_mnist_root: Path, tmp_path: Path, script: str, overrides: list[str]
) -> None:
    run = tmp_path / "a run"
    before = finished_run(run)
    with RunFolderLock(run):  # a live process (this one) holds the folder
        before_lock = checksums(run)
        done = run_train(
            fake_mnist_root,
            f"hydra.run.dir={run}",
            *(o.format(run=run) for o in overrides),
            script=script,
        )
        assert done.returncode == 1, done.stderr[-2000:]
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        assert errors == [
            f"Error: run folder {run} is in use by another running process (it holds "
            f"{run / LOCK_NAME}); wait for it, stop it, or give this run another folder "
            "(hydra.run.dir=…, or hydra.sweep.dir=… for -m)"
        ]
        assert checksums(run) == before_lock  # no .hydra rewritten, no log, no failure.json
    assert checksums(run) == before


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path) -> None:
    clock = tmp_path / "outputs" / "train" / "runs" / "2026-12-07_17-00-00"
    claim, folders = RunFolderClaim(), []
    for chosen in ([], [], []):  # three runs whose folder the clock named alike
        cfg = OmegaConf.create(
            {"hydra": {"run": {"dir": str(clock)}, "overrides": {"hydra": chosen}}}
        )
        claim.on_run_start(cfg)
        folders.append(Path(cfg.hydra.run.dir))
    assert folders == [clock, *(clock.with_name(f"{clock.name}_{n}") for n in (1, 2))]
    assert all((f / LOCK_NAME).exists() for f in folders)
    for folder in folders:
        RunFolderLock(folder).release()  # what the run's task does at its end
    # a folder the user named is that folder, not a new one
    cfg = OmegaConf.create(
        {"hydra": {"run": {"dir": str(clock)}, "overrides": {"hydra": [f"hydra.run.dir={clock}"]}}}
    )
    claim.on_run_start(cfg)
    assert cfg.hydra.run.dir == str(clock)
    RunFolderLock(clock).release()


def test_resume_looks_where_the_checkpoints_go_and_never_writes_over_them(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    shared = tmp_path / "shared checkpoints"
    elsewhere = (f"callbacks.model_checkpoint.dirpath={shared}", "model=stn_cnn", "debug=limit")
    first = make_cfg(*elsewhere, output_dir=tmp_path / "a")
    metrics = train(first)
    assert metrics["test_ckpt"] == str(shared / "best.ckpt")
    assert sorted(p.name for p in shared.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    before = checksums(shared)

    # another run folder, the same checkpoint folder: refused, nothing written anywhere
    second = make_cfg(*elsewhere, output_dir=tmp_path / "b")
    with pytest.raises(RefusedError) as info:
        train(second)
    assert str(info.value) == (
        f"this run starts afresh (ckpt_path=null), but the checkpoint folder {shared} holds "
        "best.ckpt, last.ckpt of an earlier run, which this run would write over: resume "
        f"with ckpt_path=last (or ckpt_path={shared}/<one of them>), or give this run "
        "another folder (hydra.run.dir=…, or callbacks.model_checkpoint.dirpath=…)"
    )
    assert not (tmp_path / "b" / "failure.json").exists()
    assert checksums(shared) == before

    # ckpt_path=auto resumes from where the checkpoints went: the finished run's metrics
    again = make_cfg(*elsewhere, "ckpt_path=auto", output_dir=tmp_path / "a")
    assert train(again)["test/acc"] == pytest.approx(metrics["test/acc"])
    assert sorted(p.name for p in shared.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


@pytest.mark.parametrize("ckpt_path", ["null", "auto"])
def test_a_run_without_last_ckpt_does_not_start_over_its_best_ckpt(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, ckpt_path: str
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"the 36.7% model")
    before = checksums(run)
    cfg = make_cfg("model=stn_cnn", "debug=limit", f"ckpt_path={ckpt_path}", output_dir=run)
    with pytest.raises(RefusedError, match=r"holds best\.ckpt of an earlier run"):
        train(cfg)
    assert checksums(run) == before  # no failure.json, no checkpoint written


@pytest.mark.e2e
def test_the_lock_covers_a_checkpoint_folder_outside_the_run_folder(
    fake_mnist_root: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    with RunFolderLock(shared):  # a live process (this one) holds the checkpoint folder
        done = run_train(
            fake_mnist_root,
            f"hydra.run.dir={tmp_path / 'run'}",
            f"callbacks.model_checkpoint.dirpath={shared}",
            "debug=limit",
        )
    assert done.returncode == 1, done.stderr[-2000:]
    assert (
        f"run folder {shared} is in use by another running process (it holds "
        f"{shared / LOCK_NAME}); wait for it, stop it, or give this run another folder "
        "(callbacks.model_checkpoint.dirpath=…" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "failure.json").exists()
    assert sorted(p.name for p in shared.iterdir()) == []


SECRET = "hunter2-not-for-reports"


@pytest.mark.parametrize(
    "experiment", ["stn_cnn_aff_r", "addition/st_cnn", "colocalisation/t"], ids=str
)
def test_a_report_never_resolves_what_a_run_folder_says(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    experiment: str,
) -> None:
    monkeypatch.setenv("STNLAB_SECRET", SECRET)
    OmegaConf.register_new_resolver("leak", lambda: SECRET, replace=True)
    stored = OmegaConf.to_container(make_cfg(f"experiment={experiment}"), resolve=False)
    assert isinstance(stored, dict)
    stored["seed"] = "${leak:}"
    stored["data"]["variant"] = "${oc.env:STNLAB_SECRET}"
    if experiment.startswith("colocalisation"):
        stored["data"]["digit"] = "${oc.env:STNLAB_SECRET}"
    run = tmp_path / "runs" / "one"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(stored), run / ".hydra" / "config.yaml", resolve=False)
    (run / "metrics.json").write_text('{"test/err": 0.05, "train/coloc/hit_rate": 0.9}')
    build_report([tmp_path / "runs"], tmp_path / "report")
    written = [p for p in (tmp_path / "report").iterdir() if p.suffix in (".md", ".csv")]
    assert written
    for path in written:
        assert SECRET not in path.read_text()


def test_damaged_or_crafted_run_files_cost_one_line_each_and_nothing_hangs(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = OmegaConf.to_container(make_cfg("experiment=stn_cnn_aff_r"), resolve=False)
    runs = tmp_path / "runs"

    def run(name: str, config: str | None = None, metrics: str = '{"test/err": 0.01}') -> Path:
        folder = runs / name
        (folder / ".hydra").mkdir(parents=True)
        config_file = folder / ".hydra" / "config.yaml"
        if config is None:
            OmegaConf.save(OmegaConf.create(stored), config_file, resolve=False)
        else:
            config_file.write_text(config)
        (folder / "metrics.json").write_text(metrics)
        return folder

    good = run("good")
    # a few hundred bytes that expand to 9**9 strings through aliases
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    run("bomb", bomb)
    run("tag", "model: !!python/object/apply:os.system ['touch pwned']\ndata: {}\n")
    run("cut", metrics='{"test/err": 0.0')  # a metrics.json cut off mid-write
    run("words", metrics='{"test/err": "low"}')  # not a number
    rows = build_report([runs], tmp_path / "report")
    assert [(r["n"], r["mean_err"]) for r in rows] == [(1, 0.01)]  # good; words: no result
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped) == 3, skipped
    assert any("bomb" in m and "a YAML alias" in m for m in skipped)
    assert any("tag" in m and "python/object/apply" in m for m in skipped)
    assert any("cut" in m and "is not valid JSON" in m for m in skipped)
    assert not (tmp_path / "pwned").exists() and good.is_dir()


def test_a_sweep_job_s_status_comes_from_its_latest_attempt(tmp_path: Path) -> None:
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (job / "metrics.json").write_text('{"val/acc_best": 0.9}')  # the first attempt
    os.utime(job / "metrics.json", (1_000_000, 1_000_000))
    (job / "failure.json").write_text('{"error": "ConfigError", "message": "bad value"}')
    row = read_job(job)
    assert (row["status"], row["error"]) == ("failed", "ConfigError: bad value")
    (job / "metrics.json").write_text('{"val/acc_best": 0.9')  # truncated
    (job / "failure.json").unlink()
    row = read_job(job)
    assert row["status"] == "unreadable" and "is not valid JSON" in row["error"]


def test_predict_skips_what_it_cannot_read_one_line_each_and_never_blocks(
    make_cfg: Callable[..., DictConfig],
    fake_mnist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from PIL import Image

    from stnlab.data.sources import load_split
    from stnlab.prediction import predict_files

    cfg = make_cfg("model=stn_cnn", "data=rotated", "debug=limit", output_dir=tmp_path / "run")
    ckpt = train(cfg)["test_ckpt"]
    folder = tmp_path / "digits"
    folder.mkdir()
    digit = load_split(fake_mnist, "mnist", "test", allow_fetch=False)[0][0].numpy()
    long_name = "d" * 240 + ".png"  # the picture written for it must still fit a file name
    Image.fromarray(digit).save(folder / long_name)
    os.mkfifo(folder / "a_fifo.png")  # reading it would block forever
    Image.new("L", (100, 100)).save(folder / "huge.png")
    Image.new("L", (100, 60)).save(folder / "large.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4_000)  # over it, and over twice it
    (folder / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n then nothing")
    rows = predict_files(ckpt, folder, tmp_path / "out")
    status = {Path(r["file"]).name: r["status"] for r in rows}
    assert status == {
        long_name: "ok",
        "huge.png": "unreadable",
        "large.png": "unreadable",
        "torn.png": "unreadable",
    }
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(lines) == 4
    assert any("a_fifo.png: not a regular file" in m for m in lines)
    for name in ("huge.png", "large.png"):
        assert any(f"{name} has more pixels than Pillow's limit of 4000" in m for m in lines)
    assert any("torn.png as an image" in m for m in lines)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["0000_" + "d" * 100 + ".png", "predictions.csv"]


def test_crafted_or_damaged_checkpoints_cost_one_line_in_every_command(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from stnlab.checkpoints import load_checkpoint_net, read_checkpoint
    from stnlab.prediction import predict_files

    cfg = make_cfg("model=stn_cnn", "data=rotated", "debug=limit", output_dir=tmp_path / "run")
    good = read_checkpoint(train(cfg)["test_ckpt"])

    def crafted(name: str, change: Callable[[dict], None]) -> Path:
        checkpoint = {**good, "state_dict": dict(good["state_dict"])}
        checkpoint["stnlab_config"] = OmegaConf.to_container(
            OmegaConf.create(good["stnlab_config"])
        )
        change(checkpoint)
        path = tmp_path / f"{name}.ckpt"
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(50_000)  # pickling 3,000 levels recurses that deep
        try:
            torch.save(checkpoint, path)
        finally:
            sys.setrecursionlimit(limit)
        return path

    def nan_weights(c: dict) -> None:
        key = next(k for k in c["state_dict"] if k.endswith("weight"))
        c["state_dict"][key] = torch.full_like(c["state_dict"][key], float("nan"))

    def huge(c: dict) -> None:  # 2**36 hidden units: terabytes if it were built
        c["stnlab_config"]["model"]["net"]["transformer"]["loc_net"]["hidden"] = [2**36]

    def deep(c: dict) -> None:
        node: dict = {}
        c["stnlab_config"]["model"]["deep"] = node
        for _ in range(3_000):  # past the default limit of 1,000; CPython 3.13 pickles no 5,000
            node["x"] = node = {}

    cases = {
        "non-finite weights (NaN or inf, first in": crafted("nan", nan_weights),
        "its 'state_dict' is not a mapping": crafted("list", lambda c: c.update(state_dict=[1, 2])),
        "has no 'data' section": crafted("nodata", lambda c: c["stnlab_config"].pop("data")),
        "its weights do not fit the model its config describes": crafted("huge", huge),
        "nested too deep": crafted("deep", deep),
    }
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    cases["is not a regular file (a FIFO"] = fifo
    for expected, path in cases.items():
        for command in (
            lambda p: load_checkpoint_net(p),  # eval, robustness and export build through it
            lambda p: export_checkpoint(p, "pt2", tmp_path / "exports"),
            lambda p: predict_files(p, tmp_path, tmp_path / "predictions"),
        ):
            with pytest.raises((ConfigError, StorageError, ValueError)) as info:
                command(path)
            message = str(info.value)
            assert expected in message and "\n" not in message, (path.name, message)
    assert not (tmp_path / "exports").exists() and not (tmp_path / "predictions").exists()


def test_a_run_that_would_train_no_step_is_refused_at_start_up(
    make_cfg: Callable[..., DictConfig], fake_mnist: Path
) -> None:
    from stnlab.data.sources import load_split

    images = len(load_split(fake_mnist, "mnist", "train", allow_fetch=False)[0])
    cfg = make_cfg("model=cnn", f"data.val_size={images - 50}", "data.batch_size=64")
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert str(info.value) == (
        "data.batch_size=64 is larger than the training split (50 images), so no training "
        "step would run; valid: data.batch_size <= 50, or a smaller data.val_size"
    )


def test_the_resume_command_printed_after_sigterm_pastes_into_a_shell(tmp_path: Path) -> None:
    import shlex

    from stnlab.tasks.runner import _terminated

    run = tmp_path / "runs" / "my run é"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    cfg = OmegaConf.create({"paths": {"output_dir": str(run)}, "callbacks": None})
    message = str(_terminated(cfg, resumable=True))
    command = message.split("Resume with: ")[1]
    assert shlex.split(command)[-2:] == [f"hydra.run.dir={run}", "ckpt_path=last"]


def test_a_zero_accumulation_and_a_folder_in_place_of_a_data_file_cost_one_line(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from stnlab.config_checks import validate_config
    from stnlab.data.sources import DataSourceError, verify_file

    with pytest.raises(ConfigError, match=r"^trainer\.accumulate_grad_batches=0 must be a whole"):
        validate_config(make_cfg("+trainer.accumulate_grad_batches=0"))
    folder = tmp_path / "train-images-idx3-ubyte"
    folder.mkdir()
    with pytest.raises(DataSourceError) as info:
        verify_file(folder, "0" * 32)
    assert str(info.value).startswith(f"{folder} is a folder (or not a regular file) where")


def test_a_full_disk_in_the_temp_folder_names_the_temp_folder_not_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from stnlab.errors import user_error_message

    monkeypatch.chdir(tmp_path)  # the project, itself below the temporary folder
    staged = os.path.join(tempfile.gettempdir(), "wandb-media", "grid_0.png")
    message = user_error_message(OSError(errno.ENOSPC, "No space left on device", staged))
    assert message is not None and message.startswith(f"{staged}: No space left on device")
    assert "TMPDIR" in message and "hydra.run.dir" not in message
    # a run's own file, in a project cloned under the temporary folder: the run's advice
    in_run = user_error_message(OSError(errno.ENOSPC, "No space left", "outputs/run/x.ckpt"))
    assert in_run is not None and "hydra.run.dir" in in_run and "TMPDIR" not in in_run


def test_a_fixed_set_that_cannot_fit_in_memory_is_refused_before_it_is_rendered(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stnlab.data.datamodule as datamodule

    class Free:
        available = 2**30  # 1 GiB free

    monkeypatch.setattr(datamodule.psutil, "virtual_memory", lambda: Free())
    datamodule.check_fixed_set_fits(5000, 1, 60, "validation")  # about 0.1 GiB: fits
    # 5000 canvases of 240×240 float32 (1.1 GiB) and the grid and copies of a 2048-chunk
    with pytest.raises(ConfigError, match=r"needs 2\.8 GiB .* but 1\.0 GiB is available"):
        datamodule.check_fixed_set_fits(5000, 1, 240, "validation")

    Free.available = 2**20  # 1 MiB: not even 100 canvases of 60×60 fit
    cfg = make_cfg("data=translated", "data.val_size=100")
    rendered: list[int] = []
    monkeypatch.setattr(datamodule.DigitsDataModule, "fixed_params", lambda *a: rendered.append(1))
    with pytest.raises(ConfigError) as info:
        train(cfg)
    message = str(info.value)
    assert message.startswith("the fixed validation set needs 6.9 MiB of memory (100 canvases")
    assert "1×60×60 float32) but 1.0 MiB is available; lower data.canvas_size=60" in message
    assert not rendered  # refused before drawing a single parameter
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_predict_refuses_its_own_run_folder_as_input_and_touches_nothing(
    fake_mnist: Path, tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    from PIL import Image

    from stnlab.config import compose_config
    from stnlab.tasks.predict import predict

    run = tmp_path / "predict_run"
    run.mkdir()
    Image.new("L", (28, 28), 255).save(run / "seven.png")
    before = checksums(run)
    overrides = [f"ckpt_path={tiny_run[0]}", f"input={run}"]
    cfg = compose_config("predict", overrides, output_dir=run, data_dir=fake_mnist)
    with pytest.raises(
        RefusedError, match=r"^hydra\.run\.dir=.* is the command.s own input input="
    ):
        predict(cfg)
    assert checksums(run) == before  # no predictions.csv, no pictures among the inputs


def test_a_lock_file_naming_a_live_unrelated_process_does_not_hold_the_folder(
    tmp_path: Path,
) -> None:
    (tmp_path / LOCK_NAME).write_text('{"pid": 1}')  # PID 1 is alive, and is not a run
    lock = RunFolderLock(tmp_path)
    lock.acquire()  # the kernel lock, not the PID in the file, decides
    assert lock.held
    lock.release()

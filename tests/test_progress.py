"""Progress bars: drawn to the end on a (forced) terminal, nothing at all elsewhere.

pytest's captured stdout/stderr are not terminals; ``TTY_COMPATIBLE=1`` / ``FORCE_COLOR=1``
make rich treat them as one, as it would a real terminal.
"""

from __future__ import annotations

import logging
import re
import sys

import pytest

from stnlab import progress
from stnlab.config import compose_config
from stnlab.progress import on_terminal, progress_bar, track


@pytest.fixture
def not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", progress.ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def forced_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich >= 14
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich 13
    monkeypatch.setenv("TERM", "xterm")


def _plain(text: str) -> str:
    """``text`` without rich's colour and cursor codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_quiet_when_not_a_terminal(not_a_terminal: None, capsys: pytest.CaptureFixture) -> None:
    assert not on_terminal("stderr") and not on_terminal("stdout")
    with progress_bar("outer", total=3) as outer:
        for item in track(["a", "b"], "inner"):
            assert item in "ab"
        outer.advance(3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert (outer.completed, outer.total) == (3, 3)  # counted all the same


def test_forced_terminal_draws_the_bar_to_its_total(
    forced_terminal: None, capsys: pytest.CaptureFixture
) -> None:
    assert on_terminal("stderr")
    seen = list(track(range(5), "counting digits"))
    assert seen == [0, 1, 2, 3, 4]
    err = _plain(capsys.readouterr().err)
    assert "counting digits" in err
    assert "5/5" in err.splitlines()[-1]  # the last state drawn is the finished bar


def test_a_bar_in_bytes_shows_sizes(forced_terminal: None, capsys: pytest.CaptureFixture) -> None:
    with progress_bar("archive.tar.gz", total=3_000_000, unit="bytes") as bar:
        bar.advance(1_000_000)
        bar.advance(2_000_000)
    assert (bar.completed, bar.total) == (3_000_000, 3_000_000)
    assert "3.0/3.0 MB" in _plain(capsys.readouterr().err)


def test_nested_bars_join_the_outer_display_and_leave_it(
    forced_terminal: None, capsys: pytest.CaptureFixture
) -> None:
    with progress_bar("variants", total=2) as outer:
        for name in ("rotated", "rts"):
            with progress_bar(f"rendering {name}", total=4) as inner:
                inner.advance(4)
                assert progress._shown is not None
                shown = [task.description for task in progress._shown.tasks]
                assert shown == ["variants", f"rendering {name}"]
            assert [t.description for t in progress._shown.tasks] == ["variants"]
            outer.advance()
    assert progress._shown is None
    assert "2/2" in _plain(capsys.readouterr().err).splitlines()[-1]


def test_stnlab_progress_0_turns_bars_off(
    forced_terminal: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(progress.ENV, "0")
    assert not on_terminal("stderr") and not on_terminal("stdout")
    list(track(range(3), "quiet"))
    assert capsys.readouterr().err == ""


def test_disabled_bar_is_quiet_on_a_terminal(
    forced_terminal: None, capsys: pytest.CaptureFixture
) -> None:
    with progress_bar("rank 1", total=2, enabled=False) as bar:
        bar.advance(2)
    assert capsys.readouterr().err == "" and bar.completed == 2


def test_log_lines_are_printed_above_a_shown_bar(
    forced_terminal: None, capsys: pytest.CaptureFixture
) -> None:
    stderr = sys.stderr
    handler = logging.StreamHandler(stderr)  # as Hydra's console handler is set up
    logger = logging.getLogger("stnlab.test_progress")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with progress_bar("work", total=1) as bar:
            assert sys.stderr is not stderr  # rich's stand-in that prints above the bar
            assert handler.stream is sys.stderr
            logger.warning("half way")
            bar.advance()
        assert handler.stream is stderr and sys.stderr is stderr
    finally:
        logger.removeHandler(handler)
    err = _plain(capsys.readouterr().err)
    assert "half way\n" in err


def test_on_terminal_knows_two_streams() -> None:
    with pytest.raises(ValueError, match="'stderr' or 'stdout'"):
        on_terminal("stdin")


@pytest.mark.parametrize("terminal", [False, True])
def test_training_bar_follows_stdout(
    terminal: bool, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("forced_terminal" if terminal else "not_a_terminal")
    cfg = compose_config("train", ["logger=csv"])
    assert cfg.trainer.enable_progress_bar is terminal
    cfg = compose_config("train", ["logger=csv", "trainer.enable_progress_bar=false"])
    assert cfg.trainer.enable_progress_bar is False

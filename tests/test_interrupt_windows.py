"""Interruptions that land in the few instructions between starting a child and keeping it.

The MP4 writer's race, seen in CI: a SIGTERM that arrived while ``FFmpegVideoWriter`` was
being built (ffmpeg already started, the writer not yet handed back) left an ffmpeg that
nobody ended. The atomic writer removed its temporary file, then ffmpeg created it again:
a hidden ``.m.mp4.XXXX.mp4`` stayed behind. These tests put the interruption exactly
there instead of hoping a timed signal hits it.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from ptalker_cli import interrupts
from ptalker_cli.export import video


def test_deferred_holds_a_signal_until_the_block_ends():
    reached = []
    with pytest.raises(interrupts.Interrupted) as info:
        with interrupts.handle_signals():
            with interrupts.deferred():
                signal.raise_signal(signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now: it must not have raised here
                reached.append("end of block")
            reached.append("after the block")  # not reached: the held signal is raised on leaving
    assert reached == ["end of block"]
    assert info.value.signum == signal.SIGTERM


@pytest.fixture()
def sigint_default():
    """A job started in the background (`pytest &`) inherits SIGINT ignored, and handle_signals keeps an
    ignored signal ignored, as it should for `nohup ptalker ... &`: this test needs the default handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_nested_deferral_raises_only_at_the_outermost_end(sigint_default):
    reached = []
    with pytest.raises(interrupts.Interrupted):
        with interrupts.handle_signals():
            with interrupts.deferred():
                with interrupts.deferred():
                    signal.raise_signal(signal.SIGINT)
                    time.sleep(0.05)
                reached.append("inner ended")
            reached.append("outer ended")
    assert reached == ["inner ended"]


def test_no_signal_no_exception():
    with interrupts.handle_signals():
        with interrupts.deferred():
            pass
    assert interrupts._state["pending"] is None and interrupts._state["deferring"] == 0


def _watch_encoder_start(monkeypatch, started: list, then=None):
    """Record the encoding ffmpeg the writer starts (not other programs), then call ``then()``."""
    real_popen = video.subprocess.Popen

    def popen(args, *rest, **kwargs):
        proc = real_popen(args, *rest, **kwargs)
        if "pipe:0" in list(args):
            started.append(proc)
            if then is not None:
                then()
        return proc

    monkeypatch.setattr(video.subprocess, "Popen", popen)


def _interrupt_after_ffmpeg_starts(monkeypatch, started: list):
    def interrupt():
        signal.raise_signal(signal.SIGTERM)  # lands right after ffmpeg started
        time.sleep(0.05)

    _watch_encoder_start(monkeypatch, started, interrupt)


def test_writer_interrupted_right_after_ffmpeg_started_ends_it(tmp_path, monkeypatch):
    started: list = []
    _interrupt_after_ffmpeg_starts(monkeypatch, started)
    out = tmp_path / "out.mp4"
    with pytest.raises(interrupts.Interrupted):
        with interrupts.handle_signals():
            video.FFmpegVideoWriter(out, 16, 16, 25.0)
    assert len(started) == 1
    assert started[0].returncode is not None, "ffmpeg was left running"


def test_writer_failing_after_ffmpeg_started_ends_it(tmp_path, monkeypatch):
    """Any failure after ``Popen`` (here: the writer thread cannot start) ends ffmpeg too."""
    started: list = []
    _watch_encoder_start(monkeypatch, started)
    video.ffmpeg_exe()  # imageio-ffmpeg checks its binary once, with a thread of its own

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(RuntimeError):
        video.FFmpegVideoWriter(tmp_path / "out.mp4", 16, 16, 25.0)
    assert started and started[0].returncode is not None


@pytest.mark.system("egl")
def test_render_interrupted_while_starting_ffmpeg_leaves_nothing(tmp_path, monkeypatch):
    from ptalker_cli.inference import tiny_model
    from ptalker_cli.motion import Motion

    topo = tiny_model().topology
    motion = Motion(np.repeat(topo.vertices[None], 5, axis=0).astype(np.float32), 25.0, topo.name)
    started: list = []
    _interrupt_after_ffmpeg_starts(monkeypatch, started)
    with pytest.raises(interrupts.Interrupted):
        with interrupts.handle_signals():
            video.render_video(motion, topo, tmp_path / "m.mp4", resolution=32, renderer="moderngl")
    assert started and started[0].returncode is not None
    time.sleep(0.5)  # an orphaned ffmpeg would have (re)created its output by now
    assert sorted(p.name for p in tmp_path.iterdir()) == []

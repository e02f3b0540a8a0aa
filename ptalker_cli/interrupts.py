"""Stopping cleanly on SIGINT and SIGTERM.

:func:`handle_signals` (the CLI wraps every command in it) makes SIGTERM behave like
Ctrl-C: both raise :class:`Interrupted`, a ``KeyboardInterrupt``, in the main thread,
so the code that already cleans up after Ctrl-C runs for a batch scheduler's time
limit, ``kill`` or a container stop too: the atomic writers remove their temporary
files, the video writer ends ffmpeg, ``subprocess.run`` ends the TTS engine, worker
pools are stopped (:func:`worker_pool`). The CLI then prints one line and exits with
the conventional code, 128 + the signal number: 130 for SIGINT, 143 for SIGTERM.

A repeated signal within :data:`GRACE_S` seconds of the first is ignored, so a second
Ctrl-C cannot cut the clean-up short; after that, it interrupts again.

:func:`set_note` says what the one line should add ("nothing written" by default),
e.g. how to resume a training run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

#: The signals that stop a command cleanly.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds after an interruption during which a repeated signal is ignored (clean-up time).
GRACE_S = 10.0
DEFAULT_NOTE = "nothing written"

Note = str | Callable[[], str]
_state: dict = {"since": None, "note": DEFAULT_NOTE, "in_job": False, "deferring": 0, "pending": None}


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGINT or SIGTERM."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(int(signum))
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


def exit_code(exc: BaseException) -> int:
    """128 + the signal number (130 for Ctrl-C, which Python reports as a plain KeyboardInterrupt)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def set_note(note: Note) -> None:
    """What the interruption message adds after "interrupted; " (a string, or a function called then)."""
    _state["note"] = note


def message() -> str:
    note = _state["note"]
    if callable(note):
        try:
            note = note()
        except Exception:  # noqa: BLE001 - the message must not fail
            note = DEFAULT_NOTE
    return f"interrupted; {note}"


def _handler(signum, frame) -> None:
    since = _state["since"]
    if since is not None and time.monotonic() - since < GRACE_S:
        return  # the clean-up of the first interruption is running
    if _state["deferring"]:
        if _state["pending"] is None:
            _state["pending"] = signum  # raised when the deferring block ends
        return
    _state["since"] = time.monotonic()
    raise Interrupted(signum)


def interrupted(signum: int) -> Interrupted:
    """The :class:`Interrupted` for a signal a caller took itself (an event loop's handler, which
    stops the loop gracefully rather than raising mid-task); a repeat within :data:`GRACE_S` is ignored."""
    _state["since"] = time.monotonic()
    return Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back SIGINT / SIGTERM inside the block; one that arrived is raised when it ends.

    For steps that must not be cut in two, e.g. starting a child process and taking
    note of it: an interruption between ``Popen`` starting ffmpeg and the caller keeping
    the ``Popen`` object would leave an ffmpeg nobody ends, which then (re)creates its
    output file after the temporary file was removed.
    """
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
        signum = _state["pending"]
        if not _state["deferring"] and signum is not None:
            _state["pending"] = None
            _state["since"] = time.monotonic()
            raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` on SIGINT / SIGTERM inside the block (main thread only).

    Signals that were ignored when the block started (``nohup``, background jobs) stay
    ignored; the previous handlers come back afterwards. The note is reset to the default.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    saved = dict(_state)
    _state.update(since=None, note=DEFAULT_NOTE, pending=None)
    for s, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            if old is not None:
                signal.signal(s, old)
        _state.update(since=saved["since"], note=saved["note"])


# --------------------------------------------------------------------------- worker processes


def _worker_handler(signum, frame) -> None:
    if _state["in_job"]:
        _state["in_job"] = False
        _state["since"] = time.monotonic()
        raise Interrupted(signum)  # the job cleans up (temporary files, child processes) and reports it
    raise SystemExit(128 + signum)  # idle in the pool: leave quietly


def _worker_init() -> None:
    _state.update(since=None, in_job=False)
    for s in SIGNALS:
        signal.signal(s, _worker_handler)


def _run_job(fn, *args, **kwargs):
    if _state["since"] is not None:
        raise Interrupted(signal.SIGTERM)  # this worker was stopped: start nothing new
    _state["in_job"] = True
    try:
        return fn(*args, **kwargs)
    finally:
        _state["in_job"] = False


class _Pool:
    """The part of an executor a caller needs: ``submit`` (jobs run under the worker's signal handler)."""

    def __init__(self, executor: ProcessPoolExecutor):
        self.executor = executor

    def submit(self, fn, *args, **kwargs):
        return self.executor.submit(_run_job, fn, *args, **kwargs)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[_Pool]:
    """A process pool that stops promptly and cleanly when the block fails or is interrupted.

    Each worker turns SIGINT / SIGTERM into :class:`Interrupted` inside a job (so the
    job's own clean-up runs: temporary files, child processes) and exits quietly when
    idle. On an exception in the block every worker gets SIGTERM, queued jobs are
    cancelled and the workers are waited for before the exception goes on.
    """
    executor = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)
    try:
        yield _Pool(executor)
        executor.shutdown(wait=True)
    except BaseException:
        stop_pool(executor)
        raise


def stop_pool(executor: ProcessPoolExecutor) -> None:
    """SIGTERM every worker of ``executor``, cancel what is queued, and wait for them."""
    processes = dict(getattr(executor, "_processes", None) or {})
    for pid in processes:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(Exception):
        executor.shutdown(wait=True, cancel_futures=True)
    for proc in processes.values():  # a worker that ignored SIGTERM
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()

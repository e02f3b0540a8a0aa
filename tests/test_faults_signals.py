"""SIGTERM and SIGINT in the middle of long commands: one line, exit 130 / 143, no temporary file, no orphan.

Every test starts the real CLI as a process, waits until it is demonstrably in the middle
of its work (a temporary output file, an ffmpeg / festival child process, a checkpoint, a
first finished file), sends the signal, and checks: the conventional exit code (128 +
the signal), exactly one line on stderr, no hidden or temporary file left, every child
process it had is gone (not orphaned), and for training that the checkpoint is there and
the run resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speech_like
from system import stderr_lines

ROOT = Path(__file__).resolve().parent.parent
CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


# ----------------------------------------------------------------------------- helpers


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    tmp = tmp_path / "tmpdir"  # the process's own temporary folder: checked empty at the end
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)
    return env


def _default_sigint() -> None:
    # A launcher that ran pytest in the background (`cmd &` in a script) leaves SIGINT ignored, and
    # the children would inherit that (the CLI keeps an ignored SIGINT ignored, as nohup expects):
    # the process under test gets SIGINT's default back, as from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ptalker_cli", *[str(a) for a in args]], env=_env(tmp_path),
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def descendants(pid: int) -> dict[int, str]:
    """{pid: command name} of every process below ``pid``."""
    return {p: n for p, (n, _) in tree(pid).items()}


def tree(pid: int) -> dict[int, tuple[str, int]]:
    """{pid: (command name, parent pid)} of every process below ``pid`` (from /proc, else ps)."""
    parent: dict[int, int] = {}
    name: dict[int, str] = {}
    if Path("/proc/self/stat").exists():
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            parent[int(d.name)], name[int(d.name)] = int(rest[1]), comm
    else:
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,comm="], capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            p, pp, comm = line.split(None, 2)
            parent[int(p)], name[int(p)] = int(pp), Path(comm).name
    found, todo = {}, [pid]
    while todo:
        cur = todo.pop()
        for p, pp in parent.items():
            if pp == cur and p not in found:
                found[p] = (name[p], pp)
                todo.append(p)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def wait_for(proc: subprocess.Popen, what: str, cond, timeout: float = 240.0):
    """Poll ``cond()`` until it returns something truthy; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen, sig: int, timeout: float = 120.0) -> list[str]:
    """Send ``sig``; returns the non-empty stderr lines after checking the exit code, that there is no
    traceback, that no child process is left and that it stopped within ``timeout`` seconds."""
    kids = descendants(proc.pid)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        for p in descendants(proc.pid) | kids:  # (orphans keep the stderr pipe open)
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        pytest.fail(f"the command did not stop within {timeout} s of {signal.Signals(sig).name}")
    assert proc.returncode == CODES[sig], err
    assert "Traceback" not in err, err
    left = {p: n for p, n in kids.items() if alive(p)}
    assert not left, f"child processes left running: {left}"
    return stderr_lines(err)


def hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def own_temp(tmp_path: Path) -> list[str]:
    """What is left in the process's TMPDIR (torch's own compile cache aside)."""
    return sorted(p.name for p in (tmp_path / "tmpdir").iterdir() if not p.name.startswith("torchinductor"))


def wav(path: Path, seconds: float) -> Path:
    sf.write(path, speech_like(seconds), 16000)
    return path


# ----------------------------------------------------------------------------- rendering (ffmpeg child)


@pytest.mark.system("egl")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_animate_mp4_interrupted(tmp_path, sig):
    """The issue's case: ``animate … -o out.mp4`` killed mid-render left a hidden .out.mp4.XXXX.mp4 (exit -15)."""
    audio = wav(tmp_path / "speech.wav", 60.0)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = start(tmp_path, "animate", audio, "-m", "tiny", "-o", out_dir / "out.mp4", "--quiet")
    ffmpeg = wait_for(proc, "ffmpeg encoding into a temporary file",
                      lambda: list(out_dir.glob(".out.mp4.*")) and
                      [p for p, n in descendants(proc.pid).items() if "ffmpeg" in n])
    lines = stop(proc, sig)
    assert lines == ["error: interrupted; nothing written"]
    assert list(out_dir.iterdir()) == []
    assert not any(alive(p) for p in ffmpeg)
    assert own_temp(tmp_path) == []


@pytest.mark.system("egl")
def test_render_mp4_interrupted(tmp_path):
    from ptalker_cli.inference import tiny_model
    from ptalker_cli.motion import Motion

    topo = tiny_model().topology
    t = np.arange(1500)[:, None, None] / 25.0
    Motion((topo.vertices[None] + 0.01 * np.sin(t)).astype(np.float32), 25.0, topo.name).save(tmp_path / "m.npy")
    proc = start(tmp_path, "render", tmp_path / "m.npy", "--template", topo.name, "-o", tmp_path / "m.mp4", "--quiet")
    wait_for(proc, "ffmpeg encoding", lambda: list(tmp_path.glob(".m.mp4.*")) and
             any("ffmpeg" in n for n in descendants(proc.pid).values()))
    assert stop(proc, signal.SIGTERM) == ["error: interrupted; nothing written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.npy", "tmpdir"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_interrupted_with_a_client_streaming(tmp_path, sig):
    """``ptalker serve`` stopped while a client is mid-stream: one line, 130 / 143, the client sees a close."""
    import asyncio

    import websockets

    proc = subprocess.Popen([sys.executable, "-m", "ptalker_cli", "serve", "--port", "0", "-m", "tiny"],
                            env=_env(tmp_path), cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    line = proc.stdout.readline()
    assert "listening on ws://" in line, line + proc.stderr.read()
    url = line.strip().rsplit(" ", 1)[-1]
    pcm = (0.1 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220)).astype("<f4").tobytes()

    async def client() -> tuple[int, int | None]:
        frames = 0
        async with websockets.connect(url) as ws:
            await ws.send(pcm)  # one second of audio and no end: the stream stays open
            while frames < 3:
                if isinstance(await ws.recv(), bytes):
                    frames += 1
            proc.send_signal(sig)
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 60)
            except websockets.ConnectionClosed:
                pass
            return frames, ws.close_code

    frames, code = asyncio.run(client())
    assert frames == 3 and code is not None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == CODES[sig], err
    assert "Traceback" not in err, err
    lines = stderr_lines(err)
    assert lines[-1] == "error: interrupted; server stopped", lines
    # the event loop takes the signal: the server closes the connection and logs it, and nothing
    # else is printed (a KeyboardInterrupt raised mid-send left an un-awaited coroutine's warning)
    assert len(lines) == 2 and "closed as the server stopped" in lines[0], lines


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ptalker_cli.data.testing import make_fake_dataset

    root = tmp_path_factory.mktemp("signal-data") / "ds"
    make_fake_dataset(root, frames=16)
    return root


def _train(dataset, run, *extra):
    return ("train", "--data", dataset, "--preset", "tiny", "--out", run, "--seed", "3", "--set", "threads=1",
            "--set", "tensorboard=false", "--quiet", *extra)


def _step(run: Path) -> int:
    try:
        return json.loads((run / "last" / "trainer_state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def test_train_interrupted_keeps_its_checkpoint_and_resumes(tmp_path, dataset):
    from ptalker_cli.train.checkpoint import find_checkpoint

    run = tmp_path / "run"
    proc = start(tmp_path, *_train(dataset, run, "--epochs", "1000", "--checkpoint-every", "1"))
    wait_for(proc, "two checkpoints", lambda: _step(run) >= 2)
    lines = stop(proc, signal.SIGTERM)
    assert lines == [f"error: interrupted; resume with `ptalker train --out {run} --resume`"]
    assert hidden(run) == []  # no .last.tmp / .last.old
    assert find_checkpoint(run) == run / "last"
    step = _step(run)
    assert step >= 2
    env = _env(tmp_path)
    res = subprocess.run([sys.executable, "-m", "ptalker_cli", *_train(dataset, run, "--resume", "--max-steps",
                                                                       str(step + 1))],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "train_summary.json").read_text())["steps"] == step + 1


def test_train_interrupted_before_a_checkpoint(tmp_path, dataset):
    run = tmp_path / "run"
    proc = start(tmp_path, *_train(dataset, run, "--epochs", "1000"))
    wait_for(proc, "the run's config", lambda: (run / "metrics.jsonl").exists())
    lines = stop(proc, signal.SIGINT)
    expected = f"error: interrupted; no checkpoint was saved yet; start again with `ptalker train --out {run} --force`"
    assert lines == [expected]


def test_train_with_torchrun_interrupted(tmp_path, dataset):
    """``--devices 2``: torchrun and both training processes end; its shutdown report is not shown."""
    run = tmp_path / "run"
    proc = start(tmp_path, *_train(dataset, run, "--epochs", "1000", "--checkpoint-every", "1", "--devices", "2"))
    workers = wait_for(proc, "a checkpoint of the two-process run",
                       lambda: _step(run) >= 1 and [p for p, n in descendants(proc.pid).items() if n.startswith("py")])
    lines = stop(proc, signal.SIGTERM, timeout=180)
    # (lines before it are DDP's own warnings while training, e.g. about find_unused_parameters)
    assert lines[-1] == f"error: interrupted; resume with `ptalker train --devices 2 --out {run} --resume`"
    assert not [ln for ln in lines if "SignalException" in ln or "death signal" in ln or "interrupted" in ln][:-1]
    assert not any(alive(p) for p in workers)
    assert hidden(run) == [".launch_config.json"]
    assert (run / "last" / "trainer_state.json").is_file()


# ----------------------------------------------------------------------------- evaluation, data


def test_eval_interrupted(tmp_path):
    from ptalker_cli.data.testing import make_fake_dataset

    data = make_fake_dataset(tmp_path / "data", subjects=("S1", "S2", "S3"), sentences=("s01", "s02", "s03"),
                             train_subjects=("S1", "S2", "S3"), frames=1500)
    out = tmp_path / "res"
    proc = start(tmp_path, "eval", "--model", "tiny", "--data", data, "--split", "train", "--out", out,
                 "--save-predictions", "--quiet")
    wait_for(proc, "a first prediction", lambda: list((out / "predictions").glob("*.json")))
    lines = stop(proc, signal.SIGTERM)
    assert lines == [f"error: interrupted; no results written; what was finished in {out / 'predictions'} is kept"]
    assert not (out / "results.json").exists() and hidden(out) == []
    for p in (out / "predictions").glob("*.npy"):  # finished predictions are whole
        assert np.load(p).ndim == 3 and p.with_suffix(".json").is_file()


def test_data_prepare_interrupted_then_resumed(tmp_path):
    from ptalker_cli.data.testing import make_fake_biwi

    make_fake_biwi(tmp_path / "raw", frames=300)
    out = tmp_path / "biwi"
    args = ("data", "prepare", "biwi", tmp_path / "raw", out, "--no-regions", "--quiet")
    proc = start(tmp_path, *args)
    wait_for(proc, "a first sequence", lambda: list((out / "vertices_npy").glob("*_e*.npy")))
    lines = stop(proc, signal.SIGINT)
    assert lines == ["error: interrupted; the files finished so far are kept; run the same command again to go on"]
    assert hidden(out) == []
    again = subprocess.run([sys.executable, "-m", "ptalker_cli", *map(str, args)], env=_env(tmp_path), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "dataset.json").is_file()


@pytest.mark.system("festival")
def test_data_synth_interrupted(tmp_path):
    """Worker processes and their festival children end; the unfinished corpus is removed."""
    out = tmp_path / "corpus"
    proc = start(tmp_path, "data", "synth", out, "--speakers", "4", "--sentences", "120", "--workers", "2",
                 "--tts", "festival", "--quiet")
    festival = wait_for(proc, "festival synthesising in both workers",
                        lambda: len(f := [p for p, (n, pp) in tree(proc.pid).items() if "festival" in n and
                                          pp != proc.pid]) == 2 and f)
    lines = stop(proc, signal.SIGTERM, timeout=30)  # promptly: the workers' jobs are stopped, not finished
    assert lines == ["error: interrupted; nothing written"]
    assert not any(alive(p) for p in festival)
    assert not out.exists()
    assert own_temp(tmp_path) == []

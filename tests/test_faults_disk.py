"""OS-level write failures end in one line, exit code 1, no traceback and nothing left behind (issue 18).

Two ways to make writing fail:

* a real small file system: a tmpfs mounted for the test (filled up, or remounted
  read-only); needs root, so these tests carry ``@pytest.mark.system("tmpfs")``;
* a portable fault injection (:func:`no_space`): every write to a file under a folder
  raises ``OSError(ENOSPC)``, whatever opened it (``open``, ``Path.write_text``,
  ``os.open``); it runs everywhere.

"Nothing left behind" is checked on the whole output folder, hidden files included.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import speech_like
from system import stderr_lines
from typer.testing import CliRunner

from ptalker_cli.cli.app import app
from ptalker_cli.errors import WriteError

ROOT = Path(__file__).resolve().parent.parent
FILLER = "filler"
NO_SPACE = "no space left on device; free some space or choose another output location"


# ----------------------------------------------------------------------------- helpers


def cli(*args: str):
    """Run the app in-process; returns (exit code, non-empty output lines, result)."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    return res.exit_code, lines, res


def assert_one_line_error(code, lines, res, *fragments):
    assert code == 1, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # not an OSError escaping the command
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert lines[0].startswith("error: "), lines[0]
    for f in fragments:
        assert f in lines[0], lines[0]


def leftovers(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (hidden ones included), but the filler."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != FILLER)


@pytest.fixture
def speech(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    sf.write(path, speech_like(1.0), 16000)
    return path


@contextlib.contextmanager
def tmpfs(mnt: Path, size: str):
    """A tmpfs of ``size`` mounted at ``mnt`` (unmounted afterwards, lazily if still busy)."""
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KB tmpfs at ``tmp_path/fs``."""
    with tmpfs(tmp_path / "fs", "256k") as mnt:
        yield mnt


def fill(folder: Path, leave: int = 0) -> None:
    """Fill ``folder``'s file system with one file, then free ``leave`` bytes of it."""
    fd = os.open(folder / FILLER, os.O_WRONLY | os.O_CREAT, 0o644)
    block = b"\0" * 4096
    try:
        while True:
            os.write(fd, block)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        size = (folder / FILLER).stat().st_size
        os.truncate(folder / FILLER, max(0, size - leave))
    assert os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize <= leave + 4096


class _FullFile:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def writelines(self, lines):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __iter__(self):
        return iter(self._fh)


@pytest.fixture
def no_space(monkeypatch):
    """``no_space(folder)``: from now on every write to a file under ``folder`` raises ENOSPC."""

    def under(folder: Path) -> None:
        folder = Path(folder).resolve()
        real_open, real_os_open, real_write = io.open, os.open, os.write
        fds: set[int] = set()

        def inside(path) -> bool:
            try:
                p = Path(os.fsdecode(path)).resolve()
            except TypeError:
                return False
            return p == folder or folder in p.parents

        def fake_open(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            if not isinstance(file, int) and any(c in mode for c in "wax+") and inside(file):
                return _FullFile(fh)
            return fh

        def fake_os_open(path, flags, *args, **kwargs):
            fd = real_os_open(path, flags, *args, **kwargs)
            if flags & (os.O_WRONLY | os.O_RDWR) and inside(path):
                fds.add(fd)
            return fd

        def fake_write(fd, data):
            if fd in fds:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "write", fake_write)

    return under


ANIMATE_FORMATS = [
    ("out.npy", "npy"),
    ("out_obj", "obj"),
    ("out_ply", "ply"),
    ("out.glb", "glb"),
]


# ----------------------------------------------------------------------------- a real full disk (tmpfs)


@pytest.mark.system("tmpfs")
@pytest.mark.parametrize("name, fmt", ANIMATE_FORMATS + [pytest.param("out.mp4", "mp4",
                                                                      marks=pytest.mark.system("egl"))])
def test_animate_on_a_full_disk(small_fs, speech, name, fmt):
    fill(small_fs, leave=8192)
    code, lines, res = cli("animate", speech, "-m", "tiny", "-o", small_fs / name, "--format", fmt, "--quiet")
    assert_one_line_error(code, lines, res, f"could not write {small_fs / name}: {NO_SPACE}")
    assert leftovers(small_fs) == []


@pytest.mark.system("tmpfs")
def test_all_formats_on_a_full_disk_leaves_none(small_fs, speech):
    """``--format all``: the .npy fits, the OBJ frames do not; the .npy written first is removed again."""
    fill(small_fs, leave=96 * 1024)
    code, lines, res = cli("animate", speech, "-m", "tiny", "-o", small_fs / "out", "--format", "all", "--quiet")
    assert_one_line_error(code, lines, res, "could not write", NO_SPACE)
    assert "out.npy" not in lines[0]  # the .npy was written (then removed): another output failed
    assert leftovers(small_fs) == []


@pytest.mark.system("tmpfs")
def test_full_disk_through_the_real_entry_point(small_fs, speech):
    """The issue's case: ``ptalker animate speech.wav -o out.npy`` in a full folder, as a process."""
    fill(small_fs, leave=8192)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "ptalker_cli", "animate", str(speech), "-m", "tiny", "-o",
                           str(small_fs / "out.npy")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"could not write {small_fs / 'out.npy'}: {NO_SPACE}" in lines[0], lines[0]
    assert leftovers(small_fs) == []


@pytest.mark.system("tmpfs")
def test_read_only_file_system(small_fs, speech):
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    code, lines, res = cli("animate", speech, "-m", "tiny", "-o", small_fs / "out.npy")
    assert_one_line_error(code, lines, res, f"could not write {small_fs / 'out.npy'}: read-only file system; "
                                            "choose a folder you can write to")
    code, lines, res = cli("animate", speech, "-m", "tiny", "-o", small_fs / "sub" / "frames", "--format", "obj")
    assert_one_line_error(code, lines, res, "read-only file system")
    assert leftovers(small_fs) == []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from ptalker_cli.data.layout import Manifest, SplitRule
    from ptalker_cli.data.testing import make_fake_dataset

    root = tmp_path_factory.mktemp("faults-data") / "data"
    make_fake_dataset(root, subjects=("S1", "S2", "S3", "X9"), sentences=("s01", "s02"),
                      train_subjects=("S1", "S2", "S3"))
    m = Manifest.load(root)
    m.splits["one"] = SplitRule.from_json(["X9_s02"])
    m.save(root)
    return root


@pytest.mark.system("tmpfs")
def test_eval_report_on_a_full_disk(small_fs, dataset):
    fill(small_fs)
    out = small_fs / "results"
    code, lines, res = cli("eval", "--model", "tiny", "--data", dataset, "--split", "one", "--out", out, "--quiet")
    assert_one_line_error(code, lines, res, f"could not write {out / 'results.json'}: {NO_SPACE}")
    assert leftovers(small_fs) == []


@pytest.fixture
def big_fs(tmp_path):
    """A tmpfs large enough for a tiny model's checkpoint (8 MB)."""
    with tmpfs(tmp_path / "big", "8m") as mnt:
        yield mnt


def _save(run_dir: Path, step: int) -> Path:
    from ptalker_cli.inference import tiny_model
    from ptalker_cli.train import checkpoint as ckpt

    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return ckpt.save_checkpoint(run_dir, model, opt, {"step": step, "epoch": 0}, [ckpt.capture_rng()])


@pytest.mark.system("tmpfs")
def test_training_checkpoint_on_a_full_disk_keeps_the_previous_one(big_fs):
    from ptalker_cli.train import checkpoint as ckpt

    run = big_fs / "run"
    _save(run, step=1)
    fill(big_fs)
    with pytest.raises(WriteError, match=f"could not write {run / 'last'}: {NO_SPACE}"):
        _save(run, step=2)
    assert sorted(p.name for p in run.iterdir()) == ["last"]  # no .last.tmp, no .last.old
    assert ckpt.find_checkpoint(run) == run / "last"
    assert json.loads((run / "last" / ckpt.STATE_NAME).read_text())["step"] == 1


@pytest.mark.system("tmpfs")
def test_training_log_on_a_full_disk_is_not_cut(small_fs):
    from ptalker_cli.train.logging import JSONL, STEPS_CSV, MetricsLogger

    log = MetricsLogger(small_fs, tensorboard=False)
    log.start()
    log.log_step({"step": 1, "total": 0.5})
    before = {n: (small_fs / n).read_bytes() for n in (JSONL, STEPS_CSV)}
    fill(small_fs)
    # a row longer than a page: the first part still fits in the file's last page, the rest does not
    with pytest.raises(WriteError, match=f"could not write {small_fs / JSONL}: {NO_SPACE}"):
        log.log_step({"step": 2, "total": 0.25, "note": "x" * 9000})
    assert (small_fs / JSONL).read_bytes() == before[JSONL]  # the partial line was taken back
    assert (small_fs / STEPS_CSV).read_bytes() == before[STEPS_CSV]
    assert leftovers(small_fs) == sorted([JSONL, STEPS_CSV, "epochs.csv"])


@pytest.mark.system("tmpfs")
def test_train_command_on_a_full_disk(small_fs, dataset):
    fill(small_fs)
    run = small_fs / "run"
    code, lines, res = cli("train", "--data", dataset, "--preset", "tiny", "--out", run, "--max-steps", "2",
                           "--set", "tensorboard=false", "--quiet")
    assert_one_line_error(code, lines, res, f"could not write {run}", NO_SPACE)
    assert [p for p in leftovers(small_fs) if (small_fs / p).is_file() or p.split("/")[-1].startswith(".")] == []


@pytest.mark.system("tmpfs")
def test_dataset_preparation_on_a_full_disk(tmp_path, small_fs):
    from ptalker_cli.data.testing import make_fake_biwi

    make_fake_biwi(tmp_path / "raw", frames=40)
    out = small_fs / "biwi"
    fill(small_fs, leave=40 * 1024)  # some sequences fit, then the disk is full
    code, lines, res = cli("data", "prepare", "biwi", tmp_path / "raw", out, "--no-regions", "--quiet")
    assert_one_line_error(code, lines, res, f"could not write {out}", NO_SPACE)
    left = leftovers(small_fs)
    assert not [p for p in left if Path(p).name.startswith(".")], left  # no temporary file
    for p in left:  # what was written is complete (the command can be run again to go on)
        if p.endswith(".npy"):
            assert np.load(small_fs / p).size > 0
        if p.endswith(".wav"):
            assert sf.info(str(small_fs / p)).frames > 0


@pytest.mark.system("tmpfs")
def test_wav_writer_on_a_full_disk(small_fs):
    from ptalker_cli.data._common import save_wav

    fill(small_fs)
    with pytest.raises(WriteError, match=f"could not write {small_fs / 'a.wav'}: {NO_SPACE}"):
        save_wav(small_fs / "a.wav", np.zeros(160000, dtype=np.float32), 16000)
    assert leftovers(small_fs) == []


# ----------------------------------------------------------------------------- portable fault injection


@pytest.mark.parametrize("name, fmt", ANIMATE_FORMATS)
def test_animate_without_space_fault_injection(tmp_path, speech, no_space, name, fmt):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    no_space(out_dir)
    code, lines, res = cli("animate", speech, "-m", "tiny", "-o", out_dir / name, "--format", fmt, "--quiet")
    assert_one_line_error(code, lines, res, f"could not write {out_dir / name}: {NO_SPACE}")
    assert leftovers(out_dir) == []


def test_eval_report_without_space_fault_injection(tmp_path, dataset, no_space):
    no_space(tmp_path)
    out = tmp_path / "results"
    code, lines, res = cli("eval", "--model", "tiny", "--data", dataset, "--split", "one", "--out", out, "--quiet")
    assert_one_line_error(code, lines, res, f"could not write {out / 'results.json'}: {NO_SPACE}")
    assert leftovers(tmp_path) == []


def test_dataset_preparation_without_space_fault_injection(tmp_path, no_space):
    from ptalker_cli.data.testing import make_fake_biwi

    make_fake_biwi(tmp_path / "raw")
    out = tmp_path / "out"
    no_space(out)
    code, lines, res = cli("data", "prepare", "biwi", tmp_path / "raw", out, "--no-regions", "--quiet")
    assert_one_line_error(code, lines, res, f"could not write {out}", NO_SPACE)
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_training_log_without_space_fault_injection(tmp_path, no_space):
    from ptalker_cli.train.logging import JSONL, MetricsLogger

    log = MetricsLogger(tmp_path, tensorboard=False)
    log.start()
    log.log_step({"step": 1, "total": 0.5})
    before = (tmp_path / JSONL).read_bytes()
    no_space(tmp_path)
    with pytest.raises(WriteError, match=f"could not write {tmp_path / JSONL}: {NO_SPACE}"):
        log.log_step({"step": 2, "total": 0.25})
    assert (tmp_path / JSONL).read_bytes() == before


def test_training_checkpoint_without_space_fault_injection(tmp_path, monkeypatch):
    """safetensors reports the OS error in words (a Rust I/O error); it is translated like the others."""
    import safetensors.torch
    from safetensors import SafetensorError

    from ptalker_cli.train import checkpoint as ckpt

    run = tmp_path / "run"
    _save(run, step=1)

    def full(*args, **kwargs):
        # its words on a full tmpfs (safetensors 0.8)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(WriteError, match=f"could not write {run / 'last'}: {NO_SPACE}"):
        _save(run, step=2)
    assert sorted(p.name for p in run.iterdir()) == ["last"]
    assert json.loads((run / "last" / ckpt.STATE_NAME).read_text())["step"] == 1


def test_a_file_where_a_folder_is_needed(tmp_path, speech):
    (tmp_path / "afile").write_text("x")
    code, lines, res = cli("animate", speech, "-m", "tiny", "-o", tmp_path / "afile" / "out.npy")
    assert_one_line_error(code, lines, res, f"could not write {tmp_path / 'afile' / 'out.npy'}: "
                                            f"{tmp_path / 'afile'} is a file, not a folder")
    code, lines, res = cli("animate", speech, "-m", "tiny", "-o", tmp_path / "afile" / "sub" / "frames",
                           "--format", "obj")
    assert_one_line_error(code, lines, res, f"{tmp_path / 'afile'} is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "speech.wav"]


def test_an_unexpected_os_error_is_one_line(tmp_path, speech, monkeypatch):
    """The CLI's last resort: an OS error no writer translated still ends in one line."""
    from ptalker_cli.export import block_writers

    def broken(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "x"))

    monkeypatch.setattr(block_writers, "write_npy_blocks", broken)  # animate writes .npy block by block
    code, lines, res = cli("animate", speech, "-m", "tiny", "-o", tmp_path / "out.npy")
    assert_one_line_error(code, lines, res, f"{tmp_path / 'x'}: permission denied")

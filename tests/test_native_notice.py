"""When the compiled kernels cannot be built, ptalker says so once per process, on one line
(what, why, how to enable), and not at all under PTALKER_NO_NATIVE=1."""

import logging
import os
import subprocess
import sys

import pytest

from ptalker_cli.model import native

NOTICE = "compiled CPU kernels unavailable"


def _libraries():
    """Two fresh kernel libraries (never built in this process), like the decoder's and the GAT's."""
    source = "int one(void) { return 1; }\n"
    return [native.NativeLibrary(name, source, [["-O2", "-fPIC", "-shared"]], lambda lib: None)
            for name in ("notice_a", "notice_b")]


@pytest.fixture
def no_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(native, "_notice_given", False)  # as in a fresh process
    return tmp_path / "no-such-cc"


def test_missing_compiler_is_said_once(no_compiler, caplog):
    caplog.set_level(logging.WARNING, logger="ptalker_cli")
    for lib in _libraries() * 2:
        assert lib.get() is None
        assert lib.error == f"no C compiler '{no_compiler}' found"
    notes = [r.getMessage() for r in caplog.records if NOTICE in r.getMessage()]
    assert notes == [(f"ptalker: {NOTICE} (no C compiler '{no_compiler}' found); using the slower PyTorch path. "
                      "Install gcc (or point CC at a C compiler), or set PTALKER_NO_NATIVE=1 to silence this.")]


def test_no_notice_when_disabled(no_compiler, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="ptalker_cli")
    monkeypatch.setenv("PTALKER_NO_NATIVE", "1")
    for lib in _libraries():
        assert lib.get() is None
    assert not [r for r in caplog.records if NOTICE in r.getMessage()]


@pytest.mark.system("cc")
def test_compile_error_is_one_line(tmp_path, monkeypatch, caplog):
    """A compiler that fails gives its first complaint, not its command line."""
    monkeypatch.setattr(native, "_notice_given", False)
    monkeypatch.setenv("PTALKER_CACHE_DIR", str(tmp_path))
    caplog.set_level(logging.WARNING, logger="ptalker_cli")
    lib = native.NativeLibrary("broken", "int f(void) { return }\n", [["-fPIC", "-shared"]], lambda lib: None)
    assert lib.get() is None
    assert lib.error.startswith("could not build the native broken kernel: ")
    assert "failed: " in lib.error and "error" in lib.error and "-shared" not in lib.error
    notes = [r.getMessage() for r in caplog.records if NOTICE in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0]


def test_cli_prints_one_line_once(wav_file, tmp_path):
    """`ptalker animate` without a compiler: exit 0, and stderr is the notice, once, nothing else."""
    out = tmp_path / "o.npy"
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"))
    proc = subprocess.run([sys.executable, "-m", "ptalker_cli", "animate", str(wav_file(0.5)), "-m", "tiny",
                           "-s", "S1", "-o", str(out), "-q"], check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ptalker: {NOTICE} (no C compiler"), proc.stderr
    assert out.exists()

"""When the compiled kernels cannot be built, ptalker says so once per process, on one line
(what, why, how to enable), and not at all under PTALKER_NO_NATIVE=1."""

import logging
import os
import subprocess
import sys

import pytest

from ptalker_cli.kernels import build

NOTICE = "compiled CPU kernels unavailable"


@pytest.fixture
def fresh_kernels(tmp_path, monkeypatch):
    """Kernels ``notice_a`` / ``notice_b`` (never built in this process) from sources in tmp_path."""
    monkeypatch.setattr(build, "KERNELS_DIR", tmp_path)
    monkeypatch.setattr(build, "_notice_given", False)  # as in a fresh process
    monkeypatch.setenv("PTALKER_CACHE", str(tmp_path / "cache"))
    specs = dict(build.KERNELS)

    def make(source="int one(void) { return 1; }\n"):
        for name in ("notice_a", "notice_b"):
            (tmp_path / f"{name}.c").write_text(source)
            specs[name] = build.KernelSpec(name, (("-O2", "-fPIC", "-shared"),))
        monkeypatch.setattr(build, "KERNELS", specs)
        return [build.Kernel(name) for name in ("notice_a", "notice_b")]

    return make


@pytest.fixture
def no_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    return tmp_path / "no-such-cc"


def test_missing_compiler_is_said_once(fresh_kernels, no_compiler, caplog):
    caplog.set_level(logging.WARNING, logger="ptalker_cli")
    for k in fresh_kernels() * 2:
        assert k.get() is None
        assert k.error == f"no C compiler '{no_compiler}' found"
    notes = [r.getMessage() for r in caplog.records if NOTICE in r.getMessage()]
    assert notes == [(f"ptalker: {NOTICE} (no C compiler '{no_compiler}' found); using the slower PyTorch path. "
                      "Install gcc (or point CC at a C compiler), or set PTALKER_NO_NATIVE=1 to silence this.")]


def test_no_notice_when_disabled(fresh_kernels, no_compiler, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="ptalker_cli")
    monkeypatch.setenv("PTALKER_NO_NATIVE", "1")
    for k in fresh_kernels():
        assert k.get() is None
    assert not [r for r in caplog.records if NOTICE in r.getMessage()]


@pytest.mark.system("cc")
def test_compile_error_is_one_line(fresh_kernels, caplog):
    """A compiler that fails gives its first complaint, not its command line."""
    caplog.set_level(logging.WARNING, logger="ptalker_cli")
    k = fresh_kernels("int f(void) { return }\n")[0]
    assert k.get() is None
    assert k.error.startswith("could not build the native notice_a kernel: ")
    assert "failed: " in k.error and "error" in k.error and "-shared" not in k.error
    notes = [r.getMessage() for r in caplog.records if NOTICE in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0]


def test_cli_prints_one_line_once(wav_file, tmp_path):
    """`ptalker animate` without a compiler: exit 0, and stderr is the notice, once, nothing else."""
    out = tmp_path / "o.npy"
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"), PTALKER_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "ptalker_cli", "animate", str(wav_file(0.5)), "-m", "tiny",
                           "-s", "S1", "-o", str(out), "-q"], check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ptalker: {NOTICE} (no C compiler"), proc.stderr

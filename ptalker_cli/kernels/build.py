"""Build, cache and load the C kernels (``ptalker_cli/kernels/*.c``).

A kernel is one C file compiled with the system C compiler (``CC``, default ``cc``) into a
shared library, cached (``$PTALKER_CACHE/kernels``, default ``~/.cache/ptalker/kernels``,
falling back to a per-user temp directory) under a key that hashes the source, the flags, the
compiler, the platform and the CPU (``-march=native`` builds are never reused on another CPU),
and loaded with ``ctypes``. ``PTALKER_NO_NATIVE=1`` disables every kernel.

The ctypes signatures are not written in Python: :func:`exported_functions` reads the
prototypes of the functions a C file marks ``KERNEL_API`` (the only symbols it exports; the
build uses ``-fvisibility=hidden``), so each argument list exists once, in its C file.

Failure is not an error: :meth:`Kernel.get` returns None (and :attr:`Kernel.error` says why)
when no compiler is there or the build fails, and callers run their PyTorch paths. The one
place where a failed build is recorded is ``Kernel._build_failed``.

CI compiles every kernel with warnings as errors::

    python -m ptalker_cli.kernels.build --check -Werror
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KERNELS", "Kernel", "KernelSpec", "build", "cache_dir", "check", "compiler", "cpu_fingerprint",
           "exported_functions", "kernel", "native_disabled", "ptr", "source"]

KERNELS_DIR = Path(__file__).resolve().parent
#: warnings every build asks for (the normal build discards the compiler's output; --check shows it)
WARNING_FLAGS = ("-Wall", "-Wextra")


@dataclass(frozen=True)
class KernelSpec:
    """A kernel: ``<name>.c`` in this folder and the complete flag lists to try, in order
    (``-march=native`` is added after the first flag when the compiler accepts it)."""

    name: str
    flag_sets: tuple[tuple[str, ...], ...]


_SHARED = ("-fPIC", "-shared", "-fvisibility=hidden") + WARNING_FLAGS
KERNELS: dict[str, KernelSpec] = {
    # no -ffast-math: the decoder's reductions have an explicit order and expf/sqrt stay exact
    "decoder": KernelSpec("decoder", (("-O3",) + _SHARED,)),
    # OpenMP first; without it the pragmas are ignored (a single-threaded kernel)
    "graph_encoder": KernelSpec("graph_encoder", (
        ("-O3", "-ffast-math") + _SHARED + ("-fopenmp",),
        ("-O3", "-ffast-math") + _SHARED + ("-Wno-unknown-pragmas",),
    )),
}


log = logging.getLogger(__name__)
_notice_given = False


def _fallback_notice(why: str) -> None:
    """Say once per process that the compiled kernels are off, why, and how to turn them on."""
    global _notice_given
    if not _notice_given:
        _notice_given = True
        log.warning("ptalker: compiled CPU kernels unavailable (%s); using the slower PyTorch path. Install gcc "
                    "(or point CC at a C compiler), or set PTALKER_NO_NATIVE=1 to silence this.", why)


def native_disabled() -> bool:
    """``PTALKER_NO_NATIVE`` set to any non-empty value disables every kernel."""
    return bool(os.environ.get("PTALKER_NO_NATIVE"))


def cache_dir() -> Path:
    """``kernels/`` in ptalker's cache: the rule of ``resources.ptalker_cache_dir``, written out here
    because the kernels import nothing of the package (tests/test_kernels.py checks they agree)."""
    root = os.environ.get("PTALKER_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "ptalker")
    return Path(root).expanduser() / "kernels"


def cpu_fingerprint() -> str:
    """Identifies the CPU so that a cached ``-march=native`` build is never reused elsewhere."""
    info = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    info += line
                if line.strip() == "":
                    break  # first CPU is enough
    except OSError:
        pass
    return info


def compiler() -> str:
    return os.environ.get("CC", "cc")


_march_ok: dict[str, bool] = {}


def _march_native_ok(cc: str) -> bool:
    if cc not in _march_ok:
        try:
            subprocess.run([cc, "-march=native", "-E", "-x", "c", "-"], input=b"", check=True,
                           capture_output=True, timeout=30)
            _march_ok[cc] = True
        except Exception:  # noqa: BLE001
            _march_ok[cc] = False
    return _march_ok[cc]


def source(name: str) -> str:
    """The C source of kernel ``name``."""
    return (KERNELS_DIR / f"{name}.c").read_text()


def _flag_sets(spec: KernelSpec, cc: str) -> list[list[str]]:
    march = _march_native_ok(cc)
    sets = []
    for given in spec.flag_sets:
        flags = list(given)
        if march:
            flags.insert(1, "-march=native")
        sets.append(flags)
    return sets


def _compile(cc: str, flags: list[str], src: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"], check=True, capture_output=True,
                          text=True, timeout=300)


class _NoCompiler(RuntimeError):
    pass


def build(name: str) -> ctypes.CDLL:
    """Compile kernel ``name`` (or reuse its cached build) and load it; its ``KERNEL_API``
    functions are declared from the source.

    Raises RuntimeError (with the last compiler, file-system or loader error) when no flag set
    builds and loads in any cache directory.
    """
    spec, src_text, cc = KERNELS[name], source(name), compiler()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    dirs = [cache_dir(), Path(tempfile.gettempdir()) / f"ptalker-kernels-{uid}"]
    last_err: Exception | None = None
    for flags in _flag_sets(spec, cc):
        key = hashlib.sha256("\0".join([src_text, " ".join(flags), cc, sys.platform,
                                         cpu_fingerprint()]).encode()).hexdigest()[:16]
        for d in dirs:
            so = d / f"{name}_{key}.so"
            try:
                if not so.exists():
                    if shutil.which(cc) is None:  # nothing cached to load, nothing to build it with
                        raise _NoCompiler(f"no C compiler '{cc}' found")
                    d.mkdir(parents=True, exist_ok=True)
                    with tempfile.TemporaryDirectory(dir=d) as tmp:
                        src = Path(tmp) / f"{name}.c"
                        src.write_text(src_text)
                        tmp_so = Path(tmp) / f"{name}.so"
                        _compile(cc, flags, src, tmp_so)
                        os.replace(tmp_so, so)  # atomic: concurrent builders are harmless
                lib = ctypes.CDLL(str(so))
                _declare(lib, src_text)
                return lib
            except _NoCompiler:
                raise
            except subprocess.CalledProcessError as err:  # the compiler's first complaint, not its argv
                said = (err.stderr or "").strip().splitlines()
                said = [line for line in said if "error" in line] or said or [f"exit status {err.returncode}"]
                last_err = RuntimeError(f"{cc} failed: {said[0]}")
            except Exception as err:  # noqa: BLE001 - any failure means "try the next option"
                last_err = err
    raise RuntimeError(f"could not build the native {name} kernel: {last_err}")


# ------------------------------------------------------------------ signatures, from the C source
_CTYPES = {"int": ctypes.c_int, "int64_t": ctypes.c_int64, "float": ctypes.c_float, "double": ctypes.c_double}
_EXPORT_RE = re.compile(r"\bKERNEL_API\s+([^(;{]*?)\b([A-Za-z_]\w*)\s*\(([^)]*)\)\s*\{")


def _ctype(decl: str, what: str):
    """A C parameter or return declaration → its ctypes type (any pointer: c_void_p)."""
    if "*" in decl:
        return ctypes.c_void_p
    words = [w for w in decl.split() if w not in ("const", "restrict")]
    base = words[0] if words else ""
    if base == "void":
        return None
    if base not in _CTYPES:
        raise ValueError(f"{what}: C type {decl.strip()!r} has no ctypes mapping (known: {', '.join(_CTYPES)}, "
                         f"void, pointers)")
    return _CTYPES[base]


def exported_functions(src: str) -> dict[str, tuple[object, list]]:
    """``{name: (restype, argtypes)}`` of the ``KERNEL_API`` functions defined in a C source."""
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    src = re.sub(r"//[^\n]*", " ", src)
    src = re.sub(r"^[ \t]*#.*$", " ", src, flags=re.M)  # preprocessor lines (the KERNEL_API define)
    out: dict[str, tuple[object, list]] = {}
    for ret, name, params in _EXPORT_RE.findall(src):
        params = " ".join(params.split())
        args = [] if params in ("", "void") else [
            _ctype(re.sub(r"\b[A-Za-z_]\w*\s*$", "", p.strip()), f"{name} argument {i}")
            for i, p in enumerate(params.split(","))
        ]
        out[name] = (_ctype(ret, f"{name} return"), args)
    if len(out) != len(re.findall(r"\bKERNEL_API\b", src)):
        raise ValueError("a KERNEL_API function could not be read: write it as "
                         "'KERNEL_API <type> <name>(<type> <arg>, ...) {' on a definition")
    return out


def _declare(lib: ctypes.CDLL, src: str) -> None:
    for name, (restype, argtypes) in exported_functions(src).items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


class Kernel:
    """Kernel ``name``, built and loaded on first use (once per process, thread-safe).

    :meth:`get` returns the loaded library with every ``KERNEL_API`` function declared, or
    None when the kernel is disabled or failed to build (then :attr:`error` says why).
    ``check(lib)``, if given, verifies constants the Python side relies on (raise to reject).
    """

    def __init__(self, name: str, check=None):
        self.name, self._check = name, check
        self._lib: ctypes.CDLL | None = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def get(self) -> ctypes.CDLL | None:
        if self._lib is not None or self.error is not None:
            return self._lib
        if native_disabled():
            return None  # checked on every call: the env var may be set later (tests)
        with self._lock:
            if self._lib is None and self.error is None:
                try:
                    lib = build(self.name)
                    if self._check is not None:
                        self._check(lib)
                    self._lib = lib
                except Exception as err:  # noqa: BLE001 - any failure means "no kernel"
                    self._build_failed(err)
        return self._lib

    def _build_failed(self, err: Exception) -> None:
        """The one place where a kernel that could not be built or loaded is recorded (once per
        process); callers then run their PyTorch paths. The first in a process says so in one line."""
        self.error = " ".join(str(err).split())
        _fallback_notice(self.error)

    def available(self) -> bool:
        return self.get() is not None


_kernels: dict[str, Kernel] = {}


def kernel(name: str, check=None) -> Kernel:
    """The process-wide :class:`Kernel` for ``name`` (one of :data:`KERNELS`)."""
    if name not in KERNELS:
        raise KeyError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    if name not in _kernels:
        _kernels[name] = Kernel(name, check)
    return _kernels[name]


def ptr(t) -> ctypes.c_void_p | None:
    """A tensor's data pointer for a ``KERNEL_API`` pointer argument (None → NULL)."""
    return None if t is None else ctypes.c_void_p(t.data_ptr())


# ------------------------------------------------------------------ CI: compile with warnings shown
def check(werror: bool = False, names=None) -> dict[str, str]:
    """Compile every flag set of each kernel into a temporary folder (no cache) → ``{"name flags":
    compiler output}`` for the builds that warned or failed (empty: all clean). ``werror`` adds
    ``-Werror``."""
    cc = compiler()
    problems: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or KERNELS:
            src = KERNELS_DIR / f"{name}.c"
            for flags in _flag_sets(KERNELS[name], cc):
                flags = flags + (["-Werror"] if werror else [])
                label = f"{name} [{' '.join(flags)}]"
                try:
                    done = _compile(cc, flags, src, Path(tmp) / f"{name}.so")
                    out = (done.stderr + done.stdout).strip()
                except subprocess.CalledProcessError as err:
                    out = ((err.stderr or "") + (err.stdout or "")).strip() or f"{cc} exited {err.returncode}"
                except OSError as err:
                    out = f"cannot run {cc}: {err}"
                if out:
                    problems[label] = out
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ptalker_cli.kernels.build",
                                 description="Compile the C kernels with -Wall -Wextra and report warnings.")
    ap.add_argument("--check", action="store_true", help="compile every kernel and flag set (no cache)")
    ap.add_argument("-Werror", dest="werror", action="store_true", help="treat warnings as errors")
    args = ap.parse_args(argv)
    if not args.check:
        ap.print_help()
        return 2
    problems = check(args.werror)
    for label, out in problems.items():
        print(f"{label}:\n{out}\n", file=sys.stderr)
    for name in KERNELS:
        print(f"{name}: {'warnings or errors' if any(k.startswith(name + ' ') for k in problems) else 'clean'} "
              f"({compiler()})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

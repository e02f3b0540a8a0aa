"""Gates for tests that need a program or library from the operating system.

A test that needs one carries ``@pytest.mark.system("NAME")``. Where NAME is missing the
test is skipped with a one-line reason (what is missing and how to install it), so the
README's test command passes on a machine where only pip installed things. CI sets
``PTALKER_REQUIRE_SYSTEM_TESTS=1`` (see ``.ci/run``), which turns every such skip into a
failure: CI proves that all of them run.

Each probe returns None when the dependency is there, or the reason it is not.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
from typing import Callable

REQUIRE_VAR = "PTALKER_REQUIRE_SYSTEM_TESTS"
# Read once at import, before conftest scrubs PTALKER_* from the environment.
REQUIRED = os.environ.get(REQUIRE_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def _festival() -> str | None:
    from ptalker_cli.data.synth.tts import TTSError, check_tools

    try:
        check_tools()
    except TTSError as exc:
        return f"Festival TTS: {exc}"
    return None


def _c_compiler() -> str | None:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return f"no C compiler ({cc}) on PATH: apt-get install gcc"
    return None


def _native_kernels() -> str | None:
    missing = _c_compiler()
    if missing:
        return missing
    from ptalker_cli.model.graph_encoder import native_available
    from ptalker_cli.model.native_decoder import decoder_native_available

    if not (native_available() and decoder_native_available()):
        return "the native kernels did not build with the C compiler here"
    return None


def _osmesa() -> str | None:
    try:
        ctypes.CDLL("libOSMesa.so.8")
    except OSError:
        return "libOSMesa is not installed: apt-get install libosmesa6"
    import OpenGL

    if tuple(int(x) for x in OpenGL.__version__.split(".")[:3]) < (3, 1, 5):
        return (f"PyOpenGL {OpenGL.__version__} has no OSMesaCreateContextAttribs: "
                "pip install --no-deps PyOpenGL==3.1.7")
    from ptalker_cli.doctor import probe_osmesa

    found = probe_osmesa()  # pyrender starts an OSMesa context in a child process
    return None if found["works"] else f"pyrender cannot start OSMesa ({found['error']})"


def _egl() -> str | None:
    import ctypes.util

    for lib in ("EGL", "GL"):
        name = ctypes.util.find_library(lib)
        try:
            ctypes.CDLL(name or f"lib{lib}.so.1")
        except OSError:
            return f"lib{lib} is not installed: apt-get install libegl1 libgl1 libgl1-mesa-dri libegl-mesa0"
    from ptalker_cli.doctor import probe_egl

    found = probe_egl()  # a standalone moderngl context, in a child process
    if not found["works"]:
        return (f"EGL does not start an OpenGL context ({found['error']}): "
                "apt-get install libegl-mesa0 libgl1-mesa-dri")
    return None


def _cuda() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)"
    return None


def _tmpfs() -> str | None:
    """Whether a test can mount (and unmount) a small tmpfs: a real full or read-only file system."""
    import subprocess
    import sys
    import tempfile

    if not sys.platform.startswith("linux"):
        return "mounting a small tmpfs (the full-disk tests) needs Linux"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount program: apt-get install mount"
    folder = tempfile.mkdtemp(prefix="ptalker-tmpfs-probe-")
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder], capture_output=True,
                             text=True, timeout=30, check=False)
        if res.returncode != 0:
            why = " ".join(res.stderr.split()) or f"exit code {res.returncode}"
            return f"cannot mount a tmpfs here ({why}): run the tests as root (or with CAP_SYS_ADMIN)"
        subprocess.run(["umount", folder], capture_output=True, timeout=30, check=False)
    finally:
        os.rmdir(folder)
    return None


def _node_gltf_validator() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH: apt-get install nodejs"
    js = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
    if not os.path.isdir(os.path.join(js, "node_modules", "gltf-validator")):
        return "the Khronos glTF validator is not installed: npm ci --prefix tests/js"
    return None


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _chromium_three() -> str | None:
    if chromium_binary() is None:
        return "no headless Chromium on PATH: apt-get install chromium"
    js = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
    if not os.path.isdir(os.path.join(js, "node_modules", "three")):
        return "three.js is not installed for the tests: npm ci --prefix tests/js"
    return None


def _chromium() -> str | None:
    """Chromium + Playwright + WebGL 2 (SwiftShader): the browser tests (tests/browser.py)."""
    import browser

    return browser.missing()


def _node_js_deps() -> str | None:
    """node and the pinned JavaScript the tests use (tests/js: three.js, gltf-validator)."""
    import json
    from pathlib import Path

    if shutil.which("node") is None:
        return "no node on PATH: apt-get install nodejs npm"
    root = Path(__file__).resolve().parent / "js"
    wanted = json.loads((root / "package.json").read_text())["dependencies"]
    for name, spec in wanted.items():
        version = spec.rsplit("@", 1)[-1] if spec.startswith("npm:") else spec  # an alias: npm:three@0.170.0
        meta = root / "node_modules" / name / "package.json"
        if not meta.exists() or json.loads(meta.read_text()).get("version") != version:
            return f"{name} {version} is not installed in tests/js: run npm ci --prefix tests/js"
    return None


PROBES: dict[str, Callable[[], str | None]] = {
    "festival": _festival,
    "cc": _c_compiler,
    "native": _native_kernels,
    "osmesa": _osmesa,
    "egl": _egl,
    "tmpfs": _tmpfs,
    "cuda": _cuda,
    "node-gltf-validator": _node_gltf_validator,
    "chromium-three": _chromium_three,
    "chromium": _chromium,
    "node-js-deps": _node_js_deps,
}


@functools.cache
def missing(name: str) -> str | None:
    """Why the system dependency ``name`` is unavailable, or None when it is there."""
    if name not in PROBES:
        raise KeyError(f"unknown system dependency {name!r}; known: {', '.join(sorted(PROBES))}")
    return PROBES[name]()


#: The one warning line ptalker prints where the compiled kernels cannot be built (kernels/build.py):
#: expected on machines without a C compiler, and not part of what fault tests count.
KERNEL_NOTICE = "ptalker: compiled CPU kernels unavailable"


def stderr_lines(text: str) -> list[str]:
    """The non-empty lines of a command's stderr, the kernels' fallback notice left out."""
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(KERNEL_NOTICE)]

"""``ptalker doctor``: what this installation can do, as one block to paste into a bug report.

:func:`doctor` runs one probe per section (versions, device, compiled kernels, render
backends, TTS engines, ffmpeg, cache folders, offline mode) and returns a
:class:`DoctorReport`; :func:`format_report` turns it into text, ``report.to_dict()`` into
JSON. A probe never raises: whatever goes wrong inside one (a missing library, a crashing
OpenGL driver, a bug) is reported in its section as ``error`` and the others still run.
The render probes start OpenGL in a child process, so a driver that aborts cannot take
this process down.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata, util
from pathlib import Path
from typing import Any

#: seconds a probe's child process (compiler, renderer, TTS) may take
PROBE_TIMEOUT = 60.0


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _error(exc: BaseException) -> str:
    return _one_line(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _first_output_line(cmd: list[str]) -> str:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    return lines[0] if lines else f"exit status {res.returncode}"


def _child_error(res: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {res.returncode}"


# ----------------------------------------------------------------------------- probes
def probe_versions() -> dict:
    import numpy
    import torch

    from . import __version__

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ptalker": _version("ptalker") or __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": None,
        "transformers": _version("transformers"),
        "huggingface_hub": _version("huggingface-hub"),
        "numpy": numpy.__version__,
    }
    if torch.backends.cudnn.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def probe_device() -> dict:
    import torch

    info: dict[str, Any] = {
        "default": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [],
    }
    if info["cuda_available"]:
        info["default"] = "cuda"
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["cuda_devices"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                                         "capability": f"{props.major}.{props.minor}"})
    return info


def probe_kernels() -> dict:
    from .kernels import build as native
    from .model import graph_encoder, native_decoder

    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    info: dict[str, Any] = {
        "disabled": native.native_disabled(),
        "compiler": cc,
        "compiler_path": path,
        "compiler_version": None,
        "cache": str(native.cache_dir()),
    }
    if path:
        try:
            info["compiler_version"] = _first_output_line([path, "--version"])
        except Exception as exc:  # noqa: BLE001
            info["compiler_version"] = _error(exc)
    for key, available, lib in (("decoder", native_decoder.decoder_native_available, native_decoder._decoder_lib),
                                ("graph_encoder", graph_encoder.native_available, graph_encoder._gat_lib)):
        if available():
            info[key] = {"native": True, "library": getattr(lib._lib, "_name", None)}
        else:
            why = "disabled by PTALKER_NO_NATIVE" if native.native_disabled() else lib.error
            info[key] = {"native": False, "why": why}
    return info


_MODERNGL_EGL = """
import ctypes.util, moderngl
ctx = moderngl.create_context(standalone=True, backend="egl",
                              libegl=ctypes.util.find_library("EGL") or "libEGL.so.1",
                              libgl=ctypes.util.find_library("GL") or "libGL.so.1")
print(ctx.info.get("GL_RENDERER", "unknown"))
"""

_PYRENDER = """
import pyrender
from OpenGL import GL
r = pyrender.OffscreenRenderer(8, 8)
print(GL.glGetString(GL.GL_RENDERER).decode())
r.delete()
"""


def _gl_child(code: str, **env: str) -> dict:
    """Run ``code`` in a child Python; {"works": True, "renderer": ...} or {"works": False, "error": ...}."""
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                         timeout=PROBE_TIMEOUT, env=dict(os.environ, **env))
    if res.returncode == 0:
        out = [ln for ln in res.stdout.splitlines() if ln.strip()]
        return {"works": True, "renderer": out[-1].strip() if out else "unknown"}
    return {"works": False, "error": _child_error(res)}


def probe_egl() -> dict:
    """moderngl with a standalone EGL context (the default renderer)."""
    return _gl_child(_MODERNGL_EGL)


def probe_pyrender_egl() -> dict:
    return _gl_child(_PYRENDER, PYOPENGL_PLATFORM="egl")


def probe_osmesa() -> dict:
    """pyrender over OSMesa (the software fallback when EGL does not start)."""
    return _gl_child(_PYRENDER, PYOPENGL_PLATFORM="osmesa")


def _safe_gl(fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return {"works": False, "error": _error(exc)}


def probe_render() -> dict:
    from concurrent.futures import ThreadPoolExecutor

    probes = {"moderngl_egl": probe_egl, "pyrender_egl": probe_pyrender_egl, "pyrender_osmesa": probe_osmesa}
    with ThreadPoolExecutor(len(probes)) as pool:  # three child processes at once
        futures = {key: pool.submit(_safe_gl, fn) for key, fn in probes.items()}
    info = {key: f.result() for key, f in futures.items()}
    if info["moderngl_egl"]["works"]:
        info["auto"] = "moderngl (EGL)"
    elif info["pyrender_egl"]["works"]:
        info["auto"] = "pyrender (EGL)"
    elif info["pyrender_osmesa"]["works"]:
        info["auto"] = "pyrender (OSMesa)"
    else:
        from .export.renderers import APT_HINT

        info["auto"] = f"none: no MP4 output until the system packages are installed: {APT_HINT}"
    return info


def probe_tts() -> dict:
    festival: dict[str, Any] = {"found": False}
    path = shutil.which("festival")
    if path:
        from .data.synth import tts

        festival = {"found": True, "path": path}
        try:
            festival["version"] = tts.festival_version()
            festival["voices"] = list(tts.available_voices())
        except Exception as exc:  # noqa: BLE001
            festival["error"] = _error(exc)
    espeak: dict[str, Any] = {"found": util.find_spec("espeakng_loader") is not None}
    if espeak["found"]:
        espeak["version"] = _version("espeakng-loader")
    return {"festival": festival, "espeak_ng": espeak}


def probe_ffmpeg() -> dict:
    from .export.video import ffmpeg_exe

    exe = ffmpeg_exe()
    return {"path": exe, "version": _first_output_line([exe, "-version"]), "imageio_ffmpeg": _version("imageio-ffmpeg")}


def folder_size(path: Path) -> int:
    """Bytes in the files under ``path``, links not followed (the hub's snapshots link to its blobs)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += st.st_size
    return total


def probe_caches() -> dict:
    from .kernels.build import cache_dir
    from .zoo.hub import hub_cache_dir, ptalker_cache_dir

    info = {}
    for key, folder in (("hub", hub_cache_dir()), ("ptalker", ptalker_cache_dir()), ("kernels", cache_dir())):
        folder = Path(folder)
        info[key] = {"path": str(folder), "exists": folder.is_dir(),
                     "bytes": folder_size(folder) if folder.is_dir() else 0}
    return info


def probe_offline() -> dict:
    from .zoo.hub import hub_endpoint, offline_reason

    reason = offline_reason()
    return {"offline": reason is not None, "reason": reason, "endpoint": hub_endpoint()}


PROBES: dict[str, Callable[[], dict]] = {
    "versions": probe_versions,
    "device": probe_device,
    "kernels": probe_kernels,
    "render": probe_render,
    "tts": probe_tts,
    "ffmpeg": probe_ffmpeg,
    "caches": probe_caches,
    "offline": probe_offline,
}


# ----------------------------------------------------------------------------- report
@dataclass
class DoctorReport:
    """One dict per section (see :data:`PROBES`); a failed probe's section is ``{"error": ...}``."""

    sections: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict]:
        return dict(self.sections)

    @property
    def errors(self) -> dict[str, str]:
        """The sections whose probe failed, with the reason."""
        return {k: v["error"] for k, v in self.sections.items() if "error" in v}


def doctor(sections: list[str] | None = None) -> DoctorReport:
    """Run the probes (all, or the named ``sections``) and collect what each found."""
    report = DoctorReport()
    for name in sections or list(PROBES):
        try:
            report.sections[name] = PROBES[name]()
        except Exception as exc:  # noqa: BLE001 - a probe never takes the report down
            report.sections[name] = {"error": _error(exc)}
    return report


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0  # type: ignore[assignment]
    return f"{n} B"


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v) if v else "none"
    if isinstance(v, dict):
        if "native" in v:
            return f"compiled ({v.get('library')})" if v["native"] else f"PyTorch path ({v.get('why')})"
        if "works" in v:
            return f"works ({v.get('renderer')})" if v["works"] else f"fails: {v.get('error')}"
        if "path" in v and "bytes" in v:
            return f"{v['path']} ({_size(v['bytes']) if v['exists'] else 'absent'})"
        if "found" in v:
            if not v["found"]:
                return "not found"
            rest = ", ".join(f"{k} {_value(x)}" for k, x in v.items() if k not in ("found",))
            return f"found ({rest})" if rest else "found"
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items())
    return _one_line(v)


def format_report(report: DoctorReport) -> str:
    """The report as plain text: one header line per section, one indented line per item."""
    lines = []
    for name, section in report.sections.items():
        lines.append(f"{name}:")
        width = max((len(k) for k in section), default=0)
        for key, value in section.items():
            lines.append(f"  {key.ljust(width)}  {_value(value)}")
    return "\n".join(lines)


__all__ = ["PROBES", "DoctorReport", "doctor", "folder_size", "format_report"]

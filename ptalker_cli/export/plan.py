"""Output planning: from the inputs, ``-o`` and ``--format``, which files and folders get written.

The rules are those of docs/inference.md ("Output names"). :func:`plan_outputs` checks ``-o``
against the inputs (one-line errors, before any inference) and returns an :class:`OutputPlan`;
:meth:`OutputPlan.target` is where one input's output goes and :func:`output_files` names every
file or folder a motion output writes (``--format all``: ``OUT.npy``, ``OUT_obj/``, …; a GLB
with audio also writes ``OUT.wav`` beside it). The writers (:mod:`.writers`) use the same
functions, so what is planned is what is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import PtalkerError

#: Motion formats :func:`~ptalker_cli.export.writers.write_motion` writes (``all`` writes each of them).
FORMATS = ("npy", "obj", "ply", "glb", "mp4", "all")
#: Everything ``ptalker animate --format`` takes: the motion formats and the ARKit curve files.
ANIMATE_FORMATS = ("npy", "obj", "ply", "glb", "mp4", "html", "csv", "arkit-json")
#: Formats whose output is a folder of frames: ``-o`` names the folder itself.
FOLDER_FORMATS = ("obj", "ply")
_SUFFIX_FORMAT = {".npy": "npy", ".glb": "glb", ".mp4": "mp4", ".html": "html"}


def detect_format(out: str | Path) -> str:
    """The format implied by ``out``: ``.npy``/``.glb``/``.mp4``/``.html``, or a folder → ``obj``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[suffix]
    if out.is_dir() or suffix == "" or str(out).endswith(("/", os.sep)):
        return "obj"
    raise PtalkerError(
        f"cannot tell the output format from '{out.name}'; use a name ending in .npy, .glb, .mp4 or .html, "
        "a folder (OBJ sequence), or pass --format npy|obj|ply|glb|mp4|html|all"
    )


def output_files(out: str | Path, fmt: str | None, audio: str | Path | None = None) -> dict[str, Path]:
    """``{format: path}`` for a motion written to ``out`` as ``fmt`` (None: from the suffix).

    ``all`` treats ``out`` as a base name (a ``.npy``/``.glb``/``.mp4`` suffix is dropped). With
    ``audio``, a GLB gets ``OUT.wav`` beside it (key ``wav``), unless ``audio`` already is that file.
    """
    out = Path(out)
    fmt = (fmt or detect_format(out)).lower()
    if fmt not in FORMATS:
        raise PtalkerError(f"unknown format '{fmt}'; use one of: {', '.join(FORMATS)}")
    if fmt != "all":
        files = {fmt: out}
    else:
        stem = out.with_suffix("") if out.suffix.lower() in _SUFFIX_FORMAT else out
        files = {
            "npy": stem.with_name(stem.name + ".npy"),
            "obj": stem.with_name(stem.name + "_obj"),
            "ply": stem.with_name(stem.name + "_ply"),
            "glb": stem.with_name(stem.name + ".glb"),
            "mp4": stem.with_name(stem.name + ".mp4"),
        }
    if "glb" in files and audio is not None and not same_file(files["glb"].with_suffix(".wav"), Path(audio)):
        files["wav"] = files["glb"].with_suffix(".wav")
    return files


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_new(path: Path, force: bool) -> None:
    """One line when ``path`` exists (an empty folder holds nothing to overwrite) and ``force`` is off."""
    if not path.exists() or force:
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise PtalkerError(f"{path} already exists; use --force to overwrite it")


def check_target(path: Path, folder: bool) -> None:
    """One line, before anything is written, when ``path`` cannot be created: an existing folder where a
    file goes, or a file where a parent folder should be."""
    if path.is_dir() and not folder:
        raise PtalkerError(f"{path} is a folder; give a file name for this output")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PtalkerError(f"could not write {path}: {parent} is a file, not a folder")
            break


def check_files(files: dict[str, Path], force: bool) -> None:
    """:func:`check_target` and :func:`check_new` for every planned file; one line for the first problem."""
    for name, path in files.items():
        try:
            check_target(path, folder=name in FOLDER_FORMATS)
            check_new(path, force)
        except OSError as exc:  # e.g. a name too long for the file system
            raise PtalkerError(f"could not write {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class OutputPlan:
    """Where each input's output goes. ``output`` is ``-o`` (None: only sent live); ``folder``: whether
    it names a folder (an existing one, or a name ending in ``/``); ``fmt``: ``--format`` (None: from
    the suffix); ``many``: several inputs."""

    output: Path | None
    folder: bool
    fmt: str | None
    many: bool

    def target(self, audio: str | Path) -> tuple[Path | None, str | None]:
        """``(path, format)`` of one input's output (docs/inference.md, "Output names").

        One input: ``-o`` as given, except that a folder with a file format (npy, glb, mp4, all)
        receives ``<input stem>.<format>``. Several inputs: ``-o`` is a folder that receives
        ``<stem>.<format>`` for file formats (npy by default), ``<stem>/`` for an OBJ or PLY sequence,
        and for ``all`` the base name ``<stem>`` (``<stem>.npy``, ``<stem>_obj/``, …).
        """
        out, fmt = self.output, self.fmt
        if out is None:
            return None, fmt
        if not self.many and (fmt is None or fmt in FOLDER_FORMATS or not self.folder):
            return out, fmt
        stem = Path(audio).stem
        fmt = fmt or "npy"
        if fmt in ("csv", "arkit-json"):  # ARKit curves: one file per input
            return out / f"{stem}.{'csv' if fmt == 'csv' else 'json'}", fmt
        if fmt in FOLDER_FORMATS or fmt == "all":
            return out / stem, fmt
        return out / f"{stem}.{fmt}", fmt

    def motion_files(self, audio: str | Path) -> dict[str, Path]:
        """Every file or folder a motion output of ``audio`` writes (with a GLB: the WAV beside it)."""
        out, fmt = self.target(audio)
        if out is None:
            return {}
        chosen = fmt or detect_format(out)
        return output_files(out, fmt, audio if chosen in ("glb", "all") else None)


def plan_outputs(inputs: list[str | Path] | int, output: str | Path | None, fmt: str | None = None,
                 live: bool = False) -> OutputPlan:
    """Check ``-o`` and ``--format`` against the inputs and plan the outputs; one-line errors.

    ``inputs``: the input paths (or their number). ``live``: the curves are sent live, so ``-o``
    may be left out.
    """
    n = inputs if isinstance(inputs, int) else len(inputs)
    if fmt is not None and fmt not in ANIMATE_FORMATS + ("all",):
        raise PtalkerError(f"unknown --format '{fmt}'; choose one of: {', '.join(ANIMATE_FORMATS)}, all")
    if output is None:
        if not live:
            raise PtalkerError("missing -o/--output (or send live with --livelink/--osc)")
        return OutputPlan(None, False, fmt, n > 1)
    text = str(output)
    path = Path(output)
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        raise PtalkerError(f"cannot use -o {path}: {exc.strerror or exc}") from None
    if n > 1 and (path.suffix or (exists and not is_dir)):
        raise PtalkerError(f"with {n} inputs, -o must be a folder (got the file name {path})")
    return OutputPlan(path, is_dir or text.endswith(("/", os.sep)), fmt, n > 1)  # Path() drops a trailing "/"

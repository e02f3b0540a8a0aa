"""Atomic writing: write to a temporary file (or folder) beside the target, then rename.

Every writer of the package goes through :func:`atomic_path`, :func:`atomic_folder` or
:func:`append_text`. They also turn the operating system's refusals (no space left, quota,
read-only file system, permission denied, a file where a folder is needed, ...) into a
one-line :class:`~ptalker_cli.errors.WriteError` that says what failed, where, and what
to do, after removing the temporary file: a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import PtalkerError, WriteError

_FREE = "free some space or choose another output location"
_WRITABLE = "choose a folder you can write to"
#: errno -> (what went wrong, what to do)
_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", _FREE),
    errno.EFBIG: ("file too large for this file system (or the file-size limit)", _FREE),
    errno.EROFS: ("read-only file system", _WRITABLE),
    errno.EACCES: ("permission denied", _WRITABLE),
    errno.EPERM: ("operation not permitted", _WRITABLE),
    errno.EISDIR: ("a folder of that name is in the way", "remove it or choose another output name"),
    errno.ENOTDIR: ("a file is in the way where a folder is needed", "remove it or choose another output path"),
    errno.EEXIST: ("a file is in the way where a folder is needed", "remove it or choose another output path"),
    errno.ENOTEMPTY: ("a folder of that name is in the way", "remove it or choose another output name"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter output name"),
    errno.ENOENT: ("its folder does not exist (any more)", "choose an existing output location"),
    errno.EIO: ("input/output error", "check the disk, or choose another output location"),
}
if hasattr(errno, "EDQUOT"):
    _REASONS[errno.EDQUOT] = ("disk quota exceeded", _FREE)
#: errors that only writing produces: translated wherever they come from
WRITE_ONLY_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG, errno.EROFS)
_WRITE_ONLY = set(WRITE_ONLY_ERRNOS)
#: how Rust libraries (safetensors) report an OS error: "... (os error 28)" or "Os { code: 28, ... }"
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")


def write_error_message(exc: OSError, target: str | os.PathLike) -> str:
    """``could not write TARGET: REASON; WHAT TO DO`` for an OS error that stopped a write."""
    target = Path(target)
    reason, advice = _REASONS.get(exc.errno or 0, (None, "check the output location"))
    if reason is None:
        reason = (exc.strerror or str(exc) or type(exc).__name__).rstrip(".").lower()
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(target)
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
    return f"could not write {target}: {reason}; {advice}"


def os_error_message(exc: OSError) -> str:
    """One line for an OS error that reached the command line unhandled (the CLI's last resort)."""
    if exc.errno in _WRITE_ONLY:
        return write_error_message(exc, exc.filename2 or exc.filename or "the output")
    what = _REASONS.get(exc.errno or 0, ((exc.strerror or str(exc) or type(exc).__name__).rstrip(".").lower(),))[0]
    return f"{exc.filename}: {what}" if exc.filename else what


def _file_in_the_way(path: Path) -> Path | None:
    for p in reversed([path, *path.parents]):
        if p.exists() and not p.is_dir():
            return p
        if not p.exists():
            return None
    return None


def _as_os_error(exc: BaseException, folder: Path) -> OSError | None:
    """The OS error behind ``exc``: itself, one a Rust or C writer reported in words, or a full disk."""
    if isinstance(exc, OSError):
        if exc.errno is None and _disk_full(folder):  # numpy's short write: "13824 requested and 2016 written"
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return exc
    if not isinstance(exc, Exception) or isinstance(exc, PtalkerError):
        return None
    m = _RUST_OS_ERROR.search(str(exc))  # safetensors: IoError(Os { code: 28, kind: StorageFull, ... })
    if m:
        code = int(m.group(1) or m.group(2))
        return OSError(code, os.strerror(code))
    if type(exc).__module__.startswith("soundfile") and _disk_full(folder):  # libsndfile says "System error."
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def _disk_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail == 0 or st.f_bfree == 0


def _is_within(name, scratch: Path | None, target: Path) -> bool:
    if name is None:
        return False
    try:
        p = Path(os.fsdecode(name))
    except TypeError:
        return False
    return p == target or (scratch is not None and (p == scratch or scratch in p.parents))


@contextlib.contextmanager
def write_errors(target: str | os.PathLike, scratch: str | os.PathLike | None = None,
                 own: bool = False) -> Iterator[None]:
    """Turn an OS error raised while writing ``target`` into a one-line :class:`WriteError`.

    ``own``: every OS error in the block is about writing ``target`` (the block only
    creates, renames or writes it). Otherwise only errors that writing alone produces
    (no space, quota, file too large, read-only) and errors naming ``target`` or the
    temporary ``scratch`` file or folder are translated: an error about reading some
    other file passes through unchanged.
    """
    target = Path(target)
    scratch = Path(scratch) if scratch is not None else None
    try:
        yield
    except WriteError as exc:  # a writer inside the block reported a file of the scratch folder: name the target
        if exc.errno is None or not _is_within(exc.target, scratch, target) or Path(exc.target) == target:
            raise
        raise WriteError(write_error_message(OSError(exc.errno, os.strerror(exc.errno)), target), exc.errno,
                         target) from None
    except BaseException as exc:
        oserr = _as_os_error(exc, scratch.parent if scratch is not None else target.parent)
        if oserr is None:
            raise
        if not (own or oserr.errno in _WRITE_ONLY or _is_within(oserr.filename, scratch, target)
                or _is_within(oserr.filename2, scratch, target)):
            raise
        raise WriteError(write_error_message(oserr, target), oserr.errno, target) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On any exception (an interruption included) the temporary file is removed and
    ``path`` is left untouched; OS errors become a :class:`WriteError` (see
    :func:`write_errors`). ``suffix`` defaults to the target's own suffix, so writers
    that look at the extension (numpy, trimesh, ffmpeg) keep working.
    """
    path = Path(path)
    tmp_path: Path | None = None
    created: list[Path] = []
    try:
        with write_errors(path, own=True):
            created = _make_parents(path)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
            )
            tmp_path = Path(tmp)
            os.close(fd)
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        with write_errors(path, scratch=tmp_path):
            yield tmp_path
        with write_errors(path, own=True):
            os.replace(tmp_path, path)
    except BaseException:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink()
        _remove_empty(created)
        raise


def _make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; returns the ones created, deepest first."""
    missing = [p for p in path.parents if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; a folder something else wrote into stays
        try:
            folder.rmdir()
        except OSError:
            break


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (a log); a failed or interrupted append is undone (no cut line)."""
    path = Path(path)
    data = text.encode("utf-8")
    with write_errors(path, own=True):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    The old output (if any) is moved aside first and removed only after the new one
    is in place, so a failure leaves either the old output or nothing, never a mix.
    OS errors become a :class:`WriteError`, as in :func:`atomic_path`.
    """
    path = Path(path)
    tmp: Path | None = None
    created: list[Path] = []
    try:
        with write_errors(path, own=True):
            created = _make_parents(path)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.chmod(tmp, 0o777 & ~_umask())
        with write_errors(path, scratch=tmp):
            yield tmp
        with write_errors(path, own=True):
            old = None
            if path.exists() or path.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "x")
            try:
                os.replace(tmp, path)
            except BaseException:
                if old is not None:  # put the old output back
                    with contextlib.suppress(OSError):
                        os.replace(old / "x", path)
                    shutil.rmtree(old, ignore_errors=True)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise

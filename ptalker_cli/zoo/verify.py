"""Verifying downloaded model files: hashes, and records of files already verified.

A file is checked against the sha256 of the registry when it has one, else against the
hash the hub reports for it: the sha256 of an LFS file (its ``X-Linked-Etag``, which is
also the blob's name in the hub cache) or the git blob sha1 of a small file stored in
git (its ``ETag``). See :mod:`ptalker_cli.zoo.hub` for when this happens.

A verified file is remembered (size, mtime and digest, in
``$PTALKER_CACHE/verified.json``, default ``~/.cache/ptalker``), so loading a cached
model does not rehash gigabytes every time; ``ptalker models verify`` rehashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..resources import ptalker_cache_dir
from .registry import SHA256_RE

GIT_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")


# --------------------------------------------------------------------------- hashing
def sha256_file(path: str | Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: str | Path, chunk: int = 8 << 20) -> str:
    """The git object id of a file (what the hub reports as the ETag of a non-LFS file)."""
    h = hashlib.sha1()
    h.update(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Expected:
    """What a file must hash to, and who said so."""

    algo: str  # "sha256" | "git-sha1"
    digest: str
    source: str  # "registry" | "hub (LFS sha256)" | "hub (git blob sha1)"

    def compute(self, path: str | Path) -> str:
        return sha256_file(path) if self.algo == "sha256" else git_blob_sha1(path)


def expected_from_etag(etag: str | None) -> Expected | None:
    etag = (etag or "").strip('"').lower()
    if SHA256_RE.match(etag):
        return Expected("sha256", etag, "hub (LFS sha256)")
    if GIT_SHA1_RE.match(etag):
        return Expected("git-sha1", etag, "hub (git blob sha1)")
    return None


def cache_blob(pointer: Path) -> Path | None:
    """The cache blob a snapshot pointer links to (its name is the hub's ETag)."""
    real = Path(os.path.realpath(pointer))
    return real if real.parent.name == "blobs" else None


# --------------------------------------------------------------------------- verification records
def _records_path() -> Path:
    return ptalker_cache_dir() / "verified.json"


def _load_records() -> dict[str, dict]:
    try:
        data = json.loads(_records_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _save_records(records: dict[str, dict]) -> None:
    from ..fileio import atomic_write_text

    with contextlib.suppress(OSError):  # a read-only home only costs rehashing next time
        atomic_write_text(_records_path(), json.dumps(records, indent=1, sort_keys=True) + "\n")


def _stat_key(path: Path) -> tuple[str, dict]:
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _recorded_ok(path: Path, expected: Expected) -> bool:
    try:
        key, stat = _stat_key(path)
    except OSError:
        return False
    rec = _load_records().get(key)
    return bool(rec) and rec.get("algo") == expected.algo and rec.get("digest") == expected.digest and all(
        rec.get(k) == v for k, v in stat.items())


def _record(path: Path, expected: Expected) -> None:
    try:
        key, stat = _stat_key(path)
    except OSError:
        return
    records = _load_records()
    records[key] = {**stat, "algo": expected.algo, "digest": expected.digest}
    _save_records(records)


def _forget(path: Path) -> None:
    records = _load_records()
    if records.pop(os.path.realpath(path), None) is not None:
        _save_records(records)


def check_file(path: str | Path, expected: Expected, size: int | None = None,
               trust_record: bool = True) -> tuple[bool, str]:
    """Hash ``path`` (or trust an unchanged earlier verification) → (ok, actual digest)."""
    path = Path(path)
    if size is not None and path.stat().st_size != size:
        return False, f"of a file of {path.stat().st_size} bytes (the registry says {size})"
    if trust_record and _recorded_ok(path, expected):
        return True, expected.digest
    actual = expected.compute(path)
    if actual == expected.digest:
        _record(path, expected)
        return True, actual
    _forget(path)
    return False, actual


def evict(pointer: Path) -> None:
    """Remove a snapshot file and the blob behind it, so the next download starts clean."""
    blob = cache_blob(pointer)
    _forget(pointer)
    for p in (pointer, blob):
        if p is not None:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

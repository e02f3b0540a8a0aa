"""Fetching models from the Hugging Face hub: pinned, verified, cached, usable offline.

Every download goes through ``huggingface_hub.hf_hub_download`` and its cache
(``HF_HUB_CACHE``, default ``$HF_HOME/hub``), so files are shared with ``transformers``
and the ``hf`` command. After a download the file is checked:

* against the sha256 of the registry when the registry has one;
* otherwise against the hash the hub reports for the file — the sha256 of an LFS
  file (its ``X-Linked-Etag``, which is also the blob's name in the cache), or the
  git blob sha1 of a small file stored in git (its ``ETag``).

On a mismatch the cached copy is deleted and the file is fetched once more; a second
mismatch is an error (and nothing corrupt stays in the cache). ``HF_HUB_OFFLINE=1`` or
``offline=True`` (``--offline``) never touches the network: a file that is not cached
is a one-line error saying what to download and how. Partial downloads are discarded by
``huggingface_hub`` (or resumed within the same call when the connection drops).

A verified file is remembered (size, mtime and digest, in
``$PTALKER_CACHE/verified.json``, default ``~/.cache/ptalker``), so loading a cached
model does not rehash gigabytes every time; ``ptalker models verify`` rehashes. The
hashes and these records are :mod:`ptalker_cli.zoo.verify`.

The speech encoders (``load_pretrained_speech_model``) are fetched the same way at
their pinned revision and then loaded with ``transformers`` ``from_pretrained`` from
the verified cache folder.

For tests and mirrors the hub address is ``HF_ENDPOINT`` (read at call time), an
``endpoint=`` argument, or :func:`set_endpoint`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import PtalkerError
from ..model.folder import CONFIG_FILE, MODEL_FILES, WEIGHTS_FILE
from .registry import COMMIT_RE, REPO_RE, Registry, ZooEntry, load_registry
from .verify import (
    Expected,
    cache_blob,
    check_file,
    evict,
    expected_from_etag,
    git_blob_sha1,
    ptalker_cache_dir,
    sha256_file,
)

log = logging.getLogger(__name__)

#: The files of a ptalker model folder on the hub (``PTalker.save_pretrained``).
#: Weight files tried, in order, for a speech encoder that is not in the registry.
SPEECH_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

#: The hub's address when no argument, :func:`set_endpoint` or ``HF_ENDPOINT`` gives one.
DEFAULT_ENDPOINT = "https://huggingface.co"

_endpoint_override: str | None = None


class ZooError(PtalkerError):
    """A model could not be found, fetched or verified (the message is one line)."""


class ZooNotCached(ZooError):
    """Offline, and the file is not in the cache."""


class ZooFileNotFound(ZooError):
    """The repository exists at that revision but has no such file."""


# --------------------------------------------------------------------------- settings
def set_endpoint(url: str | None) -> None:
    """Use another hub address for every download (``None``: back to ``HF_ENDPOINT`` / the default)."""
    global _endpoint_override
    _endpoint_override = url.rstrip("/") if url else None


def hub_endpoint(endpoint: str | None = None) -> str:
    """The hub address to use: argument, :func:`set_endpoint`, ``HF_ENDPOINT`` (read now), else
    :data:`DEFAULT_ENDPOINT` (not ``huggingface_hub.constants.ENDPOINT``, frozen when it was imported)."""
    for value in (endpoint, _endpoint_override, os.environ.get("HF_ENDPOINT")):
        if value:
            return value.rstrip("/")
    return DEFAULT_ENDPOINT


def _display_endpoint(endpoint: str | None) -> str:
    return endpoint or DEFAULT_ENDPOINT


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The hub cache: argument, ``HF_HUB_CACHE``, ``$HF_HOME/hub`` (read now), else the library default."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline_reason(offline: bool | None = None) -> str | None:
    """Why we are offline (``--offline``, ``HF_HUB_OFFLINE=1``), or None when online.

    The environment is read now, not when ``huggingface_hub`` was imported (it freezes
    ``HF_HUB_OFFLINE`` then); :func:`_hub_offline` makes the hub library agree during a call.
    """
    if offline:
        return "--offline"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _truthy(os.environ.get(var)):
            return f"{var}=1"
    return None


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Run a ``huggingface_hub`` call with its offline switch set to ptalker's call-time decision.

    ``huggingface_hub.constants.HF_HUB_OFFLINE`` is read from the environment once, at import,
    and its HTTP layer refuses every request while it is true; without this a process that
    imported it under ``HF_HUB_OFFLINE=1`` could never go online again (and the reverse).
    """
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def is_offline(offline: bool | None = None) -> bool:
    return offline_reason(offline) is not None


def parse_hf_uri(spec: str) -> tuple[str, str | None]:
    """``hf://org/repo[@revision]`` → (``org/repo``, revision or None)."""
    if not spec.startswith("hf://"):
        raise ZooError(f"'{spec}' is not a hub address; write hf://org/repo or hf://org/repo@revision")
    rest = spec[len("hf://"):]
    repo, _, rev = rest.partition("@")
    repo = repo.strip("/")
    if not REPO_RE.match(repo) or (_ and not rev):
        raise ZooError(f"'{spec}' is not a hub address; write hf://org/repo or hf://org/repo@revision")
    return repo, rev or None


# --------------------------------------------------------------------------- errors
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip() and not line.strip().endswith("Client Error."):
            return line.strip()
    return type(exc).__name__


def _hub_errors() -> tuple:
    """huggingface_hub's error classes (``errors`` module; older releases kept some in ``utils``)."""
    import huggingface_hub.utils as hu

    try:
        import huggingface_hub.errors as he
    except ImportError:  # pragma: no cover - very old huggingface_hub
        he = hu

    def get(name: str, fallback: str | None = None):
        for mod in (he, hu):
            cls = getattr(mod, name, None) or (getattr(mod, fallback, None) if fallback else None)
            if cls is not None:
                return cls
        return type(name, (Exception,), {})  # never raised by this version

    return (get("GatedRepoError"), get("LocalEntryNotFoundError"), get("OfflineModeIsEnabled"),
            get("RemoteEntryNotFoundError", "EntryNotFoundError"), get("RepositoryNotFoundError"),
            get("RevisionNotFoundError"))


def _translate(exc: Exception, *, repo_id: str, filename: str, revision: str | None, offline: str | None,
               cache: Path, endpoint: str | None, hint: str) -> ZooError:
    GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled, RemoteEntryNotFoundError, \
        RepositoryNotFoundError, RevisionNotFoundError = _hub_errors()
    rev = revision or "main"
    what = f"{filename} of {repo_id}@{rev}"
    if offline and isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError)):
        return ZooNotCached(f"{what} is not in the cache ({cache}) and offline mode is on ({offline}); "
                        f"download it once with network access: {hint}")
    if isinstance(exc, RevisionNotFoundError):
        return ZooError(f"revision '{rev}' does not exist in {repo_id} on {_display_endpoint(endpoint)}; "
                        "check the revision (a branch, tag or full commit id)")
    if isinstance(exc, GatedRepoError):
        return ZooError(f"{repo_id} is gated on the hub: accept its terms on its page and log in (hf auth login)")
    if isinstance(exc, RepositoryNotFoundError):
        return ZooError(f"repository {repo_id} was not found on {_display_endpoint(endpoint)} (or it is private: "
                        "log in with 'hf auth login' or set HF_TOKEN)")
    if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return ZooError(f"cannot reach the hub at {_display_endpoint(endpoint)} and {what} is not in the cache "
                        f"({cache}); check the network connection or HF_ENDPOINT, then: {hint}")
    if isinstance(exc, RemoteEntryNotFoundError):
        return ZooFileNotFound(f"{filename} does not exist in {repo_id} at revision {rev}")
    return ZooError(f"downloading {what} failed ({type(exc).__name__}: {_first_line(exc)}); the partial download "
                    f"was discarded; try again: {hint}")


# --------------------------------------------------------------------------- fetching
def fetch_file(repo_id: str, filename: str, revision: str | None = None, *, sha256: str | None = None,
               size: int | None = None, offline: bool | None = None, cache_dir: str | Path | None = None,
               endpoint: str | None = None, token: str | bool | None = None, hint: str | None = None) -> Path:
    """One hub file, downloaded into the hub cache if needed and verified; returns its cached path."""
    from huggingface_hub import hf_hub_download

    reason = offline_reason(offline)
    cache = hub_cache_dir(cache_dir)
    ep = hub_endpoint(endpoint)
    hint = hint or f"ptalker models download hf://{repo_id}@{revision or 'main'}"
    what = f"{filename} of {repo_id}@{revision or 'main'}"
    last: tuple[Expected, str] | None = None
    for attempt in range(2):
        try:
            with _hub_offline(reason is not None):
                path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache),
                                            endpoint=ep, local_files_only=reason is not None, token=token))
        except Exception as exc:  # huggingface_hub and httpx raise many kinds; all become one line
            raise _translate(exc, repo_id=repo_id, filename=filename, revision=revision, offline=reason,
                             cache=cache, endpoint=ep, hint=hint) from None
        expected = _expected_for(path, sha256, repo_id, filename, revision, reason, ep, token)
        if expected is None:
            evict(path)
            raise ZooError(f"{what}: neither the registry nor the hub gives a hash for it, so it cannot be "
                           "verified; the copy was removed")
        ok, actual = check_file(path, expected, size)
        if ok:
            return path
        last = (expected, actual)
        evict(path)
        if reason is not None:
            raise ZooError(f"the cached {what} is corrupt ({expected.algo} {actual[:16]}… instead of "
                           f"{expected.digest[:16]}… from the {expected.source}) and was removed; download it again "
                           f"with network access: {hint}")
        if attempt == 0:
            log.warning("%s: %s mismatch (got %s, expected %s from the %s); downloading it again", what,
                        expected.algo, actual, expected.digest, expected.source)
    assert last is not None
    expected, actual = last
    raise ZooError(f"{what} failed verification twice: {expected.algo} {actual} instead of {expected.digest} "
                   f"(from the {expected.source}); nothing was kept in the cache")


def _expected_for(path: Path, sha256: str | None, repo_id: str, filename: str, revision: str | None,
                  offline: str | None, endpoint: str | None, token) -> Expected | None:
    if sha256:
        return Expected("sha256", sha256, "registry")
    blob = cache_blob(path)
    exp = expected_from_etag(blob.name) if blob is not None else None
    if exp is not None or offline:
        return exp
    # no symlinked blob (symlinks disabled): ask the hub for the file's hash
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        with _hub_offline(False):
            meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint),
                                        token=token, endpoint=endpoint)
    except Exception:
        return None
    return expected_from_etag(meta.etag)


def snapshot_root(path: Path) -> Path:
    """The ``snapshots/<commit>`` folder holding a cached file."""
    for parent in path.parents:
        if parent.parent.name == "snapshots":
            return parent
    return path.parent


def fetch_entry(entry: ZooEntry, *, offline: bool | None = None, registry: Registry | None = None,
                cache_dir: str | Path | None = None, endpoint: str | None = None,
                token: str | bool | None = None) -> Path:
    """Every file of a registry entry (and of what it needs), verified; returns the model's folder."""
    if entry.needs:
        registry = registry or load_registry()
        for need in entry.needs:
            fetch_entry(registry.get(need), offline=offline, registry=registry, cache_dir=cache_dir,
                        endpoint=endpoint, token=token)
    if entry.kind == "embedded":
        return embedded_folder(entry)
    paths = [
        fetch_file(entry.repo_id, f.name, entry.revision, sha256=f.sha256, size=f.size, offline=offline,
                   cache_dir=cache_dir, endpoint=endpoint, token=token,
                   hint=f"ptalker models download {entry.name}")
        for f in entry.files
    ]
    return snapshot_root(paths[0])


def fetch_hf_model(repo_id: str, revision: str | None = None, *, offline: bool | None = None,
                   cache_dir: str | Path | None = None, endpoint: str | None = None,
                   token: str | bool | None = None, registry: Registry | None = None) -> Path:
    """A ptalker model folder from ``hf://repo_id@revision`` (registry hashes used when the repo is registered)."""
    registry = registry if registry is not None else _registry_or_none()
    entry = registry.find_repo(repo_id, revision) if registry is not None and revision else None
    if entry is not None and entry.kind == "model":
        return fetch_entry(entry, offline=offline, registry=registry, cache_dir=cache_dir, endpoint=endpoint,
                           token=token)
    hint = f"ptalker models download hf://{repo_id}" + (f"@{revision}" if revision else "")
    paths = [fetch_file(repo_id, name, revision, offline=offline, cache_dir=cache_dir, endpoint=endpoint,
                        token=token, hint=hint) for name in MODEL_FILES]
    return snapshot_root(paths[0])


def _registry_or_none() -> Registry | None:
    try:
        return load_registry()
    except PtalkerError as exc:
        log.warning("model registry ignored: %s", exc)
        return None


def embedded_folder(entry: ZooEntry) -> Path:
    """An embedded model's folder in ``weights/``, every file checked against its sha256 (always rehashed)."""
    from ..resources import weights_dir

    folder = weights_dir() / (entry.path or "")
    for f in entry.files:
        p = folder / f.name
        if not p.is_file():
            raise ZooError(f"embedded model '{entry.name}' lacks {p}; reinstall ptalker")
        actual = sha256_file(p)
        if actual != f.sha256:
            raise ZooError(f"embedded model '{entry.name}': {p} has sha256 {actual[:16]}… instead of "
                           f"{(f.sha256 or '')[:16]}…; the installation is damaged: reinstall ptalker")
    return folder


# --------------------------------------------------------------------------- cache inspection
@dataclass(frozen=True)
class FileState:
    name: str
    path: Path | None  # cached (or embedded) file, None when absent
    size: int | None


def cached_file(repo_id: str, filename: str, revision: str | None,
                cache_dir: str | Path | None = None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir(cache_dir)), revision=revision)
    return Path(found) if isinstance(found, str) and os.path.exists(found) else None


def entry_files(entry: ZooEntry, cache_dir: str | Path | None = None) -> list[FileState]:
    out = []
    for f in entry.files:
        if entry.kind == "embedded":
            from ..resources import weights_dir

            p = weights_dir() / (entry.path or "") / f.name
            path = p if p.is_file() else None
        else:
            path = cached_file(entry.repo_id, f.name, entry.revision, cache_dir)
        out.append(FileState(f.name, path, path.stat().st_size if path is not None else f.size))
    return out


def cache_state(entry: ZooEntry, cache_dir: str | Path | None = None) -> str:
    """``yes`` (every file present), ``partial`` or ``no``."""
    states = entry_files(entry, cache_dir)
    n = sum(s.path is not None for s in states)
    return "yes" if n == len(states) else ("partial" if n else "no")


def entry_folder(entry: ZooEntry, cache_dir: str | Path | None = None) -> Path | None:
    """The local folder of a fully cached (or embedded) entry, without any download; None if incomplete."""
    states = entry_files(entry, cache_dir)
    if not states or any(s.path is None for s in states):
        return None
    if entry.kind == "embedded":
        from ..resources import weights_dir

        return weights_dir() / (entry.path or "")
    return snapshot_root(states[0].path)  # type: ignore[arg-type]


@dataclass(frozen=True)
class VerifyResult:
    entry: str
    file: str
    status: str  # "ok" | "mismatch" | "missing" | "unverifiable"
    detail: str = ""


def verify_entry(entry: ZooEntry, *, delete_bad: bool = False,
                 cache_dir: str | Path | None = None) -> list[VerifyResult]:
    """Rehash every cached file of ``entry`` (no network); ``delete_bad`` removes corrupt copies."""
    results = []
    for f, state in zip(entry.files, entry_files(entry, cache_dir)):
        if state.path is None:
            results.append(VerifyResult(entry.name, f.name, "missing", "not cached"))
            continue
        if f.sha256:
            expected: Expected | None = Expected("sha256", f.sha256, "registry")
        else:
            blob = cache_blob(state.path)
            expected = expected_from_etag(blob.name) if blob is not None else None
        if expected is None:
            results.append(VerifyResult(entry.name, f.name, "unverifiable", "no hash known"))
            continue
        ok, actual = check_file(state.path, expected, f.size, trust_record=False)
        if ok:
            results.append(VerifyResult(entry.name, f.name, "ok", f"{expected.algo} {actual} ({expected.source})"))
        else:
            detail = f"{expected.algo} {actual} instead of {expected.digest} ({expected.source})"
            if delete_bad and entry.kind != "embedded":
                evict(state.path)
                detail += "; removed"
            results.append(VerifyResult(entry.name, f.name, "mismatch", detail))
    return results


# --------------------------------------------------------------------------- resolution
def resolve_model_folder(spec: str | Path, *, offline: bool | None = None, registry: Registry | None = None,
                         cache_dir: str | Path | None = None, endpoint: str | None = None) -> Path:
    """A ptalker model folder from ``hf://org/repo[@rev]``, a local folder, or a registry name.

    Order: ``hf://`` addresses go to the hub; then an existing directory is used as is;
    then the registry name (``model`` entries are fetched, ``embedded`` ones verified).
    """
    spec_s = str(spec)
    if spec_s.startswith("hf://"):
        repo, rev = parse_hf_uri(spec_s)
        return fetch_hf_model(repo, rev, offline=offline, cache_dir=cache_dir, endpoint=endpoint,
                              registry=registry)
    path = Path(spec_s).expanduser()
    if path.is_dir():
        return path
    registry = registry if registry is not None else load_registry()
    if spec_s in registry:
        entry = registry.get(spec_s)
        if entry.kind == "audio-encoder":
            raise ZooError(f"'{spec_s}' is an audio encoder, not a talking-head model; give a model name "
                           "(ptalker models list), a model folder or hf://org/repo")
        return fetch_entry(entry, offline=offline, registry=registry, cache_dir=cache_dir, endpoint=endpoint)
    models = [e.name for e in registry if e.kind != "audio-encoder"]
    names = ", ".join(["tiny"] + models)
    raise ZooError(f"model '{spec_s}' not found: give a model name ({names}), a folder with {CONFIG_FILE} and "
                   f"{WEIGHTS_FILE}, or hf://org/repo[@revision]")


# --------------------------------------------------------------------------- speech encoders
def _speech_folder(model_id: str, revision: str | None, offline: bool | None, cache_dir, endpoint,
                   registry: Registry | None) -> Path:
    if registry is not None:
        entry = registry.get(model_id) if model_id in registry else registry.find_repo(model_id, revision)
        if entry is None and revision is None:
            entry = registry.find_repo(model_id)
        if entry is not None and entry.kind == "audio-encoder":
            return fetch_entry(entry, offline=offline, registry=registry, cache_dir=cache_dir, endpoint=endpoint)
    # not registered: config.json and the first weight file that exists, checked against the hub's hashes
    hint = f"ptalker models download hf://{model_id}" + (f"@{revision}" if revision else "")
    config = fetch_file(model_id, "config.json", revision, offline=offline, cache_dir=cache_dir,
                        endpoint=endpoint, hint=hint)
    first: ZooError | None = None
    for name in SPEECH_WEIGHT_FILES:
        try:
            fetch_file(model_id, name, revision, offline=offline, cache_dir=cache_dir, endpoint=endpoint,
                       hint=hint)
            return snapshot_root(config)
        except (ZooFileNotFound, ZooNotCached) as exc:
            first = first or exc
    assert first is not None
    raise first


def load_pretrained_speech_model(model_cls, model_id: str, revision: str | None, *, offline: bool | None = None,
                                 cache_dir: str | Path | None = None, endpoint: str | None = None,
                                 **config_overrides):
    """A pretrained HuBERT/wav2vec2 (``model_cls``) from a local folder, a registry name or a hub id.

    Hub files are fetched at the pinned revision into the hub cache and verified (see the
    module docstring), under the same offline rules as every other model; then
    ``model_cls.from_pretrained(folder, **config_overrides)`` loads them.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        folder = local
    else:
        folder = _speech_folder(model_id, revision, offline, cache_dir, endpoint, _registry_or_none())
    try:
        return model_cls.from_pretrained(str(folder), **config_overrides)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ZooError(f"cannot load speech encoder '{model_id}' @ {revision} from {folder}: {_first_line(exc)}") \
            from None


@contextlib.contextmanager
def endpoint_override(url: str | None) -> Iterator[None]:
    """Temporarily send every download to ``url`` (tests, mirrors)."""
    global _endpoint_override
    old = _endpoint_override
    set_endpoint(url)
    try:
        yield
    finally:
        _endpoint_override = old


__all__ = [
    "COMMIT_RE", "MODEL_FILES", "ZooError", "ZooFileNotFound", "ZooNotCached", "cache_state", "cached_file",
    "check_file", "embedded_folder",
    "endpoint_override", "entry_files", "entry_folder", "fetch_entry", "fetch_file", "fetch_hf_model",
    "git_blob_sha1", "hub_cache_dir", "hub_endpoint", "is_offline", "load_pretrained_speech_model",
    "offline_reason", "parse_hf_uri", "ptalker_cache_dir", "resolve_model_folder", "set_endpoint", "sha256_file",
    "verify_entry",
]

"""The model registry: named, pinned models, as data.

The packaged ``registry.json`` (beside this module) lists what really exists: the
pretrained audio encoders the presets use and the embedded default model
(``synthtalk-ict``, in ``weights/``). Users add the models they publish (``ptalker models push`` does it) to a user
registry file, by default ``$XDG_CONFIG_HOME/ptalker/registry.json``
(``~/.config/ptalker/registry.json``); ``PTALKER_REGISTRY`` names other files
(separated by ``os.pathsep``) to use instead.

Entry kinds:

* ``audio-encoder`` — a ``transformers`` speech model on the hub (HuBERT / wav2vec2),
  loaded by :func:`ptalker_cli.zoo.hub.load_pretrained_speech_model`;
* ``model`` — a ptalker model folder (``config.json`` + ``model.safetensors``) on the hub;
* ``embedded`` — a ptalker model folder inside the package's ``weights/`` directory
  (:func:`ptalker_cli.resources.weights_dir`), verified by sha256 at every load.

Hub entries are pinned to a full commit id; every file carries its sha256 where it is
known (``null`` otherwise: then the hash the hub reports is used, see ``hub.py``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError

REGISTRY_FORMAT = 1
KINDS = ("audio-encoder", "model", "embedded")
PACKAGED_REGISTRY = Path(__file__).with_name("registry.json")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ZooFile:
    """One file of an entry: its name in the repo (or folder), sha256 and size where known."""

    name: str
    sha256: str | None = None
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sha256": self.sha256}
        if self.size is not None:
            out["size"] = self.size
        return out


@dataclass(frozen=True)
class ZooEntry:
    """A named model of the registry (see the module docstring for the kinds)."""

    name: str
    kind: str
    description: str = ""
    license: str = ""
    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None  # embedded: folder relative to weights_dir()
    files: tuple[ZooFile, ...] = ()
    topology: str | None = None
    fps: float | None = None
    subjects: tuple[str, ...] = ()
    dataset: str | None = None
    training_data: str | None = None
    needs: tuple[str, ...] = ()
    encoder: str | None = None  # audio-encoder: "hubert" | "wav2vec2"
    role: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = "packaged"  # where the entry was read from (not stored)

    @property
    def on_hub(self) -> bool:
        return self.kind in ("audio-encoder", "model")

    @property
    def location(self) -> str:
        if self.on_hub:
            return f"hf://{self.repo_id}@{self.revision}"
        return f"weights/{self.path}"

    @property
    def known_size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return sum(sizes) if sizes and all(s is not None for s in sizes) else None  # type: ignore[misc]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        data["files"] = [f.to_json() for f in self.files]
        data["subjects"] = list(self.subjects)
        data["needs"] = list(self.needs)
        return {k: v for k, v in data.items() if v not in (None, (), [], {}, "") or k in ("name", "kind")}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ZooEntry":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: each model entry must be a JSON object")
        name = data.get("name")
        where = f"{where} entry '{name}'" if isinstance(name, str) else where
        allowed = {f for f in cls.__dataclass_fields__ if f != "source"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown}; fields are: {', '.join(sorted(allowed))}")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(f"{where}: 'name' must be letters, digits, '.', '_' or '-'")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}: 'kind' must be one of {', '.join(KINDS)} (got {kind!r})")
        files_raw = data.get("files", [])
        if not isinstance(files_raw, list) or not files_raw:
            raise ConfigError(f"{where}: 'files' must be a non-empty list of {{name, sha256}} objects")
        files = []
        for f in files_raw:
            if isinstance(f, str):
                f = {"name": f}
            if not isinstance(f, dict) or not isinstance(f.get("name"), str) or set(f) - {"name", "sha256", "size"}:
                raise ConfigError(f"{where}: each file must be an object with 'name', 'sha256' and optional 'size'")
            sha = f.get("sha256")
            if sha is not None and (not isinstance(sha, str) or not SHA256_RE.match(sha)):
                raise ConfigError(f"{where}: sha256 of {f['name']} must be 64 lowercase hex digits or null")
            size = f.get("size")
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
                raise ConfigError(f"{where}: size of {f['name']} must be a non-negative integer")
            files.append(ZooFile(f["name"], sha, size))
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: 'files' lists a file twice")
        if kind in ("audio-encoder", "model"):
            repo, rev = data.get("repo_id"), data.get("revision")
            if not isinstance(repo, str) or not REPO_RE.match(repo):
                raise ConfigError(f"{where}: 'repo_id' must be 'org/name'")
            if not isinstance(rev, str) or not COMMIT_RE.match(rev):
                raise ConfigError(f"{where}: 'revision' must be a full 40-digit commit id (entries are pinned)")
            if data.get("path") is not None:
                raise ConfigError(f"{where}: 'path' is only for embedded entries")
        else:
            path = data.get("path")
            if not isinstance(path, str) or not path or Path(path).is_absolute() or ".." in Path(path).parts:
                raise ConfigError(f"{where}: an embedded entry needs 'path', a folder inside weights/")
            if any(f.sha256 is None for f in files):
                raise ConfigError(f"{where}: every file of an embedded entry needs its sha256")
        if kind == "audio-encoder" and data.get("encoder") not in ("hubert", "wav2vec2"):
            raise ConfigError(f"{where}: an audio-encoder entry needs 'encoder': 'hubert' or 'wav2vec2'")
        for key in ("subjects", "needs"):
            val = data.get(key, [])
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise ConfigError(f"{where}: '{key}' must be a list of strings")
        for key in ("description", "license", "topology", "dataset", "training_data", "encoder", "role"):
            val = data.get(key)
            if val is not None and not isinstance(val, str):
                raise ConfigError(f"{where}: '{key}' must be a string")
        fps = data.get("fps")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
            raise ConfigError(f"{where}: 'fps' must be a positive number")
        metrics = data.get("metrics", {})
        if not isinstance(metrics, dict):
            raise ConfigError(f"{where}: 'metrics' must be an object")
        return cls(
            name=name, kind=kind, description=data.get("description") or "", license=data.get("license") or "",
            repo_id=data.get("repo_id"), revision=data.get("revision"), path=data.get("path"), files=tuple(files),
            topology=data.get("topology"), fps=float(fps) if fps is not None else None,
            subjects=tuple(data.get("subjects", [])), dataset=data.get("dataset"),
            training_data=data.get("training_data"), needs=tuple(data.get("needs", [])),
            encoder=data.get("encoder"), role=data.get("role"), metrics=dict(metrics),
        )


def user_registry_path() -> Path:
    """Where ``ptalker models push`` records published models (the first ``PTALKER_REGISTRY`` file if set)."""
    env = os.environ.get("PTALKER_REGISTRY")
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "ptalker" / "registry.json"


def user_registry_paths() -> list[Path]:
    env = os.environ.get("PTALKER_REGISTRY")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [user_registry_path()]


def _read(path: Path) -> list[ZooEntry]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read registry {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"registry {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ConfigError(f"registry {path} must be an object with a 'models' list")
    if data.get("format", REGISTRY_FORMAT) != REGISTRY_FORMAT:
        raise ConfigError(f"registry {path} has format {data.get('format')!r}; this ptalker reads {REGISTRY_FORMAT}")
    entries = []
    for item in data["models"]:
        entry = ZooEntry.from_json(item, f"registry {path}")
        entries.append(_with_source(entry, str(path)))
    return entries


def _with_source(entry: ZooEntry, source: str) -> ZooEntry:
    from dataclasses import replace

    return replace(entry, source=source)


class Registry:
    """An ordered, name-unique collection of :class:`ZooEntry`."""

    def __init__(self, entries: list[ZooEntry]):
        self._entries: dict[str, ZooEntry] = {}
        for e in entries:
            if e.name in self._entries:
                raise ConfigError(
                    f"model name '{e.name}' is defined twice ({self._entries[e.name].source} and {e.source}); "
                    "rename one of them"
                )
            self._entries[e.name] = e
        for e in self._entries.values():
            for need in e.needs:
                if need not in self._entries:
                    raise ConfigError(f"registry entry '{e.name}' needs '{need}', which is not in the registry")

    def __iter__(self) -> Iterator[ZooEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> ZooEntry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none"
            raise ConfigError(f"'{name}' is not in the model registry; known models: {known} (ptalker models list)") \
                from None

    def find_repo(self, repo_id: str, revision: str | None = None) -> ZooEntry | None:
        """The entry for a hub repo (at ``revision``, when given)."""
        for e in self._entries.values():
            if e.on_hub and e.repo_id == repo_id and (revision is None or e.revision == revision):
                return e
        return None


def load_registry(paths: list[str | Path] | None = None, include_user: bool = True) -> Registry:
    """The packaged registry plus the user registry files (missing user files are fine).

    ``paths`` replaces the packaged file (tests, other distributions).
    """
    files = [Path(p) for p in paths] if paths is not None else [PACKAGED_REGISTRY]
    entries: list[ZooEntry] = []
    for p in files:
        entries.extend(_read(p))
    if include_user:
        for p in user_registry_paths():
            if p.is_file():
                entries.extend(_read(p))
    return Registry(entries)


def add_user_entry(entry: ZooEntry, path: str | Path | None = None, replace_existing: bool = True) -> Path:
    """Add (or replace) ``entry`` in the user registry file; returns the file's path."""
    from ..fileio import atomic_write_text

    path = Path(path) if path is not None else user_registry_path()
    if entry.name in {e.name for e in _read(PACKAGED_REGISTRY)}:
        raise ConfigError(f"'{entry.name}' is a name of the packaged registry; choose another name")
    models: list[dict[str, Any]] = []
    if path.is_file():
        existing = _read(path)
        for e in existing:
            if e.name == entry.name:
                if not replace_existing:
                    raise ConfigError(f"'{entry.name}' is already in {path}")
                continue
            models.append(e.to_json())
    ZooEntry.from_json(entry.to_json(), "new entry")  # validate before writing
    models.append(entry.to_json())
    atomic_write_text(path, json.dumps({"format": REGISTRY_FORMAT, "models": models}, indent=2) + "\n")
    return path

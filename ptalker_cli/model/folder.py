"""The model folder: ``config.json`` (the frozen :class:`~ptalker_cli.config.ModelConfig`) and
``model.safetensors`` (every weight, plus the buffers that make the folder self-describing: the
template, faces, lip / upper-face regions and per-subject templates; the metadata holds the
topology's name and units).

This module is the folder's one owner: the file names are written here only, and so are
writing, reading and the strict checks. :meth:`PTalker.save_pretrained
<ptalker_cli.model.network.PTalker.save_pretrained>` and ``from_pretrained`` are thin callers;
:func:`read_topology` gives the mesh of a saved model without building it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import ModelConfig
from ..errors import ConfigError, MeshError
from ..mesh import Topology, resolve_mesh

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor, nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: the files of a model folder, in the order they are listed and uploaded
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE)


def is_model_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding both model files."""
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in MODEL_FILES)


def require_model_folder(path: str | Path) -> Path:
    """``path`` as a Path; a ConfigError unless it is a model folder."""
    path = Path(path)
    if not is_model_folder(path):
        raise ConfigError(f"{path} is not a ptalker model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    return path


def read_config(folder: str | Path) -> ModelConfig:
    return ModelConfig.load(Path(folder) / CONFIG_FILE)


def write_model_folder(folder: str | Path, config: ModelConfig, state: dict[str, "Tensor"],
                       topology: Topology) -> Path:
    """Write ``state`` (tensors on any device) and ``config`` into ``folder``, each file atomically."""
    from safetensors.torch import save_file

    from ..fileio import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {"format": "pt", "topology": topology.name, "units": topology.units}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata=meta)
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(config.to_json())
    return folder


def read_model_folder(folder: str | Path, map_location="cpu"
                      ) -> tuple[ModelConfig, Topology, np.ndarray, dict[str, "Tensor"]]:
    """(config, topology, per-subject templates, state dict) of a saved model."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = require_model_folder(folder)
    w_path = folder / WEIGHTS_FILE
    config = read_config(folder)
    try:
        with safe_open(str(w_path), "pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(w_path), device=str(map_location))
    except Exception as exc:
        raise ConfigError(f"cannot read {w_path}: {exc}") from None
    try:
        regions = {"lip": state["lip_index"].cpu().numpy(), "upper_face": state["upper_index"].cpu().numpy()}
        topo = Topology(meta.get("topology", config.topology), state["template"].cpu().numpy(),
                        state["faces"].cpu().numpy(), regions, meta.get("units", "normalized"))
        templates = state["subject_templates"].cpu().numpy()
    except KeyError as exc:
        raise ConfigError(f"{w_path} lacks the tensor {exc}; the checkpoint is incomplete") from None
    return config, topo, templates, state


def load_weights(model: "nn.Module", state: dict[str, "Tensor"], folder: str | Path,
                 new_modules: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``model``, strictly: every tensor must match (a ConfigError names them).

    ``new_modules``: names of modules the model has and ``state`` may lack (added on top of a saved
    model, e.g. a viseme classifier); they keep their initialization.
    """
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k.split(".", 1)[0] not in new_modules]
    except RuntimeError as exc:  # shapes that do not fit
        mismatched = [line.split("size mismatch for", 1)[1].split(":")[0].strip()
                      for line in str(exc).splitlines() if "size mismatch for" in line]
        raise ConfigError(f"{Path(folder) / WEIGHTS_FILE} does not match its config: {len(mismatched)} tensors "
                          f"of another shape (e.g. {mismatched[:3]})") from None
    if missing or unexpected:
        raise ConfigError(
            f"{Path(folder) / WEIGHTS_FILE} does not match its config: {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors (e.g. {(list(missing) + list(unexpected))[:3]})"
        )


def read_topology(folder: str | Path, subject: str | None = None) -> Topology:
    """The topology of a saved model (its template, or ``subject``'s), read without building the model."""
    from safetensors import safe_open

    folder = Path(folder)
    config = read_config(folder)
    try:
        with safe_open(str(folder / WEIGHTS_FILE), "pt") as fh:
            meta = fh.metadata() or {}
            vertices = fh.get_tensor("template").numpy()
            if subject is not None and subject in config.template_subjects:
                vertices = fh.get_tensor("subject_templates")[config.template_subjects.index(subject)].numpy()
            faces = fh.get_tensor("faces").numpy()
            regions = {"lip": fh.get_tensor("lip_index").numpy(), "upper_face": fh.get_tensor("upper_index").numpy()}
    except Exception as exc:
        raise ConfigError(f"cannot read the mesh of model {folder}: {exc}") from None
    return Topology(meta.get("topology", config.topology), vertices, faces, regions, meta.get("units", "normalized"))


def resolve_template(spec: str | Path, subject: str | None = None) -> Topology:
    """A template given as a shipped name (``ict``, ``tiny``), a mesh file, or a model folder.

    For a model folder the model's mesh is used, with ``subject``'s own template when the
    model holds one.
    """
    path = Path(str(spec))
    if str(spec) != "tiny" and path.is_dir():
        if not is_model_folder(path):
            raise MeshError(f"{path} is a folder but not a model folder ({CONFIG_FILE} + {WEIGHTS_FILE})")
        return read_topology(path, subject)
    return resolve_mesh(spec)

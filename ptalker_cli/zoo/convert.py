"""Import checkpoints trained with the authors' released PTalker code (``wangryhen/PTalker``).

The released code saves ``model.state_dict()`` of its ``PTalker`` module (spec §1.11):
``audio_encoder.*`` (HuBERT), ``audio_feature_map``, ``vertice_encoder``, ``PPE.pe``,
``transformer_decoder.layers.{i}.*``, ``vertice_decoder``,
``onehot_style_encoder.{obj_vector, my_obj_vector, attention.*}``,
``AudioStyle.{wav2vec2_emo.*, fc1, fc2, fc3}``, ``auxiliary_style_classifier.fc``,
``content_motion.*``, ``style_motion.*``, ``cons.temperature``, ``style_classifier.fc``,
``start_token``. :func:`convert_released` maps it onto a ptalker model in a
*released-code compatible* configuration:

* no graph encoder (the released vertex encoder is one ``Linear(3V, d)``);
* the emotion wav2vec2 as the only audio-style backbone (``fc1``/``fc2`` → the s_a MLP,
  ``fc3`` → the per-frame style projection);
* no motion content in the decoder (``content_motion.*`` only feeds the released
  training losses: not part of the converted model, reported as unused);
* the motion style encoder with the released weights (its dead ``motion_map`` becomes
  an identity projection, which is exact);
* the identity encoder folded: the released attention block degenerates to a fixed
  function of the one-hot (spec §1.7), so each training subject's code
  ``s_p = ReLU(p + Attn(p, q))`` is computed from the released weights and stored as the
  subject's column of the linear identity map — exact for every one-hot input;
* decoder layers, HuBERT, the output head, the start token and the adversarial
  classifier one to one (weight-norm ``weight_g``/``weight_v`` of old PyTorch versions
  are renamed to ``parametrizations.weight.original0/1``).

The converted config sets :data:`RELEASED_SWITCHES` (``motion_encoder_form``,
``inference_form``, ``audio_style_rate_hz``), so ``PTalker.generate`` reproduces the released
``predict_seen`` / ``predict_unseen`` / ``predict_with_ref_motion`` exactly (float32
tolerance). What still differs is listed in :data:`FORWARD_DIFFERENCES` and
:data:`SWITCHES_FOR_EXACT_REPRODUCTION` (also in the conversion report and docs/models.md). The checkpoint is read with
``torch.load(weights_only=True)``; every key is accounted for (mapped, folded,
validated, unused or unmatched) and a model with a missing weight is never written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..mesh import Topology
from ..model.folder import MODEL_FILES
from .released_config import (
    DATASETS,
    RELEASED_SWITCHES,
    released_model_config,
    released_period,
    released_sizes,
    released_speech_specs,
    speech_hf_config,
)
from .released_report import FORWARD_DIFFERENCES, SWITCHES_FOR_EXACT_REPRODUCTION, ConversionReport
from .released_weights import StateMapper, refuse_missing, released_identity_codes

__all__ = [
    "DATASETS", "FORWARD_DIFFERENCES", "RELEASED_SWITCHES", "SWITCHES_FOR_EXACT_REPRODUCTION", "ConversionReport",
    "convert_released", "dataset_topology", "load_released_state", "normalize_state", "released_identity_codes",
    "speech_hf_config", "write_converted",
]


# --------------------------------------------------------------------------- reading
def load_released_state(path: str | Path) -> dict[str, Tensor]:
    """Read a released ``.pth`` with ``torch.load(weights_only=True)`` → a flat ``{key: tensor}``."""
    from .safe_load import load_tensors

    path = Path(path)
    return normalize_state(load_tensors(path), str(path))  # a one-line ConfigError that says what the file is


def normalize_state(obj: Any, where: str = "checkpoint") -> dict[str, Tensor]:
    """Unwrap ``{"state_dict": …}`` / ``{"model": …}`` and a ``module.`` prefix; every value must be a tensor."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"{where} does not hold a state dict (a mapping of parameter names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise ConfigError(f"{where} has non-tensor entries (e.g. {bad[:3]}); it is not a model state dict")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


# --------------------------------------------------------------------------- conversion
def convert_released(
    state: dict[str, Tensor],
    dataset: str,
    topology: Topology,
    *,
    subject_templates: np.ndarray | None = None,
    template_subjects: tuple[str, ...] = (),
    subjects: tuple[str, ...] | None = None,
    content_config: str | Path | dict | None = None,
    style_config: str | Path | dict | None = None,
    fill_speech_from_pretrained: bool = False,
    offline: bool | None = None,
    source: str = "",
):
    """Map a released state dict onto a :class:`~ptalker_cli.model.network.PTalker` → (model, report).

    ``topology`` is the dataset's mesh (with its ``lip``/``upper_face`` regions);
    ``subject_templates`` (one per ``template_subjects`` entry) are stored in the model.
    ``content_config`` / ``style_config``: the HuBERT / emotion-wav2vec2 transformers configs
    (dict, config.json or folder); by default the pinned hub configs of
    ``facebook/hubert-large-ls960-ft`` and ``superb/wav2vec2-large-superb-er`` (fetched
    through the zoo: cached, verified, offline rules). Sizes are always read from the weights.
    Raises :class:`ConfigError` when a weight of the model would be missing.
    """
    from ..model.network import PTalker

    dataset = dataset.lower()
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset '{dataset}'; the released code supports: {', '.join(DATASETS)}")
    state = normalize_state(state)
    report = ConversionReport(dataset=dataset, source=source)
    sizes = released_sizes(state, topology, subjects or DATASETS[dataset]["subjects"])
    period = released_period(state, int(DATASETS[dataset]["period"]), report)
    content_spec, style_spec = released_speech_specs(state, sizes, content_config, style_config, offline, report)
    if subject_templates is not None and len(subject_templates) != max(len(template_subjects), 1):
        raise ConfigError("one subject template is needed per template subject")
    config = released_model_config(dataset, topology, sizes, period, content_spec, style_spec, template_subjects)

    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(0)  # the few freshly initialised training-only tensors are reproducible
        model = PTalker(config, topology, subject_templates)
    # build_speech_model filled the specs; keep what the model was built with
    mapper = StateMapper(state, model.state_dict(), report)
    mapper.map_speech_models()
    mapper.map_one_to_one()
    mapper.map_decoder_layers()
    mapper.map_motion_style(period, sizes.feature_dim)
    mapper.fold_identity()
    mapper.account_training_only(period)
    mapper.account_ours()
    refuse_missing(report, mapper.new, mapper.ours, config, fill_speech_from_pretrained)
    full = dict(mapper.ours)
    full.update(mapper.new)
    model.load_state_dict(full, strict=True)
    return model.eval(), report


def dataset_topology(data_dir: str | Path, subjects: tuple[str, ...]) -> tuple[Topology, np.ndarray | None,
                                                                              tuple[str, ...], dict[str, Any]]:
    """Topology, subject templates (training subjects first) and manifest facts of a prepared dataset."""
    from ..data.layout import DatasetLayout

    layout = DatasetLayout(data_dir)
    manifest = layout.manifest()
    topo = layout.load_topology(manifest)
    names = [s for s in subjects if layout.template_path(s).is_file()]
    names += [s for s in manifest.subjects if s not in names and layout.template_path(s).is_file()]
    templates = np.stack([layout.load_template(s) for s in names]) if names else None
    return topo, templates, tuple(names), {"name": manifest.name, "fps": manifest.fps}


def write_converted(model, report: ConversionReport, out_dir: str | Path, force: bool = False) -> Path:
    """Save the converted model (``config.json`` + ``model.safetensors``) and ``conversion.json``."""
    from ..fileio import atomic_write_text

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        if any((out / name).exists() for name in MODEL_FILES):
            raise ConfigError(f"{out} already holds a model; pass --force to overwrite it")
    model.save_pretrained(out)
    atomic_write_text(out / "conversion.json", json.dumps(report.to_json(), indent=2) + "\n")
    return out

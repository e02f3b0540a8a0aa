"""The configuration of a released checkpoint, inferred from its weights.

Sizes (feature width, decoder layers, speech encoders, motion style encoder, identities)
are read from the tensors and checked against the dataset's mesh and subjects; the PPE
period from the PPE table; the speech encoders' architecture details (attention heads,
layer-norm placement, strides), which the weights do not hold, from their config.json.
The result is the *released-code compatible* :class:`~ptalker_cli.config.ModelConfig`
described in :mod:`ptalker_cli.zoo.convert`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import BIWI_SUBJECTS, HUBERT_LARGE, VOCASET_SUBJECTS, W2V2_EMOTION, AudioEncoderConfig, ModelConfig
from ..errors import ConfigError
from ..mesh import Topology
from .released_report import ConversionReport

DATASETS: dict[str, dict[str, Any]] = {
    "biwi": {"fps": 25.0, "period": 25, "subjects": BIWI_SUBJECTS, "topology": "biwi"},
    "vocaset": {"fps": 30.0, "period": 30, "subjects": VOCASET_SUBJECTS, "topology": "flame"},
}

#: ModelConfig switches every converted model gets: the released inference, reproduced exactly
#: (the released predict_* loops, bidirectional motion encoders, 60-Hz audio-style backbone).
RELEASED_SWITCHES: dict[str, Any] = {
    "motion_encoder_form": "released",
    "inference_form": "released",
    "audio_style_rate_hz": 60.0,
}

def count_indexed(state: dict[str, Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in state if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def need(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise ConfigError(f"the checkpoint lacks '{key}': it is not a state dict of the released PTalker model")
    return state[key]


def speech_hf_config(state: dict[str, Tensor], prefix: str, base: dict[str, Any] | None, label: str) -> dict:
    """A transformers config for the speech model under ``prefix``: sizes inferred from the weights, the rest
    (attention heads, layer-norm placement, strides) from ``base`` (the encoder's own config.json)."""
    if base is None:
        raise ConfigError(f"the {label} config is needed (attention heads and layer-norm placement cannot be "
                          "read from the weights); pass its config.json")
    cfg = {k: v for k, v in dict(base).items() if not k.startswith("_")}
    proj = need(state, f"{prefix}feature_projection.projection.weight")
    hidden = int(proj.shape[0])
    layers = count_indexed(state, f"{prefix}encoder.layers.")
    conv_dim, conv_kernel = [], []
    i = 0
    while f"{prefix}feature_extractor.conv_layers.{i}.conv.weight" in state:
        w = state[f"{prefix}feature_extractor.conv_layers.{i}.conv.weight"]
        conv_dim.append(int(w.shape[0]))
        conv_kernel.append(int(w.shape[2]))
        i += 1
    if not conv_dim or not layers:
        raise ConfigError(f"the checkpoint's {label} weights under '{prefix}' are incomplete")
    inter = int(need(state, f"{prefix}encoder.layers.0.feed_forward.intermediate_dense.weight").shape[0])
    pos = None
    for suffix in ("parametrizations.weight.original1", "weight_v", "weight"):
        pos = state.get(f"{prefix}encoder.pos_conv_embed.conv.{suffix}")
        if pos is not None:
            break
    inferred: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": inter,
        "conv_dim": conv_dim,
        "conv_kernel": conv_kernel,
        "conv_bias": f"{prefix}feature_extractor.conv_layers.0.conv.bias" in state,
        "feat_extract_norm": "layer" if f"{prefix}feature_extractor.conv_layers.1.layer_norm.weight" in state
        else "group",
    }
    if pos is not None:
        inferred["num_conv_pos_embeddings"] = int(pos.shape[2])
        inferred["num_conv_pos_embedding_groups"] = hidden // int(pos.shape[1])
    strides = cfg.get("conv_stride")
    if not isinstance(strides, (list, tuple)) or len(strides) != len(conv_dim):
        if len(conv_dim) == 7:
            cfg["conv_stride"] = [5, 2, 2, 2, 2, 2, 2]
        else:
            raise ConfigError(f"the {label} has {len(conv_dim)} conv layers; give a config.json with its strides")
    heads = cfg.get("num_attention_heads")
    if not isinstance(heads, int) or hidden % heads:
        raise ConfigError(f"the {label} config's num_attention_heads ({heads}) does not divide hidden size {hidden}")
    cfg.update(inferred)
    return cfg


def _clean_hf_config(cfg: dict[str, Any]) -> dict[str, Any]:
    drop = ("architectures", "id2label", "label2id", "transformers_version", "torch_dtype", "dtype", "_name_or_path")
    return {k: v for k, v in cfg.items() if k not in drop}


def _load_hf_config(source: str | Path | dict | None, fallback: AudioEncoderConfig, label: str,
                    offline: bool | None) -> dict[str, Any]:
    """A speech config from a dict, a config.json / folder, or the pinned hub config of ``fallback``."""
    if isinstance(source, dict):
        return dict(source)
    if source is not None:
        p = Path(source).expanduser()
        if p.is_dir():
            p = p / "config.json"
        try:
            return json.loads(p.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the {label} config {p}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the {label} config {p} is not valid JSON ({exc.msg})") from None
    from .hub import fetch_file
    from .registry import load_registry

    entry = load_registry().find_repo(fallback.model_id, fallback.revision)
    hint = f"ptalker models download {entry.name}" if entry else f"ptalker models download hf://{fallback.model_id}"
    path = fetch_file(fallback.model_id, "config.json", fallback.revision, offline=offline,
                      sha256=next((f.sha256 for f in entry.files if f.name == "config.json"), None) if entry else None,
                      hint=hint + f" (or pass --{'content' if 'content' in label else 'style'}-config)")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class ReleasedSizes:
    """The sizes of a released model, read from its weights."""

    feature_dim: int
    decoder_layers: int
    decoder_ffn: int
    audio_style_hidden: int
    content_width: int  # audio_feature_map's input: the content encoder's hidden size
    style_width: int  # AudioStyle.fc1's input: the style backbone's hidden size
    motion_layers: int
    motion_convs: int
    subjects: tuple[str, ...]


def released_sizes(state: dict[str, Tensor], topology: Topology, subjects: tuple[str, ...]) -> ReleasedSizes:
    """Feature width, layers and identities from the weights, checked against the mesh and the subjects."""
    afm = need(state, "audio_feature_map.weight")
    d = int(afm.shape[0])
    v3 = int(need(state, "vertice_encoder.weight").shape[1])
    n_id = int(need(state, "onehot_style_encoder.obj_vector.weight").shape[1])
    layers = count_indexed(state, "transformer_decoder.layers.")
    if not layers:
        raise ConfigError("the checkpoint has no transformer_decoder.layers.*: it is not a released PTalker model")
    ffn = int(need(state, "transformer_decoder.layers.0.linear1.weight").shape[0])
    fc1 = need(state, "AudioStyle.fc1.weight")
    fc2 = need(state, "AudioStyle.fc2.weight")
    if int(fc2.shape[0]) != d:
        raise ConfigError(
            f"AudioStyle.fc2 outputs {fc2.shape[0]} features but feature_dim is {d}: the released code hard-codes "
            "128 and cannot run with this width (spec §1.4); this checkpoint comes from modified code")
    m_layers = count_indexed(state, "style_motion.transformer_encoder.layers.")
    m_convs = count_indexed(state, "style_motion.conv_layers.")
    if not m_layers or not m_convs:
        raise ConfigError("the checkpoint lacks the motion style encoder (style_motion.*)")
    if v3 % 3 or v3 // 3 != topology.num_vertices:
        raise ConfigError(f"the checkpoint animates {v3 // 3} vertices (vertice_encoder takes {v3} inputs) but the "
                          f"topology '{topology.name}' has {topology.num_vertices}; use the dataset's own mesh")
    subjects = tuple(subjects)
    if len(subjects) != n_id:
        raise ConfigError(f"the checkpoint has {n_id} training identities but {len(subjects)} subjects were given "
                          f"({', '.join(subjects)}); pass --subjects in the order of the released --train_subjects")
    return ReleasedSizes(d, layers, ffn, int(fc1.shape[0]), int(afm.shape[1]), int(fc1.shape[1]), m_layers, m_convs,
                         subjects)


def released_period(state: dict[str, Tensor], period: int, report: ConversionReport) -> int:
    """The PPE period: the dataset's, unless the checkpoint's PPE table (a derived buffer) repeats at another."""
    pe = state.get("PPE.pe")
    if pe is not None:
        found = _detect_period(pe[0])
        if found is not None and found != period:
            report.warnings.append(f"PPE.pe repeats every {found} frames, not {period}: using period {found}")
            period = found
    return period


def released_speech_specs(state: dict[str, Tensor], sizes: ReleasedSizes, content_config, style_config,
                          offline: bool | None, report: ConversionReport) -> tuple[AudioEncoderConfig,
                                                                                   AudioEncoderConfig]:
    """The HuBERT content encoder's and the emotion wav2vec2's specs, their sizes read from the weights."""
    content_hf = speech_hf_config(state, "audio_encoder.",
                                  _load_hf_config(content_config, HUBERT_LARGE, "content encoder (HuBERT)", offline),
                                  "content encoder (HuBERT)")
    style_hf = speech_hf_config(state, "AudioStyle.wav2vec2_emo.",
                                _load_hf_config(style_config, W2V2_EMOTION, "style encoder (emotion wav2vec2)",
                                                offline),
                                "style encoder (emotion wav2vec2)")
    if sizes.content_width != content_hf["hidden_size"] or sizes.style_width != style_hf["hidden_size"]:
        raise ConfigError("audio_feature_map / AudioStyle.fc1 input widths do not match the speech encoders")
    content_spec = replace(HUBERT_LARGE, hf_config=_clean_hf_config(content_hf))
    style_spec = replace(W2V2_EMOTION, hf_config=_clean_hf_config(style_hf))
    if style_config is None:
        report.warnings.append(
            "the released emotion model ('wav2emo', a local folder) is not identified; its architecture config "
            "was taken from superb/wav2vec2-large-superb-er and its sizes from the checkpoint")
    return content_spec, style_spec


def released_model_config(dataset: str, topology: Topology, sizes: ReleasedSizes, period: int,
                          content_spec: AudioEncoderConfig, style_spec: AudioEncoderConfig,
                          template_subjects: tuple[str, ...]) -> ModelConfig:
    """The released-code compatible ptalker configuration (see the module docstring)."""
    return ModelConfig(
        name=f"released-{dataset}", topology=topology.name, num_vertices=topology.num_vertices,
        fps=float(DATASETS[dataset]["fps"]), period=period, train_subjects=sizes.subjects,
        template_subjects=tuple(template_subjects), feature_dim=sizes.feature_dim,
        decoder_layers=sizes.decoder_layers, decoder_heads=4, decoder_ffn_dim=sizes.decoder_ffn, dropout=0.1,
        motion_encoder_layers=sizes.motion_layers, motion_encoder_heads=2, motion_conv_layers=sizes.motion_convs,
        audio_style_hidden=sizes.audio_style_hidden, audio_content=content_spec, audio_style=(style_spec,),
        use_graph_encoder=False, use_motion_content=False, use_motion_style=True, use_audio_style=True,
        use_identity_style=True, identity_attention=False, motion_dropout=0.0, identity_dropout=0.0,
        refine_passes=1, **RELEASED_SWITCHES,
    ).validate()


def _detect_period(pe: Tensor) -> int | None:
    """The period of a tiled PPE table: the smallest p whose next p rows repeat the first p."""
    pe = pe.float()
    n = pe.shape[0]
    for p in range(1, n // 2 + 1):
        if torch.allclose(pe[p: 2 * p], pe[:p], atol=1e-5):
            return p
    return None

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
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import BIWI_SUBJECTS, HUBERT_LARGE, VOCASET_SUBJECTS, W2V2_EMOTION, AudioEncoderConfig, ModelConfig
from ..errors import ConfigError
from ..mesh import Topology
from ..model.folder import MODEL_FILES

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

#: Where the converted model still differs from the released code (its inference is reproduced exactly).
FORWARD_DIFFERENCES = (
    "identity style: exact for one-hot inputs (folded); blends of subjects (--style A:0.5,B:0.5) are linear "
    "blends of the folded codes (the released encoder takes the argmax), and the released attention parameters "
    "cannot be fine-tuned",
    "training: ptalker's training forward and losses are used, not the released ones (only the released "
    "inference loops are reproduced; the converted config keeps motion_encoder_form='released', so s_m is the "
    "bidirectional clip style of the teacher-forced input, as in the released training)",
    "length: the released code fails beyond 600 frames (its biased mask); ptalker has no cap (identical below it)",
    "ptalker extensions have no released counterpart: --style-strength other than 1 scales s_p and s_m, batches "
    "are decoded in lock-step (the released code is batch size 1)",
    "numerics: float32 kernels differ (ptalker's attention uses scaled_dot_product_attention and computes the "
    "aligned cross-attention locally): outputs agree to about 1e-6, not bit for bit",
)

#: How the exact reproduction is switched on (all set by the converter), and what is left optional.
SWITCHES_FOR_EXACT_REPRODUCTION = (
    "motion_encoder_form='released' (set): symmetric Conv1d padding (k=3, pad 1), unmasked transformer encoder, "
    "non-causal InstanceNorm1d in E_m^c, s_m = mean over all frames",
    "inference_form='released' (set): PTalker.generate runs the released predict_seen / predict_unseen / "
    "predict_with_ref_motion loops (ptalker_cli/model/released.py): s_m = mean E_m^s(PPE(E_{0..i})) of the stored "
    "decoder tokens, added to the new token only for i>=1; first token s_p (+ s_a at step 0 only) when seen, "
    "start_token + s_a when unseen, the raw first reference frame's embedding with --style-from; full-prefix "
    "recompute each step (O(T^2)); the last step's outputs returned for every position",
    "audio_style_rate_hz=60 (set): linear resampling of the style backbone's CNN features to int(S/50*60) frames "
    "(align_corners=True) before its transformer",
    "optional, not implemented: released_identity_attention=True (the released per-scalar Wq/Wk/Wv + "
    "MultiheadAttention(4, 4) + LayerNorm(4) + Linear(4, 1) block, to keep it trainable and reproduce argmax "
    "behaviour for blends; one-hot inputs are already exact)",
    "optional, not implemented: use_club=False (the CLUB estimator is training-only, initialised fresh)",
)

_SPEECH_PREFIXES = (("audio_encoder.", "audio_encoder.model."),
                    ("AudioStyle.wav2vec2_emo.", "audio_style.backbones.0.model."))
_TRAINING_ONLY_PREFIXES = ("club_audio.", "club_motion.")
_BUFFERS = ("template", "faces", "subject_templates", "lip_index", "upper_index")


@dataclass
class ConversionReport:
    """What happened to every key (theirs and ours)."""

    dataset: str
    source: str = ""
    mapped: dict[str, str] = field(default_factory=dict)  # their key -> our key
    folded: dict[str, list[str]] = field(default_factory=dict)  # our key -> their keys
    validated: dict[str, str] = field(default_factory=dict)  # their derived buffers -> note
    unused: dict[str, str] = field(default_factory=dict)  # their key -> why
    unmatched: list[str] = field(default_factory=list)  # their keys nothing knows
    initialized: dict[str, str] = field(default_factory=dict)  # our key -> where it came from
    missing: list[str] = field(default_factory=list)  # our keys with no value (conversion refused)
    filled_from_pretrained: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # scalars worth keeping (cons.temperature, ...)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "source": self.source,
            "counts": {k: len(getattr(self, k)) for k in ("mapped", "folded", "validated", "unused", "unmatched",
                                                           "initialized", "missing", "filled_from_pretrained")},
            "mapped": self.mapped,
            "folded": self.folded,
            "validated": self.validated,
            "unused": self.unused,
            "unmatched": self.unmatched,
            "initialized": self.initialized,
            "missing": self.missing,
            "filled_from_pretrained": self.filled_from_pretrained,
            "warnings": self.warnings,
            "values": self.values,
            "forward_differences": list(FORWARD_DIFFERENCES),
            "switches_for_exact_reproduction": list(SWITCHES_FOR_EXACT_REPRODUCTION),
        }

    def grouped_unused(self) -> dict[str, int]:
        """Unused keys grouped by reason (for a compact summary)."""
        out: dict[str, int] = {}
        for reason in self.unused.values():
            out[reason] = out.get(reason, 0) + 1
        return out


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


# --------------------------------------------------------------------------- shapes
def _count(state: dict[str, Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in state if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def _need(state: dict[str, Tensor], key: str) -> Tensor:
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
    proj = _need(state, f"{prefix}feature_projection.projection.weight")
    hidden = int(proj.shape[0])
    layers = _count(state, f"{prefix}encoder.layers.")
    conv_dim, conv_kernel = [], []
    i = 0
    while f"{prefix}feature_extractor.conv_layers.{i}.conv.weight" in state:
        w = state[f"{prefix}feature_extractor.conv_layers.{i}.conv.weight"]
        conv_dim.append(int(w.shape[0]))
        conv_kernel.append(int(w.shape[2]))
        i += 1
    if not conv_dim or not layers:
        raise ConfigError(f"the checkpoint's {label} weights under '{prefix}' are incomplete")
    inter = int(_need(state, f"{prefix}encoder.layers.0.feed_forward.intermediate_dense.weight").shape[0])
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


# --------------------------------------------------------------------------- released modules
class _ReleasedIdentityAttention(nn.Module):
    """The released ``Attention`` block (identity encoder), names as in the checkpoint."""

    def __init__(self, embed: int, heads: int):
        super().__init__()
        self.attention = nn.MultiheadAttention(embed, heads, dropout=0.1)
        self.Wq = nn.Linear(1, embed)
        self.Wk = nn.Linear(1, embed)
        self.Wv = nn.Linear(1, embed)
        self.norm = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, 1)

    def forward(self, p: Tensor, q: Tensor) -> Tensor:
        out, _ = self.attention(self.Wq(p.unsqueeze(-1)), self.Wk(q.unsqueeze(-1)), self.Wv(q.unsqueeze(-1)))
        return self.head(self.norm(out)).squeeze(-1)


def released_identity_codes(state: dict[str, Tensor]) -> Tensor:
    """(d, N): the released identity encoder's output ``ReLU(p + Attn(p, q))`` for each one-hot, in eval mode."""
    w = _need(state, "onehot_style_encoder.obj_vector.weight").float()  # (d, N)
    emb = _need(state, "onehot_style_encoder.my_obj_vector.weight").float()  # (N, d)
    pre = "onehot_style_encoder.attention."
    embed = int(_need(state, pre + "Wq.weight").shape[0])
    block = _ReleasedIdentityAttention(embed, 4 if embed % 4 == 0 else 1)
    sub = {k[len(pre):]: v.float() for k, v in state.items() if k.startswith(pre)}
    missing, unexpected = block.load_state_dict(sub, strict=False)
    if missing or unexpected:
        raise ConfigError(f"the identity encoder's attention block does not match the released layout "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    block.eval()
    cols = []
    with torch.no_grad():
        for i in range(w.shape[1]):
            onehot = torch.zeros(1, w.shape[1])
            onehot[0, i] = 1.0
            p = onehot @ w.T  # obj_vector(one_hot)
            q = emb[i: i + 1]  # my_obj_vector(argmax(one_hot))
            cols.append(torch.relu(p + block(p, q))[0])
    return torch.stack(cols, dim=1)


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
    ds = DATASETS[dataset]
    state = normalize_state(state)
    report = ConversionReport(dataset=dataset, source=source)

    # ---- sizes from the weights
    afm = _need(state, "audio_feature_map.weight")
    d = int(afm.shape[0])
    v3 = int(_need(state, "vertice_encoder.weight").shape[1])
    n_id = int(_need(state, "onehot_style_encoder.obj_vector.weight").shape[1])
    layers = _count(state, "transformer_decoder.layers.")
    if not layers:
        raise ConfigError("the checkpoint has no transformer_decoder.layers.*: it is not a released PTalker model")
    ffn = int(_need(state, "transformer_decoder.layers.0.linear1.weight").shape[0])
    fc1 = _need(state, "AudioStyle.fc1.weight")
    fc2 = _need(state, "AudioStyle.fc2.weight")
    if int(fc2.shape[0]) != d:
        raise ConfigError(
            f"AudioStyle.fc2 outputs {fc2.shape[0]} features but feature_dim is {d}: the released code hard-codes "
            "128 and cannot run with this width (spec §1.4); this checkpoint comes from modified code")
    m_layers = _count(state, "style_motion.transformer_encoder.layers.")
    m_convs = _count(state, "style_motion.conv_layers.")
    if not m_layers or not m_convs:
        raise ConfigError("the checkpoint lacks the motion style encoder (style_motion.*)")
    if v3 % 3 or v3 // 3 != topology.num_vertices:
        raise ConfigError(f"the checkpoint animates {v3 // 3} vertices (vertice_encoder takes {v3} inputs) but the "
                          f"topology '{topology.name}' has {topology.num_vertices}; use the dataset's own mesh")
    subjects = tuple(subjects) if subjects else tuple(ds["subjects"])
    if len(subjects) != n_id:
        raise ConfigError(f"the checkpoint has {n_id} training identities but {len(subjects)} subjects were given "
                          f"({', '.join(subjects)}); pass --subjects in the order of the released --train_subjects")

    # ---- period from the PPE table (a derived buffer)
    period = int(ds["period"])
    pe = state.get("PPE.pe")
    if pe is not None:
        found = _detect_period(pe[0])
        if found is not None and found != period:
            report.warnings.append(f"PPE.pe repeats every {found} frames, not {period}: using period {found}")
            period = found

    # ---- speech configs
    content_hf = speech_hf_config(state, "audio_encoder.",
                                  _load_hf_config(content_config, HUBERT_LARGE, "content encoder (HuBERT)", offline),
                                  "content encoder (HuBERT)")
    style_hf = speech_hf_config(state, "AudioStyle.wav2vec2_emo.",
                                _load_hf_config(style_config, W2V2_EMOTION, "style encoder (emotion wav2vec2)",
                                                offline),
                                "style encoder (emotion wav2vec2)")
    if int(afm.shape[1]) != content_hf["hidden_size"] or int(fc1.shape[1]) != style_hf["hidden_size"]:
        raise ConfigError("audio_feature_map / AudioStyle.fc1 input widths do not match the speech encoders")
    content_spec = replace(HUBERT_LARGE, hf_config=_clean_hf_config(content_hf))
    style_spec = replace(W2V2_EMOTION, hf_config=_clean_hf_config(style_hf))
    if style_config is None:
        report.warnings.append(
            "the released emotion model ('wav2emo', a local folder) is not identified; its architecture config "
            "was taken from superb/wav2vec2-large-superb-er and its sizes from the checkpoint")

    templates = subject_templates
    if templates is not None and len(templates) != max(len(template_subjects), 1):
        raise ConfigError("one subject template is needed per template subject")
    config = ModelConfig(
        name=f"released-{dataset}", topology=topology.name, num_vertices=topology.num_vertices, fps=float(ds["fps"]),
        period=period, train_subjects=subjects, template_subjects=tuple(template_subjects), feature_dim=d,
        decoder_layers=layers, decoder_heads=4, decoder_ffn_dim=ffn, dropout=0.1, motion_encoder_layers=m_layers,
        motion_encoder_heads=2, motion_conv_layers=m_convs, audio_style_hidden=int(fc1.shape[0]),
        audio_content=content_spec, audio_style=(style_spec,), use_graph_encoder=False, use_motion_content=False,
        use_motion_style=True, use_audio_style=True, use_identity_style=True, identity_attention=False,
        motion_dropout=0.0, identity_dropout=0.0, refine_passes=1, **RELEASED_SWITCHES,
    ).validate()

    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(0)  # the few freshly initialised training-only tensors are reproducible
        model = PTalker(config, topology, templates)
    # build_speech_model filled the specs; keep what the model was built with
    ours = model.state_dict()
    new: dict[str, Tensor] = {}

    def put(their: str | None, our: str, value: Tensor) -> None:
        if our not in ours:
            raise ConfigError(f"internal mapping error: ptalker has no '{our}'")
        if tuple(value.shape) != tuple(ours[our].shape):
            raise ConfigError(f"'{their or our}' has shape {tuple(value.shape)} but ptalker's '{our}' needs "
                              f"{tuple(ours[our].shape)}")
        new[our] = value.detach().to(ours[our].dtype).clone()
        if their is not None:
            report.mapped[their] = our

    used: set[str] = set()
    # ---- speech models (HF names one to one; old weight-norm names renamed)
    for theirs_prefix, ours_prefix in _SPEECH_PREFIXES:
        for key in [k for k in state if k.startswith(theirs_prefix)]:
            suffix = key[len(theirs_prefix):]
            suffix = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", suffix)
            suffix = re.sub(r"\.weight_v$", ".parametrizations.weight.original1", suffix)
            target = ours_prefix + suffix
            used.add(key)
            if target in ours:
                put(key, target, state[key])
            elif suffix == "masked_spec_embed":
                report.unused[key] = "SpecAugment mask embedding (training only; masking is off in ptalker)"
            else:
                report.unmatched.append(key)
    # ---- one-to-one modules
    direct = {
        "audio_feature_map.weight": "audio_feature_map.weight", "audio_feature_map.bias": "audio_feature_map.bias",
        "vertice_encoder.weight": "vertice_encoder.weight", "vertice_encoder.bias": "vertice_encoder.bias",
        "vertice_decoder.weight": "vertice_decoder.weight", "vertice_decoder.bias": "vertice_decoder.bias",
        "start_token": "start_token",
        "style_classifier.fc.weight": "style_classifier.weight", "style_classifier.fc.bias": "style_classifier.bias",
        "AudioStyle.fc1.weight": "audio_style.fc1.weight", "AudioStyle.fc1.bias": "audio_style.fc1.bias",
        "AudioStyle.fc2.weight": "audio_style.fc2.weight", "AudioStyle.fc2.bias": "audio_style.fc2.bias",
        "AudioStyle.fc3.weight": "audio_style.frame_proj.weight", "AudioStyle.fc3.bias": "audio_style.frame_proj.bias",
    }
    for theirs_key, our_key in direct.items():
        put(theirs_key, our_key, _need(state, theirs_key))
        used.add(theirs_key)
    # ---- decoder layers (nn.TransformerDecoderLayer names on both sides)
    for key in [k for k in state if k.startswith("transformer_decoder.")]:
        used.add(key)
        target = "decoder." + key[len("transformer_decoder."):]
        if target in ours:
            put(key, target, state[key])
        else:
            report.unmatched.append(key)
    # ---- motion style encoder
    style_map = [
        (r"style_motion\.conv_layers\.(\d+)\.conv\.weight", r"style_motion.convs.\1.0.weight"),
        (r"style_motion\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"style_motion.convs.\1.1.\2"),
        (r"style_motion\.feature_projection\.layer_norm\.(weight|bias)", r"style_motion.norm.\1"),
        (r"style_motion\.feature_projection\.projection\.(weight|bias)", r"style_motion.up.\1"),
        (r"style_motion\.transformer_encoder\.layers\.(.+)", r"style_motion.transformer.encoder.layers.\1"),
        (r"style_motion\.feature_map\.(weight|bias)", r"style_motion.down.\1"),
    ]
    for key in [k for k in state if k.startswith("style_motion.")]:
        used.add(key)
        if key.startswith("style_motion.motion_map."):
            report.unused[key] = "dead code in the released encoder (its output is overwritten)"
            continue
        if key == "style_motion.PE.pe":
            _validate_pe(state[key], period, "style_motion.PE.pe", report)
            continue
        for pat, rep in style_map:
            if re.fullmatch(pat, key):
                target = re.sub(pat, rep, key)
                if target in ours:
                    put(key, target, state[key])
                else:
                    report.unmatched.append(key)
                break
        else:
            report.unmatched.append(key)
    eye = torch.eye(d)
    put(None, "style_motion.proj.weight", eye)
    put(None, "style_motion.proj.bias", torch.zeros(d))
    report.initialized["style_motion.proj.weight"] = "identity (the released motion_map output is discarded)"
    report.initialized["style_motion.proj.bias"] = "zeros (the released motion_map output is discarded)"
    # ---- identity encoder, folded
    codes = released_identity_codes(state)
    put(None, "identity.personalized.weight", codes)
    ident_keys = [k for k in state if k.startswith("onehot_style_encoder.")]
    report.folded["identity.personalized.weight"] = sorted(ident_keys)
    used.update(ident_keys)
    # ---- derived buffers, training-only parts
    if pe is not None:
        _validate_pe(pe, period, "PPE.pe", report)
        used.add("PPE.pe")
    for key in [k for k in state if k.startswith("content_motion.")]:
        used.add(key)
        if key == "content_motion.PE.pe":
            _validate_pe(state[key], period, key, report)
        else:
            report.unused[key] = ("motion content encoder: the released code feeds c only to its training losses, "
                                  "not to the decoder (use_motion_content=false)")
    for key in [k for k in state if k.startswith("auxiliary_style_classifier.")]:
        used.add(key)
        report.unused[key] = "auxiliary identity classifier: its loss is computed and discarded in the released code"
    if "cons.temperature" in state:
        used.add("cons.temperature")
        report.unused["cons.temperature"] = "top-k contrastive loss temperature (training only)"
        report.values["cons.temperature"] = float(state["cons.temperature"].float().reshape(-1)[0])
    for key in state:
        if key not in used and key not in report.unmatched:
            report.unmatched.append(key)
    report.unmatched.sort()

    # ---- what ptalker has that the checkpoint does not
    for key in ours:
        if key in new:
            continue
        if key in _BUFFERS:
            report.initialized[key] = "from the dataset's topology and templates"
        elif key.startswith(_TRAINING_ONLY_PREFIXES):
            report.initialized[key] = "fresh (training-only CLUB estimator, not used at inference)"
        else:
            report.missing.append(key)
    if report.missing and fill_speech_from_pretrained:
        _fill_from_pretrained(report, new, ours, config)
    if report.missing:
        sample = ", ".join(report.missing[:4])
        raise ConfigError(f"refusing to write a model with {len(report.missing)} missing weights (e.g. {sample}); "
                          + ("the checkpoint's speech-encoder weights are incomplete (the released test.py strips "
                             "'parametrizations' keys): rerun with --fill-speech-from-pretrained to take them from "
                             "the pinned pretrained encoders" if any(k.startswith(("audio_encoder.", "audio_style."))
                                                                     for k in report.missing) else
                             "the checkpoint does not match the released layout"))
    full = dict(ours)
    full.update(new)
    model.load_state_dict(full, strict=True)
    return model.eval(), report


def _fill_from_pretrained(report: ConversionReport, new: dict[str, Tensor], ours: dict[str, Tensor],
                          config: ModelConfig) -> None:
    """Take missing speech-encoder tensors from the pinned pretrained encoders (what the released test.py does)."""
    from ..model.audio_encoders import build_speech_model
    from .hub import load_pretrained_speech_model

    for prefix, spec in (("audio_encoder.model.", config.audio_content),
                         ("audio_style.backbones.0.model.", config.audio_style[0])):
        wanted = [k for k in report.missing if k.startswith(prefix)]
        if not wanted:
            continue
        pretrained, _ = build_speech_model(replace(spec, hf_config=None), load_pretrained_speech_model)
        sd = pretrained.state_dict()
        for key in wanted:
            src = sd.get(key[len(prefix):])
            if src is None or tuple(src.shape) != tuple(ours[key].shape):
                continue
            new[key] = src.detach().clone()
            report.missing.remove(key)
            report.filled_from_pretrained.append(f"{key} <- {spec.model_id}@{spec.revision}")


def _detect_period(pe: Tensor) -> int | None:
    """The period of a tiled PPE table: the smallest p whose next p rows repeat the first p."""
    pe = pe.float()
    n = pe.shape[0]
    for p in range(1, n // 2 + 1):
        if torch.allclose(pe[p: 2 * p], pe[:p], atol=1e-5):
            return p
    return None


def _validate_pe(pe: Tensor, period: int, key: str, report: ConversionReport) -> None:
    from ..model.decoder import periodic_positional_encoding

    table = pe[0] if pe.dim() == 3 else pe
    ref = periodic_positional_encoding(table.shape[0], table.shape[1], period)
    if torch.allclose(table.float(), ref, atol=1e-5):
        report.validated[key] = f"periodic positional encoding, period {period}: recomputed by ptalker (equal)"
    else:
        report.validated[key] = f"periodic positional encoding: does NOT match period {period}"
        report.warnings.append(f"{key} differs from ptalker's periodic positional encoding with period {period}")


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

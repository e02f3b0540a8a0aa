"""The released checkpoint's weights mapped onto a ptalker model, key by key.

Speech models, the output head, the start token, the classifier and the decoder layers
map one to one (old weight-norm names renamed); the motion style encoder's names are
translated (:data:`MOTION_STYLE_MAP`); the identity encoder is folded into the linear
identity map (:func:`released_identity_codes`); derived buffers are validated and
training-only parts reported as unused. :class:`StateMapper` records what happened to
every key in the :class:`~.released_report.ConversionReport`.
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from .released_config import need
from .released_report import ConversionReport

_SPEECH_PREFIXES = (("audio_encoder.", "audio_encoder.model."),
                    ("AudioStyle.wav2vec2_emo.", "audio_style.backbones.0.model."))
_TRAINING_ONLY_PREFIXES = ("club_audio.", "club_motion.")
_BUFFERS = ("template", "faces", "subject_templates", "lip_index", "upper_index")


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
    w = need(state, "onehot_style_encoder.obj_vector.weight").float()  # (d, N)
    emb = need(state, "onehot_style_encoder.my_obj_vector.weight").float()  # (N, d)
    pre = "onehot_style_encoder.attention."
    embed = int(need(state, pre + "Wq.weight").shape[0])
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


#: Released keys that map one to one onto ptalker keys outside the speech models and the decoder.
ONE_TO_ONE = {
    "audio_feature_map.weight": "audio_feature_map.weight", "audio_feature_map.bias": "audio_feature_map.bias",
    "vertice_encoder.weight": "vertice_encoder.weight", "vertice_encoder.bias": "vertice_encoder.bias",
    "vertice_decoder.weight": "vertice_decoder.weight", "vertice_decoder.bias": "vertice_decoder.bias",
    "start_token": "start_token",
    "style_classifier.fc.weight": "style_classifier.weight", "style_classifier.fc.bias": "style_classifier.bias",
    "AudioStyle.fc1.weight": "audio_style.fc1.weight", "AudioStyle.fc1.bias": "audio_style.fc1.bias",
    "AudioStyle.fc2.weight": "audio_style.fc2.weight", "AudioStyle.fc2.bias": "audio_style.fc2.bias",
    "AudioStyle.fc3.weight": "audio_style.frame_proj.weight", "AudioStyle.fc3.bias": "audio_style.frame_proj.bias",
}
#: The released motion style encoder's names (regex) -> ptalker's.
MOTION_STYLE_MAP = (
    (r"style_motion\.conv_layers\.(\d+)\.conv\.weight", r"style_motion.convs.\1.0.weight"),
    (r"style_motion\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"style_motion.convs.\1.1.\2"),
    (r"style_motion\.feature_projection\.layer_norm\.(weight|bias)", r"style_motion.norm.\1"),
    (r"style_motion\.feature_projection\.projection\.(weight|bias)", r"style_motion.up.\1"),
    (r"style_motion\.transformer_encoder\.layers\.(.+)", r"style_motion.transformer.encoder.layers.\1"),
    (r"style_motion\.feature_map\.(weight|bias)", r"style_motion.down.\1"),
)


class StateMapper:
    """Fills ``new`` (our key -> tensor) from the released ``state`` and accounts for every key in ``report``."""

    def __init__(self, state: dict[str, Tensor], ours: dict[str, Tensor], report: ConversionReport):
        self.state = state
        self.ours = ours
        self.report = report
        self.new: dict[str, Tensor] = {}
        self.used: set[str] = set()

    def put(self, their: str | None, our: str, value: Tensor) -> None:
        ours = self.ours
        if our not in ours:
            raise ConfigError(f"internal mapping error: ptalker has no '{our}'")
        if tuple(value.shape) != tuple(ours[our].shape):
            raise ConfigError(f"'{their or our}' has shape {tuple(value.shape)} but ptalker's '{our}' needs "
                              f"{tuple(ours[our].shape)}")
        self.new[our] = value.detach().to(ours[our].dtype).clone()
        if their is not None:
            self.report.mapped[their] = our

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.state if k.startswith(prefix)]

    def map_speech_models(self) -> None:
        """HuBERT and the emotion wav2vec2: HF names one to one (old weight-norm names renamed)."""
        for theirs_prefix, ours_prefix in _SPEECH_PREFIXES:
            for key in self.keys(theirs_prefix):
                suffix = key[len(theirs_prefix):]
                suffix = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", suffix)
                suffix = re.sub(r"\.weight_v$", ".parametrizations.weight.original1", suffix)
                target = ours_prefix + suffix
                self.used.add(key)
                if target in self.ours:
                    self.put(key, target, self.state[key])
                elif suffix == "masked_spec_embed":
                    self.report.unused[key] = "SpecAugment mask embedding (training only; masking is off in ptalker)"
                else:
                    self.report.unmatched.append(key)

    def map_one_to_one(self) -> None:
        for theirs_key, our_key in ONE_TO_ONE.items():
            self.put(theirs_key, our_key, need(self.state, theirs_key))
            self.used.add(theirs_key)

    def map_decoder_layers(self) -> None:
        """``nn.TransformerDecoderLayer`` names on both sides."""
        for key in self.keys("transformer_decoder."):
            self.used.add(key)
            target = "decoder." + key[len("transformer_decoder."):]
            if target in self.ours:
                self.put(key, target, self.state[key])
            else:
                self.report.unmatched.append(key)

    def map_motion_style(self, period: int, d: int) -> None:
        """The motion style encoder; its dead ``motion_map`` becomes an identity projection (exact)."""
        report = self.report
        for key in self.keys("style_motion."):
            self.used.add(key)
            if key.startswith("style_motion.motion_map."):
                report.unused[key] = "dead code in the released encoder (its output is overwritten)"
                continue
            if key == "style_motion.PE.pe":
                _validate_pe(self.state[key], period, "style_motion.PE.pe", report)
                continue
            for pat, rep in MOTION_STYLE_MAP:
                if re.fullmatch(pat, key):
                    target = re.sub(pat, rep, key)
                    if target in self.ours:
                        self.put(key, target, self.state[key])
                    else:
                        report.unmatched.append(key)
                    break
            else:
                report.unmatched.append(key)
        self.put(None, "style_motion.proj.weight", torch.eye(d))
        self.put(None, "style_motion.proj.bias", torch.zeros(d))
        report.initialized["style_motion.proj.weight"] = "identity (the released motion_map output is discarded)"
        report.initialized["style_motion.proj.bias"] = "zeros (the released motion_map output is discarded)"

    def fold_identity(self) -> None:
        """The identity encoder, folded into the linear identity map (exact for one-hot inputs)."""
        self.put(None, "identity.personalized.weight", released_identity_codes(self.state))
        ident_keys = self.keys("onehot_style_encoder.")
        self.report.folded["identity.personalized.weight"] = sorted(ident_keys)
        self.used.update(ident_keys)

    def account_training_only(self, period: int) -> None:
        """Derived buffers (validated), training-only parts (unused), then whatever is left (unmatched)."""
        state, report = self.state, self.report
        pe = state.get("PPE.pe")
        if pe is not None:
            _validate_pe(pe, period, "PPE.pe", report)
            self.used.add("PPE.pe")
        for key in self.keys("content_motion."):
            self.used.add(key)
            if key == "content_motion.PE.pe":
                _validate_pe(state[key], period, key, report)
            else:
                report.unused[key] = ("motion content encoder: the released code feeds c only to its training "
                                      "losses, not to the decoder (use_motion_content=false)")
        for key in self.keys("auxiliary_style_classifier."):
            self.used.add(key)
            report.unused[key] = ("auxiliary identity classifier: its loss is computed and discarded in the "
                                  "released code")
        if "cons.temperature" in state:
            self.used.add("cons.temperature")
            report.unused["cons.temperature"] = "top-k contrastive loss temperature (training only)"
            report.values["cons.temperature"] = float(state["cons.temperature"].float().reshape(-1)[0])
        for key in state:
            if key not in self.used and key not in report.unmatched:
                report.unmatched.append(key)
        report.unmatched.sort()

    def account_ours(self) -> None:
        """What ptalker has that the checkpoint does not: buffers, fresh training-only parts, or missing."""
        for key in self.ours:
            if key in self.new:
                continue
            if key in _BUFFERS:
                self.report.initialized[key] = "from the dataset's topology and templates"
            elif key.startswith(_TRAINING_ONLY_PREFIXES):
                self.report.initialized[key] = "fresh (training-only CLUB estimator, not used at inference)"
            else:
                self.report.missing.append(key)


def refuse_missing(report: ConversionReport, new: dict[str, Tensor], ours: dict[str, Tensor], config: ModelConfig,
                    fill_speech_from_pretrained: bool) -> None:
    """Fill missing speech-encoder weights when asked; any weight still missing refuses the conversion."""
    if report.missing and fill_speech_from_pretrained:
        _fill_from_pretrained(report, new, ours, config)
    if report.missing:
        sample = ", ".join(report.missing[:4])
        speech = any(k.startswith(("audio_encoder.", "audio_style.")) for k in report.missing)
        raise ConfigError(f"refusing to write a model with {len(report.missing)} missing weights (e.g. {sample}); "
                          + ("the checkpoint's speech-encoder weights are incomplete (the released test.py strips "
                             "'parametrizations' keys): rerun with --fill-speech-from-pretrained to take them from "
                             "the pinned pretrained encoders" if speech else
                             "the checkpoint does not match the released layout"))


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


def _validate_pe(pe: Tensor, period: int, key: str, report: ConversionReport) -> None:
    from ..model.decoder import periodic_positional_encoding

    table = pe[0] if pe.dim() == 3 else pe
    ref = periodic_positional_encoding(table.shape[0], table.shape[1], period)
    if torch.allclose(table.float(), ref, atol=1e-5):
        report.validated[key] = f"periodic positional encoding, period {period}: recomputed by ptalker (equal)"
    else:
        report.validated[key] = f"periodic positional encoding: does NOT match period {period}"
        report.warnings.append(f"{key} differs from ptalker's periodic positional encoding with period {period}")

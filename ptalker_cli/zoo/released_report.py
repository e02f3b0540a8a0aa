"""What a conversion of a released checkpoint did with every key, and what still differs from the released code.

:class:`ConversionReport` is written beside the converted model as ``conversion.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

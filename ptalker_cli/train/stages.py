"""The paper's two-stage schedule: which parameters train in which stage.

Stage 1 (the first ``stage1_epochs`` epochs) freezes the style encoders E_a^s, E_m^s,
E_p^s while the content encoders, the decoder and the classifiers train; stage 2
trains everything again. Freezing is ``requires_grad``: no gradient, no optimizer update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from ..model.network import PTalker
    from .config import TrainConfig

#: The style encoders frozen in stage 1: E_a^s, E_m^s, E_p^s.
STYLE_MODULES = ("audio_style", "style_motion", "identity")
#: What keeps training in stage 1 besides the decoder: content encoders and the classifiers.
CONTENT_MODULES = ("audio_encoder", "audio_feature_map", "content_motion", "graph_encoder")
CLASSIFIER_MODULES = ("style_classifier", "motion_style_classifier")


def style_parameters(model: PTalker) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the style encoders E_a^s, E_m^s, E_p^s present in ``model``."""
    out = []
    for mod in STYLE_MODULES:
        sub = getattr(model, mod, None)
        if sub is not None:
            out += [(f"{mod}.{n}", p) for n, p in sub.named_parameters()]
    return out


def set_stage(model: PTalker, stage: int, trainable: set[str]) -> None:
    """Stage 1: style encoders frozen (``requires_grad`` False, so no gradient and no
    optimizer update); stage 2: everything in ``trainable`` trains again (parameters
    frozen from the start, like the speech CNN front ends, stay frozen)."""
    style = {n for n, _ in style_parameters(model)}
    for name, p in model.named_parameters():
        if name in style:
            p.requires_grad_(stage >= 2 and name in trainable)
        else:
            p.requires_grad_(name in trainable)


def stage_for_epoch(cfg: TrainConfig, epoch: int) -> int:
    return 1 if epoch < cfg.stage1_epochs else 2

"""Free-running rollouts for scheduled sampling (``TrainConfig.ss_rollout = "autoregressive"``).

A model trained teacher-forced feeds itself ground-truth frames during training and its own
frames at inference. Measured on the shipped default (SynthTalk test, 90 bilabials): fed the
ground truth it closes the lips on 98.9 % of /p b m/, decoding freely only on 26.7 % — it learned
to continue the motion it is given more than to follow the audio. This module feeds it the frames
the inference engine really produces, so the losses see the drift inference has. What that did,
alone and with the closure loss, is measured in docs/training.md (alone it lowered LVE but closed
fewer lips).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model.decoding import StyleSpec, generate
from ..model.network import PTalker


@torch.no_grad()
def free_running(model: PTalker, batch: dict[str, Tensor]) -> Tensor:
    """(B, T, V, 3) the model's autoregressive decode of the batch's audio, as ``animate`` makes it
    (dropout off, the subject's one-hot style, the model's refinement passes); frames the audio does
    not cover are the ground truth's. A plain tensor, usable as teacher-forcing ``inputs``."""
    gt = batch["vertices"]
    was_training = model.training
    model.eval()
    try:
        style = StyleSpec(subject_weights=model.one_hot(batch["subject_index"]))
        pred = generate(model, batch["audio"], batch["template"], style, audio_lengths=batch["audio_lengths"])
    finally:
        model.train(was_training)
    out = gt.clone()  # generate() returns inference tensors, which autograd refuses to save
    n = min(out.shape[1], pred.shape[1])
    out[:, :n] = pred[:, :n].to(out.dtype)
    return out

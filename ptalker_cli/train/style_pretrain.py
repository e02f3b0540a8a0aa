"""Speaker-ID pretraining of an audio style encoder trained from scratch.

The paper's audio style encoder E_a^s starts from wav2vec2 networks pretrained for
speaker identification (and emotion recognition), so s_a describes the voice before
the talking-head training begins. A style encoder built from scratch (the log-mel
encoders of the embedded SynthTalk model) has no such start: trained only through the
motion losses, its code did not separate speakers. This stage gives it the same kind of
start: E_a^s and the model's speaker head (``ModelConfig.audio_style_speaker_head``) are
trained with a cross-entropy over the training speakers on random crops of the
training audio, before the main training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.audio_encoders import normalize_audio


@dataclass(frozen=True)
class StylePretrainResult:
    steps: int
    first_loss: float  # mean cross-entropy over the first 10 % of steps
    last_loss: float  # ... and over the last 10 %
    accuracy: float  # speaker accuracy on the last 10 % of batches
    chance_loss: float  # ln(number of speakers)
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def pretrain_audio_style(model, clips: list[tuple[np.ndarray, int]], steps: int, *, lr: float = 1e-3,
                         batch_size: int = 8, seconds: float = 3.0, sample_rate: int = 16000, seed: int = 0,
                         device: torch.device | str = "cpu",
                         on_step: Callable[[int, float], None] | None = None) -> StylePretrainResult:
    """Train ``model.audio_style`` + ``model.audio_style_speaker`` on speaker ID.

    ``clips``: (16-kHz waveform, training-speaker index) pairs. Each step draws
    ``batch_size`` clips and a random ``seconds`` crop of each (shorter clips are
    zero-padded and masked). Only the style encoder and the speaker head change; the
    frozen parts of the style backbones (CNN front ends) stay frozen.
    """
    if model.audio_style is None or model.audio_style_speaker is None:
        raise ConfigError("style pretraining needs an audio style encoder with a speaker head "
                          "(model.audio_style_speaker_head=true)")
    clips = [(w, int(k)) for w, k in clips if k >= 0 and len(w) > 0]
    speakers = sorted({k for _, k in clips})
    if len(speakers) < 2:
        raise ConfigError("style pretraining needs audio of at least two training speakers")
    device = torch.device(device)
    modules = [model.audio_style, model.audio_style_speaker]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    was_training = [m.training for m in modules]
    for m in modules:
        m.train()
    rng = np.random.default_rng(seed)
    crop = max(1, int(round(seconds * sample_rate)))
    log = []
    t0 = time.perf_counter()
    for step in range(steps):
        picks = rng.integers(0, len(clips), batch_size)
        waves = torch.zeros(batch_size, crop)
        lengths = torch.zeros(batch_size, dtype=torch.long)
        labels = torch.zeros(batch_size, dtype=torch.long)
        for i, j in enumerate(picks):
            wave, label = clips[j]
            start = int(rng.integers(0, len(wave) - crop + 1)) if len(wave) > crop else 0
            piece = torch.from_numpy(np.asarray(wave[start:start + crop], dtype=np.float32))
            waves[i, : len(piece)] = piece
            lengths[i] = len(piece)
            labels[i] = label
        waves, lengths, labels = waves.to(device), lengths.to(device), labels.to(device)
        s_a = model.audio_style(normalize_audio(waves, lengths), lengths)[0]  # as in the model's forward
        logits = model.audio_style_speaker(s_a)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append((float(loss.detach()), float((logits.argmax(-1) == labels).float().mean())))
        if on_step is not None:
            on_step(step + 1, log[-1][0])
    for m, was in zip(modules, was_training):
        m.train(was)
    k = max(1, math.ceil(0.1 * len(log))) if log else 0
    first = float(np.mean([x for x, _ in log[:k]])) if log else float("nan")
    last = float(np.mean([x for x, _ in log[-k:]])) if log else float("nan")
    acc = float(np.mean([a for _, a in log[-k:]])) if log else float("nan")
    n = model.audio_style_speaker.out_features
    return StylePretrainResult(steps, first, last, acc, math.log(n), time.perf_counter() - t0)

"""Phonetic pretraining of the speech content encoder.

The paper's content encoder E_a^c starts from wav2vec2 / HuBERT, networks that learned the
sounds of speech from hundreds of hours. The log-mel encoder of the embedded SynthTalk model
starts from nothing and learns from its corpus's few dozen sentences, so on new text it
hardly tells the sounds apart: a viseme classifier on its features found p / b / m on 56 %
of the bilabials of sentences it had not heard. This stage gives it a start of the same kind:
the content encoder (``audio_encoder`` + ``audio_feature_map``) and the viseme classifier on
its features (``ModelConfig.viseme_classes``, ``viseme_source = "audio"``) are trained on
the visemes of many more sentences than the talking-head corpus holds, before the main
training. The data is speech with phone timings and no faces
(``ptalker data synth --speech-only``), so hundreds of sentences cost minutes.

The optimizer is AdamW (no weight decay) under a one-cycle schedule (5 % warm-up, cosine
decay), gradients clipped at norm 1, batches of whole utterances.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..data.layout import DatasetError, DatasetLayout
from ..data.synth.labels import IGNORE, VISEME_CLASSES, frame_visemes, read_phones
from ..errors import ConfigError
from ..model.audio_encoders import normalize_audio
from ..model.losses.viseme import viseme_loss

#: the class of p / b / m
PP = VISEME_CLASSES.index("PP")

Clip = tuple[np.ndarray, np.ndarray]  # (16-kHz waveform, viseme class per motion frame)


@dataclass(frozen=True)
class PhonePretrainResult:
    steps: int
    clips: int  # training utterances
    first_loss: float  # mean cross-entropy over the first 10 % of steps
    last_loss: float  # ... and over the last 10 %
    chance_loss: float  # ln(number of visemes)
    val_clips: int
    val_loss: float  # cross-entropy on the validation utterances after the last step (nan without)
    val_pp_recall: float  # share of their p / b / m frames classified PP (nan without)
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def phone_clips(root: str | Path, split: str, num_frames: Callable[[int], int], fps: float,
                sample_rate: int = 16000) -> list[Clip]:
    """The (waveform, frame visemes) pairs of a split of a corpus with phone timings (SynthTalk, full or
    ``--speech-only``); ``num_frames(samples)`` is the model's motion frames for a waveform."""
    from ..audio import load_audio

    layout = DatasetLayout(Path(root))
    manifest = layout.manifest()
    if split not in manifest.splits:
        return []
    names = layout.resolve_split(split, manifest, names=layout.audio_names())
    out = []
    for name in names:
        phones = read_phones(root, name)
        if phones is None:
            continue
        wave = load_audio(layout.wav_path(name), sample_rate)
        frames = int(num_frames(len(wave)))
        if frames > 0:
            out.append((wave, frame_visemes(phones, frames, fps)))
    if split == "train" and not out:
        raise DatasetError(f"{root}: no '{split}' utterance has phone timings; phone pretraining needs a SynthTalk "
                           "corpus (ptalker data synth --speech-only)")
    return out


def _batch(model, clips: list[Clip], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Viseme logits (B, T, C), labels (B, T) and the frame mask of a batch of clips."""
    lengths = torch.tensor([len(w) for w, _ in clips])
    waves = torch.zeros(len(clips), int(lengths.max()))
    frames = torch.tensor([len(lab) for _, lab in clips])
    t = int(frames.max())
    labels = torch.full((len(clips), t), IGNORE, dtype=torch.long)
    for i, (w, lab) in enumerate(clips):
        waves[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
        labels[i, : len(lab)] = torch.from_numpy(lab)
    waves, lengths, frames, labels = waves.to(device), lengths.to(device), frames.to(device), labels.to(device)
    a, _ = model.encode_audio(normalize_audio(waves, lengths), lengths, t, frames)
    a_frames = a.view(len(clips), t, model.k, -1).mean(2)  # as the model's forward pools them
    mask = torch.arange(t, device=device).unsqueeze(0) < frames.unsqueeze(1)
    return model.viseme_head(a_frames), labels, mask


@torch.no_grad()
def evaluate_phones(model, clips: list[Clip], batch_size: int = 16,
                    device: torch.device | str = "cpu") -> tuple[float, float]:
    """(mean cross-entropy, share of the p / b / m frames classified PP) of the content encoder's viseme classifier."""
    if not clips:
        return float("nan"), float("nan")
    was = model.training
    model.eval()
    losses, hit, total = [], 0, 0
    for i in range(0, len(clips), batch_size):
        logits, labels, mask = _batch(model, clips[i: i + batch_size], torch.device(device))
        losses.append(float(viseme_loss(logits, labels, mask)))
        pp = (labels == PP) & mask
        hit += int((logits.argmax(-1)[pp] == PP).sum())
        total += int(pp.sum())
    model.train(was)
    return float(np.mean(losses)), hit / total if total else float("nan")


def pretrain_speech_content(model, clips: list[Clip], steps: int, *, lr: float = 3e-4, batch_size: int = 16,
                            seed: int = 0, device: torch.device | str = "cpu",
                            val_clips: Optional[list[Clip]] = None,
                            on_step: Callable[[int, float], None] | None = None) -> PhonePretrainResult:
    """Train ``model.audio_encoder`` + ``model.audio_feature_map`` + ``model.viseme_head`` on frame visemes.

    ``clips``: (16-kHz waveform, viseme class per motion frame, -100 = none) pairs, e.g. from
    :func:`phone_clips`. Each step draws ``batch_size`` different utterances. Parameters frozen
    in the encoder (a pretrained network's CNN front end) stay frozen; nothing else changes.
    """
    if model.viseme_head is None or model.config.viseme_source != "audio":
        raise ConfigError("phone pretraining needs a viseme classifier on the speech features: "
                          "--set model.viseme_classes=15 --set model.viseme_source=audio")
    clips = [c for c in clips if len(c[1]) > 0]
    if not clips:
        raise ConfigError("phone pretraining has no utterance with phone labels")
    device = torch.device(device)
    modules = [model.audio_encoder, model.audio_feature_map, model.viseme_head]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(int(steps), 1), pct_start=0.05)
    was_training = [m.training for m in modules]
    for m in modules:
        m.train()
    rng = np.random.default_rng(seed)
    k = min(int(batch_size), len(clips))
    log: list[float] = []
    t0 = time.perf_counter()
    for step in range(int(steps)):
        picks = rng.choice(len(clips), k, replace=False)
        logits, labels, mask = _batch(model, [clips[j] for j in picks], device)
        loss = viseme_loss(logits, labels, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        log.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, log[-1])
    for m, was in zip(modules, was_training):
        m.train(was)
    n = max(1, math.ceil(0.1 * len(log))) if log else 0
    val_loss, val_pp = evaluate_phones(model, val_clips or [], k, device)
    return PhonePretrainResult(
        steps=int(steps), clips=len(clips),
        first_loss=float(np.mean(log[:n])) if log else float("nan"),
        last_loss=float(np.mean(log[-n:])) if log else float("nan"),
        chance_loss=math.log(model.viseme_head.out_features), val_clips=len(val_clips or []),
        val_loss=val_loss, val_pp_recall=val_pp, seconds=time.perf_counter() - t0)

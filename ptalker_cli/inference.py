"""The animator: audio file(s) in, :class:`~ptalker_cli.motion.Motion` out.

``load_model`` resolves a model (``tiny``, a model folder such as a training run,
``hf://org/repo[@revision]`` or a registry name) and ``Animator.animate`` applies the inference modes:

* seen subject: its template and its identity style;
* unseen subject (known template, no learned style): style from the audio alone;
* ``style=``: another training subject's style, or a blend ``{"F2": 0.7, "F3": 0.3}``, or
  ``"voice"``: the training styles blended by the speaker head's posterior on the audio
  (whose voice this sounds like; models with ``audio_style_speaker_head``);
* ``style_from=``: the motion style of a reference motion (.npy);
* ``style_strength``: scales the personal part of the style code, from 0 (audio style only) to 2
  (:data:`~ptalker_cli.model.decoding.STYLE_STRENGTH_RANGE`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from .audio import SAMPLE_RATE, load_audio
from .config import DEFAULT_MODEL, preset
from .errors import PtalkerError
from .mesh import Topology, tiny_topology
from .model.decoding import StyleSpec, check_style_strength
from .model.folder import resolve_template
from .model.network import PTalker, build_model
from .model.speech_chunks import ChunkingConfig, chunking_from_options
from .model.streaming import Streamer, StreamSettings
from .model.vertex_blocks import BLOCK_FRAMES, decode_blocks
from .motion import Motion

TINY_SEED = 0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PtalkerError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise PtalkerError(f"unknown device '{device}'; use auto, cpu or cuda")
    return torch.device(device)


def tiny_model(seed: int = TINY_SEED) -> PTalker:
    """The ``tiny`` preset with deterministic random weights (tests and smoke runs; no download).

    Its output head is zero-initialized like every fresh model, so to make its
    output move it is given small random head weights: the motion is meaningless
    but exercises every code path.
    """
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        topo = tiny_topology()
        model = build_model(preset("tiny"), topo)
        with torch.no_grad():
            model.vertice_decoder.weight.normal_(0.0, 0.05)
    return model.eval()


def load_model(spec: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu",
               offline: bool | None = None) -> PTalker:
    """A model by name or address.

    The embedded default (:data:`DEFAULT_MODEL`, verified by sha256), ``tiny`` (built in), a folder holding
    ``config.json`` + ``model.safetensors`` (e.g. a training run), ``hf://org/repo[@revision]``, or a name of the
    model registry (``ptalker models list``). Hub files are downloaded into the hub cache and verified;
    ``offline`` (or ``HF_HUB_OFFLINE=1``) uses the cache only. See docs/models.md.
    """
    dev = resolve_device(device)
    spec_s = str(spec)
    if spec_s == "tiny":
        return tiny_model().to(dev)
    from .zoo.hub import resolve_model_folder

    return PTalker.from_pretrained(resolve_model_folder(spec_s, offline=offline), map_location=dev)


#: ``style="voice"``: blend the training styles by how much the voice sounds like each
#: training speaker (the speaker head's posterior on the audio style code)
VOICE_STYLE = "voice"


def parse_style(text: str) -> dict[str, float]:
    """``F2`` → {F2: 1}; ``F2:0.7,F3:0.3`` (or ``=``) → a blend."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([^:=]+)(?:[:=]([-+0-9.eE]+))?", part)
        if not m:
            raise PtalkerError(f"cannot parse style '{text}'; use ID or ID:WEIGHT,ID:WEIGHT")
        try:
            out[m.group(1).strip()] = float(m.group(2)) if m.group(2) else 1.0
        except ValueError:
            raise PtalkerError(f"cannot parse style weight in '{part}'; use ID:WEIGHT with a number") from None
    if not out:
        raise PtalkerError("empty --style; give a subject id or ID:WEIGHT,ID:WEIGHT")
    return out


@dataclass
class AnimateResult:
    motion: Motion
    subject: str
    style: str
    #: the mesh the motion animates (the model's, with the subject's or the given template)
    topology: Topology


class Animator:
    """Applies a :class:`PTalker` to audio with the inference modes above.

    ``chunking``: how the speech encoders split long audio (:class:`ChunkingConfig`; None = each
    encoder kind's default, docs/performance.md); ``animate(chunking=...)`` overrides it per call.
    """

    #: the speech encoders' windows for long audio (None: each encoder kind's default)
    chunking: ChunkingConfig | None = None

    #: frames of vertices made at a time (:meth:`animate_iter`; :meth:`animate` fills its motion from them)
    block_frames: int = BLOCK_FRAMES

    def __init__(self, model: PTalker, device: str | torch.device | None = None):
        self.model = model.eval()
        if device is not None:
            self.model.to(resolve_device(device))

    @property
    def config(self):
        return self.model.config

    def set_chunk_seconds(self, window_s: float | None, context_s: float | None = None) -> None:
        """:attr:`chunking` from seconds (``ptalker animate --chunk-seconds``): None = the kinds' defaults,
        0 = never split; the context each side defaults to a fifth of the window."""
        self.chunking = chunking_from_options(window_s, context_s)

    def known_subjects(self) -> list[str]:
        names = list(self.config.template_subjects)
        return names + [s for s in self.config.train_subjects if s not in names]

    def _subject_error(self, subject: str, what: str = "subject") -> PtalkerError:
        known = ", ".join(self.known_subjects()) or "none"
        return PtalkerError(f"unknown {what} '{subject}'; this model knows: {known}")

    def template_for(self, subject: str | None, template: Topology | str | Path | None) -> Topology:
        base = self.model.topology
        if template is not None:
            topo = template if isinstance(template, Topology) else resolve_template(template)
            if topo.num_vertices != base.num_vertices:
                raise PtalkerError(
                    f"template has {topo.num_vertices} vertices but the model animates {base.num_vertices}; "
                    "use a template of the model's mesh"
                )
            return base.with_vertices(topo.vertices)
        if subject is not None and subject in self.config.template_subjects:
            idx = self.config.template_subjects.index(subject)
            return base.with_vertices(self.model.subject_templates[idx].cpu().numpy())
        return base

    def style_weights(self, style: str | Mapping[str, float] | None) -> torch.Tensor | None:
        if style is None:
            return None
        blend = parse_style(style) if isinstance(style, str) else dict(style)
        n = max(self.config.num_subjects, 1)
        w = torch.zeros(1, n)
        for name, weight in blend.items():
            if name not in self.config.train_subjects:
                trained = ", ".join(self.config.train_subjects) or "none"
                raise PtalkerError(f"'{name}' has no learned style; styles of this model: {trained}")
            w[0, self.config.train_subjects.index(name)] = weight
        return w

    def animate(
        self,
        audio: str | Path | np.ndarray,
        subject: str | None = None,
        style: str | Mapping[str, float] | None = None,
        style_from: str | Path | Motion | None = None,
        style_strength: float = 1.0,
        template: Topology | str | Path | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> AnimateResult:
        """Animate one utterance. ``audio`` is a file path or a 16-kHz mono float array. ``chunking``:
        the speech encoders' windows for long audio (default: :attr:`chunking`)."""
        stream = self.animate_iter(audio, subject, style, style_from, style_strength, template, chunking=chunking)
        return AnimateResult(stream.collect(), stream.subject, stream.style, stream.topology)

    def animate_iter(
        self,
        audio: str | Path | np.ndarray,
        subject: str | None = None,
        style: str | Mapping[str, float] | None = None,
        style_from: str | Path | Motion | None = None,
        style_strength: float = 1.0,
        template: Topology | str | Path | None = None,
        block_frames: int | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> "AnimateStream":
        """Like :meth:`animate`, but the vertices come as blocks of frames (:class:`AnimateStream`).

        The speech encoders and the decoder passes run here; each block's vertices are made when
        the stream is read, so a writer that writes block by block never holds the whole motion.
        The blocks put together are :meth:`animate`'s motion, bit for bit (``block_frames``: frames
        per block, default :attr:`block_frames`; other sizes agree to float32 round-off).
        """
        spec, topo, wave, meta, label = self._prepare(audio, subject, style, style_from, style_strength, template)
        device = self.model.device
        tmpl = torch.from_numpy(topo.vertices).to(device).unsqueeze(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            feats = self.model.encode_speech(torch.from_numpy(wave).to(device).unsqueeze(0),
                                             chunking=chunking or self.chunking)
            frames, blocks = decode_blocks(self.model, feats, tmpl, spec,
                                           block_frames=block_frames or self.block_frames)
        del feats
        arrays = (b[0].float().cpu().numpy() for b in blocks)
        return AnimateStream(frames, self.config.fps, topo, meta, meta["subject"] or "", label, arrays)

    def _prepare(self, audio, subject, style, style_from, style_strength, template):
        """The style, the mesh and the waveform of one request: ``(spec, topology, wave, meta, style label)``."""
        cfg = self.config
        style_strength = check_style_strength(style_strength)
        if subject is not None and subject not in self.known_subjects():
            raise self._subject_error(subject)
        if subject is None and style is None and cfg.train_subjects:
            subject = cfg.train_subjects[0]
        topo = self.template_for(subject, template)
        if style is None and subject is not None and subject in cfg.train_subjects:
            style = subject
        by_voice = isinstance(style, str) and style.strip() == VOICE_STYLE
        if by_voice and not self.model.has_speaker_head:
            raise PtalkerError("style 'voice' needs a model with a speaker head on its audio style code "
                               "(audio_style_speaker_head); give a subject or a blend instead")
        weights = None if by_voice else self.style_weights(style)
        if isinstance(audio, (str, Path)):
            source = str(audio)
            wave = load_audio(audio, SAMPLE_RATE)
        else:
            source = "<array>"
            wave = np.asarray(audio, dtype=np.float32)
        if self.model.num_motion_frames(len(wave)) <= 0:
            raise PtalkerError(f"{source}: audio is too short to produce one motion frame")
        device = self.model.device
        ref = ref_verts = None
        style_label = "audio" if weights is None else (style if isinstance(style, str) else "blend")
        if by_voice:
            weights = self.model.speaker_posterior(torch.from_numpy(wave).to(device).unsqueeze(0)).cpu()
            top = torch.argsort(weights[0], descending=True)[:3].tolist()
            style_label = "voice(" + ",".join(f"{cfg.train_subjects[i]}:{weights[0, i]:.2f}" for i in top) + ")"
        if style_from is not None:
            ref_motion = style_from if isinstance(style_from, Motion) else Motion.load(style_from)
            ref_motion.validate(topo.num_vertices, f"reference motion {style_from}")
            ref_verts = torch.from_numpy(ref_motion.vertices).to(device).unsqueeze(0)
            tmpl = torch.from_numpy(topo.vertices).to(device).unsqueeze(0)
            ref = self.model.reference_style(ref_verts, tmpl)
            style_label = f"reference:{Path(str(style_from)).name}"
        spec = StyleSpec(weights.to(device) if weights is not None else None, ref, style_strength,
                         reference_motion=ref_verts)
        meta = {
            "subject": subject,
            "style": style_label,
            "style_strength": style_strength,
            "model": cfg.name,
            "audio": source,
        }
        return spec, topo, wave, meta, style_label

    def stream(self, subject: str | None = None, style: str | Mapping[str, float] | None = None,
               style_strength: float = 1.0, template: Topology | str | Path | None = None,
               settings: StreamSettings | None = None) -> Streamer:
        """A :class:`~ptalker_cli.model.streaming.Streamer` for live audio (docs/streaming.md).

        Subject, style and template as in :meth:`animate`; ``style="voice"`` and ``style_from`` need the
        whole recording and are not offered. The streamer carries ``topology`` (the mesh it animates),
        ``subject`` and ``style_label``.
        """
        cfg = self.config
        style_strength = check_style_strength(style_strength)
        if subject is not None and subject not in self.known_subjects():
            raise self._subject_error(subject)
        if subject is None and style is None and cfg.train_subjects:
            subject = cfg.train_subjects[0]
        topo = self.template_for(subject, template)
        if style is None and subject is not None and subject in cfg.train_subjects:
            style = subject
        if isinstance(style, str) and style.strip() == VOICE_STYLE:
            raise PtalkerError("style 'voice' needs the whole recording; a stream takes a subject or a blend")
        weights = self.style_weights(style)
        spec = StyleSpec(weights.to(self.model.device) if weights is not None else None, None, style_strength)
        streamer = Streamer(self.model, topo.vertices, spec, settings)
        streamer.topology = topo
        streamer.subject = subject or ""
        streamer.style_label = "audio" if weights is None else (style if isinstance(style, str) else "blend")
        return streamer


@dataclass
class AnimateStream:
    """An animation whose vertices come block by block: ``blocks`` yields (n, V, 3) float32 arrays, in
    order, ``num_frames`` frames in all, once. :meth:`collect` puts them into a :class:`Motion`."""

    num_frames: int
    fps: float
    topology: Topology
    meta: dict
    subject: str
    style: str
    blocks: Iterator[np.ndarray]

    def collect(self) -> Motion:
        """The whole motion (T, V, 3), filled block by block into one array."""
        out = np.empty((self.num_frames, self.topology.num_vertices, 3), dtype=np.float32)
        k = 0
        for block in self.blocks:
            out[k: k + len(block)] = block
            k += len(block)
        if k != self.num_frames:
            raise PtalkerError(f"the decoder produced {k} frames, {self.num_frames} were expected")
        return Motion(out, self.fps, self.topology.name, dict(self.meta))



def animate(audio, model: str | Path | PTalker = DEFAULT_MODEL, device: str = "auto", **kwargs) -> Motion:
    """One-call API: ``animate("speech.wav", subject="F2")`` → :class:`Motion`."""
    m = model if isinstance(model, PTalker) else load_model(model, device)
    return Animator(m).animate(audio, **kwargs).motion

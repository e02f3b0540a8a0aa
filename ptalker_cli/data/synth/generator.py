"""Write a SynthTalk corpus in the standard dataset layout (docs/synthtalk.md).

``generate_corpus(out_dir, speakers=10, sentences=50)`` synthesises every Harvard sentence
1..M for every speaker with a text-to-speech engine (:mod:`.engines`: eSpeak NG from pip, or
Festival), turns the phone timings into blendshape weight curves (:mod:`.visemes`) on the
speaker's own ICT-FaceKit face, and writes::

    dataset.json                       manifest; source.synth holds styles, voices, face shapes
    wav/<spk>_<sNNN>.wav               16 kHz mono 16-bit speech
    vertices_npy/<spk>_<sNNN>.npy      (T, 14062, 3) float32, cm, at fps
    templates/<spk>.npy                the speaker's neutral face
    topology/                          ICT faces + generic neutral (Topology.save)
    regions/lip.txt, upper_face.txt    the ICT regions
    synth/sequences/<name>.json        text, tool, voice, phone timings, blinks, brow raises
    synth/weights/<name>.npy           (T, 22) float32 blendshape weights (names in the manifest)

``speech_only=True`` (``ptalker data synth --speech-only``) writes the speech and its phone
timings without the faces (no ``vertices_npy/`` or ``synth/weights/``, the manifest says so):
the data of the speech content encoder's phonetic pretraining (``TrainConfig.phone_pretrain_*``),
a few percent of a full corpus's size.

Everything is a function of the seed: speaker ``i`` (voice, style, face) is drawn from
``[seed, 1, i]`` and sequence (i, j) (padding, blinks, brows) from ``[seed, 2, i, j]``;
both engines are deterministic (eSpeak NG per utterance, see :mod:`.espeak`), so the same
seed and engine give identical files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import soundfile as sf
import soxr

from ...fileio import atomic_path, atomic_write_text
from ...interrupts import worker_pool
from ..layout import DatasetError, DatasetLayout, Manifest, SplitRule
from .engines import check_voices, default_voices, describe, resolve_engine, synthesize
from .head import load_head
from .style import STYLE_RANGES, Speaker, sample_speaker
from .tts import Phone
from .visemes import SHAPES, mouth_curves, phone_energy, upper_face_curves

GENERATOR_VERSION = 1
SAMPLE_RATE = 16000
SENTENCES_FILE = Path(__file__).resolve().parent / "sentences" / "harvard.txt"
#: what ``force`` may delete in an existing output folder (nothing else is touched)
_OWNED = ("dataset.json", "wav", "vertices_npy", "templates", "topology", "regions", "synth")

ProgressFn = Callable[[int, int, str], None]


@lru_cache(maxsize=1)
def load_sentences() -> tuple[str, ...]:
    """The 720 Harvard sentences shipped with the package, in list order."""
    lines = [ln.strip() for ln in SENTENCES_FILE.read_text(encoding="utf-8").splitlines()]
    return tuple(ln for ln in lines if ln)


def sentence_id(j: int) -> str:
    """0-based sentence index -> id (``s001``); its number in split rules is j + 1."""
    return f"s{j + 1:03d}"


def sentence_splits(m: int, first: int = 1) -> dict[str, tuple[int, int]]:
    """Inclusive 1-based sentence-number ranges of train / val / test (about 80 / 10 / 10).

    The corpus speaks sentences ``first`` .. ``first + m - 1``; the ranges number them that way.
    """
    if m >= 3:
        n_val = n_test = max(1, int(round(0.1 * m)))
    elif m == 2:
        n_val, n_test = 0, 1
    else:
        n_val = n_test = 0
    n_train = m - n_val - n_test
    o = int(first) - 1
    out = {"train": (o + 1, o + n_train)}
    if n_val:
        out["val"] = (o + n_train + 1, o + n_train + n_val)
    if n_test:
        out["test"] = (o + m - n_test + 1, o + m)
    return out


def default_unseen(speakers: int) -> int:
    return 0 if speakers < 2 else max(1, int(round(speakers / 5)))


@dataclass
class SynthSummary:
    root: Path
    subjects: list[str]
    train_subjects: list[str]
    unseen_subjects: list[str]
    sequences: int = 0
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0
    tts_seconds: float = 0.0
    split_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def seconds_per_sentence(self) -> float:
        return self.elapsed_s / max(1, self.sequences)


# --------------------------------------------------------------------------- one sequence


def _prepare_audio(utt, rng: np.random.Generator) -> tuple[np.ndarray, list[Phone], float]:
    """Resample to 16 kHz, normalise to -20 dBFS RMS, pad silence; shift the phones to match."""
    wave = soxr.resample(utt.wave.astype(np.float64), utt.sample_rate, SAMPLE_RATE, quality="HQ")
    rms = float(np.sqrt(np.mean(wave ** 2))) if wave.size else 0.0
    if rms > 0:
        wave = wave * (0.1 / rms)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 0.95:
        wave *= 0.95 / peak
    lead = round(float(rng.uniform(0.15, 0.35)), 3)
    tail = round(float(rng.uniform(0.2, 0.4)), 3)
    speech_end = utt.phones[-1].end if utt.phones else len(wave) / SAMPLE_RATE
    n_speech = int(round(speech_end * SAMPLE_RATE))
    wave = wave[:n_speech] if len(wave) >= n_speech else np.pad(wave, (0, n_speech - len(wave)))
    wave = np.concatenate([np.zeros(int(round(lead * SAMPLE_RATE))), wave, np.zeros(int(round(tail * SAMPLE_RATE)))])
    total = len(wave) / SAMPLE_RATE
    phones = [Phone(p.name, p.start + lead, p.end + lead, p.stress, p.accented, p.word) for p in utt.phones]
    # the padding is silence: extend the first / last pause (or add one)
    if phones and phones[0].name == "pau":
        phones[0].start = 0.0
    else:
        phones.insert(0, Phone("pau", 0.0, lead))
    if phones[-1].name == "pau":
        phones[-1].end = total
    else:
        phones.append(Phone("pau", phones[-1].end, total))
    return wave.astype(np.float32), phones, lead


def _write_sequence(layout: DatasetLayout, name: str, text: str, utt, speaker: Speaker, template: np.ndarray,
                    fps: float, rng: np.random.Generator, speech_only: bool = False) -> dict:
    head = load_head()
    wave, phones, lead = _prepare_audio(utt, rng)
    duration = len(wave) / SAMPLE_RATE
    frames = max(1, int(round(duration * fps)))
    if speech_only:
        return _write_speech(layout, name, text, utt, speaker, wave, phones, lead, frames, fps)
    times = np.arange(frames) / float(fps)
    mouth = mouth_curves(phones, times, speaker.style, head.gap_model(template))
    energy = phone_energy(wave, SAMPLE_RATE, phones)
    upper = upper_face_curves(times, duration, phones, energy, speaker.style, rng)
    weights = np.concatenate([mouth.weights, upper.weights], axis=1).astype(np.float32)
    verts = head.pose(template, weights, SHAPES)

    with atomic_path(layout.wav_dir / f"{name}.wav") as tmp:
        sf.write(str(tmp), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with atomic_path(layout.vertices_path(name)) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, verts)
    synth_dir = layout.root / "synth"
    with atomic_path(synth_dir / "weights" / f"{name}.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, weights)
    record = {
        "name": name,
        "speaker": speaker.name,
        "text": text,
        "tool": utt.tool,
        "voice": speaker.voice.to_json(),
        "sample_rate": SAMPLE_RATE,
        "seconds": round(duration, 4),
        "frames": frames,
        "fps": fps,
        "leading_silence_s": lead,
        "timing_offset_ms": speaker.style.timing_offset_ms,
        "phones": [[p.name, round(p.start, 4), round(p.end, 4), p.stress, p.accented] for p in phones],
        "blinks": upper.info["blinks"],
        "brow_raises": upper.info["brow_raises"],
    }
    atomic_write_text(synth_dir / "sequences" / f"{name}.json", json.dumps(record) + "\n")
    jaw = mouth["jawOpen"]
    return {"name": name, "frames": frames, "seconds": duration, "jaw_mean": float(jaw.mean())}


def _write_speech(layout: DatasetLayout, name: str, text: str, utt, speaker: Speaker, wave: np.ndarray,
                  phones: list[Phone], lead: float, frames: int, fps: float) -> dict:
    """A speech-only sequence: the wav and the phone record, no face."""
    with atomic_path(layout.wav_dir / f"{name}.wav") as tmp:
        sf.write(str(tmp), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    duration = len(wave) / SAMPLE_RATE
    record = {
        "name": name, "speaker": speaker.name, "text": text, "tool": utt.tool, "voice": speaker.voice.to_json(),
        "sample_rate": SAMPLE_RATE, "seconds": round(duration, 4), "frames": frames, "fps": fps,
        "leading_silence_s": lead,
        "phones": [[p.name, round(p.start, 4), round(p.end, 4), p.stress, p.accented] for p in phones],
    }
    atomic_write_text(layout.root / "synth" / "sequences" / f"{name}.json", json.dumps(record) + "\n")
    return {"name": name, "frames": frames, "seconds": duration, "jaw_mean": 0.0}


def _speaker_job(root: str, speaker: Speaker, index: int, texts: Sequence[str], fps: float, seed: int,
                 first: int = 1, speech_only: bool = False) -> dict:
    """Synthesise and write all sentences of one speaker (runs in a worker process)."""
    layout = DatasetLayout(root)
    head = load_head()
    template = head.template(speaker.identity)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ptalker-synth-") as tmp:
        utts = synthesize(texts, speaker.voice, tmp)
    tts_s = time.perf_counter() - t0
    rows = []
    for k, (text, utt) in enumerate(zip(texts, utts)):
        j = int(first) - 1 + k  # the sentence's 0-based index among the 720: its id and its random stream
        rng = np.random.default_rng([int(seed), 2, int(index), j])
        rows.append(_write_sequence(layout, f"{speaker.name}_{sentence_id(j)}", text, utt, speaker, template, fps, rng,
                                    speech_only))
    return {"speaker": speaker.name, "rows": rows, "tts_seconds": tts_s}


# --------------------------------------------------------------------------- corpus


def _prepare_out_dir(root: Path, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise DatasetError(f"{root} is not empty; choose a new folder or pass --force to replace the corpus there")
        for item in _OWNED:
            p = root / item
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    root.mkdir(parents=True, exist_ok=True)


def generate_corpus(
    out_dir: str | os.PathLike,
    speakers: int = 10,
    sentences: int = 50,
    fps: float = 25.0,
    seed: int = 0,
    progress: Optional[ProgressFn] = None,
    *,
    unseen: Optional[int] = None,
    force: bool = False,
    workers: int = 2,
    voices: Optional[Sequence[str]] = None,
    name: str = "synthtalk",
    tts: str = "auto",
    first_sentence: int = 1,
    speech_only: bool = False,
) -> SynthSummary:
    """Generate a SynthTalk corpus into ``out_dir``; see the module docstring.

    Args:
        speakers: number of speakers (``spk01`` ...); the last ``unseen`` are held out.
        sentences: number of Harvard sentences (M of the 720, from ``first_sentence`` on), same for every
            speaker.
        fps: frame rate of the vertex files.
        seed: everything random derives from it.
        progress: called as ``progress(done, total, speaker)`` after each speaker.
        unseen: held-out speakers (default: about a fifth, at least 1 when speakers >= 2).
        force: replace a corpus already in ``out_dir`` (only the layout's own files are removed).
        workers: processes synthesising speakers in parallel (1 = in this process).
        voices: voice keys of the engine to cycle through (default: the engine's
            :func:`.engines.default_voices`; Festival ``kal``, ``ked``, ``slt``).
        tts: text-to-speech engine, ``auto`` (eSpeak NG if installed, else Festival), ``espeak``
            or ``festival``.
        first_sentence: number (1-based) of the first Harvard sentence spoken. Sequence ids and split
            ranges keep the sentences' own numbers, so a corpus from sentence 31 on shares no text with
            one of the first 30, and each sequence equals the one a corpus starting at 1 would make.
        speech_only: write the speech and its phone timings without the faces (see the module docstring);
            the wav files are the ones a full corpus of the same options holds.
    """
    t_start = time.perf_counter()
    all_sentences = load_sentences()
    if not 1 <= int(speakers) <= 999:
        raise DatasetError("--speakers must be between 1 and 999")
    if not 1 <= int(first_sentence) <= len(all_sentences):
        raise DatasetError(f"--first-sentence must be between 1 and {len(all_sentences)} "
                           "(the Harvard sentences shipped)")
    left = len(all_sentences) - int(first_sentence) + 1
    if not 1 <= int(sentences) <= left:
        raise DatasetError(f"--sentences must be between 1 and {left} (the Harvard sentences shipped from number "
                           f"{int(first_sentence)} on)")
    if not 1.0 <= float(fps) <= 240.0:
        raise DatasetError("--fps must be between 1 and 240")
    unseen = default_unseen(speakers) if unseen is None else int(unseen)
    if not 0 <= unseen < speakers:
        raise DatasetError(f"--unseen must be between 0 and {speakers - 1} (at least one training speaker)")
    engine = resolve_engine(tts)
    voices = tuple(voices or default_voices(engine))
    check_voices(engine, voices)

    root = Path(out_dir)
    created = not root.exists()
    _prepare_out_dir(root, force)
    try:
        texts = all_sentences[int(first_sentence) - 1: int(first_sentence) - 1 + int(sentences)]
        return _write_corpus(root, int(speakers), texts, int(first_sentence), float(fps), int(seed), progress,
                             unseen, int(workers), voices, name, t_start, engine, bool(speech_only))
    except BaseException:  # an error, a full disk, an interruption: no half-written corpus is left
        _remove_owned(root, remove_root=created)
        raise


def _remove_owned(root: Path, remove_root: bool = False) -> None:
    for item in _OWNED:
        p = root / item
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
    if remove_root:
        with contextlib.suppress(OSError):
            root.rmdir()  # only if empty


def _write_corpus(root: Path, speakers: int, texts: Sequence[str], first: int, fps: float, seed: int,
                  progress: ProgressFn | None, unseen: int, workers: int, voices: tuple[str, ...], name: str,
                  t_start: float, engine: str, speech_only: bool = False) -> SynthSummary:
    layout = DatasetLayout(root)
    head = load_head()
    texts = list(texts)
    spk = [sample_speaker(i, seed, voices, head.num_identity_modes) for i in range(int(speakers))]
    names = [s.name for s in spk]
    train_subjects, unseen_subjects = names[: len(names) - unseen], names[len(names) - unseen:]

    # static parts: templates, topology, regions
    from ...mesh import Topology

    for s in spk:
        with atomic_path(layout.template_path(s.name)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, head.template(s.identity))
    Topology("ict", head.neutral, head.faces, head.regions, "cm").save(layout.topology_dir)
    regions = {}
    for key in ("lip", "upper_face"):
        ids = head.regions[key]
        atomic_write_text(layout.regions_dir / f"{key}.txt", "\n".join(str(int(i)) for i in ids) + "\n")
        regions[key] = f"regions/{key}.txt"

    # speech + motion, one job per speaker
    results: dict[str, dict] = {}
    jobs = [(str(root), s, i, texts, float(fps), int(seed), int(first), speech_only) for i, s in enumerate(spk)]
    if progress:
        progress(0, len(jobs), "")
    if workers > 1 and len(jobs) > 1:
        with worker_pool(min(int(workers), len(jobs))) as pool:  # stopped promptly on an error or a signal
            futs = {pool.submit(_speaker_job, *job): job[1].name for job in jobs}
            for fut in as_completed(futs):
                res = fut.result()
                results[res["speaker"]] = res
                if progress:
                    progress(len(results), len(jobs), res["speaker"])
    else:
        for job in jobs:
            res = _speaker_job(*job)
            results[res["speaker"]] = res
            if progress:
                progress(len(results), len(jobs), res["speaker"])

    # manifest
    ranges = sentence_splits(len(texts), first)

    def rule(subjects, key):
        a, b = ranges[key]
        return SplitRule.from_json({"subjects": list(subjects), "sentences": [f"{a}-{b}"]})

    splits = {k: rule(train_subjects, k) for k in ranges}
    if unseen_subjects and "test" in ranges:
        splits["test-unseen"] = rule(unseen_subjects, "test")
    if unseen_subjects:
        splits["adapt-unseen"] = rule(unseen_subjects, "train")
    synth_info = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "tts": describe(engine),
        "sentence_source": "Harvard sentences (IEEE 1969), ptalker_cli/data/synth/sentences/harvard.txt",
        "sentences": {sentence_id(first - 1 + k): t for k, t in enumerate(texts)},
        "sentence_splits": {k: list(v) for k, v in ranges.items()},
        "unseen_subjects": unseen_subjects,
        "blendshapes": list(SHAPES),
        "style_ranges": {k: [lo, hi, what] for k, (lo, hi, what) in STYLE_RANGES.items()},
        "speaker_styles": {s.name: s.style.to_json() for s in spk},
        "speakers": {s.name: s.to_json() for s in spk},
        "files": ({"sequences": "synth/sequences/<name>.json"} if speech_only else
                  {"sequences": "synth/sequences/<name>.json", "weights": "synth/weights/<name>.npy"}),
    }
    if speech_only:
        synth_info["speech_only"] = True
    manifest = Manifest(
        name=name, fps=float(fps), topology="ict", units="cm", num_vertices=head.num_vertices,
        subjects=names, train_subjects=train_subjects, splits=splits, regions=regions,
        audio_sample_rate=SAMPLE_RATE,
        source={"converter": "ptalker data synth", "license_audio": "see docs/synthtalk.md", "synth": synth_info},
    )
    manifest.save(root)

    rows = [r for s in names for r in results[s]["rows"]]
    summary = SynthSummary(
        root=root, subjects=names, train_subjects=train_subjects, unseen_subjects=unseen_subjects,
        sequences=len(rows), audio_seconds=float(sum(r["seconds"] for r in rows)),
        tts_seconds=float(sum(r["tts_seconds"] for r in results.values())),
    )
    all_names = [r["name"] for r in rows]
    summary.split_sizes = {k: len(v.select(all_names)) for k, v in splits.items()}
    summary.elapsed_s = time.perf_counter() - t_start
    return summary

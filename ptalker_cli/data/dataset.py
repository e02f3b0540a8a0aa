"""A lazy torch Dataset over the standard layout, variable-length batching, bucketing.

``TalkingHeadDataset`` keeps only paths and small metadata in memory (so it pickles
cheaply into DataLoader workers); vertices are memory-mapped and copied per item,
audio is decoded with :func:`ptalker_cli.audio.load_audio` on access.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .layout import DatasetError, DatasetLayout, Manifest, SplitRule, split_name


class TalkingHeadDataset(Dataset):
    """Sequences of a dataset folder (standard layout), one split.

    Args:
        root: dataset root (with ``dataset.json``).
        split: a split name from the manifest (``train``, ``val``, ``test-a``, ``test-b``,
            ``test``, or your own), a custom split (list of names, ``{"subjects": [...],
            "sentences": ["1-32"]}`` rule, or :class:`SplitRule`), or None / ``"all"``.
        subjects: keep only these subjects (after the split).
        load_audio: decode audio (False: ``audio`` is an empty tensor; faster for
            motion-only uses).
        require_audio: drop sequences without an audio file (with a warning). When
            False they are kept and give empty audio.
        visemes: also give ``visemes``, a (T,) int64 tensor of per-frame viseme classes from the
            corpus's phone timings (:func:`~ptalker_cli.data.synth.labels.frame_visemes`; all
            ``-100``, i.e. ignored, for a sequence without phones).

    Items are dicts: ``name``, ``subject``, ``subject_index`` (index in the manifest's
    ``train_subjects`` one-hot order, -1 for an unseen identity), ``audio`` (float32
    tensor, mono, ``sample_rate`` Hz), ``vertices`` (T, V, 3) float32 tensor,
    ``template`` (V, 3) float32 tensor, ``fps`` (float).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | SplitRule | Sequence[str] | Mapping[str, Any] | None = "train",
        subjects: Sequence[str] | None = None,
        *,
        load_audio: bool = True,
        require_audio: bool = True,
        visemes: bool = False,
    ):
        self.root = Path(root)
        self.layout = DatasetLayout(self.root)
        self.manifest: Manifest = self.layout.manifest()
        if (self.manifest.source.get("synth") or {}).get("speech_only"):
            raise DatasetError(f"{self.root} holds speech only (ptalker data synth --speech-only), no faces to train "
                               "or evaluate on; use it as phone_pretrain_data, and a full corpus as --data")
        self.split = split if isinstance(split, str) or split is None else "custom"
        self.load_audio = load_audio
        self.with_visemes = bool(visemes)
        names = self.layout.resolve_split(split, self.manifest)
        if subjects is not None:
            wanted = set(subjects)
            names = [n for n in names if split_name(n)[0] in wanted]
        if require_audio:
            have = set(self.layout.audio_names())
            dropped = [n for n in names if n not in have]
            if dropped:
                warnings.warn(
                    f"{len(dropped)} sequence(s) of split '{self.split}' have no audio and are skipped "
                    f"(e.g. {dropped[0]}); run 'ptalker data check {self.root}'",
                    stacklevel=2,
                )
                names = [n for n in names if n in have]
        self.names: list[str] = names
        self.subjects: list[str] = [split_name(n)[0] for n in names]
        self._lengths: list[int] | None = None

    # ------------------------------------------------------------------ info
    @property
    def fps(self) -> float:
        return self.manifest.fps

    @property
    def sample_rate(self) -> int:
        return self.manifest.audio_sample_rate

    @property
    def train_subjects(self) -> list[str]:
        return list(self.manifest.train_subjects)

    @property
    def num_identities(self) -> int:
        return len(self.manifest.train_subjects)

    @property
    def lengths(self) -> list[int]:
        """Frame counts of the items (from the .npy headers; no data read)."""
        if self._lengths is None:
            self._lengths = [
                int(np.load(self.layout.vertices_path(n), mmap_mode="r", allow_pickle=False).shape[0])
                for n in self.names
            ]
        return self._lengths

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"TalkingHeadDataset({str(self.root)!r}, split={self.split!r}, items={len(self)})"

    # ------------------------------------------------------------------ items
    def template(self, subject: str) -> np.ndarray:
        return self.layout.load_template(subject)

    def vertices(self, name: str) -> np.ndarray:
        arr = np.load(self.layout.vertices_path(name), mmap_mode="r", allow_pickle=False)
        if arr.ndim == 2 and arr.shape[1] % 3 == 0:
            arr = arr.reshape(arr.shape[0], -1, 3)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise DatasetError(f"{self.layout.vertices_path(name)} has shape {arr.shape}; expected (T, V, 3)")
        return np.array(arr, dtype=np.float32)  # copy out of the memory map

    def audio(self, name: str) -> np.ndarray:
        from ..audio import load_audio

        path = self.layout.wav_path(name)
        if not path.exists():
            return np.zeros(0, dtype=np.float32)
        return load_audio(path, self.sample_rate)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        subject = self.subjects[index]
        audio = self.audio(name) if self.load_audio else np.zeros(0, dtype=np.float32)
        vertices = self.vertices(name)
        item = {
            "name": name,
            "subject": subject,
            "subject_index": self.manifest.subject_index(subject),
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            "vertices": torch.from_numpy(vertices),
            "template": torch.from_numpy(self.template(subject)),
            "fps": float(self.manifest.fps),
        }
        if self.with_visemes:
            item["visemes"] = torch.from_numpy(self.visemes(name, vertices.shape[0]))
        return item

    def visemes(self, name: str, frames: int) -> np.ndarray:
        """(frames,) viseme classes of a sequence from its phones; all ignored (-100) without phones."""
        from .synth.labels import IGNORE, frame_visemes, read_phones

        phones = read_phones(self.root, name)
        if phones is None:
            return np.full(int(frames), IGNORE, dtype=np.int64)
        return frame_visemes(phones, frames, self.fps)


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))


def collate_batch(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad a list of items into a batch.

    Returns ``names``, ``subjects`` (lists), ``subject_index`` (B,) long, ``audio``
    (B, L) zero-padded, ``audio_lengths`` (B,) long, ``audio_mask`` (B, L) bool,
    ``vertices`` (B, T, V, 3) zero-padded, ``frame_lengths`` (B,) long, ``frame_mask``
    (B, T) bool (True on real frames), ``template`` (B, V, 3), ``fps`` (float, or a
    (B,) tensor when the items disagree), and where the items have them ``visemes`` (B, T)
    int64 padded with -100 (ignored).
    """
    if not items:
        raise ValueError("collate_batch needs at least one item")
    B = len(items)
    audios = [_as_tensor(it["audio"]).reshape(-1) for it in items]
    verts = [_as_tensor(it["vertices"]) for it in items]
    nv = {v.shape[1] for v in verts}
    if len(nv) != 1:
        raise DatasetError(f"cannot batch sequences with different vertex counts {sorted(nv)}")
    a_len = torch.tensor([len(a) for a in audios], dtype=torch.long)
    f_len = torch.tensor([v.shape[0] for v in verts], dtype=torch.long)
    L, T, V = int(a_len.max()), int(f_len.max()), nv.pop()
    audio = torch.zeros(B, L, dtype=torch.float32)
    vertices = torch.zeros(B, T, V, 3, dtype=torch.float32)
    for i, (a, v) in enumerate(zip(audios, verts)):
        audio[i, : len(a)] = a
        vertices[i, : v.shape[0]] = v
    fps = [float(it.get("fps", 0.0)) for it in items]
    extra = {}
    if all("visemes" in it for it in items):
        labels = torch.full((B, T), -100, dtype=torch.long)
        for i, it in enumerate(items):
            lab = torch.as_tensor(it["visemes"], dtype=torch.long).reshape(-1)[:T]
            labels[i, : len(lab)] = lab
        extra["visemes"] = labels
    return {
        "names": [it["name"] for it in items],
        "subjects": [it["subject"] for it in items],
        "subject_index": torch.tensor([int(it["subject_index"]) for it in items], dtype=torch.long),
        "audio": audio,
        "audio_lengths": a_len,
        "audio_mask": torch.arange(L)[None, :] < a_len[:, None],
        "vertices": vertices,
        "frame_lengths": f_len,
        "frame_mask": torch.arange(T)[None, :] < f_len[:, None],
        "template": torch.stack([_as_tensor(it["template"]) for it in items]),
        "fps": fps[0] if len(set(fps)) == 1 else torch.tensor(fps),
        **extra,
    }


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length, shuffled deterministically by ``seed`` and epoch.

    Indices are shuffled (``seed + epoch``), cut into pools of ``bucket_size``
    batches, sorted by length inside each pool and chunked into batches; then the
    batch order is shuffled. With ``max_frames`` a batch also stops growing once
    ``batch_len * longest_item`` would exceed it (a padded-frames budget).
    Use it as ``DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch)`` and
    call :meth:`set_epoch` (or pass ``epoch``) every epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        bucket_size: int = 50,
        max_frames: int | None = None,
        drop_last: bool = False,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.lengths = [int(x) for x in lengths]
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.bucket_size = max(1, int(bucket_size))
        self.max_frames = max_frames
        self.drop_last = drop_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=gen).tolist() if self.shuffle else list(range(n))
        pool = self.batch_size * self.bucket_size
        batches: list[list[int]] = []
        for start in range(0, n, pool):
            chunk = sorted(order[start : start + pool], key=lambda i: (self.lengths[i], i))
            cur: list[int] = []
            longest = 0
            for i in chunk:
                new_longest = max(longest, self.lengths[i])
                too_many = self.max_frames is not None and cur and new_longest * (len(cur) + 1) > self.max_frames
                if len(cur) == self.batch_size or too_many:
                    batches.append(cur)
                    cur, new_longest = [], self.lengths[i]
                cur.append(i)
                longest = new_longest
            if cur:
                batches.append(cur)
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=gen).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def make_dataloader(
    dataset: TalkingHeadDataset,
    batch_size: int = 1,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    max_frames: int | None = None,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """A DataLoader with length bucketing and :func:`collate_batch` (set the epoch on
    ``loader.batch_sampler``)."""
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed, max_frames=max_frames)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_batch, num_workers=num_workers, **kwargs
    )

"""Small fake raw corpora in the exact BIWI / VOCASET release formats.

The real corpora cannot be shipped; these writers let tests (and users trying the
pipeline) exercise the converters end to end on a small mesh:

* BIWI: ``faces/<subj>/<seq>/frame_XXX.vl`` binaries (4- or 8-byte header, or a
  ``<seq>.tar`` of them), ``rigid_scans/<subj>.obj`` (with texture coordinates, as the
  real scans), ``audio/<subj>_<seq>.wav`` at 44.1 kHz;
* VOCASET: a memory-mappable ``data_verts.npy`` at 60 fps, ``subj_seq_to_idx.pkl``,
  ``templates.pkl``, ``raw_audio_fixed.pkl`` (int16 at 22 kHz), protocol-2 pickles
  like the Python-2 originals, and a ``FLAME_sample.ply`` stand-in.

Motion is a deterministic jaw-like deformation, so results are reproducible.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .biwi import vl_bytes, write_vl


def _motion(template: np.ndarray, frames: int, seed: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None, None]
    jaw = (template[None, :, 1:2] < template[:, 1].mean()).astype(np.float64)
    offs = np.zeros((frames,) + template.shape)
    offs[..., 1:2] = -jaw * scale * 0.05 * (1 + np.sin(0.7 * t + seed))
    offs += rng.normal(0, scale * 0.002, offs.shape)
    return template[None] + offs


def _tone(seconds: float, sr: int, seed: int) -> np.ndarray:
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    return (0.3 * np.sin(2 * np.pi * (180 + 20 * seed) * t)).astype(np.float32)


def _obj_text(vertices: np.ndarray, faces: np.ndarray) -> str:
    lines = ["# fake rigid scan", "mtllib scan.mtl"]
    lines += [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in vertices]
    lines += [f"vt {0.5 + 0.01 * i % 1:.4f} 0.5" for i in range(len(vertices))]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


@dataclass
class FakeBiwi:
    root: Path
    vertices: dict[str, np.ndarray] = field(default_factory=dict)  # name -> raw (T, V, 3)
    templates: dict[str, np.ndarray] = field(default_factory=dict)  # subj -> raw (V, 3)
    audio_seconds: dict[str, float] = field(default_factory=dict)
    faces: np.ndarray | None = None


def make_fake_biwi(
    root: str | Path,
    subjects=("F2", "M3", "F1"),
    sequences=("e01", "e32", "e33", "e36", "e37", "e40"),
    topology=None,
    frames: int = 8,
    header_bytes: dict[str, int] | None = None,
    tar_sequences: tuple[str, ...] = (),
    audio_rate: int = 44100,
    no_audio: tuple[str, ...] = (),
) -> FakeBiwi:
    """Write a fake raw BIWI corpus. ``header_bytes`` maps sequence names to 4 or 8."""
    from ..mesh import tiny_topology

    topo = topology or tiny_topology()
    root = Path(root)
    fake = FakeBiwi(root, faces=topo.faces)
    header_bytes = header_bytes or {}
    for si, subj in enumerate(subjects):
        # raw BIWI is in millimetres, upright, arbitrary offset
        tmpl = topo.vertices.astype(np.float64) * (10.0 + si) + np.array([3.0, -40.0, 900.0])
        tmpl[:, 1] *= -1.0  # so that the 180-degree x rotation matters
        fake.templates[subj] = tmpl
        (root / "rigid_scans").mkdir(parents=True, exist_ok=True)
        (root / "rigid_scans" / f"{subj}.obj").write_text(_obj_text(tmpl, topo.faces))
        for qi, seq in enumerate(sequences):
            name = f"{subj}_{seq}"
            n = frames + qi
            verts = _motion(tmpl, n, 10 * si + qi, 10.0).astype(np.float32)
            fake.vertices[name] = verts
            hb = header_bytes.get(name, 4)
            if name in tar_sequences:
                (root / "faces" / subj).mkdir(parents=True, exist_ok=True)
                with tarfile.open(root / "faces" / subj / f"{seq}.tar", "w") as tar:
                    for k, v in enumerate(verts):
                        data = vl_bytes(v, hb)
                        info = tarfile.TarInfo(f"{seq}/frame_{k + 1:03d}.vl")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
            else:
                folder = root / "faces" / subj / seq
                folder.mkdir(parents=True, exist_ok=True)
                for k, v in enumerate(verts):
                    write_vl(folder / f"frame_{k + 1:03d}.vl", v, hb)
            seconds = n / 25.0
            fake.audio_seconds[name] = seconds
            if name not in no_audio:
                (root / "audio").mkdir(parents=True, exist_ok=True)
                sf.write(str(root / "audio" / f"{name}.wav"), _tone(seconds, audio_rate, qi), audio_rate,
                         subtype="PCM_16")
    return fake


@dataclass
class FakeVocaset:
    root: Path
    sequences: dict[str, np.ndarray] = field(default_factory=dict)  # name -> raw 60 fps (T, V, 3)
    templates: dict[str, np.ndarray] = field(default_factory=dict)
    audio: dict[str, np.ndarray] = field(default_factory=dict)  # name -> int16 at 22 kHz
    faces_mesh: Path | None = None


def make_fake_vocaset(
    root: str | Path,
    subjects=("FaceTalk_170728_03272_TA", "FaceTalk_170811_03275_TA", "FaceTalk_170809_00138_TA"),
    sentences=("sentence01", "sentence20", "sentence21", "sentence40"),
    topology=None,
    frames: int = 13,
    audio_rate: int = 22000,
    faces_mesh: bool = True,
) -> FakeVocaset:
    """Write a fake VOCASET release (rows of different sequences interleaved in data_verts)."""
    from ..mesh import tiny_topology

    topo = topology or tiny_topology()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fake = FakeVocaset(root)
    base = topo.vertices.astype(np.float64) / 100.0  # metres
    order: list[tuple[str, str, int]] = []
    for si, subj in enumerate(subjects):
        tmpl = base * (1.0 + 0.05 * si)
        fake.templates[subj] = tmpl
        for qi, sent in enumerate(sentences):
            n = frames + 2 * qi
            v = _motion(tmpl, n, 7 * si + qi, 0.1).astype(np.float32)
            name = f"{subj}_{sent}"
            fake.sequences[name] = v
            sec = n / 60.0
            fake.audio[name] = np.round(_tone(sec, audio_rate, qi) * 32767).astype(np.int16)
            order += [(subj, sent, k) for k in range(n)]
    # interleave rows of all sequences so row order != sequence order
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(order))
    data = np.zeros((len(order),) + base.shape, dtype=np.float32)
    index: dict[str, dict[str, dict[int, int]]] = {}
    for row, j in enumerate(perm):
        subj, sent, k = order[j]
        data[row] = fake.sequences[f"{subj}_{sent}"][k]
        index.setdefault(subj, {}).setdefault(sent, {})[k] = row
    # store local-frame dicts in shuffled key order: the converter must sort them
    for subj in index:
        for sent in index[subj]:
            items = list(index[subj][sent].items())
            rng.shuffle(items)
            index[subj][sent] = dict(items)
    np.save(root / "data_verts.npy", data)
    audio: dict[str, dict] = {s: {} for s in subjects}
    for name, wav in fake.audio.items():
        subj, sent = name.rsplit("_", 1)
        audio[subj][sent] = {"audio": wav, "sample_rate": audio_rate}
    for fname, obj in (("subj_seq_to_idx.pkl", index), ("templates.pkl", fake.templates),
                       ("raw_audio_fixed.pkl", audio)):
        with open(root / fname, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    if faces_mesh:
        import trimesh

        path = root / "FLAME_sample.ply"
        trimesh.Trimesh(base, topo.faces, process=False).export(path)
        fake.faces_mesh = path
    return fake


def make_fake_dataset(
    root: str | Path,
    subjects=("A", "B", "C"),
    sentences=("s01", "s02", "s03"),
    train_subjects=("A", "B"),
    fps: float = 25.0,
    frames: int = 10,
    sample_rate: int = 16000,
    topology=None,
) -> Path:
    """Write a small dataset directly in the standard layout (one's-own-data example).

    Sequence ``i`` has ``frames + i`` frames and matching audio, so lengths differ.
    Splits: ``train`` = train subjects, sentences 1-2; ``val`` = train subjects,
    sentence 3; ``test`` = the other subjects, all sentences.
    """
    from ..mesh import tiny_topology
    from .layout import DatasetLayout, Manifest, SplitRule

    topo = topology or tiny_topology()
    layout = DatasetLayout(root)
    for d in (layout.vertices_dir, layout.wav_dir, layout.templates_dir):
        d.mkdir(parents=True, exist_ok=True)
    i = 0
    for si, subj in enumerate(subjects):
        tmpl = topo.vertices * (1.0 + 0.1 * si)
        np.save(layout.template_path(subj), tmpl.astype(np.float32))
        for sent in sentences:
            n = frames + i
            np.save(layout.vertices_path(f"{subj}_{sent}"), _motion(tmpl, n, i, 1.0).astype(np.float32))
            sf.write(str(layout.wav_dir / f"{subj}_{sent}.wav"), _tone(n / fps, sample_rate, i), sample_rate)
            i += 1
    topo.save(layout.topology_dir)
    rdir = layout.regions_dir
    rdir.mkdir(parents=True, exist_ok=True)
    for key in ("lip", "upper_face"):
        (rdir / f"{key}.txt").write_text(", ".join(str(int(x)) for x in topo.regions[key]) + "\n")
    others = [s for s in subjects if s not in train_subjects]
    Manifest(
        name="fake", fps=float(fps), topology=topo.name, units=topo.units, num_vertices=topo.num_vertices,
        subjects=list(subjects), train_subjects=list(train_subjects),
        splits={
            "train": SplitRule.from_json({"subjects": list(train_subjects), "sentences": ["1-2"]}),
            "val": SplitRule.from_json({"subjects": list(train_subjects), "sentences": [3]}),
            "test": SplitRule.from_json({"subjects": others}),
        },
        regions={"lip": "regions/lip.txt", "upper_face": "regions/upper_face.txt"},
        audio_sample_rate=sample_rate,
    ).save(root)
    return Path(root)

"""The GLB export: compact motion inside its error budget, per-frame layout, normals, units, audio.

The files are read back three ways: by our reader (``read_glb``), by an independent decoder
written here on top of pygltflib (it parses the GLB container and JSON; the accessor decoding
below shares no code with ptalker), and, in test_glb_viewers.py, by the Khronos validator and
three.js in headless Chromium.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import soundfile as sf
from typer.testing import CliRunner

from ptalker_cli.cli.app import app
from ptalker_cli.errors import PtalkerError
from ptalker_cli.export import write_motion
from ptalker_cli.export.glb import GlbOptions, read_glb, write_glb
from ptalker_cli.export.motion_basis import ErrorBudget, fit_basis, fit_normal_deltas, vertex_normals
from ptalker_cli.export.scene import NormalComputer
from ptalker_cli.inference import DEFAULT_MODEL, Animator, load_model
from ptalker_cli.mesh import resolve_mesh, tiny_topology
from ptalker_cli.motion import Motion

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "speech.wav"
runner = CliRunner()


# ----------------------------------------------------------------------------- motions


def mouth_motion(topo, frames: int, fps: float = 25.0, seed: int = 0, noise_mm: float = 0.0) -> Motion:
    """A speech-like motion in centimetres: jaw drop, lip spread and pucker (smooth fields around
    the mouth) driven by smooth random signals, plus optional per-vertex noise."""
    rng = np.random.default_rng(seed)
    v = topo.vertices
    lip = topo.region("lip")
    c = v[lip].mean(0)
    d = np.linalg.norm(v - c, axis=1)
    r = np.ptp(v[lip], axis=0).max()
    fall = np.exp(-((d / r) ** 2))[:, None].astype(np.float32)
    below = (v[:, 1] < c[1]).astype(np.float32)[:, None]
    fields = [
        fall * below * np.array([0.0, -0.5, -0.15], np.float32),  # jaw
        fall * np.stack([(v[:, 0] - c[0]) / r * 0.2, 0 * d, 0 * d], 1).astype(np.float32),  # spread
        fall * np.array([0.0, 0.0, 0.2], np.float32),  # pucker
    ]
    t = np.arange(frames) / fps
    sig = [np.clip(np.sin(2 * np.pi * (2.1 + k) * t + rng.uniform(0, 6)) * rng.uniform(0.3, 0.6), -0.2, 1)
           for k in range(len(fields))]
    verts = v[None] + sum(s[:, None, None] * f[None] for s, f in zip(sig, fields))
    if noise_mm:
        verts = verts + rng.normal(0, noise_mm / 10, verts.shape)
    return Motion(verts.astype(np.float32), fps, topo.name, {"subject": "synthetic"})


@pytest.fixture(scope="module")
def ict():
    return resolve_mesh("ict")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README's example through the default model, as ``ptalker animate`` makes it."""
    animator = Animator(load_model(DEFAULT_MODEL, offline=True))
    res = animator.animate(EXAMPLE)
    return res.motion, res.topology


# ----------------------------------------------------------------------------- an independent decoder


def decode_with_pygltflib(path: Path) -> dict:
    """Frames of the GLB's animation, in metres, decoded with pygltflib and code written here."""
    g = pygltflib.GLTF2().load_binary(str(path))
    blob = g.binary_blob()
    comp = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5122: np.int16, 5121: np.uint8, 5120: np.int8}
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}

    def acc(i):
        a = g.accessors[i]
        dt, n = np.dtype(comp[a.componentType]), width[a.type]
        out = np.zeros(a.count * n, dt)
        if a.bufferView is not None:
            bv = g.bufferViews[a.bufferView]
            step = bv.byteStride or dt.itemsize * n
            base = (bv.byteOffset or 0) + (a.byteOffset or 0)
            rows = [np.frombuffer(blob, dt, n, base + k * step) for k in range(a.count)] if bv.byteStride \
                else [np.frombuffer(blob, dt, a.count * n, base)]
            out = np.concatenate(rows).copy()
        if a.sparse is not None:
            s = a.sparse
            iv, vv = g.bufferViews[s.indices.bufferView], g.bufferViews[s.values.bufferView]
            idx = np.frombuffer(blob, comp[s.indices.componentType], s.count,
                                (iv.byteOffset or 0) + (s.indices.byteOffset or 0))
            val = np.frombuffer(blob, dt, s.count * n, (vv.byteOffset or 0) + (s.values.byteOffset or 0))
            out = out.reshape(-1, n)
            out[idx.astype(int)] = val.reshape(-1, n)
        out = out.reshape(a.count, n)
        if a.normalized:
            out = np.maximum(out / float(np.iinfo(dt).max), -1.0)
        return out.astype(np.float64)

    prim = g.meshes[0].primitives[0]
    base = acc(prim.attributes.POSITION)
    targets = np.stack([acc(t["POSITION"]) for t in prim.targets])
    sampler = g.animations[0].samplers[0]
    times = acc(sampler.input)[:, 0]
    weights = acc(sampler.output).reshape(len(times), len(targets))
    scale = (g.nodes[0].scale or [1.0])[0]
    frames = base[None] + np.einsum("tk,kvc->tvc", weights, targets)
    return {"frames": frames * scale, "times": times, "weights": weights, "gltf": g}


def per_vertex_mm(a_m: np.ndarray, b_m: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a_m - b_m, axis=-1) * 1000.0


def _write(path, clip, topo, **options) -> Path:
    write_motion(clip, topo, path, force=True, glb=GlbOptions(**options) if options else None)
    return path


# ----------------------------------------------------------------------------- compact motion


def test_example_glb_is_small_and_every_frame_is_inside_the_budget(example, tmp_path):
    """`ptalker animate examples/speech.wav -o out.glb`: every frame within 0.1 mm RMS / 1 mm anywhere /
    0.5 mm on the lips, read back by pygltflib (its size: the next test)."""
    motion, topo = example
    out = _write(tmp_path / "out.glb", motion, topo)
    dec = decode_with_pygltflib(out)
    err = per_vertex_mm(dec["frames"], motion.vertices.astype(np.float64) * 0.01)  # the ICT head is in cm
    budget = ErrorBudget()
    assert np.sqrt((err**2).mean()) <= budget.rms_mm, np.sqrt((err**2).mean())
    assert err.max() <= budget.max_mm, err.max()
    assert err[:, topo.region("lip")].max() <= budget.lip_max_mm
    # one key per frame at k/fps, weights in [0, 1] (Blender clamps shape keys to their [0, 1] sliders)
    np.testing.assert_allclose(dec["times"], np.arange(motion.num_frames) / motion.fps, atol=1e-6)
    assert dec["weights"].min() >= 0 and dec["weights"].max() <= 1
    # the error the file reports is the one measured here
    doc = read_glb(out)["extras"]
    assert doc["motion"] == "compact" and doc["targets"] == len(dec["gltf"].meshes[0].primitives[0].targets)
    assert abs(doc["error_mm"]["max_mm"] - err.max()) < 1e-3


@pytest.mark.xfail(strict=True, reason="regression from issue 19's retrained default: its crisper lips need K = 9 "
                   "shapes for the 0.5-mm lip budget (was 5), 3.43 MB against issue 17's 3 MB; open")
def test_example_glb_is_at_most_3_mb(example, tmp_path):
    """Issue 17's size target for `ptalker animate examples/speech.wav -o out.glb`."""
    motion, topo = example
    size = _write(tmp_path / "out.glb", motion, topo).stat().st_size
    assert size <= 3_000_000, size


def test_fewest_components_that_meet_the_budget(ict):
    """A motion of rank 3 (three shapes) needs 3 for a budget near float precision and no more for
    the default; noise below a tight budget's reach needs more."""
    m = mouth_motion(ict, 60)
    lip = ict.region("lip")
    exact = ErrorBudget(rms_mm=1e-4, max_mm=1e-3, lip_max_mm=1e-3)
    b = fit_basis(m.vertices, ict.vertices, mm=10.0, lip=lip, budget=exact)
    assert b.num_components == 3 and exact.allows(b.error), b.error
    assert fit_basis(m.vertices, ict.vertices, mm=10.0, lip=lip).num_components <= 3
    noisy = mouth_motion(ict, 60, noise_mm=0.02)
    tight = ErrorBudget(rms_mm=0.01, max_mm=0.05, lip_max_mm=0.05)
    more = fit_basis(noisy.vertices, ict.vertices, mm=10.0, lip=lip, budget=tight)
    assert more.num_components > 3 and tight.allows(more.error), more.error


def test_sixty_seconds_are_only_a_little_larger_than_six(tmp_path):
    """Growth with length is in the weights (and key times) only: 4 bytes per frame and target."""
    topo = tiny_topology()
    short, long = mouth_motion(topo, 150), mouth_motion(topo, 1500)
    a, b = _write(tmp_path / "a.glb", short, topo), _write(tmp_path / "b.glb", long, topo)
    ka, kb = read_glb(a)["targets"].shape[0], read_glb(b)["targets"].shape[0]
    assert ka == kb
    growth = b.stat().st_size - a.stat().st_size
    weights_and_times = (1500 - 150) * 4 * (kb + 1)
    assert weights_and_times <= growth <= weights_and_times + 512  # + a few JSON digits


def test_a_few_sharp_frames_cost_a_shape_each_not_the_noise_beneath_them(ict):
    """Three smooth shapes, noise of 0.02 mm on every coordinate, and three frames whose lips jump
    0.8 mm (over the 0.5-mm lip budget): principal shapes would spend dozens of components on the
    noise, which has more energy than the jumps; each jump's own residual is one more shape."""
    rng = np.random.default_rng(0)
    T, V = 60, ict.num_vertices
    lip = ict.region("lip")
    t = np.linspace(0, 1, T)[:, None]
    smooth = rng.standard_normal((3, V * 3)).astype(np.float32) * 0.02
    d = np.sin(2 * np.pi * t * np.array([1.0, 2.0, 3.0])) @ smooth
    d += rng.standard_normal((T, V * 3)).astype(np.float32) * 0.002  # cm: 0.02 mm
    for frame, vertex in ((10, lip[5]), (30, lip[400]), (50, lip[900])):
        d[frame, 3 * vertex + 1] += 0.08  # 0.8 mm
    frames = (ict.vertices[None] + d.reshape(T, V, 3)).astype(np.float32)
    b = fit_basis(frames, ict.vertices, mm=10.0, lip=lip)
    assert ErrorBudget().allows(b.error), b.error
    assert b.num_components <= 6, b.num_components


def test_still_motion_and_one_frame(tmp_path):
    topo = tiny_topology()
    for frames in (1, 5):
        m = Motion(np.repeat(topo.vertices[None], frames, 0), 25.0, "tiny")
        g = read_glb(_write(tmp_path / f"s{frames}.glb", m, topo))
        np.testing.assert_array_equal(g["frames"], m.vertices)


def test_quantized_targets_stay_inside_the_budget_and_are_smaller(example, tmp_path):
    motion, topo = example
    plain = _write(tmp_path / "p.glb", motion, topo)
    quant = _write(tmp_path / "q.glb", motion, topo, quantize=True)
    g = pygltflib.GLTF2().load_binary(str(quant))
    assert g.extensionsRequired == ["KHR_mesh_quantization"]
    target = g.accessors[g.meshes[0].primitives[0].targets[0]["POSITION"]]
    assert target.componentType == 5122 and target.normalized  # int16
    assert quant.stat().st_size < 0.85 * plain.stat().st_size  # measured: 1.76 vs 2.15 MB
    err = per_vertex_mm(decode_with_pygltflib(quant)["frames"], motion.vertices.astype(np.float64) * 0.01)
    assert np.sqrt((err**2).mean()) <= 0.1 and err.max() <= 1.0 and err[:, topo.region("lip")].max() <= 0.5


# ----------------------------------------------------------------------------- per-frame layout


def test_per_frame_layout_stores_every_frame_exactly(tmp_path, ict):
    """Each target is the float32 ``frame - template``, bit for bit; base + target gives the frame
    to within one float32 rounding of that sum (the .npy is the bit-exact format)."""
    m = mouth_motion(ict, 12, noise_mm=0.01)
    out = _write(tmp_path / "f.glb", m, ict, motion="per-frame")
    g = read_glb(out)
    np.testing.assert_array_equal(g["template"], ict.vertices)
    np.testing.assert_array_equal(g["targets"], m.vertices - ict.vertices[None])
    np.testing.assert_array_equal(g["weights"], np.eye(12, dtype=np.float32))  # one-hot, stored sparsely
    # the two roundings (of the difference, then of the sum) cost at most one unit in the last place
    ulp = np.spacing(np.maximum(np.abs(m.vertices), np.abs(ict.vertices)[None]))
    assert (np.abs(g["frames"] - m.vertices) <= ulp).all()
    dec = decode_with_pygltflib(out)
    np.testing.assert_allclose(dec["frames"] / 0.01, m.vertices, atol=1e-5)
    # its weights are a sparse accessor: 12 ones, not 144 floats
    gl = dec["gltf"]
    assert gl.accessors[gl.animations[0].samplers[0].output].sparse.count == 12


def test_layout_options_are_checked():
    with pytest.raises(PtalkerError, match="unknown GLB motion layout"):
        GlbOptions(motion="keyframes")
    with pytest.raises(PtalkerError, match="compact"):
        GlbOptions(motion="per-frame", quantize=True)
    with pytest.raises(PtalkerError, match="positive"):
        ErrorBudget(rms_mm=0)


# ----------------------------------------------------------------------------- normals, material, units


def test_normals_light_the_motion(example, tmp_path):
    """Unit base normals; with the fitted normal deltas the lips' normals follow the motion
    (compared with each frame's own normals), with the base normals alone they would not.
    Measured on the example: mean 0.5 degrees (99th percentile 5.7) with the deltas, 8.2 (61) without."""
    motion, topo = example
    g = read_glb(_write(tmp_path / "n.glb", motion, topo))
    assert np.allclose(np.linalg.norm(g["normals"], axis=1), 1.0, atol=1e-5)
    assert g["normal_targets"] is not None and g["normal_targets"].shape == g["targets"].shape
    nc = NormalComputer(topo.faces, topo.num_vertices)
    lip = topo.region("lip")
    true = np.stack([vertex_normals(nc, f) for f in motion.vertices])[:, lip]

    def degrees(n):
        n = n / np.linalg.norm(n, axis=-1, keepdims=True)
        return np.degrees(np.arccos(np.clip((n * true).sum(-1), -1, 1)))

    lit = degrees(g["normals"][lip][None] + np.einsum("tk,kvc->tvc", g["weights"], g["normal_targets"][:, lip]))
    static = degrees(np.broadcast_to(g["normals"][lip], true.shape))
    assert lit.mean() < 1.0 and np.percentile(lit, 99) < 10.0, (lit.mean(), np.percentile(lit, 99))
    assert static.mean() > 4.0 and np.percentile(static, 99) > 30.0, (static.mean(), np.percentile(static, 99))


def test_material_units_and_axes(ict, tmp_path):
    """A grey, non-metallic PBR material (glTF's default is fully metallic: dark in viewers); the
    cm template gets a 0.01 node scale (metres); the face looks towards +Z with +Y up."""
    out = _write(tmp_path / "m.glb", mouth_motion(ict, 4), ict)
    doc = read_glb(out)["json"]
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and 0.3 < pbr["baseColorFactor"][0] < 0.9
    assert doc["meshes"][0]["primitives"][0]["material"] == 0
    assert doc["nodes"][0]["scale"] == [0.01] * 3 and doc["extras"]["units"] == "cm"


def test_unknown_units_are_written_unscaled_with_a_head_sized_budget(tmp_path):
    """BIWI-like ``normalized`` units: no node scale (the size is unknown); the budget treats the
    mesh's height as 250 mm, so a 0.01-unit motion on a 1-unit-tall face is 2.5 mm."""
    from ptalker_cli.export.motion_basis import HEAD_HEIGHT_MM, mm_per_unit
    from ptalker_cli.mesh import Topology

    tiny = tiny_topology()
    v = tiny.vertices / np.ptp(tiny.vertices[:, 1])  # 1 unit tall
    topo = Topology("unitless", v, tiny.faces, dict(tiny.regions), "normalized")
    assert mm_per_unit("normalized", v) == pytest.approx(HEAD_HEIGHT_MM)
    m = mouth_motion(topo, 30)
    out = _write(tmp_path / "u.glb", m, topo)
    doc = read_glb(out)["json"]
    assert "scale" not in doc["nodes"][0] and doc["extras"]["units"] == "normalized"
    dec = decode_with_pygltflib(out)
    err = np.linalg.norm(dec["frames"] - m.vertices, axis=-1) * HEAD_HEIGHT_MM
    assert err.max() <= 1.0 and err[:, topo.region("lip")].max() <= 0.5


@pytest.mark.parametrize("make", [lambda: resolve_mesh("ict"), tiny_topology], ids=["ict", "tiny"])
def test_shipped_templates_face_plus_z_with_y_up(make):
    """The lips are below the upper face (+Y up) and in front of the head's middle (+Z forward)."""
    topo = make()
    lip, upper = topo.vertices[topo.region("lip")].mean(0), topo.vertices[topo.region("upper_face")].mean(0)
    middle = (topo.vertices.min(0) + topo.vertices.max(0)) / 2
    assert lip[1] < upper[1]
    assert lip[2] > middle[2]


def test_normal_deltas_fit_is_least_squares(ict):
    """The deltas solve the least-squares problem they claim to (sampled frames, weights as inputs)."""
    m = mouth_motion(ict, 30)
    basis = fit_basis(m.vertices, ict.vertices, mm=10.0, lip=ict.region("lip"))
    n0, dn = fit_normal_deltas(m.vertices, basis, ict.faces, samples=30)
    nc = NormalComputer(ict.faces, ict.num_vertices)
    target = np.stack([vertex_normals(nc, f) - n0 for f in m.vertices]).reshape(30, -1)
    resid = target - basis.weights @ dn.reshape(len(dn), -1)
    grad = basis.weights.T.astype(np.float64) @ resid  # zero at the least-squares solution
    assert np.abs(grad).max() < 1e-3 * np.abs(target).max() * 30


# ----------------------------------------------------------------------------- command line and audio


def test_animate_glb_writes_the_audio_beside_it(wav_file, tmp_path):
    wav = wav_file(0.6, "talk.wav")
    out = tmp_path / "out" / "face.glb"
    res = runner.invoke(app, ["animate", str(wav), "-m", "tiny", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    entry = json.loads(res.stdout)[0]
    assert entry["output"] == [str(out), str(out.with_suffix(".wav"))]
    data, sr = sf.read(out.with_suffix(".wav"), dtype="int16")
    orig, sr0 = sf.read(wav, dtype="int16")
    assert sr == sr0 and np.array_equal(data, orig)
    assert read_glb(out)["extras"]["audio"] == "face.wav"
    # the audio already sits beside the GLB under that name: left alone, not listed as written
    before = wav.read_bytes()
    res = runner.invoke(app, ["animate", str(wav), "-m", "tiny", "-o", str(tmp_path / "talk.glb"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["output"] == [str(tmp_path / "talk.glb")]
    assert wav.read_bytes() == before


def test_existing_wav_needs_force_and_nothing_is_written(wav_file, tmp_path):
    wav = wav_file(0.5)
    (tmp_path / "o.wav").write_bytes(b"mine")
    res = runner.invoke(app, ["animate", str(wav), "-m", "tiny", "-o", str(tmp_path / "o.glb")])
    assert res.exit_code == 1 and "o.wav already exists" in res.output
    assert not (tmp_path / "o.glb").exists() and (tmp_path / "o.wav").read_bytes() == b"mine"


def test_glb_options_on_the_command_line(wav_file, tmp_path):
    wav = wav_file(0.5)
    res = runner.invoke(app, ["animate", str(wav), "-m", "tiny", "-o", str(tmp_path / "a.glb"), "--glb-motion",
                              "per-frame", "-q"])
    assert res.exit_code == 0, res.output
    assert read_glb(tmp_path / "a.glb")["extras"]["motion"] == "per-frame"
    res = runner.invoke(app, ["animate", str(wav), "-m", "tiny", "-o", str(tmp_path / "b.glb"), "--glb-quantize", "-q"])
    assert res.exit_code == 0 and "KHR_mesh_quantization" in read_glb(tmp_path / "b.glb")["json"]["extensionsRequired"]
    for args in (["-o", str(tmp_path / "c.npy"), "--glb-quantize"],
                 ["-o", str(tmp_path / "d.glb"), "--glb-motion", "x"]):
        res = runner.invoke(app, ["animate", str(wav), "-m", "tiny", *args])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 1 and len(lines) == 1 and "glb" in lines[0].lower(), res.output
    assert not (tmp_path / "c.npy").exists() and not (tmp_path / "d.glb").exists()


def test_render_glb_with_audio(tmp_path, wav_file):
    topo = tiny_topology()
    mouth_motion(topo, 15).save(tmp_path / "m.npy")
    wav = wav_file(0.6)
    res = runner.invoke(app, ["render", str(tmp_path / "m.npy"), "-t", "tiny", "-a", str(wav),
                              "-o", str(tmp_path / "m.glb")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m.wav").exists() and read_glb(tmp_path / "m.glb")["extras"]["audio"] == "m.wav"


def test_write_glb_to_a_stream_reports_what_it_wrote(ict):
    m = mouth_motion(ict, 10)
    buf = io.BytesIO()
    options = GlbOptions(budget=ErrorBudget(rms_mm=1e-4, max_mm=1e-3, lip_max_mm=1e-3))
    summary = write_glb(buf, ict.vertices, ict.faces, m.vertices, m.fps, units="cm", lip=ict.region("lip"),
                        options=options)
    assert summary.bytes == len(buf.getvalue()) and summary.motion == "compact" and summary.targets == 3
    assert summary.error_mm["max_mm"] < 1e-3

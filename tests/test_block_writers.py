"""Outputs written as they are made (issue 14): the engine's vertex blocks and the block writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ptalker_cli.errors import MotionError, PtalkerError
from ptalker_cli.export.block_writers import FrameBlocks, write_motion_blocks, write_npy_blocks
from ptalker_cli.export.writers import write_obj_sequence, write_ply_sequence
from ptalker_cli.inference import Animator, tiny_model
from ptalker_cli.model import decoding
from ptalker_cli.model.decoding import StyleSpec, apply_head, decode_hidden
from ptalker_cli.model.vertex_blocks import iter_vertices


@pytest.fixture(scope="module")
def animator():
    return Animator(tiny_model())


def _blocks(stream) -> FrameBlocks:
    return FrameBlocks(stream.num_frames, stream.fps, stream.topology.name, stream.blocks, stream.meta)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_streamed_npy_equals_the_in_memory_motion_bit_for_bit(wav_file, tmp_path):
    animator = Animator(tiny_model())
    animator.block_frames = 16  # 3 s at 25 fps: 74 frames, five blocks
    wav = wav_file(3.0)
    whole = animator.animate(wav, subject="S2")
    stream = animator.animate_iter(wav, subject="S2")
    assert stream.num_frames == whole.motion.num_frames == 74
    out = tmp_path / "s.npy"
    assert write_npy_blocks(_blocks(stream), stream.topology, out) == [out, out.with_suffix(".json")]
    with open(out, "rb") as fh:
        assert np.lib.format.read_magic(fh) == (1, 0)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    assert shape == (74, 192, 3) and not fortran and dtype == np.dtype("<f4")
    loaded = np.load(out)
    assert np.array_equal(loaded, whole.motion.vertices)
    whole.motion.save(tmp_path / "m.npy")  # the in-memory writer
    assert out.read_bytes() == (tmp_path / "m.npy").read_bytes()
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads((tmp_path / "m.json").read_text())


def test_blocks_of_any_size_equal_the_whole_head(animator, wav_file):
    model = animator.model
    wave = torch.from_numpy(sf.read(wav_file(3.0), dtype="float32")[0])[None]
    feats = model.encode_speech(wave)
    tmpl = torch.from_numpy(model.topology.vertices)[None]
    hidden = decode_hidden(model, feats, StyleSpec())
    whole = apply_head(model, hidden, tmpl)
    assert torch.equal(whole, model.decode_motion(feats, tmpl, StyleSpec()))
    parts = list(iter_vertices(model, hidden, tmpl, block_frames=7))
    assert [p.shape[1] for p in parts[:2]] == [7, 7] and sum(p.shape[1] for p in parts) == hidden.shape[1]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-6)


def test_refinement_in_blocks_equals_one_block(animator, wav_file, monkeypatch):
    model = animator.model
    wave = torch.from_numpy(sf.read(wav_file(3.0), dtype="float32")[0])[None]
    feats = model.encode_speech(wave)
    one = decode_hidden(model, feats, StyleSpec(), refine_passes=1)
    # 74 frames: three blocks, the last one short; a multiple of E_G's own chunks (32 frames; 256 on
    # the fused path), as the default 512 is, so each frame's features are the same product
    monkeypatch.setattr(decoding, "REFINE_BLOCK_FRAMES", 32)
    many = decode_hidden(model, feats, StyleSpec(), refine_passes=1)
    assert one.shape[1] == 74 and torch.equal(many, one)


@pytest.mark.parametrize("fmt, writer", [("obj", write_obj_sequence), ("ply", write_ply_sequence)])
def test_streamed_frame_sequences_equal_the_in_memory_ones(animator, wav_file, tmp_path, fmt, writer):
    animator = Animator(animator.model)
    animator.block_frames = 4  # both ways
    wav = wav_file(1.2)
    whole = animator.animate(wav, subject="S1")
    writer(whole.motion, whole.topology, tmp_path / "whole")
    stream = animator.animate_iter(wav, subject="S1")
    write_motion_blocks(_blocks(stream), stream.topology, tmp_path / "streamed", fmt)
    names = _leftovers(tmp_path / "whole")
    assert len(names) == whole.motion.num_frames == 29 and _leftovers(tmp_path / "streamed") == names
    for name in names:
        assert (tmp_path / "streamed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def _bad_blocks(kind: str):
    good = np.zeros((5, 192, 3), np.float32)
    if kind == "nan":
        yield good
        yield np.full((5, 192, 3), np.nan, np.float32)
    elif kind == "interrupt":
        yield good
        raise KeyboardInterrupt
    elif kind == "short":
        yield good
    elif kind == "vertices":
        yield np.zeros((5, 100, 3), np.float32)


@pytest.mark.parametrize("fmt", ["npy", "obj", "ply"])
@pytest.mark.parametrize("kind, error", [("nan", MotionError), ("interrupt", KeyboardInterrupt),
                                         ("short", MotionError), ("vertices", MotionError)])
def test_a_failure_mid_stream_leaves_nothing(animator, tmp_path, fmt, kind, error):
    topo = animator.model.topology
    motion = FrameBlocks(10, 25.0, "tiny", _bad_blocks(kind))
    out = tmp_path / "outs" / ("m.npy" if fmt == "npy" else "seq")
    out.parent.mkdir()
    with pytest.raises(error) as exc:
        write_motion_blocks(motion, topo, out, fmt)
    if error is MotionError:
        assert "\n" not in str(exc.value)
    assert _leftovers(out.parent) == []  # no output, no sidecar, no temporary file or folder


def test_block_writers_refuse_whole_motion_formats_and_existing_outputs(animator, tmp_path):
    topo = animator.model.topology
    motion = FrameBlocks(5, 25.0, "tiny", iter([np.zeros((5, 192, 3), np.float32)]))
    with pytest.raises(PtalkerError, match="needs the whole motion"):
        write_motion_blocks(motion, topo, tmp_path / "m.glb")
    (tmp_path / "m.npy").write_bytes(b"old")
    with pytest.raises(PtalkerError, match="already exists"):
        write_motion_blocks(motion, topo, tmp_path / "m.npy")
    assert (tmp_path / "m.npy").read_bytes() == b"old"


@pytest.mark.system("egl")
def test_streamed_mp4_has_every_frame(animator, wav_file, tmp_path):
    import imageio_ffmpeg

    def frames(path) -> int:
        gen = imageio_ffmpeg.read_frames(str(path))
        next(gen)  # the stream's metadata
        return sum(1 for _ in gen)

    wav = wav_file(1.0)
    stream = animator.animate_iter(wav, subject="S1", block_frames=6)
    write_motion_blocks(_blocks(stream), stream.topology, tmp_path / "s.mp4")
    assert frames(tmp_path / "s.mp4") == stream.num_frames == 24
    stream = animator.animate_iter(wav, subject="S1", block_frames=5)
    write_motion_blocks(_blocks(stream), stream.topology, tmp_path / "a.mp4", audio=wav)
    assert frames(tmp_path / "a.mp4") == 25  # the audio sets the length: 1.0 s at 25 fps


@pytest.mark.parametrize("layers", [1, 2])
def test_motion_encoders_attention_at_inference_equals_the_masked_encoder(layers):
    """Inference runs the motion encoders' causal self-attention through scaled_dot_product_attention
    (no (T, T) mask or weights, so 10 minutes fit); it must equal the masked nn.TransformerEncoder."""
    from ptalker_cli.model.motion_encoders import CausalTransformer, causal_mask

    torch.manual_seed(layers)
    enc = CausalTransformer(32, 4, 48, layers, period=25, dropout=0.1).eval()
    x = torch.randn(2, 90, 32)
    with torch.no_grad():
        fast = enc(x)
    with torch.enable_grad():  # the training path: the masked encoder
        ref = enc.encoder(enc.ppe(x), mask=causal_mask(90).to(x.dtype), is_causal=True).detach()
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
    with torch.no_grad():  # and still causal: a change at frame 60 leaves frames < 60 alone
        y = x.clone()
        y[:, 60] += 1.0
        moved = enc(y)
    assert torch.equal(moved[:, :60], fast[:, :60]) and not torch.equal(moved[:, 60:], fast[:, 60:])

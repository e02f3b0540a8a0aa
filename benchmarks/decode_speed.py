"""Inference speed at the paper's BIWI size: frames per second and total time vs audio length.

Usage:  python benchmarks/decode_speed.py [--device cpu|cuda] [--seconds 5 10 20 60]
                                          [--speech-encoders tiny|large] [--threads N]
                                          [--chunk-seconds W [--chunk-context C]] [--stages all|blocks|hidden|encode]

The model is the ``biwi`` preset (23,370 vertices, d = 128, 6-layer decoder, GAT
encoder, both motion encoders, one refinement pass) with random weights. The speech
encoders are timed separately: ``tiny`` (default) uses small HuBERT/wav2vec2
configs so the figures isolate everything after them (graph encoder, motion
encoders, decoder, output head); ``large`` builds the real HuBERT-large and two
wav2vec2-large architectures from their configs (random weights, same compute).

Long audio goes through the speech encoders in windows (model/speech_chunks.py): by default
each kind's default window; ``--chunk-seconds 0`` encodes the whole audio at once (full context).
``--stages``: ``all`` (default) runs everything up to the (T, V, 3) vertices; ``blocks`` makes the same
vertices block by block and drops each block (what ``animate`` holds when it writes .npy / OBJ / PLY /
MP4 as the frames are made); ``hidden`` runs the
speech encoders and the decoder to its (T, d) hidden states without the output head (what holds
the whole vertex output is measured without it): all passes where ``decoding.decode_hidden``
exists (it decodes the refinement pass's motion in blocks), else the first pass only; ``encode`` only the
speech encoders. Peak resident memory is printed after each length (the process's peak so far:
give the lengths in increasing order, or one length per run).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptalker_cli.config import AudioEncoderConfig, preset, tiny_speech_encoder  # noqa: E402
from ptalker_cli.mesh import Topology  # noqa: E402
from ptalker_cli.model import decoding  # noqa: E402
from ptalker_cli.model.decoding import StyleSpec, _condition, autoregressive_pass  # noqa: E402
from ptalker_cli.model.network import build_model  # noqa: E402
from ptalker_cli.model.speech_chunks import chunking_from_options  # noqa: E402


def biwi_like_topology(num_vertices: int = 23370) -> Topology:
    """A triangulated grid with BIWI's vertex count (BIWI's own mesh cannot be shipped)."""
    cols = 150
    rows = int(np.ceil(num_vertices / cols))
    ys, xs = np.divmod(np.arange(rows * cols), cols)
    verts = np.stack([xs / cols, ys / rows, 0.1 * np.sin(xs / 20.0)], axis=-1)[:num_vertices]
    faces = []
    for r in range(rows - 1):
        for c in range(cols - 1):
            a, b, d, e = r * cols + c, r * cols + c + 1, (r + 1) * cols + c, (r + 1) * cols + c + 1
            if e < num_vertices:
                faces += [[a, b, e], [a, e, d]]
    lip = np.arange(0, 4996)
    return Topology("biwi-like", verts.astype(np.float32), np.array(faces), {"lip": lip}, "normalized")


def large_encoder(kind: str) -> AudioEncoderConfig:
    hf = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
              feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
              num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, vocab_size=32)
    return AudioEncoderConfig(kind=kind, hf_config=hf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, nargs="+", default=[5, 10, 20, 60])
    ap.add_argument("--speech-encoders", choices=["tiny", "large"], default="tiny")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--refine-passes", type=int, default=None)
    ap.add_argument("--chunk-seconds", type=float, default=None,
                    help="speech encoder window (default: each kind's; 0 = full context)")
    ap.add_argument("--chunk-context", type=float, default=None, help="context each side (default: window / 5)")
    ap.add_argument("--stages", choices=["all", "blocks", "hidden", "encode"], default="all")
    args = ap.parse_args()
    chunking = chunking_from_options(args.chunk_seconds, args.chunk_context)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    if args.speech_encoders == "tiny":
        content, styles = tiny_speech_encoder("hubert"), (tiny_speech_encoder("wav2vec2"),) * 2
    else:
        content, styles = large_encoder("hubert"), (large_encoder("wav2vec2"),) * 2
    cfg = preset("biwi", audio_content=content, audio_style=styles)
    if args.refine_passes is not None:
        cfg = cfg.replace(refine_passes=args.refine_passes)
    topo = biwi_like_topology(cfg.num_vertices)
    model = build_model(cfg, topo).to(dev).eval()
    with torch.no_grad():
        model.vertice_decoder.weight.normal_(0, 1e-3)
    n_params = sum(p.numel() for n, p in model.named_parameters()
                   if "audio_encoder" not in n and "audio_style.backbones" not in n)
    print(f"device: {dev} "
          f"({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"model: biwi preset, V={cfg.num_vertices}, d={cfg.feature_dim}, decoder layers={cfg.decoder_layers}, "
          f"GAT channels={cfg.gat_channels}, refine passes={cfg.refine_passes}, speech encoders={args.speech_encoders}")
    print(f"parameters outside the speech encoders: {n_params / 1e6:.2f} M")
    print(f"speech encoder windows: {'kind defaults' if chunking is None else chunking}; stages: {args.stages}; "
          f"peak resident after building: {peak_mib():.0f} MiB")
    spec = StyleSpec(model.one_hot(torch.tensor([0], device=dev)))
    tmpl = model.template[None]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    from ptalker_cli.model.graph_encoder import native_available
    from ptalker_cli.model.native_decoder import decoder_native_available

    native_decoder = decoder_native_available()
    native_gat = native_available()
    def decode(feats):
        if args.stages == "encode":
            return feats["audio_content"][:, :: model.k]
        if args.stages == "hidden":
            if decode_hidden is not None:  # every pass, refinement included, without the output head
                return decode_hidden(model, feats, spec)
            with torch.inference_mode():  # pass 1 only, to hidden states: nothing V-sized
                a = feats["audio_content"]
                cond = _condition(model, spec, feats["s_a"], 1, a)
                return autoregressive_pass(model, cond.expand(1, a.shape[1] // model.k, -1), a, True)
        if args.stages == "blocks":  # as `animate -o out.npy` runs it: the vertices made and dropped block by block
            from ptalker_cli.model.vertex_blocks import decode_blocks

            n, blocks = decode_blocks(model, feats, tmpl, spec)
            for block in blocks:
                del block
            return torch.empty(1, n, 0)
        return model.decode_motion(feats, tmpl, spec)

    decode_hidden = getattr(decoding, "decode_hidden", None)
    if args.stages == "hidden":
        print("hidden stage: " + ("decode_hidden (all passes, no output head)" if decode_hidden is not None else
                                  "decoder pass 1 only (no refinement pass, no output head)"))

    # warm-up
    decode(model.encode_speech(torch.randn(1, 16000, device=dev) * 0.1, chunking=chunking))
    print("times: median over repeats (best in brackets); peaks: resident so far after encoding / after the rest")
    print(f"{'audio s':>8} {'frames':>7} {'speech enc s':>13} {'after enc s':>21} {'total s':>9} "
          f"{'frames/s':>9} {'ms/frame':>9} {'peak enc MiB':>13} {'peak MiB':>9}")
    rows = []
    for seconds in args.seconds:
        audio = torch.randn(1, int(seconds * 16000), device=dev) * 0.1
        enc_t, dec_t = [], []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            feats = model.encode_speech(audio, chunking=chunking)
            sync()
            t1 = time.perf_counter()
            peak_enc = peak_mib()
            out = decode(feats)
            sync()
            t2 = time.perf_counter()
            enc_t.append(t1 - t0)
            dec_t.append(t2 - t1)
            del feats
        e, d = statistics.median(enc_t), statistics.median(dec_t)
        frames = out.shape[1]
        del out
        rows.append((seconds, d))
        best = f"{d:.3f} ({min(dec_t):.3f})"
        print(f"{seconds:8.1f} {frames:7d} {e:13.3f} {best:>21} {e + d:9.3f} {frames / (e + d):9.1f} "
              f"{1000 * d / frames:9.2f} {peak_enc:13.0f} {peak_mib():9.0f}", flush=True)
    if len(rows) >= 2:
        (s0, d0), (s1, d1) = rows[0], rows[-1]
        print(f"after-encoder time ratio {s1:.0f}s/{s0:.0f}s = {d1 / d0:.2f} "
              f"(length ratio {s1 / s0:.1f}: linear = same)")
    if dev.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")
    print(f"peak resident memory of this process: {peak_mib():.0f} MiB")
    print(f"native kernels: decoder {native_decoder}, graph encoder {native_gat}; load average {os.getloadavg()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs")


def peak_mib() -> float:
    """Peak resident memory of this process so far (MiB; ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()

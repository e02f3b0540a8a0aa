"""The fused native decode pass (ptalker_cli.model.native_decoder.decode_pass) against the PyTorch
cached step loop of decoding.autoregressive_pass, and the fallback when the kernel is disabled."""

import pytest
import torch
import torch.nn.functional as F

from ptalker_cli.model import native_decoder as native
from ptalker_cli.model.decoder import MotionDecoder
from ptalker_cli.model.decoding import autoregressive_pass

# the fused kernel needs a C compiler (tests/system.py): skipped where none, a failure in CI
needs_native = pytest.mark.system("native")


def torch_pass(dec, memory, token0, extra, w_fold, b_fold):
    """autoregressive_pass's PyTorch cached loop, verbatim."""
    state = dec.prepare(memory)
    b, t, d = extra.shape
    out = extra.new_empty(b, t, d)
    token = token0
    for i in range(t):
        h = dec.step(token, state)
        out[:, i: i + 1] = h
        if i + 1 < t:
            token = F.linear(h, w_fold, b_fold) + extra[:, i + 1: i + 2]
    return out


def make_case(d, heads, ffn, layers, k, batch, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dec = MotionDecoder(d, heads, ffn, layers, period=25, dropout=0.1, k=k).eval()
    with torch.no_grad():  # non-trivial biases / norms so every term is exercised
        for name, p in dec.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05, generator=g)
            elif "norm" in name:
                p.normal_(1, 0.1, generator=g)
    memory = torch.randn(batch, frames * k, d, generator=g)
    extra = 0.5 * torch.randn(batch, frames, d, generator=g)
    w_fold = 0.05 * torch.randn(d, d, generator=g)
    b_fold = 0.01 * torch.randn(d, generator=g)
    token0 = 0.1 * torch.randn(d, generator=g) + extra[:, :1]
    return dec, memory, token0, extra, w_fold, b_fold


CASES = [
    # d, heads, ffn, layers, k, batch, frames
    (16, 2, 32, 2, 1, 1, 40),
    (16, 2, 32, 2, 2, 2, 40),
    (12, 3, 20, 1, 3, 1, 30),  # widths that are not multiples of the vector length
    (128, 4, 256, 6, 2, 2, 300),  # paper's BIWI size, long enough for rounding to build up
    (128, 4, 256, 6, 1, 1, 60),
]


@needs_native
@pytest.mark.parametrize("d,heads,ffn,layers,k,batch,frames", CASES)
def test_native_pass_equals_torch_cached_pass(d, heads, ffn, layers, k, batch, frames):
    dec, memory, token0, extra, w_fold, b_fold = make_case(d, heads, ffn, layers, k, batch, frames)
    with torch.inference_mode():
        ref = torch_pass(dec, memory, token0, extra, w_fold, b_fold)
        out = native.decode_pass(dec, dec.prepare(memory), token0, extra, w_fold, b_fold)
    assert out is not None
    assert out.shape == ref.shape == (batch, frames, d) and out.dtype == torch.float32
    assert (out - ref).abs().max().item() <= 1e-5
    assert ref.abs().max() > 0.1  # non-degenerate


@needs_native
def test_native_pass_declines_what_it_does_not_cover():
    dec, memory, token0, extra, w_fold, b_fold = make_case(16, 2, 32, 2, 2, 1, 10)
    with torch.inference_mode():
        state = dec.prepare(memory)
        assert native.decode_pass(dec, state, token0, extra.double(), w_fold, b_fold) is None
        longer = torch.cat([extra, extra], 1)  # beyond the prepared length
        assert native.decode_pass(dec, state, token0, longer, w_fold, b_fold) is None
        dec.train()
        assert native.decode_pass(dec, state, token0, extra, w_fold, b_fold) is None
        dec.eval()
        assert native.decode_pass(dec, state, token0, extra, w_fold, b_fold) is not None


@needs_native
def test_weight_cache_follows_in_place_updates():
    dec, memory, token0, extra, w_fold, b_fold = make_case(16, 2, 32, 2, 2, 1, 12)
    with torch.inference_mode():
        a = native.decode_pass(dec, dec.prepare(memory), token0, extra, w_fold, b_fold)
    with torch.no_grad():
        dec.layers[1].linear2.weight.mul_(1.5)
    with torch.inference_mode():
        b = native.decode_pass(dec, dec.prepare(memory), token0, extra, w_fold, b_fold)
        ref = torch_pass(dec, memory, token0, extra, w_fold, b_fold)
    assert not torch.allclose(a, b)
    assert (b - ref).abs().max() <= 1e-5


def _decode_model():
    from ptalker_cli.inference import tiny_model

    m = tiny_model()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        m.vertice_encoder.weight.normal_(0, 0.05, generator=g)
        m.vertice_decoder.bias.normal_(0, 0.01, generator=g)
    return m, g


def test_ptalker_decode_native_and_fallback(monkeypatch):
    m, g = _decode_model()
    d, k = m.decoder.dim, m.k
    b, t = 2, 60
    extra = 0.3 * torch.randn(1, 1, d, generator=g).expand(b, t, d)  # expanded like generate's
    memory = torch.randn(b, t * k, d, generator=g)
    first = m.vertice_encoder.bias
    w_fold = m.vertice_encoder.weight @ m.vertice_decoder.weight
    b_fold = m.vertice_encoder.weight @ m.vertice_decoder.bias + m.vertice_encoder.bias
    with torch.inference_mode():
        ref = torch_pass(m.decoder, memory, first + extra[:, :1], extra, w_fold, b_fold)
        monkeypatch.setenv("PTALKER_NO_NATIVE", "1")
        fallback = autoregressive_pass(m, extra, memory, True)
        assert native.decode_pass(m.decoder, m.decoder.prepare(memory), first + extra[:, :1],
                                  extra, w_fold, b_fold) is None
        monkeypatch.delenv("PTALKER_NO_NATIVE")
        fast = autoregressive_pass(m, extra, memory, True)
    assert torch.equal(fallback, ref)  # disabled: exactly the PyTorch loop as before
    assert (fast - ref).abs().max() <= 1e-5
    if native.decoder_native_available():
        assert not torch.equal(fast, ref)  # (it did take the native path)


def test_ptalker_decode_with_autograd_uses_torch_loop():
    m, g = _decode_model()
    d, k = m.decoder.dim, m.k
    extra = 0.3 * torch.randn(1, 5, d, generator=g)
    memory = torch.randn(1, 5 * k, d, generator=g)
    m.train()
    m.decoder.eval()  # no dropout, but gradients are wanted
    out = autoregressive_pass(m, extra, memory, True)
    assert out.requires_grad  # the PyTorch loop ran (the kernel has no autograd)


@needs_native
def test_generate_native_matches_disabled(monkeypatch, tiny):
    audio = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    tmpl = tiny.template.unsqueeze(0)
    fast = tiny.generate(audio, tmpl)
    monkeypatch.setenv("PTALKER_NO_NATIVE", "1")
    slow = tiny.generate(audio, tmpl)
    assert fast.shape == slow.shape
    assert (fast - slow).abs().max() <= 1e-5

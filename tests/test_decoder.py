import math

import torch
from torch import nn

from ptalker_cli.model.decoder import (
    AlignedCrossAttention,
    MotionDecoder,
    alibi_slopes,
    alignment_mask,
    biased_causal_bias,
    periodic_positional_encoding,
)


def test_ppe_repeats_every_period_and_matches_sinusoid():
    pe = periodic_positional_encoding(80, 8, 25)
    torch.testing.assert_close(pe[0:25], pe[25:50])
    torch.testing.assert_close(pe[3:28], pe[53:78])
    # row 1, channel 0 = sin(1), channel 1 = cos(1); channel 2 = sin(1/10000^(2/8))
    assert math.isclose(pe[1, 0].item(), math.sin(1.0), rel_tol=1e-6)
    assert math.isclose(pe[1, 1].item(), math.cos(1.0), rel_tol=1e-6)
    assert math.isclose(pe[1, 2].item(), math.sin(1.0 / 10000 ** (2 / 8)), rel_tol=1e-6)
    # an offset continues the sequence
    torch.testing.assert_close(periodic_positional_encoding(5, 8, 25, offset=40), pe[40:45])


def test_alibi_slopes_and_bias_values():
    assert alibi_slopes(4) == [0.25, 0.0625, 0.015625, 0.00390625]
    assert len(alibi_slopes(6)) == 6
    bias = biased_causal_bias(4, 60, 60, period=25)
    assert bias.shape == (4, 60, 60)
    assert bias[0, 10, 11] == float("-inf")  # future blocked
    assert bias[0, 24, 0] == 0.0  # same second: no penalty
    assert bias[0, 25, 0] == -0.25  # one period back
    assert bias[1, 59, 0] == -0.0625 * 2  # floor(59/25) = 2 periods
    # the bias of a single cached query row equals the row of the full matrix
    torch.testing.assert_close(biased_causal_bias(4, 1, 51, 25, q_offset=50)[:, 0], bias[:, 50, :51])


def test_no_length_cap_in_bias():
    bias = biased_causal_bias(4, 1, 1001, 25, q_offset=1000)
    assert torch.isfinite(bias).all()
    assert bias[0, 0, 0] == -0.25 * 40


def test_alignment_mask_shape_and_pattern():
    m = alignment_mask(3, 6, 2)
    expected = torch.tensor(
        [[0, 0, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(m, expected)


def test_local_cross_attention_equals_masked_multihead_attention():
    torch.manual_seed(0)
    d, heads, k, t = 16, 4, 2, 7
    local = AlignedCrossAttention(d, heads)
    ref = nn.MultiheadAttention(d, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(local.in_proj_weight)
        ref.in_proj_bias.copy_(local.in_proj_bias)
        ref.out_proj.weight.copy_(local.out_proj.weight)
        ref.out_proj.bias.copy_(local.out_proj.bias)
    x = torch.randn(2, t, d)
    mem = torch.randn(2, k * t, d)
    mk, mv = local.memory_kv(mem, k)
    ours = local(x, mk, mv)
    theirs, _ = ref(x, mem, mem, attn_mask=alignment_mask(t, k * t, k))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_incremental_decoding_matches_full_pass():
    torch.manual_seed(1)
    dec = MotionDecoder(16, 4, 32, 3, period=25, dropout=0.1, k=2).eval()
    tokens, mem = torch.randn(2, 70, 16), torch.randn(2, 140, 16)
    full = dec(tokens, mem)
    state = dec.prepare(mem)
    steps = torch.cat([dec.step(tokens[:, i : i + 1], state) for i in range(70)], dim=1)
    assert (steps - full).abs().max() <= 1e-5
    assert state.caches[0].length == 70

"""Unit tests for ptalker_cli.model.losses on small hand-made tensors.

Expected values are computed by hand / in closed form in each test, never by calling
the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from ptalker_cli.model.losses import (
    CLUBEstimator,
    adversarial_loss,
    grad_reverse,
    infonce_loss,
    kl_loss,
    mi_upper_bound_loss,
    mouth_loss,
    orthogonality_loss,
    pool_to_length,
    reconstruction_loss,
    style_cosine_loss,
    topk_contrastive_loss,
    velocity_loss,
)

torch.manual_seed(0)


def close(actual, expected, tol=1e-5):
    expected = torch.as_tensor(expected, dtype=torch.float32)
    assert actual.dim() == 0
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


def assert_finite_grad(*ts):
    for t in ts:
        assert t.grad is not None
        assert torch.isfinite(t.grad).all()


# ---------------------------------------------------------------------------
# motion data: B=2, T=2, V=2; gt = 0, per-frame error norms 5, 3 | 13, 0
# ---------------------------------------------------------------------------


def motion_pair():
    pred = torch.zeros(2, 2, 2, 3)
    pred[0, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # |.| = 5
    pred[0, 1, 1] = torch.tensor([1.0, 2.0, 2.0])  # |.| = 3
    pred[1, 0, 0] = torch.tensor([5.0, 0.0, 0.0])
    pred[1, 0, 1] = torch.tensor([0.0, 12.0, 0.0])  # whole frame |.| = 13
    return pred, torch.zeros_like(pred)


def test_reconstruction_l2_hand():
    pred, gt = motion_pair()
    # seq0: (5 + 3)/2 = 4 ; seq1: (13 + 0)/2 = 6.5 ; mean = 5.25
    close(reconstruction_loss(pred, gt), 5.25)
    close(reconstruction_loss(pred, gt, form="l2"), 5.25)


def test_reconstruction_mse_hand():
    pred, gt = motion_pair()
    # squares: 9+16 + 1+4+4 + 25+144 = 203 over 2*2*2*3 = 24 entries
    close(reconstruction_loss(pred, gt, form="mse"), 203 / 24)


def test_reconstruction_mask():
    pred, gt = motion_pair()
    mask = torch.tensor([[True, True], [True, False]])
    close(reconstruction_loss(pred, gt, mask), (4 + 13) / 2)
    close(reconstruction_loss(pred, gt, mask, form="mse"), 203 / 18)
    # a sequence with no valid frame is skipped, not averaged in as 0
    mask2 = torch.tensor([[True, True], [False, False]])
    close(reconstruction_loss(pred, gt, mask2), 4.0)


def test_reconstruction_batch_of_one_and_translation():
    pred = torch.tensor([[[[3.0, 4.0, 0.0]]]])  # B=1, T=1, V=1
    close(reconstruction_loss(pred, torch.zeros_like(pred)), 5.0)
    close(reconstruction_loss(pred, torch.zeros_like(pred), form="mse"), 25 / 3)
    # absolute positions: adding the same template to both changes nothing
    tmpl = torch.tensor([10.0, -2.0, 7.0])
    close(reconstruction_loss(pred + tmpl, tmpl.expand_as(pred)), 5.0)


@pytest.mark.parametrize("form", ["l2", "mse"])
def test_reconstruction_identical_and_all_masked(form):
    x = torch.randn(2, 3, 4, 3, requires_grad=True)
    loss = reconstruction_loss(x, x.detach().clone(), form=form)
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(x)
    assert torch.count_nonzero(x.grad) == 0

    y = torch.randn(1, 3, 4, 3, requires_grad=True)
    loss = reconstruction_loss(y, torch.randn(1, 3, 4, 3), torch.zeros(1, 3, dtype=torch.bool), form=form)
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(y)


def test_reconstruction_shape_errors():
    with pytest.raises(ValueError):
        reconstruction_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError):
        reconstruction_loss(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError):
        reconstruction_loss(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 3), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        reconstruction_loss(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 3), form="l1")


# ---------------------------------------------------------------------------
# mouth
# ---------------------------------------------------------------------------


def test_mouth_selects_vertices_not_coordinates():
    pred = torch.zeros(1, 1, 3, 3)
    gt = torch.zeros_like(pred)
    pred[0, 0, 1] = torch.tensor([0.0, 0.0, 7.0])  # only vertex 1 is wrong
    close(mouth_loss(pred, gt, torch.tensor([1])), 7.0)
    close(mouth_loss(pred, gt, torch.tensor([0, 2])), 0.0)
    # the released code would index flattened coordinate 1 (= vertex 0, y), i.e. 0 here,
    # and coordinate 5 (= vertex 1, z) for id 5; vertex id 5 does not exist -> error
    with pytest.raises(ValueError):
        mouth_loss(pred, gt, torch.tensor([5]))
    with pytest.raises(ValueError):
        mouth_loss(pred, gt, torch.tensor([[1]]))
    # mse over the 3 coordinates of the one selected vertex
    close(mouth_loss(pred, gt, torch.tensor([1]), form="mse"), 49 / 3)


def test_mouth_hand_with_mask():
    pred = torch.zeros(1, 3, 3, 3)
    gt = torch.zeros_like(pred)
    pred[0, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # frame 0, lip vertex 0
    pred[0, 0, 1] = 100.0  # non-lip vertex
    pred[0, 1, 2] = torch.tensor([0.0, 6.0, 8.0])  # frame 1, lip vertex 2: 10
    pred[0, 2, 2] = 50.0  # frame 2 is padding
    lip = torch.tensor([2, 0])
    mask = torch.tensor([[True, True, False]])
    close(mouth_loss(pred, gt, lip, mask), (5 + 10) / 2)
    # mse: (9 + 16 + 36 + 64) / (2 frames * 2 vertices * 3)
    close(mouth_loss(pred, gt, lip, mask, form="mse"), 125 / 12)
    close(mouth_loss(pred, gt, lip, torch.zeros(1, 3, dtype=torch.bool)), 0.0)


# ---------------------------------------------------------------------------
# velocity
# ---------------------------------------------------------------------------


def test_velocity_hand():
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, 1, 0] = torch.tensor([3.0, 4.0, 0.0])
    pred[0, 2, 0] = torch.tensor([3.0, 4.0, 12.0])
    gt = torch.zeros_like(pred)
    # differences: (3,4,0) -> 5, (0,0,12) -> 12
    close(velocity_loss(pred, gt), 8.5)
    close(velocity_loss(pred, gt, form="mse"), (9 + 16 + 144) / 6)
    close(velocity_loss(pred, gt, torch.tensor([[True, True, False]])), 5.0)
    # a static offset has zero velocity error
    close(velocity_loss(gt + 3.0, gt), 0.0)


def test_velocity_short_and_masked():
    one = torch.randn(1, 1, 2, 3, requires_grad=True)
    loss = velocity_loss(one, torch.zeros(1, 1, 2, 3))
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(one)
    # non-contiguous mask: no pair of consecutive valid frames -> 0
    x = torch.randn(1, 3, 2, 3)
    close(velocity_loss(x, torch.zeros_like(x), torch.tensor([[True, False, True]])), 0.0)
    # a sequence with 1 valid frame contributes nothing to the mean over sequences
    pred = torch.zeros(2, 2, 1, 3)
    pred[0, 1, 0] = torch.tensor([0.0, 3.0, 4.0])
    pred[1, 1, 0] = 100.0
    mask = torch.tensor([[True, True], [True, False]])
    close(velocity_loss(pred, torch.zeros_like(pred), mask), 5.0)
    close(velocity_loss(pred, torch.zeros_like(pred), torch.zeros(2, 2, dtype=torch.bool), form="mse"), 0.0)


# ---------------------------------------------------------------------------
# gradient reversal + adversarial
# ---------------------------------------------------------------------------


def test_grad_reverse():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    torch.testing.assert_close(y, torch.tensor([1.0, 2.0]))
    (y * torch.tensor([3.0, 4.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-1.5, -2.0]))

    x2 = torch.tensor([1.0, -1.0], requires_grad=True)
    (grad_reverse(x2) ** 2).sum().backward()  # d/dx x^2 = 2x, reversed
    torch.testing.assert_close(x2.grad, torch.tensor([-2.0, 2.0]))


def test_adversarial_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    ce0 = math.log(3.0)
    ce1 = math.log(math.e + 2.0) - 1.0
    close(adversarial_loss(logits, torch.tensor([2, 0])), (ce0 + ce1) / 2)
    close(adversarial_loss(logits, torch.tensor([-1, 0])), ce1)
    close(adversarial_loss(logits[1:], torch.tensor([0])), ce1)  # batch of one


def test_adversarial_all_ignored_and_grl_sign():
    feat = torch.tensor([[1.0, 2.0]], requires_grad=True)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = adversarial_loss(grad_reverse(feat) @ w, torch.tensor([-1]))
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(feat)

    feat.grad = None
    w.grad = None
    loss = adversarial_loss(grad_reverse(feat) @ w, torch.tensor([0]))
    loss.backward()
    # CE gradient w.r.t. logits: softmax - onehot; logits = feat (w = I)
    p = torch.softmax(torch.tensor([1.0, 2.0]), 0)
    g_logits = p - torch.tensor([1.0, 0.0])
    torch.testing.assert_close(feat.grad, -g_logits.unsqueeze(0))  # reversed
    torch.testing.assert_close(w.grad, torch.outer(torch.tensor([1.0, 2.0]), g_logits))  # not reversed


# ---------------------------------------------------------------------------
# style cosine
# ---------------------------------------------------------------------------


def test_style_cosine_hand():
    s_a = torch.tensor([[1.0, 0.0]])
    s_m = torch.tensor([[0.0, 1.0]])
    s_p = torch.tensor([[1.0, 1.0]])
    r = 1 / math.sqrt(2)
    # 1*(1-0) + 2*(1-r) + 3*(1-r)
    close(style_cosine_loss(s_a, s_m, s_p, weights=(1.0, 2.0, 3.0)), 1 + 5 * (1 - r))
    close(style_cosine_loss(s_a, s_m, s_p), 1 + 2 * (1 - r))
    # None skips the terms that use it
    close(style_cosine_loss(s_a, s_m, None, weights=(1.0, 2.0, 3.0)), 1.0)
    close(style_cosine_loss(None, s_m, s_p, weights=(1.0, 2.0, 3.0)), 3 * (1 - r))
    close(style_cosine_loss(s_a, None, None), 0.0)
    # batch mean: second row identical everywhere -> 0
    two = lambda a, b: torch.cat([a, b])  # noqa: E731
    same = torch.tensor([[2.0, 5.0]])
    close(style_cosine_loss(two(s_a, same), two(s_m, same), two(s_p, same * 3)), (1 + 2 * (1 - r)) / 2)


def test_style_cosine_identical_zero_grad_finite():
    s = torch.randn(3, 4, requires_grad=True)
    loss = style_cosine_loss(s, s * 2, s * 0.5)
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(s)


# ---------------------------------------------------------------------------
# pooling + orthogonality
# ---------------------------------------------------------------------------


def test_pool_to_length_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1)
    torch.testing.assert_close(pool_to_length(x, 2).flatten(), torch.tensor([1.5, 3.5]))
    torch.testing.assert_close(pool_to_length(x, 3).flatten(), torch.tensor([1.5, 2.5, 3.5]))
    torch.testing.assert_close(pool_to_length(x, 4), x)
    up = torch.tensor([1.0, 2.0]).view(1, 2, 1)
    torch.testing.assert_close(pool_to_length(up, 4).flatten(), torch.tensor([1.0, 1.0, 2.0, 2.0]))
    padded = torch.tensor([1.0, 2.0, 9.0, 9.0]).view(1, 4, 1)
    m = torch.tensor([[True, True, False, False]])
    torch.testing.assert_close(pool_to_length(padded, 4, m).flatten(), torch.tensor([1.0, 1.0, 2.0, 2.0]))
    torch.testing.assert_close(pool_to_length(padded, 2, torch.zeros(1, 4, dtype=torch.bool)), torch.zeros(1, 2, 1))


def test_orthogonality_hand():
    C = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, F=2, Dc=2): C^T = I
    S = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # P = S
    close(orthogonality_loss(C, S), math.sqrt(30.0))
    close(orthogonality_loss(C, S, form="norm"), math.sqrt(30.0))
    # P P^T - I = [[4, 11], [11, 24]]
    close(orthogonality_loss(C, S, form="procrustes"), math.sqrt(16 + 121 + 121 + 576))
    # style of length 1 is upsampled to 2 frames: S = [[2,3],[2,3]] -> P = S
    S1 = torch.tensor([[[2.0, 3.0]]])
    close(orthogonality_loss(C, S1), math.sqrt(26.0))
    # batch mean over items: (sqrt(30) + 0) / 2
    close(orthogonality_loss(torch.cat([C, C]), torch.cat([S, torch.zeros_like(S)])), math.sqrt(30.0) / 2)


def test_orthogonality_zero_and_procrustes_difference():
    C = torch.tensor([[[1.0], [-1.0]]])
    S = torch.tensor([[[1.0], [1.0]]])  # sum_t c_t s_t = 0 -> P = 0
    close(orthogonality_loss(C, S), 0.0)
    close(orthogonality_loss(C, S, form="procrustes"), 1.0)  # ||0 - I_1||
    # orthonormal P -> procrustes is 0, norm is sqrt(Dc)
    I2 = torch.eye(2).unsqueeze(0)
    close(orthogonality_loss(I2, I2, form="procrustes"), 0.0)
    close(orthogonality_loss(I2, I2), math.sqrt(2.0))


def test_orthogonality_mask():
    C = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]]])
    S = torch.tensor([[[2.0, 3.0], [5.0, 5.0]]])
    cm = torch.tensor([[True, True, False]])
    sm = torch.tensor([[True, False]])
    close(orthogonality_loss(C, S, content_mask=cm, style_mask=sm), math.sqrt(26.0))
    close(orthogonality_loss(C, S, content_mask=torch.zeros(1, 3, dtype=torch.bool)), 0.0)


# ---------------------------------------------------------------------------
# InfoNCE
# ---------------------------------------------------------------------------


def test_infonce_hand():
    content = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]])  # means (1,0), (0,2)
    style = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # (1,0), (1,1)
    r = 1 / math.sqrt(2)
    # cos = [[1, r], [0, r]], tau = 0.5 -> logits [[2, 2r], [0, 2r]]
    l0 = -2 + math.log(math.exp(2) + math.exp(2 * r))
    l1 = -2 * r + math.log(1 + math.exp(2 * r))
    close(infonce_loss(content, style, temperature=0.5), (l0 + l1) / 2)


def test_infonce_batch_one_is_zero_with_zero_grad():
    c = torch.randn(1, 5, 4, requires_grad=True)
    s = torch.randn(1, 3, 4, requires_grad=True)
    loss = infonce_loss(c, s)
    close(loss, 0.0)
    loss.backward()
    assert torch.count_nonzero(c.grad) == 0 and torch.count_nonzero(s.grad) == 0


def test_infonce_mask():
    content = torch.tensor([[[2.0, 0.0], [0.0, 9.0]], [[0.0, 1.0], [0.0, 3.0]]])
    cm = torch.tensor([[True, False], [True, True]])
    style = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    r = 1 / math.sqrt(2)
    l0 = -2 + math.log(math.exp(2) + math.exp(2 * r))
    l1 = -2 * r + math.log(1 + math.exp(2 * r))
    close(infonce_loss(content, style, temperature=0.5, content_mask=cm), (l0 + l1) / 2)
    # dropping sample 1 entirely leaves B = 1 -> 0
    cm2 = torch.tensor([[True, False], [False, False]])
    close(infonce_loss(content, style, temperature=0.5, content_mask=cm2), 0.0)


# ---------------------------------------------------------------------------
# CLUB
# ---------------------------------------------------------------------------


def identity_club():
    """q(y|x) = N(x, I): mean = relu(x) - relu(-x) = x, logvar = tanh(0) = 0."""
    club = CLUBEstimator(2, 2, hidden_size=4)
    with torch.no_grad():
        club.p_mu[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
        club.p_mu[0].bias.zero_()
        club.p_mu[2].weight.copy_(torch.tensor([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]]))
        club.p_mu[2].bias.zero_()
        club.p_logvar[2].weight.zero_()
        club.p_logvar[2].bias.zero_()
    return club


def test_club_bound_closed_form():
    club = identity_club()
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # y = x: positive 0; negative_i = -1/2 mean_j |x_j - x_i|^2 = -5/6, -1, -3/2
    close(club(x, x.clone()), (5 / 6 + 1 + 3 / 2) / 3)
    close(mi_upper_bound_loss(club, x, x.clone()), 10 / 9)
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # positive: -1/2 * (1, 1, 4); mean_j |y_j - x_i|^2 = 1, 2/3, 11/3
    pos = [-0.5, -0.5, -2.0]
    neg = [-0.5, -1 / 3, -11 / 6]
    close(club(x, y), sum(p - n for p, n in zip(pos, neg)) / 3)
    # log-likelihood: -1/2 |y - x|^2 - (Dy/2) log(2 pi), averaged
    close(club.log_likelihood(x, y), (-0.5 - 0.5 - 2.0) / 3 - math.log(2 * math.pi))
    close(club.learning_loss(x, y), (0.5 + 0.5 + 2.0) / 3 + math.log(2 * math.pi))


def test_club_sequences_masks_and_small_n():
    club = identity_club()
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    seq_x = torch.zeros(1, 4, 2)
    seq_x[0, :3] = x
    seq_x[0, 3] = 50.0  # padding
    mask = torch.tensor([[True, True, True, False]])
    close(club(seq_x, seq_x.clone(), mask), 10 / 9)
    one = torch.randn(1, 2, requires_grad=True)
    loss = club(one, one * 2)
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(one)
    close(club(seq_x, seq_x, torch.zeros(1, 4, dtype=torch.bool)), 0.0)


def test_club_learning_loss_detaches_inputs_and_trains_q():
    torch.manual_seed(1)
    club = CLUBEstimator(3, 2, hidden_size=8)
    x = torch.randn(6, 3, requires_grad=True)
    y = torch.randn(6, 2, requires_grad=True)
    club.learning_loss(x, y).backward()
    assert x.grad is None and y.grad is None
    assert club.p_mu[0].weight.grad is not None
    club.zero_grad()
    club(x, y).backward()
    assert_finite_grad(x, y)


# ---------------------------------------------------------------------------
# top-k contrastive
# ---------------------------------------------------------------------------


def topk_case1():
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # cos = [[1,0,-1],[0,1,0],[-1,0,1]]
    return f, f.clone()


def test_topk_hand_symmetric():
    a, c = topk_case1()
    e = math.e
    # k = 1: every row's hardest negative is 0 -> -1.5 log(e / (e + 0.7))
    v1 = 1.5 * (math.log(e + 0.7) - 1)
    close(topk_contrastive_loss(a, c, k=1, temperature=1.0), v1)
    # k = None, L = 3: round(0.45) = 0 -> max(1, 0) = 1
    close(topk_contrastive_loss(a, c, temperature=1.0), v1)
    # k = 2: rows 0, 2 negatives {0, -1}; row 1 negatives {0, 0}
    r02 = math.log(e + 0.7 * (1 + 1 / e)) - 1
    r1 = math.log(e + 1.4) - 1
    v2 = 1.5 * (2 * r02 + r1) / 3
    close(topk_contrastive_loss(a, c, k=2, temperature=1.0), v2)
    close(topk_contrastive_loss(a, c, k=10, temperature=1.0), v2)  # capped at L - 1
    close(topk_contrastive_loss(a, c, k_ratio=0.7, temperature=1.0), v2)  # round(2.1) = 2


def test_topk_hand_asymmetric_lambda_and_temperature():
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    c = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    # E = a c^T / tau = [[1, 1], [0, 0]] / tau
    tau = 0.5
    e2 = math.exp(2.0)
    l_ac = [math.log(1.7), math.log(1.7)]  # row0: pos 2, neg 2 ; row1: pos 0, neg 0
    l_ca = [math.log((e2 + 0.7) / e2), math.log(1 + 0.7 * e2)]  # E^T = [[2, 0], [2, 0]]
    lam = 0.25
    expected = 1.5 * sum(lam * p + (1 - lam) * q for p, q in zip(l_ac, l_ca)) / 2
    close(topk_contrastive_loss(a, c, lam=lam, temperature=tau), expected)
    # learnable (tensor) temperature works and receives a gradient
    t = torch.tensor(tau, requires_grad=True)
    loss = topk_contrastive_loss(a, c, lam=lam, temperature=t)
    close(loss, expected)
    loss.backward()
    assert_finite_grad(t)


def test_topk_batch_mean_over_queries_and_mask():
    a1, c1 = topk_case1()
    a2 = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # frame 2 is padding
    c2 = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [-2.0, 7.0]]])
    a = torch.cat([a1, a2])
    c = torch.cat([c1, c2])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    e = math.e
    v1 = 1.5 * (math.log(e + 0.7) - 1)  # per query, seq 1 (k = 1)
    # seq 2 at tau = 1, lam = 0.5: E = [[1, 1], [0, 0]]
    q2 = [
        0.5 * math.log(1.7) + 0.5 * (math.log(e + 0.7) - 1),
        0.5 * math.log(1.7) + 0.5 * math.log(1 + 0.7 * e),
    ]
    expected = (3 * v1 + 1.5 * sum(q2)) / 5
    close(topk_contrastive_loss(a, c, mask, k=1, temperature=1.0), expected)


def test_topk_short_sequences_zero():
    x = torch.randn(1, 1, 4, requires_grad=True)
    loss = topk_contrastive_loss(x, torch.randn(1, 1, 4))
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(x)
    y = torch.randn(2, 3, 4)
    m = torch.tensor([[True, False, False], [False, False, False]])
    close(topk_contrastive_loss(y, y, m), 0.0)
    # a 1-frame sequence next to a 3-frame one contributes nothing
    a1, c1 = topk_case1()
    a = torch.cat([a1, torch.randn(1, 3, 2)])
    c = torch.cat([c1, torch.randn(1, 3, 2)])
    m2 = torch.tensor([[True, True, True], [True, False, False]])
    close(topk_contrastive_loss(a, c, m2, k=1, temperature=1.0), 1.5 * (math.log(math.e + 0.7) - 1))


def test_topk_nonnegative_and_stable():
    a = torch.randn(2, 9, 5) * 100
    loss = topk_contrastive_loss(a, a + 0.01 * torch.randn(2, 9, 5), temperature=1e-3)
    assert torch.isfinite(loss) and loss >= 0


# ---------------------------------------------------------------------------
# KL
# ---------------------------------------------------------------------------


def test_kl_hand():
    audio = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # dim0: mu 1, var 2 ; dim1: mu 2, var 2
    content = torch.tensor([[[1.0, 1.0], [5.0, 3.0]]])  # dim0: mu 3, var 8 ; dim1 identical
    close(kl_loss(audio, content, eps=0.0), 0.5 * (math.log(4.0) + 6 / 8 - 1))
    e = 1e-6
    close(kl_loss(audio, content), 0.5 * (math.log((8 + e) / (2 + e)) + (2 + e + 4) / (8 + e) - 1))
    # mean over sequences, identical second sequence adds 0
    close(kl_loss(torch.cat([audio, audio]), torch.cat([content, audio]), eps=0.0), 0.5 * (math.log(4.0) - 0.25) / 2)


def test_kl_mask_and_short():
    audio = torch.tensor([[[0.0], [2.0], [100.0]], [[1.0], [-4.0], [6.0]]])
    content = torch.tensor([[[1.0], [5.0], [-100.0]], [[3.0], [3.0], [3.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])  # seq 1 has 1 frame: skipped
    close(kl_loss(audio, content, mask, eps=0.0), 0.5 * (math.log(4.0) - 0.25))
    x = torch.randn(2, 3, 4, requires_grad=True)
    loss = kl_loss(x, torch.randn(2, 3, 4), torch.tensor([[True, False, False], [False, False, False]]))
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(x)
    single = torch.randn(1, 1, 4)
    close(kl_loss(single, single + 1), 0.0)


def test_kl_identical_and_constant_features():
    x = torch.randn(3, 5, 4, requires_grad=True)
    loss = kl_loss(x, x.detach().clone())
    close(loss, 0.0)
    loss.backward()
    assert_finite_grad(x)
    const = torch.ones(1, 4, 2)  # zero variance, kept finite by eps
    assert torch.isfinite(kl_loss(const, const * 2))


# ---------------------------------------------------------------------------
# cross-cutting: padding invariance, gradients, autocast
# ---------------------------------------------------------------------------


def _all_losses(T_extra: int):
    """Each loss on a fixed batch-of-one input, optionally with T_extra random padding frames."""
    g = torch.Generator().manual_seed(3)
    T, V, D = 4, 3, 5
    pred = torch.randn(1, T, V, 3, generator=g)
    gt = torch.randn(1, T, V, 3, generator=g)
    fa = torch.randn(1, T, D, generator=g)
    fc = torch.randn(1, T, D, generator=g)
    fs = torch.randn(1, T + 2, D, generator=g)
    pad = lambda t, n: torch.cat([t, 10 * torch.randn(t.shape[0], n, *t.shape[2:])], 1)  # noqa: E731
    m = torch.ones(1, T + T_extra, dtype=torch.bool)
    m[:, T:] = False
    ms = torch.ones(1, T + 2 + T_extra, dtype=torch.bool)
    ms[:, T + 2 :] = False
    pred, gt, fa, fc = (pad(t, T_extra) for t in (pred, gt, fa, fc))
    fs = pad(fs, T_extra)
    lip = torch.tensor([0, 2])
    club = identity_club()
    return {
        "rec": reconstruction_loss(pred, gt, m),
        "rec_mse": reconstruction_loss(pred, gt, m, form="mse"),
        "mouth": mouth_loss(pred, gt, lip, m),
        "vel": velocity_loss(pred, gt, m),
        "vel_mse": velocity_loss(pred, gt, m, form="mse"),
        "orth": orthogonality_loss(fc, fs, content_mask=m, style_mask=ms),
        "orth_p": orthogonality_loss(fc, fs, form="procrustes", content_mask=m, style_mask=ms),
        "topk": topk_contrastive_loss(fa, fc, m),
        "kl": kl_loss(fa, fc, m),
        "club": club(fa[..., :2], fc[..., :2], m),
    }


def test_padding_never_changes_a_loss():
    base = _all_losses(0)
    padded = _all_losses(3)
    for name in base:
        torch.testing.assert_close(padded[name], base[name], msg=name)


def test_gradients_finite_random_inputs():
    pred = torch.randn(2, 5, 4, 3, requires_grad=True)
    gt = torch.randn(2, 5, 4, 3)
    fa = torch.randn(2, 5, 6, requires_grad=True)
    fc = torch.randn(2, 5, 6, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    total = (
        reconstruction_loss(pred, gt, mask)
        + mouth_loss(pred, gt, torch.tensor([1, 3]), mask)
        + velocity_loss(pred, gt, mask)
        + orthogonality_loss(fa, fc, content_mask=mask, style_mask=mask)
        + infonce_loss(fa, fc, content_mask=mask, style_mask=mask)
        + topk_contrastive_loss(fa, fc, mask)
        + kl_loss(fa, fc, mask)
    )
    assert torch.isfinite(total)
    total.backward()
    assert_finite_grad(pred, fa, fc)


def test_autocast_bfloat16_inputs_computed_in_float32():
    a = torch.randn(1, 6, 8).to(torch.bfloat16)
    c = torch.randn(1, 6, 8).to(torch.bfloat16)
    p = torch.randn(1, 6, 4, 3).to(torch.bfloat16)
    g = torch.randn(1, 6, 4, 3).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [
            reconstruction_loss(p, g),
            velocity_loss(p, g),
            orthogonality_loss(a, c),
            topk_contrastive_loss(a, c),
            kl_loss(a, c),
        ]
    want = [
        reconstruction_loss(p.float(), g.float()),
        velocity_loss(p.float(), g.float()),
        orthogonality_loss(a.float(), c.float()),
        topk_contrastive_loss(a.float(), c.float()),
        kl_loss(a.float(), c.float()),
    ]
    for x, y in zip(got, want):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x, y)


# ----------------------------------------------------------------------- documented weights
def _doc_value(text: str):
    text = text.strip().strip("`")
    try:
        return float(text)
    except ValueError:
        return text


def _preset_values():
    import dataclasses

    from ptalker_cli.config import LossConfig, released_loss_config

    return dataclasses.asdict(LossConfig()), dataclasses.asdict(released_loss_config())


def test_docs_model_loss_table_lists_both_presets():
    """docs/model.md's Losses table: every LossConfig field once, with the default and released values."""
    from pathlib import Path

    default, released = _preset_values()
    text = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text()
    section = text.split("## Losses", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1].startswith("`") and cells[1].strip("`") in default:
            field = cells[1].strip("`")
            assert field not in rows, f"{field} listed twice"
            rows[field] = (_doc_value(cells[3]), _doc_value(cells[4]))
    assert sorted(rows) == sorted(default), "fields missing from or unknown to the docs/model.md table"
    for field, (doc_default, doc_released) in rows.items():
        assert (doc_default, doc_released) == (default[field], released[field]), field


def test_loss_config_docstring_lists_both_presets():
    from ptalker_cli.config import LossConfig

    default, released = _preset_values()
    block = LossConfig.__doc__.split("field       default  released", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in block.strip().splitlines():
        field, doc_default, doc_released = line.split()
        rows[field] = (_doc_value(doc_default), _doc_value(doc_released))
    weights = [f for f in default if f not in ("orth_form", "grl_alpha", "info_temperature", "kl_eps",
                                               "lip_closure_threshold", "lip_closure_tolerance")
               and not (f.startswith("topk_"))]
    assert sorted(rows) == sorted(weights)
    for field, values in rows.items():
        assert values == (default[field], released[field]), field
    hyper = [f for f in default if f not in weights]
    assert {f: default[f] for f in hyper} == {f: released[f] for f in hyper}  # "the same in both"

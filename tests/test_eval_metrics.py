"""The metric functions against values computed by hand, invariances, truncation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptalker_cli.eval import metrics as M
from ptalker_cli.eval.protocol import aggregate, score_sequence
from ptalker_cli.eval.regions import Region


def _zeros(t, v=3):
    return np.zeros((t, v, 3))


# --------------------------------------------------------------------------- LVE


def test_lve_is_max_over_lip_vertices_of_squared_error():
    gt = _zeros(2)
    pred = _zeros(2)
    pred[0, 0] = (1, 0, 0)  # sq 1
    pred[0, 1] = (0, 2, 0)  # sq 4
    pred[0, 2] = (0, 0, 3)  # sq 9 (outside the lip region below)
    pred[1, 0] = (1, 1, 0)  # sq 2
    np.testing.assert_allclose(M.lve_per_frame(pred, gt, [0, 1]), [4.0, 2.0])
    assert M.lve(pred, gt, [0, 1]) == pytest.approx(3.0)  # mean over frames of the max
    assert M.lve(pred, gt, [0, 1, 2]) == pytest.approx((9.0 + 2.0) / 2)
    # repeated ids (VOCASET lists have repeats) change nothing
    assert M.lve(pred, gt, [1, 0, 1, 0]) == pytest.approx(3.0)


def test_lve_pooled_weighs_frames_not_sequences():
    lip = [0]
    a_gt, a_pred = _zeros(1, 1), _zeros(1, 1)
    a_pred[0, 0] = (2, 0, 0)  # one frame, error 4 -> LVE 4
    b_gt, b_pred = _zeros(3, 1), _zeros(3, 1)
    b_pred[:, 0] = (1, 0, 0)  # three frames, error 1 -> LVE 1
    pooled = M.lve_pooled([(a_pred, a_gt), (b_pred, b_gt)], lip)
    assert pooled == pytest.approx((4 + 1 + 1 + 1) / 4)  # 1.75
    per_seq = np.mean([M.lve(a_pred, a_gt, lip), M.lve(b_pred, b_gt, lip)])
    assert per_seq == pytest.approx(2.5)
    # the protocol's aggregate reports the same two numbers
    rows = [score_sequence(n, "s", p, g, np.zeros((1, 3)), Region("lip", np.array(lip), "t"),
                           Region("upper_face", None, "none"), seen=True, condition="s")[0]
            for n, p, g in (("a", a_pred, a_gt), ("b", b_pred, b_gt))]
    agg = aggregate(rows)
    assert agg["lve"] == pytest.approx(1.75)
    assert agg["lve_sequence_mean"] == pytest.approx(2.5)
    assert agg["fdd"] is None


# --------------------------------------------------------------------------- FDD


def test_fdd_signed_by_hand():
    template = np.zeros((3, 3))
    gt = _zeros(2)
    gt[1, 0] = (1, 0, 0)  # |d|^2 over time: [0, 1] -> population std 0.5
    gt[1, 1] = (0, 2, 0)  # [0, 4] -> std 2
    gt[:, 2] = (5, 0, 0)  # outside the region
    pred = _zeros(2)
    pred[:, 1] = (1, 0, 0)  # static -> std 0
    upper = [0, 1]
    assert M.dynamics(gt, template, upper) == pytest.approx(1.25)
    assert M.dynamics(pred, template, upper) == pytest.approx(0.0)
    assert M.fdd(pred, gt, template, upper) == pytest.approx(1.25)  # prediction less dynamic: positive
    assert M.fdd(gt, pred, template, upper) == pytest.approx(-1.25)
    assert M.fdd_mean([1.25, -1.25]) == pytest.approx(0.0)  # signed: opposite errors cancel
    assert M.fdd_abs_mean([1.25, -1.25]) == pytest.approx(1.25)


def test_fdd_uses_population_std_of_squared_norm():
    template = np.zeros((1, 3))
    m = np.zeros((3, 1, 3))
    m[:, 0, 0] = [0, 1, 2]  # squared norms 0, 1, 4 (mean 5/3)
    assert M.dynamics(m, template, [0]) == pytest.approx(math.sqrt(78 / 27))  # ddof 0, not sqrt(78/18)
    # displacement is measured from the template
    shifted = m + np.array([0, 0, 1.0])
    assert M.dynamics(shifted, template + np.array([0, 0, 1.0]), [0]) == pytest.approx(math.sqrt(78 / 27))


@pytest.mark.parametrize("c", [0.0, 0.5, 2.0])
def test_fdd_of_a_constant_offset_prediction_closed_form(c):
    # GT displacement a_t * e with a = [0, 1]; prediction = GT + c * e.
    # dyn(GT) = std([0, 1]) = 1/2; dyn(pred) = std([c^2, (1 + c)^2]) = (1 + 2c)/2  =>  FDD = -c
    e = np.array([0.0, 1.0, 0.0])
    template = np.array([[0.3, -0.2, 0.1]])
    gt = template[None] + np.array([0.0, 1.0])[:, None, None] * e
    pred = gt + c * e
    assert M.fdd(pred, gt, template, [0]) == pytest.approx(-c)


# --------------------------------------------------------------------------- MVE and invariances


def test_mve_is_mean_norm_not_squared():
    gt = _zeros(1, 2)
    pred = _zeros(1, 2)
    pred[0, 0] = (0, 3, 4)  # norm 5
    assert M.mve(pred, gt) == pytest.approx(2.5)


def test_identical_prediction_gives_zero():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(7, 20, 3))
    template = rng.normal(size=(20, 3))
    assert M.lve(gt, gt, range(10)) == 0.0
    assert M.mve(gt, gt) == 0.0
    assert M.fdd(gt.copy(), gt, template, range(10, 20)) == 0.0


def test_rigid_offset():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(5, 12, 3))
    o = np.array([0.1, -0.2, 0.2])  # |o| = 0.3
    pred = gt + o
    assert M.lve(pred, gt, [0, 3, 7]) == pytest.approx(0.09)
    assert M.mve(pred, gt) == pytest.approx(0.3)
    # a static GT (= template) and a rigidly offset static prediction: no dynamics on either side
    template = gt[0]
    static = np.repeat(template[None], 5, axis=0)
    assert M.fdd(static + o, static, template, range(12)) == pytest.approx(0.0)


def test_accepts_flat_layout_and_torch():
    rng = np.random.default_rng(2)
    gt = rng.normal(size=(4, 6, 3))
    pred = gt + 0.5
    flat = pred.reshape(4, 18)
    assert M.mve(flat, gt) == pytest.approx(M.mve(pred, gt))
    assert M.lve(torch.from_numpy(pred).float(), torch.from_numpy(gt).float(), torch.tensor([1, 2])) == \
        pytest.approx(M.lve(pred, gt, [1, 2]), rel=1e-6)


def test_training_validation_lve_is_the_evaluation_lve():
    """One lip-sync metric: the validation pass of ``ptalker train`` pools eval.metrics' per-frame LVE."""
    from ptalker_cli.train.validation import lip_error_sums

    g = torch.Generator().manual_seed(5)
    pred = torch.randn(3, 7, 10, 3, generator=g)
    gt = torch.randn(3, 7, 10, 3, generator=g)
    lengths = [7, 4, 0]  # padded batch: the third sequence has no valid frame
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    lip = torch.tensor([2, 5, 5, 8])  # a repeated id changes nothing
    total, frames = lip_error_sums(pred, gt, lip, mask)
    assert frames == 11
    pairs = [(pred[i, :n].numpy(), gt[i, :n].numpy()) for i, n in enumerate(lengths) if n]
    assert total / frames == pytest.approx(M.lve_pooled(pairs, lip.numpy()), rel=1e-12)
    # mixed precision: the validation outputs may be bf16; the metric reads them as they are
    half = pred.to(torch.bfloat16)
    assert M.lve(half[0], gt[0], lip) == pytest.approx(M.lve(half[0].float().numpy(), gt[0].numpy(), lip.numpy()))
    b_total, b_frames = lip_error_sums(half, gt, lip, mask)
    assert (b_total, b_frames) == pytest.approx((sum(M.lve_per_frame(half[i, :n].float(), gt[i, :n], lip).sum()
                                                     for i, n in enumerate(lengths) if n), 11.0))


# --------------------------------------------------------------------------- truncation and errors


def test_truncation_rule_keeps_the_common_prefix_and_counts_drops():
    gt = np.arange(3 * 2 * 3, dtype=float).reshape(3, 2, 3)
    pred = np.concatenate([gt, np.full((2, 2, 3), 100.0)])  # 5 frames; the extra tail is far off
    p, g, cut = M.truncate(pred, gt)
    assert (cut.frames, cut.dropped_pred, cut.dropped_gt, cut.dropped) == (3, 2, 0, 2)
    assert M.mve(p, g) == 0.0
    _, _, cut2 = M.truncate(gt, pred)
    assert (cut2.dropped_pred, cut2.dropped_gt) == (0, 2)
    row = score_sequence("x_1", "x", pred, gt, gt[0], Region("lip", np.array([0]), "t"),
                         Region("upper_face", np.array([1]), "t"), seen=False, condition="audio")[0]
    assert (row.frames_pred, row.frames_gt, row.frames, row.dropped_pred, row.dropped_gt) == (5, 3, 3, 2, 0)
    assert row.lve == 0.0 and row.mve == 0.0 and row.fdd == 0.0


def test_errors():
    gt = _zeros(3)
    with pytest.raises(M.MetricError, match="truncate"):
        M.lve(_zeros(4), gt, [0])
    with pytest.raises(M.MetricError, match="outside"):
        M.lve(gt, gt, [5])
    with pytest.raises(M.MetricError, match="empty"):
        M.lve(gt, gt, [])
    with pytest.raises(M.MetricError, match="shape"):
        M.mve(np.zeros((3, 4)), gt)
    with pytest.raises(M.MetricError, match="vertices"):
        M.truncate(_zeros(3, 2), gt)

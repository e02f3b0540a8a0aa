"""Bilabial closure rate (ptalker_cli/eval/closure.py) and the closure-aware lip loss (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ptalker_cli.eval.closure import (
    ICT_INNER_LIPS,
    ClosureStats,
    ClosureTally,
    closure_stats,
    inner_lip_gap,
    read_lab,
    synth_phones,
)
from ptalker_cli.model.losses import INNER_LIP_PAIRS, lip_closure_loss, lip_pairs

ARCTIC = Path(__file__).parent / "data" / "arctic"
FPS = 25.0
#: pau, then vowel / bilabial alternating: p at 0.6-0.76 s (mid frame 17), b at 1.12-1.28 (30), m at 1.64-1.8 (43)
PHONES = [("pau", 0.0, 0.2), ("aa", 0.2, 0.6), ("p", 0.6, 0.76), ("iy", 0.76, 1.12), ("b", 1.12, 1.28),
          ("ao", 1.28, 1.64), ("m", 1.64, 1.8), ("pau", 1.8, 2.0)]


def _gap(closures: dict[int, float], vowel: float = 1.0) -> np.ndarray:
    """50 frames: `vowel` everywhere, 0 in the pauses, the given values at given frames."""
    g = np.full(50, vowel)
    g[:5] = g[46:] = 0.0
    for t, v in closures.items():
        g[t] = v
    return g


def test_closure_rate_counts_bilabials_below_30_percent_of_the_vowel_gap():
    # p closes (0), b stays open (0.5), m nearly closes (0.2 < 0.3 of the vowel mean)
    s = closure_stats(_gap({17: 0.0, 30: 0.5, 43: 0.2}), PHONES, FPS)
    assert (s.bilabials, s.closed) == (3, 2), s
    assert s.rate == pytest.approx(2 / 3)
    # just above the threshold is open: the limit is 30 % of the vowel mean, not an absolute value
    s2 = closure_stats(_gap({17: 0.0, 30: 0.7, 43: 0.65}, vowel=2.0), PHONES, FPS)
    assert s2.closed == 1, s2
    # the vowel-opening ratio: mean vowel gap over the mean gap at the bilabials' middles
    assert s.vowel_opening_ratio == pytest.approx(s.vowel_gap / ((0.0 + 0.5 + 0.2) / 3))


def test_closure_within_one_frame_of_the_middle_counts_two_frames_off_does_not():
    assert closure_stats(_gap({18: 0.0}), PHONES, FPS).closed == 1  # p's middle is frame 17
    assert closure_stats(_gap({16: 0.0}), PHONES, FPS).closed == 1
    assert closure_stats(_gap({19: 0.0}), PHONES, FPS).closed == 0
    assert closure_stats(_gap({17: 0.0}), PHONES, FPS, window=0).closed == 1
    assert closure_stats(_gap({18: 0.0}), PHONES, FPS, window=0).closed == 0


def test_a_mouth_that_never_closes_scores_zero_and_stats_pool_by_addition():
    half_open = np.full(50, 0.7)
    s = closure_stats(half_open, PHONES, FPS)
    assert (s.bilabials, s.closed) == (3, 0)
    assert s.vowel_opening_ratio == pytest.approx(1.0)
    both = s + closure_stats(_gap({17: 0.0, 30: 0.0, 43: 0.0}), PHONES, FPS)
    assert (both.bilabials, both.closed, both.utterances) == (6, 3, 2)
    assert ClosureStats().rate is None and ClosureStats().vowel_opening_ratio is None


def test_no_vowel_frames_means_nothing_counted():
    s = closure_stats(np.zeros(50), [("pau", 0.0, 0.5), ("m", 0.5, 0.6), ("pau", 0.6, 2.0)], FPS)
    assert s.bilabials == 0 and s.rate is None


def test_inner_lip_gap_reads_the_ict_midline_pair():
    v = np.zeros((2, 14062, 3), np.float32)
    v[:, ICT_INNER_LIPS[0], 1] = [1.0, 0.5]
    v[:, ICT_INNER_LIPS[1], 1] = [0.2, 0.5]
    np.testing.assert_allclose(inner_lip_gap(v), [0.8, 0.0])


def test_read_lab_parses_the_arctic_full_context_labels():
    phones = read_lab(ARCTIC / "cmu_us_slt_arctic_a0009.lab")
    assert phones[0] == ("sil", 0.0, pytest.approx(0.13))
    assert phones[1][0] == "hh" and phones[1][1] == pytest.approx(0.13)
    names = [p[0] for p in phones]
    assert {"p"} <= set(names) and all(a < b for _, a, b in phones)
    assert all(p1[2] == pytest.approx(p2[1]) for p1, p2 in zip(phones, phones[1:]))


def test_tally_reads_synthtalk_phones_and_scores_prediction_and_ground_truth(tmp_path):
    seq = tmp_path / "synth" / "sequences"
    seq.mkdir(parents=True)
    (seq / "spk01_s001.json").write_text(json.dumps({"phones": [[n, a, b, 0, 0] for n, a, b in PHONES]}))
    assert synth_phones(tmp_path, "spk01_s001")[2] == ("p", 0.6, 0.76)
    assert synth_phones(tmp_path, "missing") is None

    def verts(gap):
        v = np.zeros((len(gap), 14062, 3), np.float32)
        v[:, ICT_INNER_LIPS[0], 1] = gap
        return v

    tally = ClosureTally(tmp_path, FPS, 14062)
    tally.add("spk01_s001", verts(np.full(50, 0.7)), verts(_gap({17: -0.02, 30: -0.02, 43: -0.02})))
    tally.add("spk01_s002", verts(np.full(50, 0.7)), verts(_gap({})))  # no phones: not counted
    out = tally.summary()
    assert out["gt"]["closure_rate"] == 1.0 and out["pred"]["closure_rate"] == 0.0
    assert list(tally.per_sequence) == ["spk01_s001"]
    off_ict = ClosureTally(tmp_path, FPS, 5023)
    off_ict.add("spk01_s001", np.zeros((50, 5023, 3)), np.zeros((50, 5023, 3)))
    assert off_ict.summary() is None


# --------------------------------------------------------------------------- the loss


def _motion(gaps: np.ndarray) -> torch.Tensor:
    """(1, T, 14062, 3): every inner-lip pair of ICT at the given gap, the rest of the face at 0."""
    v = torch.zeros(1, len(gaps), 14062, 3)
    for upper, lower in INNER_LIP_PAIRS["ict"]:
        v[0, :, upper, 1] = torch.as_tensor(gaps, dtype=torch.float32)
    return v


def test_lip_closure_loss_is_zero_for_the_ground_truth_and_grows_when_the_mouth_stays_open():
    gt_gap = np.array([0.0, 1.0, 1.2, -0.02, 1.1, 0.0])  # closed at frames 0, 3, 5
    gt = _motion(gt_gap)
    pairs = lip_pairs("ict")
    assert float(lip_closure_loss(gt.clone(), gt, pairs)) == 0.0
    open_at_closures = _motion(np.where(gt_gap < 0.3, 0.6, gt_gap))
    wrong_vowels = _motion(np.where(gt_gap < 0.3, gt_gap, 0.6))
    closed_err = (0.6 + 0.62 + 0.6) / 3
    assert float(lip_closure_loss(open_at_closures, gt, pairs, balanced=False)) == pytest.approx(closed_err, rel=1e-5)
    # balanced (default): half the closed frames' mean error, half the open frames' (here 0)
    assert float(lip_closure_loss(open_at_closures, gt, pairs)) == pytest.approx(closed_err / 2, rel=1e-5)
    # the open frames' errors count only in the balanced form: a mouth kept shut on the vowels costs
    vowel_err = (0.4 + 0.6 + 0.5) / 3
    assert float(lip_closure_loss(wrong_vowels, gt, pairs, balanced=False)) == 0.0
    assert float(lip_closure_loss(wrong_vowels, gt, pairs)) == pytest.approx(vowel_err / 2, rel=1e-5)
    shut = _motion(np.zeros(6))
    assert float(lip_closure_loss(shut, gt, pairs)) > float(lip_closure_loss(gt.clone(), gt, pairs))
    # the gradient pushes the open prediction's gap down at the closures
    p = open_at_closures.clone().requires_grad_(True)
    lip_closure_loss(p, gt, pairs).backward()
    assert p.grad[0, 3, pairs[0][0], 1] > 0 and p.grad[0, 1].abs().sum() == 0


def test_lip_closure_tolerance_accepts_a_closure_one_frame_early_or_late_but_not_a_smeared_one():
    gt_gap = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # closed at frame 3 only
    gt, pairs = _motion(gt_gap), lip_pairs("ict")
    late = _motion(np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]))  # the closure one frame late
    smeared = _motion(np.array([1.0, 1.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]))  # half closed over three frames
    strict = dict(balanced=False)
    assert float(lip_closure_loss(late, gt, pairs, **strict)) == pytest.approx(1.0)
    assert float(lip_closure_loss(late, gt, pairs, tolerance=1, **strict)) == 0.0
    assert float(lip_closure_loss(smeared, gt, pairs, tolerance=1, **strict)) == pytest.approx(0.5)
    two_late = _motion(np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]))
    assert float(lip_closure_loss(two_late, gt, pairs, tolerance=1, **strict)) == pytest.approx(1.0)
    # a masked (invalid) frame never stands in for the closure
    mask = torch.ones(1, 8, dtype=torch.bool)
    mask[0, 4] = False
    assert float(lip_closure_loss(late, gt, pairs, mask, tolerance=1, **strict)) == pytest.approx(1.0)
    # the gradient reaches the frame that matched
    p = late.clone().requires_grad_(True)
    lip_closure_loss(p, gt, pairs, tolerance=1, **strict).backward()
    assert p.grad[0, :, pairs[0][0], 1].abs().sum() == 0  # matched exactly: nothing to push
    p = smeared.clone().requires_grad_(True)
    lip_closure_loss(p, gt, pairs, tolerance=1, **strict).backward()
    assert p.grad[0, 2:5, pairs[0][0], 1].abs().sum() > 0 and p.grad[0, :2].abs().sum() == 0


def test_lip_closure_loss_respects_the_mask_and_rejects_unknown_meshes():
    gt = _motion(np.array([0.0, 1.0, 1.0, 0.0]))
    pred = _motion(np.array([0.5, 1.0, 1.0, 0.0]))
    pairs = lip_pairs("ict")
    assert float(lip_closure_loss(pred, gt, pairs)) > 0
    mask = torch.tensor([[False, True, True, True]])
    assert float(lip_closure_loss(pred, gt, pairs, mask)) == 0.0
    # a masked-out open frame's error does not count either
    pred_open = _motion(np.array([0.0, 0.3, 1.0, 0.0]))
    assert float(lip_closure_loss(pred_open, gt, pairs, torch.tensor([[True, False, True, True]]))) == 0.0
    with pytest.raises(ValueError, match="lip_closure=0"):
        lip_pairs("flame")


def test_training_with_the_lip_closure_loss_needs_a_mesh_with_known_inner_lips(tmp_path):
    from ptalker_cli.data.testing import make_fake_dataset
    from ptalker_cli.errors import ConfigError
    from ptalker_cli.train import TrainConfig
    from ptalker_cli.train.trainer import Trainer

    make_fake_dataset(tmp_path / "ds", frames=16)
    cfg = TrainConfig(data=str(tmp_path / "ds"), out=str(tmp_path / "run"), preset="tiny", tensorboard=False,
                      progress=False, seed=0, loss={"lip_closure": 1.0}).validate()
    with pytest.raises(ConfigError, match="loss.lip_closure needs the inner lips"):
        Trainer(cfg, quiet=True).setup()


def test_eval_reports_closure_of_prediction_and_ground_truth_on_a_tiny_fake_synthtalk(tmp_path):
    from rich.console import Console

    from ptalker_cli.data.testing import make_fake_dataset
    from ptalker_cli.eval import evaluate_predictions, print_report, write_results
    from ptalker_cli.mesh import load_builtin

    root = make_fake_dataset(tmp_path / "ds", subjects=("A", "C"), sentences=("s01",), train_subjects=("A",),
                             frames=50, topology=load_builtin("ict"))
    template = np.load(root / "templates" / "C.npy")
    rest = float(template[ICT_INNER_LIPS[0], 1] - template[ICT_INNER_LIPS[1], 1])

    def motion(gap):  # the lower inner lip moved so that the midline gap is `gap`
        v = np.repeat(template[None], len(gap), axis=0)
        v[:, ICT_INNER_LIPS[1], 1] -= np.asarray(gap) - rest
        return v.astype(np.float32)

    gt_gap = np.concatenate([_gap({17: -0.02, 30: -0.02, 43: -0.02}), [0.0]])  # 51 frames
    np.save(root / "vertices_npy" / "C_s01.npy", motion(gt_gap))
    seq = root / "synth" / "sequences"
    seq.mkdir(parents=True)
    (seq / "C_s01.json").write_text(json.dumps({"phones": [[n, a, b, 0, 0] for n, a, b in PHONES]}))
    preds = tmp_path / "preds"
    preds.mkdir()
    np.save(preds / "C_s01.npy", motion(np.full(51, 0.7)))  # hovers half open

    result = evaluate_predictions(preds, root, "test")
    c = result.overall["closure"]
    assert (c["gt"]["closed"], c["gt"]["bilabials"], c["gt"]["closure_rate"]) == (3, 3, 1.0)
    assert (c["pred"]["closed"], c["pred"]["closure_rate"]) == (0, 0.0)
    assert c["pred"]["vowel_opening_ratio"] == pytest.approx(1.0, abs=1e-4)
    write_results(result, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["overall"]["closure"]["gt"]["closure_rate"] == 1.0
    console = Console(record=True, width=140)
    print_report(result, console)
    text = console.export_text()
    assert "bilabials closed" in text and "0.0 % (0/3)" in text and "100.0 % (3/3)" in text

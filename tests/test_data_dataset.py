"""TalkingHeadDataset, collate_batch, LengthBucketSampler, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptalker_cli.audio import load_audio
from ptalker_cli.data import LengthBucketSampler, TalkingHeadDataset, collate_batch, make_dataloader
from ptalker_cli.data.layout import DatasetError
from ptalker_cli.data.testing import make_fake_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("ds") / "ds")


def test_items(ds):
    d = TalkingHeadDataset(ds, "train")
    assert d.names == ["A_s01", "A_s02", "B_s01", "B_s02"] and len(d) == 4
    assert d.fps == 25 and d.sample_rate == 16000 and d.num_identities == 2
    it = d[2]
    assert it["name"] == "B_s01" and it["subject"] == "B" and it["subject_index"] == 1
    v = np.load(ds / "vertices_npy" / "B_s01.npy")
    assert it["vertices"].dtype == torch.float32 and tuple(it["vertices"].shape) == v.shape
    np.testing.assert_array_equal(it["vertices"].numpy(), v)
    np.testing.assert_array_equal(it["template"].numpy(), np.load(ds / "templates" / "B.npy"))
    np.testing.assert_array_equal(it["audio"].numpy(), load_audio(ds / "wav" / "B_s01.wav", 16000))
    assert abs(len(it["audio"]) / 16000 - v.shape[0] / 25) < 0.01
    assert it["fps"] == 25.0
    assert d.lengths == [10, 11, 13, 14]


def test_splits_and_unseen_identities(ds):
    test = TalkingHeadDataset(ds, "test")
    assert test.names == ["C_s01", "C_s02", "C_s03"]
    assert test[0]["subject_index"] == -1
    assert TalkingHeadDataset(ds, {"subjects": ["A", "C"], "sentences": ["2-3"]}).names == \
        ["A_s02", "A_s03", "C_s02", "C_s03"]
    assert TalkingHeadDataset(ds, ["B_s03"]).names == ["B_s03"]
    assert TalkingHeadDataset(ds, None, subjects=["B"]).names == ["B_s01", "B_s02", "B_s03"]
    assert len(TalkingHeadDataset(ds, "all")) == 9
    with pytest.raises(DatasetError, match="unknown split"):
        TalkingHeadDataset(ds, "test-b")


def test_vertices_flat_layout_and_no_audio(tmp_path):
    root = make_fake_dataset(tmp_path / "d", subjects=("A", "C"), sentences=("s01",))
    v = np.load(root / "vertices_npy" / "A_s01.npy")
    np.save(root / "vertices_npy" / "A_s01.npy", v.reshape(len(v), -1))  # (T, V*3)
    (root / "wav" / "C_s01.wav").unlink()
    with pytest.warns(UserWarning, match="no audio"):
        d = TalkingHeadDataset(root, None)
    assert d.names == ["A_s01"]
    np.testing.assert_array_equal(d[0]["vertices"].numpy(), v)
    d2 = TalkingHeadDataset(root, None, require_audio=False, load_audio=False)
    assert d2.names == ["A_s01", "C_s01"] and d2[1]["audio"].numel() == 0


def test_collate_pads_and_masks(ds):
    d = TalkingHeadDataset(ds, "train")
    items = [d[0], d[3]]
    b = collate_batch(items)
    assert b["names"] == ["A_s01", "B_s02"] and b["subject_index"].tolist() == [0, 1]
    assert b["frame_lengths"].tolist() == [10, 14]
    assert b["vertices"].shape == (2, 14, d[0]["vertices"].shape[1], 3)
    assert b["frame_mask"].dtype == torch.bool and b["frame_mask"].shape == (2, 14)
    assert b["frame_mask"][0].sum() == 10 and b["frame_mask"][1].all()
    assert torch.equal(b["vertices"][0, :10], items[0]["vertices"]) and (b["vertices"][0, 10:] == 0).all()
    la, lb = len(items[0]["audio"]), len(items[1]["audio"])
    assert b["audio_lengths"].tolist() == [la, lb] and b["audio"].shape == (2, max(la, lb))
    assert torch.equal(b["audio"][0, :la], items[0]["audio"]) and (b["audio"][0, la:] == 0).all()
    assert b["audio_mask"].sum(1).tolist() == [la, lb]
    assert b["template"].shape == (2, items[0]["template"].shape[0], 3) and b["fps"] == 25.0


def test_bucket_sampler_deterministic_and_complete():
    lengths = [5, 50, 7, 48, 6, 49, 30, 31, 8, 47, 29, 32]
    s = LengthBucketSampler(lengths, 4, seed=7, bucket_size=4)
    e0 = list(s)
    assert sorted(i for b in e0 for i in b) == list(range(12))
    assert all(len(b) == 4 for b in e0) and len(s) == len(e0) == 3
    # bucketing: each batch holds similar lengths
    assert max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in e0) <= 3
    assert list(LengthBucketSampler(lengths, 4, seed=7, bucket_size=4)) == e0  # same seed, same batches
    epochs = []
    for epoch in range(1, 6):
        s.set_epoch(epoch)
        epochs.append(list(s))
        assert sorted(i for b in epochs[-1] for i in b) == list(range(12))
        assert list(LengthBucketSampler(lengths, 4, seed=7, epoch=epoch, bucket_size=4)) == epochs[-1]
    assert any(e != e0 for e in epochs)  # the order changes with the epoch
    assert any(list(LengthBucketSampler(lengths, 4, seed=k, bucket_size=4)) != e0 for k in range(8, 13))
    # padded-frames budget and drop_last
    budget = list(LengthBucketSampler(lengths, 10, seed=0, max_frames=100))
    assert all(len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1 for b in budget)
    assert sorted(i for b in budget for i in b) == list(range(12))
    assert all(len(b) == 5 for b in LengthBucketSampler(lengths, 5, drop_last=True))
    assert [b for b in LengthBucketSampler(lengths, 4, shuffle=False, bucket_size=100)] == \
        [[0, 4, 2, 8], [10, 6, 7, 11], [9, 3, 5, 1]]


def test_dataloader_with_workers(ds):
    d = TalkingHeadDataset(ds, None)
    loader = make_dataloader(d, batch_size=4, seed=3, num_workers=2)
    seen = []
    for batch in loader:
        assert batch["vertices"].shape[0] == len(batch["names"]) <= 4
        assert batch["frame_mask"].sum().item() == sum(d.lengths[d.names.index(n)] for n in batch["names"])
        seen += batch["names"]
    assert sorted(seen) == d.names
    again = [b["names"] for b in make_dataloader(d, batch_size=4, seed=3, num_workers=0)]
    assert [n for b in again for n in b] == seen  # workers do not change the order

"""Phonetic pretraining of the speech content encoder (issue 19): it trains the content encoder and its
viseme classifier and nothing else, runs before the main training, and refuses what it cannot use."""

from __future__ import annotations

import json

import pytest
import torch

from ptalker_cli.data.layout import DatasetError
from ptalker_cli.errors import ConfigError
from ptalker_cli.train import TrainConfig
from ptalker_cli.train.phone_pretrain import PP, evaluate_phones, phone_clips, pretrain_speech_content


@pytest.fixture()
def dataset(phone_dataset):
    return phone_dataset


def _model(source="audio"):
    from ptalker_cli.config import preset
    from ptalker_cli.mesh import tiny_topology
    from ptalker_cli.model.network import build_model

    torch.manual_seed(0)
    return build_model(preset("tiny", viseme_classes=15, viseme_source=source), tiny_topology())


def test_phone_clips_label_every_frame_of_a_split(dataset):
    model = _model()
    clips = phone_clips(dataset, "train", model.num_motion_frames, model.config.fps)
    assert len(clips) == 4  # the fake corpus's train split: A_s01, A_s02, B_s01, B_s02
    wave, labels = clips[0]
    assert len(labels) == model.num_motion_frames(len(wave)) >= 12  # what the audio covers
    assert list(labels[:8]) == [0] * 8 and set(labels[8:].tolist()) == {PP}
    assert phone_clips(dataset, "no-such-split", model.num_motion_frames, 25.0) == []


def test_pretraining_trains_the_content_encoder_and_its_classifier_only(dataset):
    torch.set_num_threads(1)
    model = _model()
    clips = phone_clips(dataset, "train", model.num_motion_frames, model.config.fps)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = pretrain_speech_content(model, clips, 80, lr=3e-3, batch_size=2, val_clips=clips)
    after = model.state_dict()
    changed = {k.split(".", 1)[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"audio_encoder", "audio_feature_map", "viseme_head"}
    assert result.first_loss > 0.6 * result.chance_loss
    assert result.last_loss < 0.35 * result.first_loss, result
    assert result.val_clips == 4 and result.val_pp_recall > 0.9 and result.val_loss < 0.35 * result.chance_loss


def test_pretraining_needs_a_classifier_on_the_speech_features(dataset):
    model = _model("decoder")
    clips = phone_clips(dataset, "train", model.num_motion_frames, model.config.fps)
    with pytest.raises(ConfigError, match="viseme_source=audio"):
        pretrain_speech_content(model, clips, 1)


def _train(dataset, out, **kw):
    from ptalker_cli.train.trainer import train

    torch.set_num_threads(1)
    cfg = TrainConfig(data=str(dataset), out=str(out), preset="tiny", tensorboard=False, progress=False, seed=0,
                      val_split="none", **kw).validate()
    train(cfg, quiet=True)


def test_ptalker_train_pretrains_then_keeps_the_encoder_frozen(dataset, tmp_path):
    from ptalker_cli.model.network import PTalker

    frozen = ["audio_encoder", "audio_feature_map"]
    model = {"viseme_classes": 15, "viseme_source": "audio"}
    _train(dataset, tmp_path / "a", epochs=1, max_steps=2, model=model, freeze=frozen, phone_pretrain_steps=30,
           phone_pretrain_lr=3e-3, phone_pretrain_batch=2)
    record = json.loads((tmp_path / "a" / "phone_pretrain.json").read_text())
    assert record["steps"] == 30 and record["clips"] == 4 and record["last_loss"] < 0.5 * record["first_loss"]
    assert record["val_clips"] == 2  # the fake corpus's val split: A_s03, B_s03
    # the same run without the pretraining: the frozen encoder differs, so the stage did change it
    _train(dataset, tmp_path / "b", epochs=1, max_steps=2, model=model, freeze=frozen)
    a, b = PTalker.from_pretrained(tmp_path / "a"), PTalker.from_pretrained(tmp_path / "b")
    assert not (tmp_path / "b" / "phone_pretrain.json").exists()
    assert not torch.equal(a.audio_feature_map.weight, b.audio_feature_map.weight)
    # and the main training left the frozen encoder as the pretraining made it
    fresh = _model()
    clips = phone_clips(dataset, "train", fresh.num_motion_frames, fresh.config.fps)
    loss, recall = evaluate_phones(a, clips)
    assert loss < 0.5 * record["first_loss"] and recall > 0.9


def test_ptalker_train_refuses_what_the_pretraining_cannot_use(dataset, tmp_path):
    from ptalker_cli.data.testing import make_fake_dataset
    from ptalker_cli.train.trainer import Trainer

    def setup(out, **kw):
        cfg = TrainConfig(data=str(dataset), out=str(out), preset="tiny", tensorboard=False, progress=False, seed=0,
                          **kw).validate()
        Trainer(cfg, quiet=True).setup()

    with pytest.raises(ConfigError, match="phone_pretrain_steps must be >= 0"):
        TrainConfig(data="x", phone_pretrain_steps=-1).validate()
    with pytest.raises(ConfigError, match="model.viseme_classes=15 --set model.viseme_source=audio"):
        setup(tmp_path / "a", phone_pretrain_steps=1)
    with pytest.raises(ConfigError, match="viseme_source=audio"):
        setup(tmp_path / "b", phone_pretrain_steps=1, model={"viseme_classes": 15})
    bare = make_fake_dataset(tmp_path / "bare", frames=16)
    with pytest.raises(DatasetError, match="no 'train' utterance has phone timings"):
        setup(tmp_path / "c", phone_pretrain_steps=1, phone_pretrain_data=str(bare),
              model={"viseme_classes": 15, "viseme_source": "audio"})

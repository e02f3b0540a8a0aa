"""The auxiliary viseme classifier (issue 19): labels from phone timings, the loss, the data path,
training and fine-tuning with it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ptalker_cli.data.synth.labels import IGNORE, VISEME_CLASSES, frame_visemes, read_phones
from ptalker_cli.data.synth.visemes import PHONE_RULES
from ptalker_cli.errors import ConfigError
from ptalker_cli.model.losses import viseme_loss
from ptalker_cli.train import TrainConfig

V = {name: i for i, name in enumerate(VISEME_CLASSES)}


def test_every_frame_gets_the_viseme_of_the_phone_sounding_then():
    phones = [("pau", 0.0, 0.1), ("p", 0.1, 0.2), ("ay", 0.2, 0.4), ("m", 0.4, 0.48)]
    labels = frame_visemes(phones, 14, 25.0)  # frames at 0, 0.04, ... 0.52 s
    assert len(VISEME_CLASSES) == 15 and VISEME_CLASSES[:2] == ("sil", "PP")
    assert list(labels[:3]) == [V["sil"]] * 3
    assert list(labels[3:5]) == [V["PP"]] * 2
    (first, frac, _), (second, _, _) = PHONE_RULES["ay"].parts  # a diphthong: its parts share its time
    split = 0.2 + 0.2 * frac / sum(f for _, f, _ in PHONE_RULES["ay"].parts)
    for t in range(5, 10):
        assert labels[t] == V[first if t / 25.0 < split else second]
    assert {first, second} == {"aa", "I"}
    assert list(labels[10:12]) == [V["PP"]] * 2  # m at 0.40 and 0.44 s
    assert list(labels[12:]) == [IGNORE] * 2  # after the last phone: no label


def test_read_phones(tmp_path):
    seq = tmp_path / "synth" / "sequences"
    seq.mkdir(parents=True)
    (seq / "a.json").write_text(json.dumps({"phones": [["m", 0.0, 0.1, 0, 0]]}))
    (seq / "b.json").write_text(json.dumps({"phones": [["m"]]}))
    assert read_phones(tmp_path, "a") == [("m", 0.0, 0.1)]
    assert read_phones(tmp_path, "none") is None
    with pytest.raises(Exception, match="unreadable phone timings"):
        read_phones(tmp_path, "b")


def test_viseme_loss_counts_labelled_valid_frames_only():
    labels = torch.tensor([[0, 1, IGNORE, 2], [1, 1, 0, 0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    perfect = torch.nn.functional.one_hot(labels.clamp_min(0), 15).float() * 50.0
    assert float(viseme_loss(perfect, labels, mask).detach()) < 1e-6
    uniform = torch.zeros(2, 4, 15, requires_grad=True)
    assert float(viseme_loss(uniform, labels, mask).detach()) == pytest.approx(math.log(15), rel=1e-6)
    # frames without a label or outside the mask change neither the value nor the gradient
    logits = torch.randn(2, 4, 15, requires_grad=True)
    base = viseme_loss(logits, labels, mask)
    base.backward()
    assert float(logits.grad[0, 2].abs().sum()) == 0.0 and float(logits.grad[1, 2:].abs().sum()) == 0.0
    other = logits.detach().clone()
    other[0, 2] += 5.0
    other[1, 2:] -= 3.0
    assert float(viseme_loss(other, labels, mask).detach()) == pytest.approx(float(base.detach()), rel=1e-6)
    nothing = viseme_loss(logits, torch.full((2, 4), IGNORE), mask)
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad
    with pytest.raises(ValueError, match="labels must be -100 or in"):
        viseme_loss(logits, torch.full((2, 4), 15))


@pytest.fixture()
def dataset(phone_dataset):
    return phone_dataset


def test_the_dataset_gives_viseme_labels_and_batches_pad_them(dataset):
    from ptalker_cli.data.dataset import TalkingHeadDataset, collate_batch

    ds = TalkingHeadDataset(dataset, "train", visemes=True)
    item = ds[0]
    assert item["visemes"].dtype == torch.long and len(item["visemes"]) == item["vertices"].shape[0]
    assert list(item["visemes"][:8]) == [V["sil"]] * 8 and set(item["visemes"][8:].tolist()) == {V["PP"]}
    (dataset / "synth" / "sequences" / f"{ds.names[1]}.json").unlink()  # a sequence without phones
    batch = collate_batch([ds[0], ds[1]])
    assert batch["visemes"].shape == batch["frame_mask"].shape
    assert bool((batch["visemes"][1] == IGNORE).all())
    assert "visemes" not in TalkingHeadDataset(dataset, "train")[0]


def _train(dataset, out, **kw):
    from ptalker_cli.train.trainer import train

    torch.set_num_threads(1)
    cfg = TrainConfig(data=str(dataset), out=str(out), preset="tiny", tensorboard=False, progress=False, seed=0,
                      val_split="none", **kw).validate()
    train(cfg, quiet=True)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == "step"]


@pytest.mark.parametrize("source", ["decoder", "audio"])
def test_training_with_the_viseme_loss_teaches_the_classifier(dataset, tmp_path, source):
    steps = _train(dataset, tmp_path / "run", epochs=12, lr=3e-3, model={"viseme_classes": 15, "viseme_source": source},
                   loss={"viseme": 1.0})
    ce = [s["viseme"] for s in steps]
    assert ce[0] == pytest.approx(math.log(15), rel=0.2)
    assert np.mean(ce[-4:]) < 0.35 * ce[0], ce


def test_init_adds_a_viseme_classifier_to_a_model_without_one(dataset, tmp_path):
    from ptalker_cli.model.network import PTalker
    from ptalker_cli.train.trainer import Trainer

    _train(dataset, tmp_path / "a", epochs=1, max_steps=2)
    saved = PTalker.from_pretrained(tmp_path / "a")
    assert saved.viseme_head is None
    cfg = TrainConfig(data=str(dataset), out=str(tmp_path / "b"), preset="tiny", tensorboard=False, progress=False,
                      seed=0, init=str(tmp_path / "a"), model={"viseme_classes": 15}, loss={"viseme": 1.0}).validate()
    t = Trainer(cfg, quiet=True)
    t.setup()
    assert t.model.viseme_head.out_features == 15
    state = t.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.state_dict().items())
    # the classifier is saved with the model and loads strictly
    t.model.save_pretrained(tmp_path / "with-head")
    again = PTalker.from_pretrained(tmp_path / "with-head")
    assert torch.equal(again.viseme_head.weight, t.model.viseme_head.weight.cpu())


def test_the_viseme_loss_needs_a_classifier_and_phone_labels(dataset, tmp_path):
    from ptalker_cli.data.testing import make_fake_dataset
    from ptalker_cli.train.trainer import Trainer

    def setup(root, out, **kw):
        cfg = TrainConfig(data=str(root), out=str(out), preset="tiny", tensorboard=False, progress=False, seed=0,
                          **kw).validate()
        Trainer(cfg, quiet=True).setup()

    with pytest.raises(ConfigError, match="viseme_source must be 'decoder' or 'audio'"):
        setup(dataset, tmp_path / "s", model={"viseme_classes": 15, "viseme_source": "lips"})
    with pytest.raises(ConfigError, match="model.viseme_classes=15"):
        setup(dataset, tmp_path / "a", loss={"viseme": 1.0})
    bare = make_fake_dataset(tmp_path / "bare", frames=16)
    with pytest.raises(ConfigError, match="needs phone timings"):
        setup(bare, tmp_path / "b", loss={"viseme": 1.0}, model={"viseme_classes": 15})


@pytest.mark.parametrize("source", ["decoder", "audio"])
def test_the_classifier_reads_the_decoder_or_the_speech_features(source):
    """viseme_source=audio: the loss trains the speech path only, never the decoder; =decoder: both."""
    from ptalker_cli.config import preset
    from ptalker_cli.mesh import tiny_topology
    from ptalker_cli.model.network import build_model

    torch.manual_seed(0)
    model = build_model(preset("tiny", viseme_classes=15, viseme_source=source), tiny_topology()).train()
    frames = 12
    audio = torch.randn(1, 640 * frames + 400) * 0.1
    verts = model.template + 0.1 * torch.randn(1, frames, model.config.num_vertices, 3)
    out = model(audio, verts, model.template[None], torch.tensor([0]))
    assert out.viseme_logits.shape == (1, frames, 15)
    labels = torch.randint(0, 15, (1, frames))
    viseme_loss(out.viseme_logits, labels, out.frame_mask).backward()
    decoder_grad = sum(float(p.grad.abs().sum()) for p in model.decoder.parameters() if p.grad is not None)
    speech_grad = sum(float(p.grad.abs().sum()) for p in model.audio_feature_map.parameters() if p.grad is not None)
    assert speech_grad > 0
    assert (decoder_grad > 0) == (source == "decoder")

"""``init``: training starts from an existing model folder (fine-tuning; issue 19's retrain of the default)."""

from __future__ import annotations

import pytest
import torch

from ptalker_cli.errors import ConfigError
from ptalker_cli.train import TrainConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ptalker_cli.data.testing import make_fake_dataset

    root = tmp_path_factory.mktemp("init-data") / "ds"
    make_fake_dataset(root, frames=16)
    return root


def _trainer(dataset, out, **kw):
    from ptalker_cli.train.trainer import Trainer

    cfg = TrainConfig(data=str(dataset), out=str(out), preset="tiny", tensorboard=False, progress=False, seed=0,
                      **kw).validate()
    t = Trainer(cfg, quiet=True)
    t.setup()
    return t


def test_init_starts_from_the_given_model_folder(dataset, tmp_path):
    from ptalker_cli.model.network import PTalker
    from ptalker_cli.train.trainer import train

    torch.set_num_threads(1)
    first = TrainConfig(data=str(dataset), out=str(tmp_path / "a"), preset="tiny", tensorboard=False,
                        progress=False, seed=0, epochs=1, max_steps=2).validate()
    train(first, quiet=True)
    saved = PTalker.from_pretrained(tmp_path / "a").state_dict()
    fresh = _trainer(dataset, tmp_path / "fresh").model.state_dict()
    started = _trainer(dataset, tmp_path / "b", init=str(tmp_path / "a")).model.state_dict()
    assert all(torch.equal(started[k], saved[k]) for k in saved)
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)


def test_init_must_be_a_model_folder_and_a_run_that_cannot_start_leaves_no_folder(dataset, tmp_path):
    with pytest.raises(ConfigError, match="not a model folder"):
        _trainer(dataset, tmp_path / "runs" / "c", init=str(tmp_path / "nowhere"))
    assert not (tmp_path / "runs" / "c").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made is theirs: it stays
    with pytest.raises(ConfigError, match="not a model folder"):
        _trainer(dataset, tmp_path / "mine", init=str(tmp_path / "nowhere"))
    assert (tmp_path / "mine").is_dir()


def test_init_takes_model_options_that_keep_the_weights(tmp_path):
    """model.* values apply on top of the init folder's config (here a content encoder restricted to a
    short right context); the weights load strictly; an option that changes them is one line."""
    from ptalker_cli.config import logmel_encoder
    from ptalker_cli.data.testing import make_fake_dataset
    from ptalker_cli.model.network import PTalker, build_model

    torch.set_num_threads(1)
    root = tmp_path / "ds"
    make_fake_dataset(root, frames=16)
    base = _trainer(root, tmp_path / "fresh").model
    cfg = base.config.replace(audio_content=logmel_encoder(32, 2, 2))
    model = build_model(cfg, base.topology, base.subject_templates.numpy())
    model.save_pretrained(tmp_path / "init")
    t = _trainer(root, tmp_path / "b", init=str(tmp_path / "init"), model={"content_right_context": 1})
    assert t.model.config.content_right_context == 1
    assert t.model.audio_encoder.model.encoder.right_context == 1
    saved = PTalker.from_pretrained(tmp_path / "init").state_dict()
    assert all(torch.equal(t.model.state_dict()[k], saved[k]) for k in saved)
    with pytest.raises(ConfigError, match="another shape"):  # an option that changes the weights
        _trainer(root, tmp_path / "d", init=str(tmp_path / "init"), model={"decoder_ffn_dim": 24})
    with pytest.raises(ConfigError, match="unknown model option"):
        _trainer(root, tmp_path / "c", init=str(tmp_path / "init"), model={"no_such_thing": 1})

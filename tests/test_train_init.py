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


def test_init_must_be_a_model_folder(dataset, tmp_path):
    with pytest.raises(ConfigError, match="not a model folder"):
        _trainer(dataset, tmp_path / "c", init=str(tmp_path / "nowhere"))

"""A training run's data: the dataset, its splits checked against the manifest, and the batches.

Batches are length-bucketed (:class:`~ptalker_cli.data.dataset.LengthBucketSampler`) and,
under torchrun, sharded over the ranks (:class:`~.distributed.ShardedBatchSampler`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from . import distributed as dist_util
from .config import TrainConfig


@dataclass
class TrainingData:
    """The dataset folder's layout, manifest and topology, and the training / validation sets."""

    layout: Any  # data.layout.DatasetLayout
    manifest: Any  # data.layout.Manifest
    topology: Any  # mesh.Topology
    train_set: Any  # data.dataset.TalkingHeadDataset
    val_set: Any | None


def load_training_data(cfg: TrainConfig, warn: Callable[[str], None]) -> TrainingData:
    """Open ``cfg.data``: the training split must hold sequences, validation must not be a test split."""
    from ..data.dataset import TalkingHeadDataset
    from ..data.layout import DatasetLayout

    root = Path(cfg.data)
    layout = DatasetLayout(root)
    manifest = layout.manifest()
    topology = layout.load_topology(manifest)
    if topology.num_vertices != manifest.num_vertices:
        raise ConfigError(f"{root}: topology has {topology.num_vertices} vertices, the manifest says "
                          f"{manifest.num_vertices}")
    if "lip" not in topology.regions:
        warn("[yellow]warning:[/] the dataset has no lip region: the mouth loss and LVE use all vertices")
    visemes = cfg.loss_config().viseme > 0
    train_set = TalkingHeadDataset(root, cfg.train_split, visemes=visemes)
    if len(train_set) == 0:
        raise ConfigError(f"split '{cfg.train_split}' of {root} is empty")
    if visemes and not any(layout.phones_path(n).is_file() for n in train_set.names):
        raise ConfigError(f"loss.viseme needs phone timings (synth/sequences/<name>.json, as SynthTalk has); "
                          f"{root} has none for split '{cfg.train_split}'")
    val_set = None
    if cfg.val_split != "none":
        if cfg.val_split.startswith("test"):
            raise ConfigError("validation on a test split would select the model on test data; use the "
                              "validation split (or --val-split none)")
        if cfg.val_split not in manifest.splits:
            raise ConfigError(f"{root} has no '{cfg.val_split}' split; add one to dataset.json or pass "
                              "--val-split none")
        val_set = TalkingHeadDataset(root, cfg.val_split, visemes=visemes)
        if len(val_set) == 0:
            val_set = None
    return TrainingData(layout, manifest, topology, train_set, val_set)


def template_subjects(data: TrainingData) -> list[str]:
    """The subjects whose neutral faces the model stores: the training subjects, then any other with a template."""
    manifest, layout = data.manifest, data.layout
    return list(manifest.train_subjects) + [
        s for s in manifest.subjects if s not in manifest.train_subjects and layout.template_path(s).is_file()]


def make_loaders(cfg: TrainConfig, data: TrainingData, info: dist_util.DistInfo, device: torch.device):
    """(train sampler, train loader, validation sampler, validation loader); the validation pair is
    ``(None, None)`` without a validation set. Training batches are padded so every rank takes as many."""
    from ..data.dataset import LengthBucketSampler, collate_batch

    train_sampler = dist_util.ShardedBatchSampler(
        LengthBucketSampler(data.train_set.lengths, cfg.batch_size, shuffle=True, seed=cfg.seed,
                            max_frames=cfg.max_frames or None),
        info.rank, info.world_size, pad=True)
    gen = torch.Generator()
    gen.manual_seed(cfg.seed)
    loader_kw = {"collate_fn": collate_batch, "num_workers": cfg.num_workers, "generator": gen,
                 "pin_memory": device.type == "cuda"}
    train_loader = torch.utils.data.DataLoader(data.train_set, batch_sampler=train_sampler, **loader_kw)
    val_sampler = val_loader = None
    if data.val_set is not None:
        val_sampler = dist_util.ShardedBatchSampler(
            LengthBucketSampler(data.val_set.lengths, cfg.batch_size, shuffle=False,
                                max_frames=cfg.max_frames or None),
            info.rank, info.world_size, pad=False)
        val_loader = torch.utils.data.DataLoader(data.val_set, batch_sampler=val_sampler, **loader_kw)
    return train_sampler, train_loader, val_sampler, val_loader

"""Dataset tooling: the standard layout, BIWI / VOCASET converters, checks and loaders.

See docs/datasets.md. Heavy pieces (torch) are imported lazily, so
``from ptalker_cli.data import check_dataset`` stays cheap.
"""

from __future__ import annotations

from .check import CheckReport, check_dataset
from .layout import (
    DatasetError,
    DatasetLayout,
    Manifest,
    SplitRule,
    sentence_number,
    split_name,
)

__all__ = [
    "CheckReport",
    "DatasetError",
    "DatasetLayout",
    "LengthBucketSampler",
    "Manifest",
    "SplitRule",
    "TalkingHeadDataset",
    "check_dataset",
    "collate_batch",
    "make_dataloader",
    "prepare_biwi",
    "prepare_vocaset",
    "sentence_number",
    "split_name",
]

_LAZY = {
    "TalkingHeadDataset": "dataset",
    "LengthBucketSampler": "dataset",
    "collate_batch": "dataset",
    "make_dataloader": "dataset",
    "prepare_biwi": "biwi",
    "prepare_vocaset": "vocaset",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

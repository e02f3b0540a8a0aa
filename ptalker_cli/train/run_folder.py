"""The run folder's own records, beside the best model and the resumable ``last/`` checkpoint.

* ``train_config.json`` — the resolved options, the model and loss configs and the dataset facts;
* ``best.json`` — epoch, step and value of the best validation ``select_metric``;
* ``train_summary.json`` — what a finished session did (steps, speed, whether the ranks agree);
* ``style_pretrain.json`` — the speaker-ID pretraining of the audio style encoder, when run;
* ``phone_pretrain.json`` — the phonetic pretraining of the speech content encoder, when run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..fileio import atomic_write_text
from ..model.folder import MODEL_FILES
from .checkpoint import LAST

TRAIN_CONFIG_NAME = "train_config.json"
BEST_NAME = "best.json"
SUMMARY_NAME = "train_summary.json"
STYLE_PRETRAIN_NAME = "style_pretrain.json"
PHONE_PRETRAIN_NAME = "phone_pretrain.json"


def claim_run_folder(run_dir: Path, force: bool) -> bool:
    """Make ``run_dir`` ready for a new run: a folder that already holds one is refused, or with
    ``force`` cleared of the old run's model, checkpoints, records and TensorBoard logs. True when
    this call created the folder (so a run that fails to start may remove it again)."""
    if (run_dir / LAST).exists() or (run_dir / TRAIN_CONFIG_NAME).exists():
        if not force:
            raise ConfigError(
                f"{run_dir} already holds a run; continue it with --resume, or pass --force to start "
                "over (or choose another --out)")
        for name in (LAST, ".last.tmp", ".last.old", "tensorboard"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in (*MODEL_FILES, BEST_NAME, SUMMARY_NAME, STYLE_PRETRAIN_NAME, PHONE_PRETRAIN_NAME):
            (run_dir / name).unlink(missing_ok=True)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    return created


def write_record(run_dir: Path, name: str, data: dict[str, Any]) -> None:
    """One of the run's JSON records, written atomically."""
    atomic_write_text(run_dir / name, json.dumps(data, indent=2) + "\n")

"""``ptalker train``: train PTalker on a dataset in the standard layout (docs/training.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from ..config import PRESETS
from ..errors import ConfigError
from .common import console, print_json


def train(
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset folder in the standard layout "
                                        "(dataset.json; see docs/datasets.md).", show_default=False),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=f"Model sizes: {', '.join(PRESETS)}. Topology, "
                                         "fps and subjects come from the dataset. [default: biwi]", show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A TOML (or JSON) file of training "
                                          "options; command-line options win.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/PRESET-DATASET). "
                                       "It becomes a model folder: ptalker animate --model RUN.",
                                       show_default=False),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Any option as KEY=VALUE (repeatable), e.g. "
                                             "lr=1e-4, model.dropout=0.2, loss.adv=0.01.", show_default=False),
    ablation: Optional[str] = typer.Option(None, "--ablation", help="A Table-4 row: full, no-adv, no-cos, "
                                           "no-orth-info, no-cts, no-gat, no-audio-disentanglement, "
                                           "no-motion-disentanglement.", show_default=False),
    loss_preset: Optional[str] = typer.Option(None, "--loss-preset", help="default, or released (the authors' "
                                              "released loss weights).", show_default=False),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs. [default: 100]", show_default=False),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps.",
                                            show_default=False),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Sequences per batch. [default: 1]",
                                             show_default=False),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Batches per optimizer step. [default: 1]",
                                             show_default=False),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate. [default: 3e-4]",
                                       show_default=False),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Max gradient norm, 0 = off. "
                                              "[default: 1.0]", show_default=False),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: auto (bf16 on CUDA where supported, "
                                      "else fp16; off on CPU), bf16, fp16, off.", show_default=False),
    stage1_epochs: Optional[int] = typer.Option(None, "--stage1-epochs", help="Epochs with the style encoders "
                                                "frozen (the paper's stage 1); 0 = one stage. [default: half of "
                                                "--epochs for the biwi and vocaset presets, else 0]",
                                                show_default=False),
    scheduled_sampling: Optional[str] = typer.Option(None, "--scheduled-sampling", help="off, linear or "
                                                     "inverse_sigmoid: teacher forcing decays to 0 (free-running) "
                                                     "at --ss-end-epoch.", show_default=False),
    ss_end_epoch: Optional[float] = typer.Option(None, "--ss-end-epoch", help="Epoch from which every fed-back "
                                                 "frame is the model's own prediction.", show_default=False),
    val_split: Optional[str] = typer.Option(None, "--val-split", help="Validation split (never a test split); "
                                            "'none' to skip. [default: val]", show_default=False),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Also save last/ every N "
                                                   "optimizer steps.", show_default=False),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed. [default: 7]", show_default=False),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic "
                                                 "algorithms (bit-exact --resume on CPU).", show_default=False),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N.", show_default=False),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="DataLoader workers.",
                                              show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where its last "
                                "checkpoint stopped."),
    force: bool = typer.Option(False, "--force", help="Start over in a run folder that already holds a run."),
    devices: int = typer.Option(1, "--devices", help="Launch N processes with torchrun (DistributedDataParallel)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved training options as "
                                      "JSON and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display or messages."),
) -> None:
    """Train PTalker: the paper's losses, two-stage schedule, validation, resumable checkpoints."""
    from ..train.config import build_config, parse_assignments

    flags = {
        "data": str(data) if data is not None else None, "preset": preset, "out": str(out) if out is not None else None,
        "ablation": ablation, "loss_preset": loss_preset, "epochs": epochs, "max_steps": max_steps,
        "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr, "grad_clip": grad_clip, "amp": amp,
        "stage1_epochs": stage1_epochs, "scheduled_sampling": scheduled_sampling, "ss_end_epoch": ss_end_epoch,
        "val_split": val_split, "checkpoint_every": checkpoint_every, "seed": seed, "deterministic": deterministic,
        "device": device, "num_workers": num_workers,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    file_layer = _read_config_file(config) if config is not None else {}
    set_layer = parse_assignments(set_ or [])
    base: dict = {}
    if resume:
        run_out = set_layer.get("out") or flags.get("out") or file_layer.get("out")
        if not run_out:
            raise ConfigError("--resume needs the run folder: give --out RUN")
        saved = Path(run_out) / "train_config.json"
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} not found; is {run_out} a ptalker training run?")
        base = json.loads(saved.read_text())["train"]
    cfg = build_config(base, file_layer, flags, set_layer)
    if print_config:
        print_json(cfg.to_dict())
        return
    from .. import interrupts
    from ..train.checkpoint import resume_hint

    interrupts.set_note(lambda: resume_hint(cfg.run_dir, "ptalker train" + (f" --devices {devices}" if devices > 1
                                                                            else "")))
    if devices > 1 and "WORLD_SIZE" not in os.environ:
        _launch(cfg, devices, resume, force, quiet)
        return
    from ..train.trainer import train as run_training

    run_training(cfg, resume=resume, force=force, quiet=quiet, console=console)


def _read_config_file(path: Path) -> dict:
    from ..train.config import load_toml

    if path.suffix.lower() == ".json":
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    return load_toml(path)


def _launch(cfg, devices: int, resume: bool, force: bool, quiet: bool) -> None:
    """``--devices N``: write the resolved options and re-run under torchrun with N processes."""
    from ..fileio import atomic_write_text
    from ..train.distributed import launch_torchrun

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    launch = run_dir / ".launch_config.json"
    atomic_write_text(launch, json.dumps(cfg.to_dict(), indent=2) + "\n")
    argv = ["--config", str(launch)] + (["--resume"] if resume else []) + (["--force"] if force else []) \
        + (["--quiet"] if quiet else [])
    code = launch_torchrun(devices, argv, run_dir)
    if code:
        raise typer.Exit(code)

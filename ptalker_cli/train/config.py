"""Training configuration: a frozen :class:`TrainConfig`, TOML files and ``key=value`` overrides.

Precedence (lowest first): the dataclass defaults, a TOML file (``--config run.toml``),
the command line's named flags, then repeated ``--set key=value``. Keys are the field
names of :class:`TrainConfig`; ``model.<field>`` changes a :class:`~ptalker_cli.config.ModelConfig`
field of the preset and ``loss.<field>`` a :class:`~ptalker_cli.config.LossConfig` weight.
A TOML file uses the same names, with ``[model]`` and ``[loss]`` tables::

    preset = "biwi"
    epochs = 200
    lr = 3e-4
    stage1_epochs = 50  # the paper presets' default is half of epochs (here 100)
    scheduled_sampling = "linear"

    [model]
    motion_dropout = 0.3

    [loss]
    adv = 0.01
"""

from __future__ import annotations

import dataclasses
import json

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..config import ABLATIONS, LossConfig, ModelConfig, _coerce, preset, released_loss_config
from ..errors import ConfigError

SCHEDULES = ("off", "linear", "inverse_sigmoid")
LR_SCHEDULES = ("constant", "cosine", "step")
AMP_MODES = ("auto", "bf16", "fp16", "off")
SELECT_METRICS = ("objective", "rec", "lve")
#: Presets that train in the paper's two stages unless ``stage1_epochs`` is given (spec §2.5).
TWO_STAGE_PRESETS = ("biwi", "vocaset")


def default_stage1_epochs(preset: str, epochs: int) -> int:
    """Stage-1 length when ``stage1_epochs`` is not given: the first half of the run for the paper presets
    (the paper trains in two stages but gives no stage lengths, spec §2.5; the even split is ours), 0 (one
    stage) for the others."""
    return epochs // 2 if preset in TWO_STAGE_PRESETS else 0


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``ptalker train``. See docs/training.md for the meaning of each field."""

    # --- data and run ---------------------------------------------------------
    data: str = ""  # dataset root in the standard layout (docs/datasets.md)
    out: str = ""  # run folder (default runs/<preset>-<dataset name>)
    preset: str = "biwi"  # model preset: sizes; topology, fps and subjects come from the dataset
    ablation: str = "full"  # a Table-4 row of ptalker_cli.config.ABLATIONS
    loss_preset: str = "default"  # "default" (LossConfig()) | "released" (the authors' released weights)
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig field overrides
    loss: dict[str, Any] = field(default_factory=dict)  # LossConfig field overrides
    train_split: str = "train"
    val_split: str = "val"  # "none" disables validation (the last model is then also the run's model)
    # --- optimisation ---------------------------------------------------------
    epochs: int = 100
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit)
    batch_size: int = 1
    max_frames: int = 0  # padded-frames budget per batch for the bucket sampler (0 = none)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    # constant | cosine (to lr_min over all steps) | step (x lr_gamma every lr_step_epochs)
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    lr_step_epochs: int = 100
    lr_gamma: float = 0.5
    warmup_steps: int = 0  # linear warm-up from 0 over this many optimizer steps
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping; the released code does not clip)
    amp: str = "auto"  # auto (bf16 on CUDA where supported, else fp16 + GradScaler; off on CPU) | bf16 | fp16 | off
    # --- paper schedule -------------------------------------------------------
    # epochs with the style encoders E_a^s, E_m^s, E_p^s frozen (0 = no stage 1); None: the preset's default,
    # resolved on construction (default_stage1_epochs: epochs // 2 for biwi and vocaset, else 0)
    stage1_epochs: int | None = None
    scheduled_sampling: str = "off"  # off | linear | inverse_sigmoid
    ss_start_epoch: float = 0.0  # teacher-forcing probability is 1 until here ...
    ss_end_epoch: float = 100.0  # ... and exactly 0 (free-running inputs) from here on
    ss_k: float = 5.0  # steepness of the inverse-sigmoid schedule
    ss_passes: int = 1  # no-grad passes that produce the fed-back frames (more = closer to autoregressive)
    # where the model's own frames come from: "teacher" (ss_passes teacher-forced passes) | "autoregressive"
    # (the inference engine's free-running decode, refinement passes included: what eval and animate see)
    ss_rollout: str = "teacher"
    # --- speaker-ID pretraining of a from-scratch audio style encoder (train/style_pretrain.py)
    style_pretrain_steps: int = 0  # steps before the main training (0 = none; needs model.audio_style_speaker_head)
    style_pretrain_lr: float = 1e-3
    style_pretrain_batch: int = 8  # crops per step
    style_pretrain_seconds: float = 3.0  # crop length
    # --- phonetic pretraining of the speech content encoder (train/phone_pretrain.py)
    phone_pretrain_steps: int = 0  # steps before the main training (0 = none; needs model.viseme_source "audio")
    phone_pretrain_data: str = ""  # corpus with phone timings, its train split ("" = --data): data synth --speech-only
    phone_pretrain_lr: float = 3e-4  # peak of the one-cycle schedule
    phone_pretrain_batch: int = 16  # utterances per step
    freeze: tuple[str, ...] = ()  # PTalker sub-modules kept frozen for the whole run, e.g. ("audio_style",)
    init: str = ""  # model folder to start from (fine-tuning; its config wins over the preset, model.* apply on top)
    # --- validation, checkpoints, logs -----------------------------------------
    val_every: int = 1  # epochs between validations
    select_metric: str = "objective"  # validation value that picks the best model: objective | rec | lve
    checkpoint_every: int = 0  # also write last/ every N optimizer steps (0 = at epoch ends only)
    save_every_epochs: int = 1  # write last/ at the end of every N-th epoch (and always at the end)
    log_every: int = 1  # optimizer steps between step rows in metrics.jsonl / steps.csv
    tensorboard: bool = True  # write TensorBoard events when tensorboard is installed
    progress: bool = True  # rich progress display (only on a terminal)
    # --- reproducibility and hardware ------------------------------------------
    seed: int = 7
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume on CPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    num_workers: int = 0  # DataLoader worker processes
    threads: int = 0  # torch CPU threads per process (0 = torch's default)
    find_unused_parameters: bool = True  # DDP: needed when a loss term or component is switched off

    def __post_init__(self) -> None:
        if self.stage1_epochs is None:
            object.__setattr__(self, "stage1_epochs", default_stage1_epochs(self.preset, self.epochs))

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def validate(self) -> "TrainConfig":
        if not self.data:
            raise ConfigError("no dataset: give --data DIR (a folder in the standard layout, see docs/datasets.md)")
        checks = [
            (self.scheduled_sampling in SCHEDULES, f"scheduled_sampling must be one of {', '.join(SCHEDULES)}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}"),
            (self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}"),
            (self.select_metric in SELECT_METRICS, f"select_metric must be one of {', '.join(SELECT_METRICS)}"),
            (self.loss_preset in ("default", "released"), "loss_preset must be 'default' or 'released'"),
            (self.ablation in ABLATIONS, f"unknown ablation '{self.ablation}'; choose one of: {', '.join(ABLATIONS)}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1"),
            (self.lr > 0, "lr must be positive"),
            (self.max_steps >= 0 and self.checkpoint_every >= 0 and self.warmup_steps >= 0,
             "max_steps, checkpoint_every and warmup_steps must be >= 0"),
            (self.val_every >= 1 and self.log_every >= 1 and self.save_every_epochs >= 1,
             "val_every, log_every and save_every_epochs must be >= 1"),
            (self.stage1_epochs >= 0, "stage1_epochs must be >= 0"),
            (self.ss_end_epoch > self.ss_start_epoch, "ss_end_epoch must be greater than ss_start_epoch"),
            (self.ss_passes >= 1 and self.ss_k > 0, "ss_passes must be >= 1 and ss_k > 0"),
            (self.ss_rollout in ("teacher", "autoregressive"), "ss_rollout must be 'teacher' or 'autoregressive'"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)"),
            (self.style_pretrain_steps >= 0 and self.style_pretrain_lr > 0 and self.style_pretrain_batch >= 1
             and self.style_pretrain_seconds > 0,
             "style_pretrain_steps must be >= 0, style_pretrain_lr, _batch and _seconds positive"),
            (self.phone_pretrain_steps >= 0 and self.phone_pretrain_lr > 0 and self.phone_pretrain_batch >= 1,
             "phone_pretrain_steps must be >= 0, phone_pretrain_lr and phone_pretrain_batch positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        model_fields = {f.name for f in fields(ModelConfig)}
        bad = sorted(set(self.model) - model_fields)
        if bad:
            raise ConfigError(f"unknown model option(s) {bad}; see ModelConfig in docs/model.md")
        bad = sorted(set(self.loss) - {f.name for f in fields(LossConfig)})
        if bad:
            raise ConfigError(f"unknown loss option(s) {bad}; see LossConfig in docs/training.md")
        return self

    # ------------------------------------------------------------------ derived configs
    def loss_config(self) -> LossConfig:
        """The loss weights: the preset, then the ablation's zeros, then explicit ``loss.*`` values."""
        base = released_loss_config() if self.loss_preset == "released" else LossConfig()
        changes = dict(ABLATIONS[self.ablation].get("loss", {}))
        changes.update(self.loss)
        return _replace_checked(base, changes, "loss")

    def model_overrides(self) -> dict[str, Any]:
        """ModelConfig changes: the ablation's, then explicit ``model.*`` values."""
        changes = dict(ABLATIONS[self.ablation].get("model", {}))
        changes.update(self.model)
        return changes

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / f"{self.preset}-{Path(self.data).name or 'data'}"


def dataset_model_config(cfg: TrainConfig, manifest, template_subjects: list[str]) -> ModelConfig:
    """The preset's sizes with the dataset's topology, vertex count, fps, period and subjects.

    The PPE period is one second of frames (25 at 25 fps, as in the paper); explicit
    ``model.*`` overrides (and the ablation's changes) are applied last.
    """
    base = preset(cfg.preset)
    changes: dict[str, Any] = dict(
        topology=manifest.topology,
        num_vertices=int(manifest.num_vertices),
        fps=float(manifest.fps),
        period=max(1, int(round(manifest.fps))),
        train_subjects=tuple(manifest.train_subjects),
        template_subjects=tuple(template_subjects),
    )
    changes.update(cfg.model_overrides())
    return _replace_checked(base, changes, "model").validate()


def init_model_config(cfg: TrainConfig, base: ModelConfig) -> ModelConfig:
    """The config of an ``init`` model with the run's ``model.*`` values on top (e.g. a content encoder
    restricted to a short right context, ``model.content_right_context``); its weights must still fit."""
    return _replace_checked(base, cfg.model_overrides(), "model").validate()


def _replace_checked(obj: Any, changes: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    coerced = {}
    for key, value in changes.items():
        if key not in names:
            raise ConfigError(f"unknown {where} option '{key}'")
        coerced[key] = _coerce(hints[key], value, f"{where}.{key}")
    return dataclasses.replace(obj, **coerced)


# ----------------------------------------------------------------------- building
def parse_value(text: str) -> Any:
    """A command-line value: a TOML literal (``3e-4``, ``true``, ``[1, 2]``, ``"x"``), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items: typing.Iterable[str]) -> dict[str, Any]:
    """``["lr=1e-4", "model.dropout=0.2"]`` → a nested dict (``{"lr": 1e-4, "model": {"dropout": 0.2}}``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"cannot parse --set '{item}'; use KEY=VALUE (e.g. lr=1e-4 or model.dropout=0.2)")
        head, dot, rest = key.partition(".")
        if dot:
            if head not in ("model", "loss"):
                raise ConfigError(f"--set '{item}': only model.* and loss.* keys have a section")
            out.setdefault(head, {})[rest] = parse_value(value.strip())
        else:
            out[key] = parse_value(value.strip())
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if key in ("model", "loss") and isinstance(value, Mapping):
            out[key] = {**dict(out.get(key, {})), **dict(value)}
        else:
            out[key] = value
    return out


def build_config(*layers: Mapping[str, Any] | None) -> TrainConfig:
    """A validated :class:`TrainConfig` from layers of plain values (later layers win)."""
    data: dict[str, Any] = {}
    for layer in layers:
        if layer:
            data = merge(data, layer)
    return from_dict(data).validate()


def from_dict(data: Mapping[str, Any]) -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown training option(s) {unknown}; see docs/training.md")
    kwargs = {k: _coerce(hints[k], v, k) for k, v in data.items()}
    return TrainConfig(**kwargs)


def teacher_forcing_probability(cfg: TrainConfig, epoch: float) -> float:
    """Probability that a fed-back frame is the ground truth at fractional ``epoch``.

    * ``off``: always 1 (pure teacher forcing, the released behaviour);
    * ``linear``: 1 until ``ss_start_epoch``, then linear to 0 at ``ss_end_epoch``;
    * ``inverse_sigmoid``: Bengio et al.'s ``k / (k + exp(e / k))`` on the epochs since
      ``ss_start_epoch``, rescaled so that it is exactly 1 at the start and exactly 0 at
      ``ss_end_epoch``.

    From ``ss_end_epoch`` on every fed-back frame is the model's own prediction.
    """
    if cfg.scheduled_sampling == "off":
        return 1.0
    start, end = cfg.ss_start_epoch, cfg.ss_end_epoch
    if epoch <= start:
        return 1.0
    if epoch >= end:
        return 0.0
    x = (epoch - start) / (end - start)
    if cfg.scheduled_sampling == "linear":
        return 1.0 - x
    import math

    k = cfg.ss_k
    span = end - start

    def sig(e: float) -> float:
        return k / (k + math.exp(min(e / k, 700.0)))

    s0, s1 = sig(0.0), sig(span)
    return min(1.0, max(0.0, (sig(epoch - start) - s1) / (s0 - s1)))

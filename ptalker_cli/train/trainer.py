"""The training loop of ``ptalker train`` (see docs/training.md).

:class:`Trainer` builds everything from a :class:`~ptalker_cli.train.config.TrainConfig`:
the model config from the preset and the dataset (topology, fps, subjects, templates,
regions), the datasets and length-bucketed (and, under torchrun, sharded) batches,
Adam with an optional LR schedule, mixed precision on CUDA, the paper's two-stage
schedule and scheduled sampling. It validates on the validation split every
``val_every`` epochs, keeps the best model (by validation loss) in the run folder
itself and the resumable ``last/`` checkpoint beside it.

The loop itself is :meth:`Trainer._fit`; the pieces it calls live beside it: the stages
(:mod:`.stages`), devices and precision (:mod:`.runtime`), the validation pass
(:mod:`.validation`), the run folder's records (:mod:`.run_folder`), checkpoint files
(:mod:`.checkpoint`) and the logs and progress bar (:mod:`.logging`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import LossConfig
from ..errors import ConfigError
from ..model.folder import WEIGHTS_FILE, load_weights, read_model_folder
from ..model.losses import INNER_LIP_PAIRS
from ..model.network import PTalker, build_model
from ..zoo.hub import load_pretrained_speech_model
from . import checkpoint as ckpt
from . import distributed as dist_util
from .config import TrainConfig, dataset_model_config, init_model_config, teacher_forcing_probability
from .data import load_training_data, make_loaders, template_subjects
from .logging import MetricsLogger, TrainProgress, epoch_line
from .pretrain_stages import check_phone_pretraining, pretrain_phones, pretrain_style
from .rollout import free_running
from .run_folder import BEST_NAME, SUMMARY_NAME, TRAIN_CONFIG_NAME, claim_run_folder, write_record
from .runtime import amp_dtype, autocast, resolve_train_device, seed_everything, set_deterministic
from .stages import CLASSIFIER_MODULES, CONTENT_MODULES, STYLE_MODULES, set_stage, stage_for_epoch, style_parameters
from .validation import validation_pass

__all__ = [
    "CLASSIFIER_MODULES", "CONTENT_MODULES", "STYLE_MODULES", "TrainResult", "TrainStep", "Trainer",
    "dataset_model_config", "set_stage", "style_parameters", "train",
]


class TrainStep(nn.Module):
    """Forward + losses in one module, so DDP sees every parameter the losses use."""

    def __init__(self, model: PTalker, loss_cfg: LossConfig):
        super().__init__()
        self.model = model
        self.loss_cfg = loss_cfg

    def forward(self, audio, vertices, template, subject_index, audio_lengths, frame_mask, inputs=None,
                visemes=None):
        out = self.model(audio, vertices, template, subject_index, audio_lengths, frame_mask, inputs=inputs)
        losses = self.model.losses(out, vertices, subject_index, self.loss_cfg, visemes=visemes)
        return losses, out.vertices, out.frame_mask


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    steps: int
    best_value: float | None
    best_epoch: int | None
    last_metrics: dict[str, float]


class Trainer:
    """Builds and runs a training session (one process; under torchrun, one rank).

    ``console``: the rich console for messages and the progress bar (default: the
    shared stderr console of :mod:`ptalker_cli.console`).
    """

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, force: bool = False, quiet: bool = False,
                 console=None, init_model: PTalker | None = None):
        self.cfg = cfg.validate()
        self.resume = resume
        self.force = force
        self.quiet = quiet
        self.info = dist_util.env_info()
        self.device = resolve_train_device(cfg.device, self.info)
        self.run_dir = cfg.run_dir
        if console is None:
            from ..console import console
        self.console = console
        self._init_model = init_model
        self.model: PTalker | None = None

    def log(self, message: str) -> None:
        if self.info.is_main and not self.quiet:
            self.console.print(message, highlight=False, soft_wrap=True)

    def _progress(self) -> TrainProgress:
        return TrainProgress(self.console, enabled=self.cfg.progress and self.info.is_main and not self.quiet)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        dist_util.init(self.info, self.device)
        set_deterministic(cfg.deterministic)
        seed_everything(cfg.seed)
        self._open_run_folder()
        try:
            self._load_data()
            self._build_model()
            self._build_optimizer()
            self._build_batches()
        except BaseException:  # a config error, a bad dataset, Ctrl-C: leave no empty run folder behind
            if self._created_run_dir:
                with contextlib.suppress(OSError):
                    self.run_dir.rmdir()  # only if still empty
            raise
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)

        self.epoch = 0
        self.batch_in_epoch = 0
        self.step = 0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.epoch_sums: dict[str, float] = {}
        self.stage = None
        self.ddp = None
        if self.checkpoint_dir is not None:
            self._load_state()
        elif self.info.enabled:
            # same starting point on every rank, different dropout streams
            torch.manual_seed(cfg.seed + 1000 * self.info.rank)

        self.metrics = MetricsLogger(self.run_dir, enabled=self.info.is_main, tensorboard=cfg.tensorboard)
        if self.info.is_main:
            self._write_train_config()
            if self.checkpoint_dir is not None:
                self.metrics.start(resume_step=self.step, resume_epoch=self.epoch)
            else:
                self.metrics.start()

    def _open_run_folder(self) -> None:
        """``--resume``: find the last complete checkpoint; else claim the folder for a new run (rank 0)."""
        self.checkpoint_dir = None
        self._created_run_dir = False
        if self.resume:
            self.checkpoint_dir = ckpt.find_checkpoint(self.run_dir)
            if self.checkpoint_dir is None:
                raise ConfigError(f"--resume: {self.run_dir} has no complete checkpoint (last/); start a new run")
        elif self.info.is_main:
            self._created_run_dir = claim_run_folder(self.run_dir, self.force)
        dist_util.barrier(self.info)

    def _load_data(self) -> None:
        self.data = data = load_training_data(self.cfg, self.log)
        self.manifest, self.train_set, self.val_set = data.manifest, data.train_set, data.val_set

    def _build_model(self) -> None:
        """The model (from the checkpoint, ``init_model`` or the preset), frozen modules, style pretraining."""
        cfg, layout, subjects = self.cfg, self.data.layout, template_subjects(self.data)
        self.loss_cfg = cfg.loss_config()
        if self.checkpoint_dir is not None:
            model = PTalker.from_pretrained(self.checkpoint_dir)
        elif self._init_model is not None:
            model = self._init_model
        elif cfg.init:
            if not (Path(cfg.init) / WEIGHTS_FILE).is_file():
                raise ConfigError(f"init: {cfg.init} is not a model folder (no {WEIGHTS_FILE})")
            config, topology, templates, state = read_model_folder(cfg.init)
            if (config.num_vertices, list(config.train_subjects)) != (
                    int(self.manifest.num_vertices), list(self.manifest.train_subjects)):
                raise ConfigError(f"init: {cfg.init} animates another mesh or other training subjects than {cfg.data}")
            model = PTalker(init_model_config(cfg, config), topology, templates)  # model.* on top
            # a viseme classifier added by model.viseme_classes starts from its initialization
            load_weights(model, state, cfg.init, new_modules=("viseme_head",) if not config.viseme_classes else ())
        else:
            model_cfg = dataset_model_config(cfg, self.manifest, subjects)
            templates = np.stack([layout.load_template(s) for s in subjects]) if subjects else None
            model = build_model(model_cfg, self.data.topology, templates, speech_loader=load_pretrained_speech_model)
        if self.loss_cfg.lip_closure and model.topology.name not in INNER_LIP_PAIRS:
            raise ConfigError(f"loss.lip_closure needs the inner lips of the mesh; known for "
                              f"{', '.join(INNER_LIP_PAIRS)}, not '{model.topology.name}' (set loss.lip_closure=0)")
        if self.loss_cfg.viseme and model.viseme_head is None:
            raise ConfigError("loss.viseme needs a viseme classifier; add --set model.viseme_classes=15")
        self.model = model.to(self.device).train()
        if self.info.enabled and self.model.graph_encoder is not None:
            # Under torchrun the fused CPU kernel of the graph encoder (used for no-grad
            # validation) was seen to abort a gloo rank now and then ("terminate called
            # without an active exception", about 1 run in 5; never without the kernel, and
            # never in single-process runs or inference). Distributed runs use its PyTorch path.
            self.model.graph_encoder.backend = "torch"
        children = {n: m for n, m in self.model.named_children() if any(True for _ in m.parameters())}
        for name in cfg.freeze:
            if name not in children:
                raise ConfigError(f"freeze: the model has no module '{name}'; choose from: {', '.join(children)}")
        check_phone_pretraining(cfg, self.model)
        if self.checkpoint_dir is None and cfg.style_pretrain_steps:
            pretrain_style(self)
        if self.checkpoint_dir is None and cfg.phone_pretrain_steps:
            pretrain_phones(self)
        for name in cfg.freeze:  # after the pretraining stages, which train audio_style and the content encoder
            children[name].requires_grad_(False)
        self.trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        params = [p for n, p in self.model.named_parameters() if n in self.trainable]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.amp = amp_dtype(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None

    def _build_batches(self) -> None:
        """Length-bucketed batches, sharded over the ranks, and the step budget they give."""
        cfg = self.cfg
        self.train_sampler, self.train_loader, self.val_sampler, self.val_loader = make_loaders(
            cfg, self.data, self.info, self.device)
        self.batches_per_epoch = len(self.train_sampler.batches())
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum)
        total = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.total_steps = max(1, min(total, cfg.epochs * self.steps_per_epoch))

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        f = 1.0
        if cfg.warmup_steps and step < cfg.warmup_steps:
            f = (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "cosine":
            x = min(1.0, step / self.total_steps)
            lo = cfg.lr_min / cfg.lr
            f *= lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * x))
        elif cfg.lr_schedule == "step":
            f *= cfg.lr_gamma ** ((step // max(self.steps_per_epoch, 1)) // cfg.lr_step_epochs)
        return f

    def _write_train_config(self) -> None:
        write_record(self.run_dir, TRAIN_CONFIG_NAME, {
            "train": self.cfg.to_dict(),
            "model": self.model.config.to_dict(),
            "loss": asdict(self.loss_cfg),
            "dataset": {
                "root": str(Path(self.cfg.data).resolve()),
                "name": self.manifest.name,
                "fps": self.manifest.fps,
                "topology": self.manifest.topology,
                "num_vertices": self.manifest.num_vertices,
                "train_subjects": list(self.manifest.train_subjects),
                "train_sequences": len(self.train_set),
                "val_sequences": len(self.val_set) if self.val_set is not None else 0,
            },
            "world_size": self.info.world_size,
            "device": str(self.device),
            "amp": str(self.amp).replace("torch.", "") if self.amp is not None else "off",
            "torch": torch.__version__,
        })

    # ------------------------------------------------------------------ checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "epoch_sums": self.epoch_sums,
            "world_size": self.info.world_size,
            "seed": self.cfg.seed,
            "scheduler": json.loads(json.dumps(self.scheduler.state_dict(), default=lambda o: None)),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def save_last(self) -> None:
        rngs = dist_util.all_gather_object(ckpt.capture_rng(), self.info)
        if self.info.is_main:
            ckpt.save_checkpoint(self.run_dir, self.model, self.optimizer, self._trainer_state(), rngs)
        dist_util.barrier(self.info)

    def _load_state(self) -> None:
        state, opt_tensors, rngs = ckpt.load_checkpoint(self.checkpoint_dir)
        ckpt.optimizer_from_parts(self.optimizer, opt_tensors, state["optimizer"])
        sched = dict(state["scheduler"])
        sched.pop("lr_lambdas", None)
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **sched})
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.step = int(state["step"])
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch")
        self.epoch_sums = dict(state.get("epoch_sums", {}))
        if state.get("world_size", 1) != self.info.world_size:
            self.log(f"[yellow]warning:[/] the checkpoint was written by {state.get('world_size')} processes, this "
                     f"run has {self.info.world_size}: batches and RNG streams differ from an uninterrupted run")
            if self.batch_in_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
        if self.info.rank < len(rngs):
            ckpt.restore_rng(rngs[self.info.rank])
        else:
            torch.manual_seed(self.cfg.seed + 1000 * self.info.rank + self.step)

    def _save_best(self) -> None:
        if self.info.is_main:
            self.model.save_pretrained(self.run_dir)
            write_record(self.run_dir, BEST_NAME, {"epoch": self.best_epoch, "step": self.step,
                                                   "metric": self.cfg.select_metric, "value": self.best_value})

    # ------------------------------------------------------------------ stages / DDP
    def _enter_stage(self, stage: int) -> None:
        if stage == self.stage:
            return
        set_stage(self.model, stage, self.trainable)
        self.stage = stage
        step_module = TrainStep(self.model, self.loss_cfg)
        if self.info.enabled:
            import inspect

            from torch.nn.parallel import DistributedDataParallel as DDP

            # retire the previous wrapper (and its reducer) on every rank before the new one
            # broadcasts its parameters: no rank may still be inside the old one's collectives
            dist_util.barrier(self.info)
            self.ddp = None

            # the buffers (template, faces, regions) are constants: no per-step sync
            sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                    else {"broadcast_buffers": False})
            self.ddp = DDP(step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           find_unused_parameters=self.cfg.find_unused_parameters, **sync)
        else:
            self.ddp = step_module

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        return autocast(self.amp, self.device)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        keys = ("audio", "audio_lengths", "vertices", "template", "subject_index", "frame_mask", "visemes")
        return {k: batch[k].to(self.device, non_blocking=True) for k in keys if k in batch}

    @torch.no_grad()
    def sampled_inputs(self, b: dict[str, Tensor], p_tf: float) -> Tensor | None:
        """Scheduled sampling: fed-back frames from the model's own no-grad predictions.

        Each frame is the ground truth with probability ``p_tf`` and the model's
        prediction otherwise (one Bernoulli draw per frame). ``ss_rollout = "teacher"``:
        with ``ss_passes = n`` the prediction is recomputed n times from the current mix,
        so for ``p_tf = 0`` the first n frames equal free-running decoding exactly.
        ``ss_rollout = "autoregressive"``: the prediction is the inference engine's own
        free-running decode (:func:`~ptalker_cli.model.decoding.generate`, dropout off,
        the subject's one-hot style), so the losses see the frames it really feeds itself
        at inference (docs/training.md).
        """
        if p_tf >= 1.0:
            return None
        gt = b["vertices"]
        use_pred = torch.rand(gt.shape[:2], device=gt.device) >= p_tf
        if self.cfg.ss_rollout == "autoregressive":
            return torch.where(use_pred[..., None, None], free_running(self.model, b), gt)
        src = gt
        for _ in range(self.cfg.ss_passes):
            with self._autocast():
                pred = self.model(b["audio"], gt, b["template"], b["subject_index"], b["audio_lengths"],
                                  b["frame_mask"], inputs=src).vertices
            src = torch.where(use_pred[..., None, None], pred.float(), gt)
        return src

    def train_micro_batch(self, batch: dict[str, Any], p_tf: float, sync: bool = True) -> dict[str, float]:
        b = self._to_device(batch)
        inputs = self.sampled_inputs(b, p_tf)
        ctx = self.ddp.no_sync() if (self.info.enabled and not sync) else contextlib.nullcontext()
        with ctx:
            with self._autocast():
                losses, _, _ = self.ddp(b["audio"], b["vertices"], b["template"], b["subject_index"],
                                        b["audio_lengths"], b["frame_mask"], inputs, b.get("visemes"))
            loss = losses["total"] / self.cfg.grad_accum
            if self.scaler is None and not torch.isfinite(loss):  # (fp16: the scaler skips such steps)
                raise FloatingPointError(f"non-finite loss at step {self.step}: "
                                         f"{ {k: float(v) for k, v in losses.items()} }")
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return {k: float(v.detach()) for k, v in losses.items()}

    def optimizer_step(self) -> float:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.optimizer.param_groups[0]["params"] if p.grad is not None]
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm() for p in params])))\
                if params else 0.0
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return norm

    def validate(self) -> dict[str, float]:
        """Validation losses and ``val_lve`` (see :mod:`.validation`); empty without a validation split."""
        if self.val_loader is None:
            return {}
        return validation_pass(self.model, self.val_loader, self.loss_cfg, self._to_device, self.amp, self.device,
                               self.info)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            if self.model is None:
                self.setup()
            return self._fit()
        finally:
            if hasattr(self, "metrics"):
                self.metrics.close()
            torch.use_deterministic_algorithms(was_deterministic)

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        self.log(self._start_line())
        last_metrics: dict[str, float] = {}
        stop = bool(cfg.max_steps and self.step >= cfg.max_steps)
        t_start = time.perf_counter()
        steps_at_start = self.step
        with self._progress() as bar:
            while self.epoch < cfg.epochs and not stop:
                epoch = self.epoch
                self._enter_stage(stage_for_epoch(cfg, epoch))
                start = self.batch_in_epoch
                self.train_sampler.set_epoch(epoch, start)
                if start == 0:
                    self.epoch_sums = {}
                bar.start_epoch(epoch, cfg.epochs, self.batches_per_epoch, start, self.stage)
                n = self.batches_per_epoch
                accum = 0
                step_losses: dict[str, float] = {}
                t_epoch = time.perf_counter()
                for i, batch in enumerate(self.train_loader, start=start):
                    p_tf = teacher_forcing_probability(cfg, epoch + i / n)
                    last_in_epoch = i == n - 1
                    sync = accum + 1 == cfg.grad_accum or last_in_epoch
                    losses = self.train_micro_batch(batch, p_tf, sync=sync)
                    accum += 1
                    for k, v in losses.items():
                        step_losses[k] = step_losses.get(k, 0.0) + v
                        self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
                    self.epoch_sums["_batches"] = self.epoch_sums.get("_batches", 0.0) + 1
                    self.batch_in_epoch = i + 1
                    bar.update({k: v for k, v in losses.items()})
                    if not sync:
                        continue
                    lr = self.optimizer.param_groups[0]["lr"]
                    grad_norm = self.optimizer_step()
                    step_losses = {k: v / accum for k, v in step_losses.items()}
                    if self.step % cfg.log_every == 0:
                        self._log_step(step_losses, epoch, lr, grad_norm, p_tf, t_start, steps_at_start)
                    accum = 0
                    step_losses = {}
                    if cfg.max_steps and self.step >= cfg.max_steps:
                        stop = True
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not last_in_epoch \
                            and not stop:
                        self.save_last()
                    if stop:
                        break
                last_metrics = self._end_epoch(epoch, time.perf_counter() - t_epoch, stop, bar)
        result = TrainResult(self.run_dir, self.epoch, self.step, self.best_value, self.best_epoch, last_metrics)
        self._finish(result, time.perf_counter() - t_start, self.step - steps_at_start)
        return result

    def _start_line(self) -> str:
        amp = str(self.amp).replace('torch.', '') if self.amp else 'off'
        return (f"training {self.run_dir}: {len(self.train_set)} train / "
                f"{len(self.val_set) if self.val_set is not None else 0} val sequences, "
                f"{self.batches_per_epoch} batches per epoch per process, {self.info.world_size} process(es) on "
                f"{self.device}, AMP {amp}"
                + (f", resuming at epoch {self.epoch + 1} step {self.step}" if self.checkpoint_dir else ""))

    def _end_epoch(self, epoch: int, seconds: float, stop: bool, bar: TrainProgress) -> dict[str, Any]:
        """End of an epoch (or of the step budget): validate, keep the best, checkpoint, log; the epoch's row."""
        cfg = self.cfg
        complete = self.batch_in_epoch >= self.batches_per_epoch
        epoch_row = self._epoch_row(epoch, seconds)
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs or stop:
            val = self.validate()
            epoch_row.update(val)
            self._maybe_best(val, epoch)
        if complete:
            self.epoch += 1
            self.batch_in_epoch = 0
        if stop or not complete or self.epoch >= cfg.epochs or self.epoch % cfg.save_every_epochs == 0:
            self.save_last()
        if self.info.is_main:
            self.metrics.log_epoch(epoch_row)
            if not self.quiet:
                bar.print(epoch_line(epoch_row, cfg.epochs, self.best_value, self.best_epoch))
        return epoch_row

    def _epoch_row(self, epoch: int, seconds: float) -> dict[str, Any]:
        keys = sorted(k for k in self.epoch_sums if not k.startswith("_"))
        keys = dist_util.all_keys(keys, self.info)
        vec = [self.epoch_sums.get(k, 0.0) for k in keys] + [self.epoch_sums.get("_batches", 0.0)]
        vec = dist_util.all_reduce_sum(vec, self.info, dist_util.comm_device(self.device))
        nb = max(vec[-1], 1.0)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "stage": self.stage,
                               "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3)}
        row.update({f"train_{k}": v / nb for k, v in zip(keys, vec[:-1])})
        return row

    def _log_step(self, losses: dict[str, float], epoch: int, lr: float, grad_norm: float, p_tf: float,
                  t_start: float, steps_at_start: int) -> None:
        keys = sorted(losses)
        if self.info.enabled:  # mean over ranks
            vals = dist_util.all_reduce_sum([losses[k] for k in keys], self.info, dist_util.comm_device(self.device))
            losses = {k: v / self.info.world_size for k, v in zip(keys, vals)}
        if not self.info.is_main:
            return
        elapsed = time.perf_counter() - t_start
        row = {"step": self.step, "epoch": epoch + 1, "stage": self.stage, "lr": lr, "grad_norm": grad_norm,
               "teacher_forcing": p_tf, **losses,
               "steps_per_s": (self.step - steps_at_start) / elapsed if elapsed > 0 else 0.0}
        self.metrics.log_step(row)

    def _maybe_best(self, val: dict[str, float], epoch: int) -> None:
        key = f"val_{self.cfg.select_metric}"
        if not val:
            # no validation split: the run's model is the latest one
            self.best_epoch = epoch + 1
            self._save_best()
            return
        value = val.get(key)
        if value is None or not math.isfinite(value):
            return
        if self.best_value is None or value < self.best_value:
            self.best_value = value
            self.best_epoch = epoch + 1
            self._save_best()

    def _finish(self, result: TrainResult, seconds: float, steps: int) -> None:
        # all ranks must hold the same weights after DDP training
        checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        sums = dist_util.all_gather_object(checksum, self.info)
        if self.info.is_main:
            if self.val_set is None or not (self.run_dir / WEIGHTS_FILE).exists():
                self.model.save_pretrained(self.run_dir)
            write_record(self.run_dir, SUMMARY_NAME, {
                "epochs": result.epochs, "steps": result.steps, "best_epoch": result.best_epoch,
                "best_value": result.best_value, "select_metric": self.cfg.select_metric,
                "world_size": self.info.world_size, "ranks_in_sync": len(set(sums)) == 1,
                "param_checksums": sums, "seconds_this_session": round(seconds, 3),
                "steps_per_s_this_session": steps / seconds if seconds > 0 else 0.0,
            })
            self.log(f"done: {result.steps} steps; model (best by validation {self.cfg.select_metric}) in "
                     f"{self.run_dir}, resumable checkpoint in {self.run_dir / ckpt.LAST}")
        dist_util.barrier(self.info)


def train(cfg: TrainConfig, *, resume: bool = False, force: bool = False, quiet: bool = False,
          console=None) -> TrainResult:
    """Run a training session (the library form of ``ptalker train``)."""
    trainer = Trainer(cfg, resume=resume, force=force, quiet=quiet, console=console)
    try:
        return trainer.fit()
    finally:
        dist_util.shutdown()

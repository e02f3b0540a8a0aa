"""The training loop of ``ptalker train`` (see docs/training.md).

:class:`Trainer` builds everything from a :class:`~ptalker_cli.train.config.TrainConfig`:
the model config from the preset and the dataset (topology, fps, subjects, templates,
regions), the datasets and length-bucketed (and, under torchrun, sharded) batches,
Adam with an optional LR schedule, mixed precision on CUDA, the paper's two-stage
schedule and scheduled sampling. It validates on the validation split every
``val_every`` epochs, keeps the best model (by validation loss) in the run folder
itself and the resumable ``last/`` checkpoint beside it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import LossConfig, ModelConfig, preset
from ..errors import ConfigError
from ..fileio import atomic_write_text
from ..mesh import Topology
from ..model.folder import MODEL_FILES, WEIGHTS_FILE
from ..model.network import PTalker, build_model
from ..zoo.hub import load_pretrained_speech_model
from . import checkpoint as ckpt
from . import distributed as dist_util
from .config import TrainConfig, _replace_checked, teacher_forcing_probability
from .logging import MetricsLogger, TrainProgress

TRAIN_CONFIG_NAME = "train_config.json"
BEST_NAME = "best.json"
SUMMARY_NAME = "train_summary.json"
STYLE_PRETRAIN_NAME = "style_pretrain.json"

#: The style encoders frozen in stage 1: E_a^s, E_m^s, E_p^s.
STYLE_MODULES = ("audio_style", "style_motion", "identity")
#: What keeps training in stage 1 besides the decoder: content encoders and the classifiers.
CONTENT_MODULES = ("audio_encoder", "audio_feature_map", "content_motion", "graph_encoder")
CLASSIFIER_MODULES = ("style_classifier", "motion_style_classifier")


# ----------------------------------------------------------------------- model config from the dataset
def dataset_model_config(cfg: TrainConfig, manifest, topology: Topology, template_subjects: list[str]) -> ModelConfig:
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


# ----------------------------------------------------------------------- stages
def style_parameters(model: PTalker) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the style encoders E_a^s, E_m^s, E_p^s present in ``model``."""
    out = []
    for mod in STYLE_MODULES:
        sub = getattr(model, mod, None)
        if sub is not None:
            out += [(f"{mod}.{n}", p) for n, p in sub.named_parameters()]
    return out


def set_stage(model: PTalker, stage: int, trainable: set[str]) -> None:
    """Stage 1: style encoders frozen (``requires_grad`` False, so no gradient and no
    optimizer update); stage 2: everything in ``trainable`` trains again (parameters
    frozen from the start, like the speech CNN front ends, stay frozen)."""
    style = {n for n, _ in style_parameters(model)}
    for name, p in model.named_parameters():
        if name in style:
            p.requires_grad_(stage >= 2 and name in trainable)
        else:
            p.requires_grad_(name in trainable)


def stage_for_epoch(cfg: TrainConfig, epoch: int) -> int:
    return 1 if epoch < cfg.stage1_epochs else 2


class TrainStep(nn.Module):
    """Forward + losses in one module, so DDP sees every parameter the losses use."""

    def __init__(self, model: PTalker, loss_cfg: LossConfig):
        super().__init__()
        self.model = model
        self.loss_cfg = loss_cfg

    def forward(self, audio, vertices, template, subject_index, audio_lengths, frame_mask, inputs=None):
        out = self.model(audio, vertices, template, subject_index, audio_lengths, frame_mask, inputs=inputs)
        losses = self.model.losses(out, vertices, subject_index, self.loss_cfg)
        return losses, out.vertices, out.frame_mask


def lip_error_sums(pred: Tensor, gt: Tensor, lip_index: Tensor, mask: Tensor) -> tuple[float, float]:
    """(sum over valid frames of the max over lip vertices of the squared L2 error, frame count).

    LVE of a set of sequences is the first divided by the second (spec §5.1).
    """
    err = ((pred[:, :, lip_index].float() - gt[:, :, lip_index].float()) ** 2).sum(-1).amax(-1)  # (B, T)
    m = mask.to(err.dtype)
    return float((err * m).sum()), float(m.sum())


def lip_vertex_error(pred: Tensor, gt: Tensor, lip_index: Tensor, mask: Tensor | None = None) -> float:
    if mask is None:
        mask = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    s, n = lip_error_sums(pred, gt, lip_index, mask)
    return s / max(n, 1.0)


# ----------------------------------------------------------------------- devices and AMP
def resolve_train_device(spec: str, info: dist_util.DistInfo) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda but no CUDA device is available; use --device cpu")
        if info.enabled:
            dev = torch.device("cuda", info.local_rank)
        elif dev.index is None:
            dev = torch.device("cuda", 0)
    return dev


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA where supported, else fp16; none on CPU unless asked (bf16)."""
    if mode == "off":
        return None
    if device.type == "cuda":
        if mode == "fp16":
            return torch.float16
        if mode == "bf16":
            return torch.bfloat16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        raise ConfigError("--amp fp16 needs CUDA; use --amp bf16 or off on CPU")
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    steps: int
    best_value: float | None
    best_epoch: int | None
    last_metrics: dict[str, float]


class Trainer:
    """Builds and runs a training session (one process; under torchrun, one rank)."""

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
            from ..cli.common import console as default_console

            console = default_console
        self.console = console
        self._init_model = init_model
        self.model: PTalker | None = None

    # ------------------------------------------------------------------ setup
    def log(self, message: str) -> None:
        if self.info.is_main and not self.quiet:
            self.console.print(message, highlight=False, soft_wrap=True)

    def setup(self) -> None:
        from ..data.dataset import LengthBucketSampler, TalkingHeadDataset, collate_batch
        from ..data.layout import DatasetLayout

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        dist_util.init(self.info, self.device)
        set_deterministic(cfg.deterministic)
        seed_everything(cfg.seed)

        # ---- run folder
        self.checkpoint_dir = None
        if self.resume:
            self.checkpoint_dir = ckpt.find_checkpoint(self.run_dir)
            if self.checkpoint_dir is None:
                raise ConfigError(f"--resume: {self.run_dir} has no complete checkpoint (last/); start a new run")
        elif self.info.is_main:
            if (self.run_dir / ckpt.LAST).exists() or (self.run_dir / TRAIN_CONFIG_NAME).exists():
                if not self.force:
                    raise ConfigError(
                        f"{self.run_dir} already holds a run; continue it with --resume, or pass --force to start "
                        "over (or choose another --out)")
                for name in (ckpt.LAST, ".last.tmp", ".last.old", "tensorboard"):
                    shutil.rmtree(self.run_dir / name, ignore_errors=True)
                for name in (*MODEL_FILES, BEST_NAME, SUMMARY_NAME, STYLE_PRETRAIN_NAME):
                    (self.run_dir / name).unlink(missing_ok=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        dist_util.barrier(self.info)

        # ---- data
        root = Path(cfg.data)
        layout = DatasetLayout(root)
        manifest = layout.manifest()
        self.manifest = manifest
        topology = layout.load_topology(manifest)
        if topology.num_vertices != manifest.num_vertices:
            raise ConfigError(f"{root}: topology has {topology.num_vertices} vertices, the manifest says "
                              f"{manifest.num_vertices}")
        if "lip" not in topology.regions:
            self.log("[yellow]warning:[/] the dataset has no lip region: the mouth loss and LVE use all vertices")
        self.train_set = TalkingHeadDataset(root, cfg.train_split)
        if len(self.train_set) == 0:
            raise ConfigError(f"split '{cfg.train_split}' of {root} is empty")
        self.val_set = None
        if cfg.val_split != "none":
            if cfg.val_split.startswith("test"):
                raise ConfigError("validation on a test split would select the model on test data; use the "
                                  "validation split (or --val-split none)")
            if cfg.val_split not in manifest.splits:
                raise ConfigError(f"{root} has no '{cfg.val_split}' split; add one to dataset.json or pass "
                                  "--val-split none")
            self.val_set = TalkingHeadDataset(root, cfg.val_split)
            if len(self.val_set) == 0:
                self.val_set = None
        template_subjects = list(manifest.train_subjects) + [
            s for s in manifest.subjects if s not in manifest.train_subjects and layout.template_path(s).is_file()]

        # ---- model
        self.loss_cfg = cfg.loss_config()
        if self.checkpoint_dir is not None:
            model = PTalker.from_pretrained(self.checkpoint_dir)
        elif self._init_model is not None:
            model = self._init_model
        else:
            model_cfg = dataset_model_config(cfg, manifest, topology, template_subjects)
            templates = np.stack([layout.load_template(s) for s in template_subjects]) if template_subjects else None
            model = build_model(model_cfg, topology, templates, speech_loader=load_pretrained_speech_model)
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
        if self.checkpoint_dir is None and cfg.style_pretrain_steps:
            self._pretrain_style()
        for name in cfg.freeze:  # after the pretraining, which trains audio_style
            children[name].requires_grad_(False)
        self.trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        params = [p for n, p in self.model.named_parameters() if n in self.trainable]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.amp = amp_dtype(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None

        # ---- batches (sharded over ranks)
        self.train_sampler = dist_util.ShardedBatchSampler(
            LengthBucketSampler(self.train_set.lengths, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                max_frames=cfg.max_frames or None),
            self.info.rank, self.info.world_size, pad=True)
        gen = torch.Generator()
        gen.manual_seed(cfg.seed)
        loader_kw = dict(collate_fn=collate_batch, num_workers=cfg.num_workers, generator=gen,
                         pin_memory=self.device.type == "cuda")
        self.train_loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=self.train_sampler, **loader_kw)
        self.val_loader = None
        if self.val_set is not None:
            self.val_sampler = dist_util.ShardedBatchSampler(
                LengthBucketSampler(self.val_set.lengths, cfg.batch_size, shuffle=False,
                                    max_frames=cfg.max_frames or None),
                self.info.rank, self.info.world_size, pad=False)
            self.val_loader = torch.utils.data.DataLoader(self.val_set, batch_sampler=self.val_sampler, **loader_kw)
        self.batches_per_epoch = len(self.train_sampler.batches())
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum)
        total = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.total_steps = max(1, min(total, cfg.epochs * self.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)

        # ---- state
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

    def _pretrain_style(self) -> None:
        """Speaker-ID pretraining of E_a^s on the training split's audio (every rank alike;
        DDP then starts from rank 0's weights)."""
        from .style_pretrain import pretrain_audio_style

        cfg = self.cfg
        clips = [(self.train_set.audio(name), self.manifest.subject_index(subject))
                 for name, subject in zip(self.train_set.names, self.train_set.subjects)]
        self.log(f"speaker-ID pretraining of the audio style encoder: {cfg.style_pretrain_steps} steps of "
                 f"{cfg.style_pretrain_batch} x {cfg.style_pretrain_seconds:g}-s crops")
        with TrainProgress(self.console, enabled=cfg.progress and self.info.is_main and not self.quiet) as bar:
            bar.start("speaker-ID pretraining", cfg.style_pretrain_steps)
            result = pretrain_audio_style(
                self.model, clips, cfg.style_pretrain_steps, lr=cfg.style_pretrain_lr,
                batch_size=cfg.style_pretrain_batch, seconds=cfg.style_pretrain_seconds,
                sample_rate=self.train_set.sample_rate, seed=cfg.seed, device=self.device,
                on_step=lambda step, loss: bar.update({"speaker_id": loss}))
        self.log(f"speaker-ID pretraining: cross-entropy {result.first_loss:.3f} -> {result.last_loss:.3f} "
                 f"(chance {result.chance_loss:.3f}), accuracy {result.accuracy:.2f}, {result.seconds:.0f} s")
        if self.info.is_main:
            atomic_write_text(self.run_dir / STYLE_PRETRAIN_NAME, json.dumps(result.to_dict(), indent=2) + "\n")

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
        data = {
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
        }
        atomic_write_text(self.run_dir / TRAIN_CONFIG_NAME, json.dumps(data, indent=2) + "\n")

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
            atomic_write_text(self.run_dir / BEST_NAME, json.dumps(
                {"epoch": self.best_epoch, "step": self.step, "metric": self.cfg.select_metric,
                 "value": self.best_value}, indent=2) + "\n")

    # ------------------------------------------------------------------ stages / DDP
    def _enter_stage(self, stage: int) -> None:
        if stage == self.stage:
            return
        set_stage(self.model, stage, self.trainable)
        self.stage = stage
        step_module = TrainStep(self.model, self.loss_cfg)
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            import inspect

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
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        keys = ("audio", "audio_lengths", "vertices", "template", "subject_index", "frame_mask")
        return {k: batch[k].to(self.device, non_blocking=True) for k in keys}

    @torch.no_grad()
    def sampled_inputs(self, b: dict[str, Tensor], p_tf: float) -> Tensor | None:
        """Scheduled sampling: fed-back frames from the model's own no-grad predictions.

        Each frame is the ground truth with probability ``p_tf`` and the model's
        prediction otherwise (one Bernoulli draw per frame). With ``ss_passes = n``
        the prediction is recomputed n times from the current mix, so for ``p_tf = 0``
        the first n frames equal free-running (autoregressive) decoding exactly.
        """
        if p_tf >= 1.0:
            return None
        gt = b["vertices"]
        use_pred = torch.rand(gt.shape[:2], device=gt.device) >= p_tf
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
                                        b["audio_lengths"], b["frame_mask"], inputs)
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

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        self.model.eval()
        sums: dict[str, float] = {}
        count = 0.0
        lip_sum = lip_frames = 0.0
        for batch in self.val_loader:
            b = self._to_device(batch)
            with self._autocast():
                out = self.model(b["audio"], b["vertices"], b["template"], b["subject_index"], b["audio_lengths"],
                                 b["frame_mask"])
                losses = self.model.losses(out, b["vertices"], b["subject_index"], self.loss_cfg)
            n = float(b["vertices"].shape[0])
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            count += n
            s, f = lip_error_sums(out.vertices, b["vertices"], self.model.lip_index, out.frame_mask)
            lip_sum += s
            lip_frames += f
        keys = sorted(self._all_keys(list(sums)))
        vec = [sums.get(k, 0.0) for k in keys] + [count, lip_sum, lip_frames]
        vec = dist_util.all_reduce_sum(vec, self.info, self._comm_device())
        count, lip_sum, lip_frames = vec[-3:]
        out = {f"val_{k}": v / max(count, 1.0) for k, v in zip(keys, vec[:-3])}
        out["val_lve"] = lip_sum / max(lip_frames, 1.0)
        self.model.train()
        return out

    def _all_keys(self, keys: list[str]) -> list[str]:
        # ranks without validation batches still take part in the reduction
        gathered = dist_util.all_gather_object(sorted(keys), self.info)
        return sorted({k for ks in gathered for k in ks})

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

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
        self.log(f"training {self.run_dir}: {len(self.train_set)} train / "
                 f"{len(self.val_set) if self.val_set is not None else 0} val sequences, "
                 f"{self.batches_per_epoch} batches per epoch per process, {self.info.world_size} process(es) on "
                 f"{self.device}, AMP {str(self.amp).replace('torch.', '') if self.amp else 'off'}"
                 + (f", resuming at epoch {self.epoch + 1} step {self.step}" if self.checkpoint_dir else ""))
        last_metrics: dict[str, float] = {}
        stop = bool(cfg.max_steps and self.step >= cfg.max_steps)
        t_start = time.perf_counter()
        steps_at_start = self.step
        with TrainProgress(self.console, enabled=cfg.progress and self.info.is_main and not self.quiet) as bar:
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
                # ---- end of epoch (or of the step budget)
                complete = self.batch_in_epoch >= n
                epoch_row = self._epoch_row(epoch, time.perf_counter() - t_epoch)
                if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs or stop:
                    val = self.validate()
                    epoch_row.update(val)
                    self._maybe_best(val, epoch)
                last_metrics = epoch_row
                if complete:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                if stop or not complete or self.epoch >= cfg.epochs or self.epoch % cfg.save_every_epochs == 0:
                    self.save_last()
                if self.info.is_main:
                    self.metrics.log_epoch(epoch_row)
                    if not self.quiet:
                        bar.print(self._epoch_line(epoch_row))
        result = TrainResult(self.run_dir, self.epoch, self.step, self.best_value, self.best_epoch, last_metrics)
        self._finish(result, time.perf_counter() - t_start, self.step - steps_at_start)
        return result

    def _epoch_row(self, epoch: int, seconds: float) -> dict[str, Any]:
        keys = sorted(k for k in self.epoch_sums if not k.startswith("_"))
        keys = self._all_keys(keys)
        vec = [self.epoch_sums.get(k, 0.0) for k in keys] + [self.epoch_sums.get("_batches", 0.0)]
        vec = dist_util.all_reduce_sum(vec, self.info, self._comm_device())
        nb = max(vec[-1], 1.0)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "stage": self.stage,
                               "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3)}
        row.update({f"train_{k}": v / nb for k, v in zip(keys, vec[:-1])})
        return row

    def _log_step(self, losses: dict[str, float], epoch: int, lr: float, grad_norm: float, p_tf: float,
                  t_start: float, steps_at_start: int) -> None:
        keys = sorted(losses)
        if self.info.enabled:  # mean over ranks
            vals = dist_util.all_reduce_sum([losses[k] for k in keys], self.info, self._comm_device())
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

    def _epoch_line(self, row: dict[str, Any]) -> str:
        parts = [f"epoch {row['epoch']}/{self.cfg.epochs}", f"step {row['step']}"]
        if row.get("stage") == 1:
            parts.append("stage 1")
        for k in ("train_total", "train_rec", "val_objective", "val_lve"):
            if k in row:
                parts.append(f"{k} {row[k]:.4g}")
        if self.best_epoch is not None and self.best_value is not None:
            parts.append(f"best {self.best_value:.4g} @ {self.best_epoch}")
        return "  ".join(parts)

    def _finish(self, result: TrainResult, seconds: float, steps: int) -> None:
        # all ranks must hold the same weights after DDP training
        checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        sums = dist_util.all_gather_object(checksum, self.info)
        if self.info.is_main:
            if self.val_set is None or not (self.run_dir / WEIGHTS_FILE).exists():
                self.model.save_pretrained(self.run_dir)
            summary = {
                "epochs": result.epochs, "steps": result.steps, "best_epoch": result.best_epoch,
                "best_value": result.best_value, "select_metric": self.cfg.select_metric,
                "world_size": self.info.world_size, "ranks_in_sync": len(set(sums)) == 1,
                "param_checksums": sums, "seconds_this_session": round(seconds, 3),
                "steps_per_s_this_session": steps / seconds if seconds > 0 else 0.0,
            }
            atomic_write_text(self.run_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
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

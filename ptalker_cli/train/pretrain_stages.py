"""The pretraining stages that run before the main training, each on its own part of the model:
the speaker-ID pretraining of the audio style encoder (:mod:`.style_pretrain`) and the phonetic
pretraining of the speech content encoder (:mod:`.phone_pretrain`). Each logs what it did and
writes its record to the run folder; every rank runs them alike (DDP then starts from rank 0's
weights)."""

from __future__ import annotations

from ..errors import ConfigError
from .run_folder import PHONE_PRETRAIN_NAME, STYLE_PRETRAIN_NAME, write_record


def check_phone_pretraining(cfg, model) -> None:
    """A one-line error before anything trains when phone_pretrain_steps has no classifier to train."""
    if cfg.phone_pretrain_steps and (model.viseme_head is None or model.config.viseme_source != "audio"):
        raise ConfigError("phone_pretrain_steps needs a viseme classifier on the speech features: "
                          "add --set model.viseme_classes=15 --set model.viseme_source=audio")


def pretrain_style(trainer) -> None:
    """Speaker-ID pretraining of E_a^s on the training split's audio (every rank alike;
    DDP then starts from rank 0's weights)."""
    from .style_pretrain import pretrain_audio_style

    cfg = trainer.cfg
    clips = [(trainer.train_set.audio(name), trainer.manifest.subject_index(subject))
             for name, subject in zip(trainer.train_set.names, trainer.train_set.subjects)]
    trainer.log(f"speaker-ID pretraining of the audio style encoder: {cfg.style_pretrain_steps} steps of "
             f"{cfg.style_pretrain_batch} x {cfg.style_pretrain_seconds:g}-s crops")
    with trainer._progress() as bar:
        bar.start("speaker-ID pretraining", cfg.style_pretrain_steps)
        result = pretrain_audio_style(
            trainer.model, clips, cfg.style_pretrain_steps, lr=cfg.style_pretrain_lr,
            batch_size=cfg.style_pretrain_batch, seconds=cfg.style_pretrain_seconds,
            sample_rate=trainer.train_set.sample_rate, seed=cfg.seed, device=trainer.device,
            on_step=lambda step, loss: bar.update({"speaker_id": loss}))
    trainer.log(f"speaker-ID pretraining: cross-entropy {result.first_loss:.3f} -> {result.last_loss:.3f} "
             f"(chance {result.chance_loss:.3f}), accuracy {result.accuracy:.2f}, {result.seconds:.0f} s")
    if trainer.info.is_main:
        write_record(trainer.run_dir, STYLE_PRETRAIN_NAME, result.to_dict())

def pretrain_phones(trainer) -> None:
    """Phonetic pretraining of the speech content encoder on a corpus with phone timings (every rank alike)."""
    from .phone_pretrain import phone_clips, pretrain_speech_content

    cfg, model = trainer.cfg, trainer.model
    root = cfg.phone_pretrain_data or cfg.data
    clips = phone_clips(root, "train", model.num_motion_frames, model.config.fps)
    val = phone_clips(root, "val", model.num_motion_frames, model.config.fps)
    trainer.log(f"phonetic pretraining of the speech content encoder: {cfg.phone_pretrain_steps} steps of "
             f"{cfg.phone_pretrain_batch} utterances ({len(clips)} in {root})")
    with trainer._progress() as bar:
        bar.start("phonetic pretraining", cfg.phone_pretrain_steps)
        result = pretrain_speech_content(
            model, clips, cfg.phone_pretrain_steps, lr=cfg.phone_pretrain_lr, batch_size=cfg.phone_pretrain_batch,
            seed=cfg.seed, device=trainer.device, val_clips=val,
            on_step=lambda step, loss: bar.update({"viseme": loss}))
    trainer.log(f"phonetic pretraining: cross-entropy {result.first_loss:.3f} -> {result.last_loss:.3f} "
             f"(chance {result.chance_loss:.3f}); validation {result.val_loss:.3f}, p/b/m frames found "
             f"{result.val_pp_recall:.2f}, {result.seconds:.0f} s")
    if trainer.info.is_main:
        write_record(trainer.run_dir, PHONE_PRETRAIN_NAME, result.to_dict())

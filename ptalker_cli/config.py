"""Typed, frozen model configuration and the named presets.

A :class:`ModelConfig` holds everything needed to rebuild a model: sizes, frame
rate, PPE period, topology id and vertex count, training subjects, the audio
encoders (hub ids, pinned revisions and, once built, their full transformers
configs), and the switches for every component of the paper (Table 4 ablations,
the FaceFormer baseline, released-code behaviour). It is saved as ``config.json``
beside ``model.safetensors``; loading is strict: unknown or missing keys are errors.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_VERSION = 1

#: The embedded default model (in weights/, listed in the model registry): trained on SynthTalk, ICT head.
DEFAULT_MODEL = "synthtalk-ict"


@dataclass(frozen=True)
class AudioEncoderConfig:
    """A speech encoder built with ``transformers`` (HuBERT or wav2vec2).

    ``model_id``/``revision`` say where the pretrained weights come from (a hub id
    pinned to a commit, or a local folder). ``hf_config`` is the full transformers
    config; it is filled in when the encoder is first built so that a saved ptalker
    checkpoint can be rebuilt without the hub. A spec with ``model_id=""`` and an
    ``hf_config`` builds a randomly initialised encoder (the ``tiny`` preset, or
    training from scratch).
    """

    kind: str = "hubert"  # "hubert" | "wav2vec2"
    model_id: str = ""
    revision: str | None = None
    license: str = ""
    hf_config: dict[str, Any] | None = None
    freeze_feature_encoder: bool = True
    # SpecAugment-style time masking and LayerDrop of the HF config are switched off
    # unless asked for (the released code inherited them silently; spec §6.2 #19).
    apply_spec_augment: bool = False
    layerdrop: float = 0.0


#: ModelConfig.audio_style_pooling values (model/audio_encoders.py: POOLINGS)
AUDIO_STYLE_POOLINGS = ("max", "stats", "stats-ac")


@dataclass(frozen=True)
class ModelConfig:
    """The PTalker model. See docs/model.md for every field."""

    name: str = "ptalker"
    # --- data ---------------------------------------------------------------
    topology: str = "tiny"
    num_vertices: int = 192
    fps: float = 25.0
    period: int = 25
    train_subjects: tuple[str, ...] = ()  # identities with a learned style, in one-hot order
    template_subjects: tuple[str, ...] = ()  # subjects whose templates the checkpoint holds (train first)
    # --- sizes --------------------------------------------------------------
    feature_dim: int = 128
    decoder_layers: int = 6
    decoder_heads: int = 4
    decoder_ffn_dim: int = 256
    dropout: float = 0.1
    motion_encoder_layers: int = 6
    motion_encoder_heads: int = 2
    motion_conv_layers: int = 6
    gat_channels: tuple[int, ...] = (4, 4)
    gat_heads: int = 1
    audio_style_hidden: int = 256
    club_hidden: int = 64
    # --- audio encoders -----------------------------------------------------
    audio_content: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    audio_style: tuple[AudioEncoderConfig, ...] = ()
    # --- components (Table 4 ablations; FaceFormer = all off) ----------------
    use_graph_encoder: bool = True  # E_G; off = one linear layer on the flattened frame (released code)
    use_motion_content: bool = True  # c_{1:T} from E_m^c fed to the decoder (paper Eq. 16)
    use_motion_style: bool = True  # s_m from E_m^s ("motion disentanglement")
    use_audio_style: bool = True  # s_a from E_a^s ("audio disentanglement")
    use_identity_style: bool = True  # s_p from E_p^s; off = FaceFormer's one-hot linear style
    identity_attention: bool = True  # attention between personalized and common style
    # --- training-time regularizers that make the inference modes in-distribution --
    motion_dropout: float = 0.25  # P(drop c and s_m for a sequence): the inference first pass
    identity_dropout: float = 0.1  # P(drop s_p for a sequence): the unseen-subject mode
    # --- inference ------------------------------------------------------------
    refine_passes: int = 1  # styled passes after the first (0 = single pass, no motion terms)
    # --- released-code compatibility (converted checkpoints, docs/models.md) ---------
    # "released": E_m^s / E_m^c as in the released code (symmetric conv padding, non-causal
    # instance norm, unmasked transformer, s_m = mean over the whole clip)
    motion_encoder_form: str = "causal"  # "causal" | "released"
    # "released": generate/decode_motion run the released predict_seen / predict_unseen /
    # predict_with_ref_motion loops (model/released.py; O(T^2), full prefix recompute)
    inference_form: str = "ptalker"  # "ptalker" | "released"
    audio_style_rate_hz: float = 0.0  # style backbones' CNN features resampled to this rate (0 = 50 Hz; released 60)
    # A speaker classifier on s_a (loss weight LossConfig.speaker_id): stands in for the speaker-ID
    # pretraining of W_s when the audio style encoder is trained from scratch.
    audio_style_speaker_head: bool = False
    # How E_a^s turns its backbones' frames into one vector: "max" (released code), "stats"
    # (mean and standard deviation over valid frames, the x-vector pooling of speaker
    # recognition) or "stats-ac" (also each channel's autocorrelation at 40-320 ms lags,
    # which carries the speaking rate); audio_style_norm adds a LayerNorm before the final
    # tanh so s_a does not saturate at ±1 (with a style encoder trained from scratch it did).
    audio_style_pooling: str = "max"
    audio_style_norm: bool = False
    # Frames (50 Hz) each transformer layer of a log-mel content encoder may attend ahead; -1 = all
    # (bidirectional). With r >= 0 a content feature depends on at most content_right_reach_frames
    # of future audio, so a stream with that much look-ahead decodes what offline animate decodes
    # (docs/streaming.md). Log-mel encoders only.
    content_right_context: int = -1
    # Classes of an auxiliary viseme classifier (0 = none). Trained by LossConfig.viseme from a
    # corpus's phone labels (SynthTalk), it makes the features it reads say which mouth shape the
    # audio calls for now, p/b/m among them; inference does not use it.
    # 15 = the Oculus visemes of ptalker_cli.data.synth.labels.VISEME_CLASSES. viseme_source: what it
    # reads, "decoder" (the decoder's output features) or "audio" (the speech features pooled to
    # motion frames, so the speech content encoder alone must tell the visemes apart).
    viseme_classes: int = 0
    viseme_source: str = "decoder"

    # ------------------------------------------------------------------ helpers
    @property
    def num_subjects(self) -> int:
        return len(self.train_subjects)

    @property
    def content_right_reach_frames(self) -> int | None:
        """Future speech frames (50 Hz) a content feature depends on, or None (unbounded: bidirectional)."""
        if self.content_right_context < 0:
            return None
        layers = int((self.audio_content.hf_config or {}).get("num_hidden_layers", 3))
        return logmel_right_reach(layers, self.content_right_context)

    @property
    def audio_frames_per_motion_frame(self) -> int:
        """Speech-encoder frames (50 Hz) per motion frame: 2 at 25 fps, else 1 (features resampled)."""
        ratio = 50.0 / float(self.fps)
        return int(round(ratio)) if abs(ratio - round(ratio)) < 1e-6 and ratio >= 1 else 1

    def replace(self, **changes: Any) -> "ModelConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"config_version": CONFIG_VERSION, **_to_jsonable(dataclasses.asdict(self))}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = dict(data)
        version = data.pop("config_version", None)
        if version != CONFIG_VERSION:
            raise ConfigError(
                f"config_version {version!r} is not supported (expected {CONFIG_VERSION}); "
                "convert the checkpoint with a matching ptalker version"
            )
        for key, default in _ADDED_IN_V1.items():  # fields added later: older config.json files lack them
            data.setdefault(key, default)
        return _from_dict(cls, data, "config")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data)

    def validate(self) -> "ModelConfig":
        if self.feature_dim % self.decoder_heads:
            raise ConfigError("feature_dim must be divisible by decoder_heads")
        if (2 * self.feature_dim) % self.motion_encoder_heads:
            raise ConfigError("2 * feature_dim must be divisible by motion_encoder_heads")
        if self.num_vertices <= 0 or self.fps <= 0 or self.period <= 0:
            raise ConfigError("num_vertices, fps and period must be positive")
        if len(set(self.train_subjects)) != len(self.train_subjects):
            raise ConfigError("train_subjects has duplicates")
        if len(set(self.template_subjects)) != len(self.template_subjects):
            raise ConfigError("template_subjects has duplicates")
        for name in ("motion_dropout", "identity_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1)")
        if self.motion_encoder_form not in ("causal", "released"):
            raise ConfigError(f"motion_encoder_form must be 'causal' or 'released', not {self.motion_encoder_form!r}")
        if self.inference_form not in ("ptalker", "released"):
            raise ConfigError(f"inference_form must be 'ptalker' or 'released', not {self.inference_form!r}")
        if self.audio_style_rate_hz < 0:
            raise ConfigError("audio_style_rate_hz must be >= 0 (0 = the native 50 Hz)")
        if self.audio_style_pooling not in AUDIO_STYLE_POOLINGS:
            raise ConfigError(f"audio_style_pooling must be one of {', '.join(AUDIO_STYLE_POOLINGS)}, not "
                              f"{self.audio_style_pooling!r}")
        if self.viseme_classes < 0:
            raise ConfigError("viseme_classes must be >= 0 (0 = no viseme classifier)")
        if self.viseme_source not in ("decoder", "audio"):
            raise ConfigError(f"viseme_source must be 'decoder' or 'audio', not {self.viseme_source!r}")
        if self.content_right_context < -1:
            raise ConfigError("content_right_context must be -1 (bidirectional) or a number of frames >= 0")
        if self.content_right_context >= 0 and self.audio_content.kind != "logmel":
            raise ConfigError("content_right_context needs a log-mel content encoder (audio_content.kind "
                              f"'logmel', not '{self.audio_content.kind}'); set it to -1")
        return self


#: kernel of the log-mel encoders' convolutional positional embedding (model/logmel.py)
LOGMEL_POS_KERNEL = 16


def logmel_right_reach(layers: int, right_context: int, pos_kernel: int = LOGMEL_POS_KERNEL) -> int:
    """Future 50-Hz frames a log-mel encoder's output frame depends on: the positional convolution's
    (kernel // 2 − 1) plus ``right_context`` per transformer layer."""
    return pos_kernel // 2 - 1 + layers * right_context


# ----------------------------------------------------------------------- (de)serialization
#: ModelConfig fields added after config_version 1 was fixed, with the value that reproduces the
#: behaviour of checkpoints written before them (loading stays strict for everything else).
_ADDED_IN_V1: dict[str, Any] = {"motion_encoder_form": "causal", "inference_form": "ptalker",
                                "audio_style_rate_hz": 0.0, "audio_style_speaker_head": False,
                                "audio_style_pooling": "max", "audio_style_norm": False,
                                "content_right_context": -1, "viseme_classes": 0,
                                "viseme_source": "decoder"}


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; it was written by another ptalker version")
    missing = sorted(f.name for f in fields(cls) if f.name not in data)
    if missing:
        raise ConfigError(f"{where} lacks keys {missing}; the checkpoint is incomplete")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where} has an invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an object")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, where) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an object")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return value
    return value


# ----------------------------------------------------------------------- presets
#: Pinned public checkpoints for the audio encoders (see docs/model.md and the model zoo).
#: Revisions are full commit ids of the hub repositories (looked up on the hub's public
#: pages; for superb/wav2vec2-large-superb-er the pin is the last commit that changed the
#: weights and config, whose files equal those of main, README aside).
HUBERT_LARGE = AudioEncoderConfig(
    kind="hubert",
    model_id="facebook/hubert-large-ls960-ft",
    revision="ece5fabbf034c1073acae96d5401b25be96709d8",
    license="apache-2.0",
)
W2V2_SPEAKER_ID = AudioEncoderConfig(
    kind="wav2vec2",
    model_id="superb/wav2vec2-large-superb-sid",
    revision="367cec2f00f36e6717b420660bd814dabac952f5",
    license="apache-2.0",
)
W2V2_EMOTION = AudioEncoderConfig(
    kind="wav2vec2",
    model_id="superb/wav2vec2-large-superb-er",
    revision="306186e4b83667e06d6817940b2c1c823b8e1487",
    license="apache-2.0",
)

BIWI_SUBJECTS = ("F2", "F3", "F4", "M3", "M4", "M5")
VOCASET_SUBJECTS = (
    "FaceTalk_170728_03272_TA",
    "FaceTalk_170904_00128_TA",
    "FaceTalk_170725_00137_TA",
    "FaceTalk_170915_00223_TA",
    "FaceTalk_170811_03274_TA",
    "FaceTalk_170913_03279_TA",
    "FaceTalk_170904_03276_TA",
    "FaceTalk_170912_03278_TA",
)


def tiny_speech_encoder(kind: str, hidden: int = 32, layers: int = 2) -> AudioEncoderConfig:
    """A small randomly initialised HuBERT/wav2vec2 of the real architecture (no download)."""
    hf = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        conv_dim=(32, 32, 32, 32, 32, 32, 32),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=32,
    )
    return AudioEncoderConfig(kind=kind, model_id="", revision=None, license="", hf_config=hf)


def logmel_encoder(hidden: int = 128, layers: int = 3, heads: int = 4) -> AudioEncoderConfig:
    """A log-mel + transformer speech encoder trained from scratch (no pretrained weights)."""
    hf = dict(n_mels=80, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
              intermediate_size=2 * hidden, dropout=0.1)
    return AudioEncoderConfig(kind="logmel", model_id="", revision=None, license="", hf_config=hf)


def _synthtalk(content: AudioEncoderConfig | None = None, style: AudioEncoderConfig | None = None) -> ModelConfig:
    """The embedded default's architecture: the ICT head, small sizes, speech encoders from scratch."""
    return ModelConfig(
        name="synthtalk",
        topology="ict",
        num_vertices=14062,
        fps=25.0,
        period=25,
        feature_dim=64,
        decoder_layers=3,
        decoder_heads=4,
        decoder_ffn_dim=128,
        motion_encoder_layers=2,
        motion_encoder_heads=2,
        motion_conv_layers=2,
        gat_channels=(4, 4),
        audio_style_hidden=64,
        club_hidden=32,
        audio_content=content or logmel_encoder(128, 3),
        audio_style=(style or logmel_encoder(64, 2),),
        # E_a^s is trained from scratch: speaker-ID pretraining (TrainConfig.style_pretrain_steps)
        # and a speaker head in place of the paper's pretrained speaker-ID network
        audio_style_speaker_head=True,
        audio_style_pooling="stats-ac",
        audio_style_norm=True,
    )


def _synthtalk_hubert() -> ModelConfig:
    """As ``synthtalk`` with small HuBERT-style encoders (conv front end on the waveform) instead."""
    return _synthtalk(tiny_speech_encoder("hubert", hidden=128, layers=3), tiny_speech_encoder("wav2vec2", 64, 2))


def _biwi() -> ModelConfig:
    return ModelConfig(
        name="biwi",
        topology="biwi",
        num_vertices=23370,
        fps=25.0,
        period=25,
        train_subjects=BIWI_SUBJECTS,
        feature_dim=128,
        decoder_ffn_dim=256,
        audio_content=HUBERT_LARGE,
        audio_style=(W2V2_SPEAKER_ID, W2V2_EMOTION),
    )


def _vocaset() -> ModelConfig:
    return ModelConfig(
        name="vocaset",
        topology="flame",
        num_vertices=5023,
        fps=30.0,
        period=30,
        train_subjects=VOCASET_SUBJECTS,
        feature_dim=64,
        decoder_ffn_dim=128,
        audio_content=HUBERT_LARGE,
        audio_style=(W2V2_SPEAKER_ID, W2V2_EMOTION),
    )


def faceformer(base: ModelConfig) -> ModelConfig:
    """FaceFormer on the same code: one-hot style + decoder; no style/motion encoders, no GAT."""
    return base.replace(
        name=f"faceformer-{base.name}",
        use_graph_encoder=False,
        use_motion_content=False,
        use_motion_style=False,
        use_audio_style=False,
        use_identity_style=False,
        identity_attention=False,
        audio_style=(),
        motion_dropout=0.0,
        identity_dropout=0.0,
        refine_passes=0,
        decoder_layers=1,
    )


def _tiny() -> ModelConfig:
    return ModelConfig(
        name="tiny",
        topology="tiny",
        num_vertices=192,
        fps=25.0,
        period=25,
        train_subjects=("S1", "S2", "S3"),
        template_subjects=("S1", "S2", "S3", "U1"),
        feature_dim=16,
        decoder_layers=2,
        decoder_heads=4,
        decoder_ffn_dim=32,
        motion_encoder_layers=1,
        motion_encoder_heads=2,
        motion_conv_layers=2,
        gat_channels=(4, 4),
        audio_style_hidden=16,
        club_hidden=16,
        audio_content=tiny_speech_encoder("hubert"),
        audio_style=(tiny_speech_encoder("wav2vec2"), tiny_speech_encoder("wav2vec2")),
    )


PRESETS: dict[str, typing.Callable[[], ModelConfig]] = {
    "biwi": _biwi,
    "vocaset": _vocaset,
    "faceformer": lambda: faceformer(_biwi()),
    "faceformer-vocaset": lambda: faceformer(_vocaset()),
    "tiny": _tiny,
    "synthtalk": _synthtalk,
    "synthtalk-hubert": _synthtalk_hubert,
    "faceformer-synthtalk": lambda: faceformer(_synthtalk()),
}

#: Table 4 of the paper: each row as config changes (model) and loss weights set to zero.
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-adv": {"loss": {"adv": 0.0}},
    "no-cos": {"loss": {"cos": 0.0}},
    "no-orth-info": {"loss": {"orth": 0.0, "info": 0.0, "club": 0.0}},
    "no-cts": {"loss": {"topk": 0.0, "kl": 0.0}},
    "no-gat": {"model": {"use_graph_encoder": False}},
    "no-audio-disentanglement": {"model": {"use_audio_style": False}},
    "no-motion-disentanglement": {"model": {"use_motion_style": False, "use_motion_content": False}},
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset (``biwi``, ``vocaset``, ``faceformer``, ``tiny``), optionally changed."""
    try:
        cfg = PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}") from None
    return cfg.replace(**overrides).validate() if overrides else cfg.validate()


@dataclass(frozen=True)
class LossConfig:
    """Weights of every loss term (0 switches a term off) and their hyper-parameters.

    The paper gives no weights (spec §2.1). The defaults take rec, mouth and vel from the
    released code and 1e-3 for each constraint term, the weight the released code uses inside
    its constraint bundle (its training loop scales the bundle by 0.01 more);
    ``released_loss_config()`` gives the released run's effective weights. The weights of the
    two presets (docs/model.md has every field; tests/test_losses.py checks both tables)::

        field       default  released
        form        l2       mse
        rec         1        1
        mouth       1.2      1.2
        vel         10       10
        adv         1e-3     1e-5
        cos         1e-3     0
        orth        1e-3     1e-5
        info        0        1e-5
        club        1e-3     0
        topk        1e-3     1e-5
        kl          1e-3     1e-5
        speaker_id  0.1      0.1
        lip_closure 0        0
        viseme      0        0

    The other fields (``orth_form`` and the hyper-parameters) are the same in both.
    ``lip_closure`` is not the paper's (issue 19): the inner-lip gap error on the frames where
    the ground truth's lips are closed (:func:`ptalker_cli.model.losses.lip_closure_loss`);
    the shipped SynthTalk default trains with it on (its model card gives the recipe).
    ``viseme`` is not the paper's either: the cross-entropy of an auxiliary classifier
    (``ModelConfig.viseme_classes``) that reads the viseme of every frame from the decoder's or
    the speech features (``ModelConfig.viseme_source``), against the phone labels of a corpus that
    has them (SynthTalk).
    """

    form: str = "l2"  # "l2" (paper Eq. 10-12) | "mse" (released code)
    rec: float = 1.0
    mouth: float = 1.2
    vel: float = 10.0
    adv: float = 1e-3
    cos: float = 1e-3
    orth: float = 1e-3
    orth_form: str = "norm"  # "norm" ‖P‖_F (intent, released) | "procrustes" ‖PPᵀ−I‖_F (Eq. 4)
    info: float = 0.0  # Eq. 5 InfoNCE as written (raises an MI bound; 0 at batch size 1)
    club: float = 1e-3  # CLUB upper bound: really minimizes content/style MI
    topk: float = 1e-3
    kl: float = 1e-3
    speaker_id: float = 0.1  # cross-entropy of the s_a speaker classifier (models with audio_style_speaker_head)
    lip_closure: float = 0.0  # inner-lip gap error where the ground truth is closed (topologies with lip pairs)
    lip_closure_threshold: float = 0.3  # closed: GT gap < this fraction of the sequence's mean GT gap
    lip_closure_tolerance: int = 0  # a closed GT frame is matched by the best predicted frame within ± this many
    viseme: float = 0.0  # cross-entropy of the viseme classifier (model.viseme_classes) against phone labels
    grl_alpha: float = 1.0
    info_temperature: float = 0.1
    topk_ratio: float = 0.15
    topk_alpha: float = 1.5
    topk_beta: float = 0.7
    topk_lambda: float = 0.5
    topk_temperature: float = 0.07
    kl_eps: float = 1e-6


def released_loss_config() -> LossConfig:
    """The released code's effective weights (spec §2.3): MSE terms and 0.01× a tiny bundle."""
    return LossConfig(
        form="mse", rec=1.0, mouth=1.2, vel=10.0, adv=1e-5, cos=0.0, orth=1e-5, info=1e-5, club=0.0,
        topk=1e-5, kl=1e-5, orth_form="norm",
    )

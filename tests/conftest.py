import os
import tempfile
import warnings

import pytest
import system

# ---------------------------------------------------------------------------- hermetic env
# The suite must not read the user's hub, cache or config settings (HF_HUB_OFFLINE=1,
# HF_HOME, PTALKER_*, XDG_*): scrub them before anything imports huggingface_hub (which
# reads them once at import), and point every cache at a private folder for this session.
# Tests that need their own (the fake hub) set them again with monkeypatch.
_SCRUB_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "PTALKER_", "XDG_", "TORCH_HOME")
for _var in [v for v in os.environ if v.startswith(_SCRUB_PREFIXES)]:
    del os.environ[_var]
_SESSION_HOME = tempfile.mkdtemp(prefix="ptalker-tests-")
os.environ.update(
    HF_HOME=os.path.join(_SESSION_HOME, "hf"),
    XDG_CACHE_HOME=os.path.join(_SESSION_HOME, "cache"),
    XDG_CONFIG_HOME=os.path.join(_SESSION_HOME, "config"),
    PTALKER_CACHE=os.path.join(_SESSION_HOME, "cache", "ptalker"),
)

import numpy as np  # noqa: E402  (after the scrub: these may import huggingface_hub)
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


# ----------------------------------------------------------------------- system gating
def pytest_configure(config):
    config.addinivalue_line(
        "markers", "system(name): needs a program or library from the OS (tests/system.py); "
        "skipped where missing, a failure under PTALKER_REQUIRE_SYSTEM_TESTS=1")


def pytest_unconfigure(config):
    import shutil

    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="system"):
        for name in mark.args:
            reason = system.missing(name)
            if reason is None:
                continue
            if system.REQUIRED:
                pytest.fail(f"{system.REQUIRE_VAR}=1 but {reason}", pytrace=False)
            pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny():
    from ptalker_cli.inference import tiny_model

    return tiny_model()


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic voiced-ish signal: harmonics with a syllable-rate envelope and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    wave = 0.3 * voiced * env + 0.01 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


@pytest.fixture
def wav_file(tmp_path):
    def make(seconds: float = 1.0, name: str = "speech.wav", sr: int = 16000, seed: int = 0):
        path = tmp_path / name
        sf.write(path, speech_like(seconds, sr, seed), sr)
        return path

    return make


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def eval_cli(monkeypatch, tiny):
    """``ptalker eval ARGS`` through CliRunner, with every model spec loading ``tiny``."""
    import typer
    from typer.testing import CliRunner

    import ptalker_cli.inference as inference
    from ptalker_cli.cli.eval_cmd import eval_command

    monkeypatch.setattr(inference, "load_model", lambda spec, device="auto": tiny)
    app = typer.Typer()
    app.command("eval")(eval_command)

    @app.callback()
    def _root() -> None:
        pass

    return lambda *args: CliRunner().invoke(app, ["eval", *args])


def write_fake_phones(root, names, switch_frame=8, fps=25.0):
    """Phones for the named sequences of a fake dataset: silence for `switch_frame` frames, then one long /m/."""
    import json

    seq = root / "synth" / "sequences"
    seq.mkdir(parents=True, exist_ok=True)
    t = switch_frame / fps
    for name in names:
        (seq / f"{name}.json").write_text(json.dumps({"phones": [["pau", 0.0, t, 0, 0], ["m", t, 10.0, 1, 1]]}))


@pytest.fixture()
def phone_dataset(tmp_path):
    """make_fake_dataset (16 frames a sequence) with phone timings for all six sequences."""
    from ptalker_cli.data.testing import make_fake_dataset

    root = make_fake_dataset(tmp_path / "ds", frames=16)
    write_fake_phones(root, ["A_s01", "A_s02", "B_s01", "B_s02", "A_s03", "B_s03"])
    return root

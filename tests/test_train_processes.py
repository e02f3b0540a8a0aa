"""``ptalker train`` in real processes: exact resume after SIGKILL, and DDP with torchrun (gloo, CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ptalker_cli.data.testing import make_fake_dataset

    root = tmp_path_factory.mktemp("proc-data") / "ds"
    make_fake_dataset(root, frames=16)
    return root


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train_cmd(dataset, out, *extra):
    return [sys.executable, "-m", "ptalker_cli", "train", "--data", str(dataset), "--preset", "tiny",
            "--out", str(out), "--deterministic", "--seed", "3", "--set", "threads=1", "--set", "tensorboard=false",
            "--quiet", *extra]


def _weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def _losses(run):
    rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    keep = ("step", "epoch", "total", "rec", "vel", "grad_norm", "lr")
    return [{k: r[k] for k in keep if k in r} for r in rows if r["kind"] == "step"]


def test_resume_after_sigkill_is_exact(dataset, tmp_path):
    args = ("--epochs", "3", "--checkpoint-every", "1", "--scheduled-sampling", "linear", "--ss-end-epoch", "2.5",
            "--stage1-epochs", "1")
    full, killed = tmp_path / "full", tmp_path / "killed"
    ref = subprocess.Popen(_train_cmd(dataset, full, *args), env=_env(), cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim = subprocess.Popen(_train_cmd(dataset, killed, *args), env=_env(), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = killed / "last" / "trainer_state.json"
    deadline = time.time() + 120
    state = None
    try:
        while time.time() < deadline and victim.poll() is None:
            try:
                state = json.loads(state_file.read_text())
            except (OSError, json.JSONDecodeError):
                state = None
            # kill in the middle of the second epoch (stage 2, scheduled sampling running)
            if state and state["epoch"] == 1 and state["batch_in_epoch"] >= 1:
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the training finished before it could be killed"
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err.decode()[-2000:]

    resumed = subprocess.run(_train_cmd(dataset, killed, *args, "--resume"), env=_env(), cwd=tmp_path,
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]

    for sub in ("last", "."):
        a, b = _weights(full / sub), _weights(killed / sub)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{sub}/{k} differs after resume"
    opt_a = load_file(str(full / "last" / "optimizer.safetensors"))
    opt_b = load_file(str(killed / "last" / "optimizer.safetensors"))
    assert all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)
    # the logs read like the uninterrupted run's (redone steps are not duplicated)
    assert _losses(full) == _losses(killed)
    sa = json.loads((full / "last" / "trainer_state.json").read_text())
    sb = json.loads((killed / "last" / "trainer_state.json").read_text())
    assert (sa["epoch"], sa["step"], sa["best_value"]) == (sb["epoch"], sb["step"], sb["best_value"]) == \
        (3, 12, sa["best_value"])


def test_ddp_two_processes_gloo(dataset, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "ptalker_cli", "train", "--data", str(dataset), "--preset", "tiny", "--out", str(run),
           "--epochs", "2", "--batch-size", "1", "--set", "threads=1", "--set", "tensorboard=false",
           "--stage1-epochs", "1", "--quiet"]
    res = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    # 4 training batches shared by 2 ranks: 2 steps per epoch
    assert summary["steps"] == 4
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "step"] == [1, 2, 3, 4]  # written once (rank 0)
    assert [r["stage"] for r in rows if r["kind"] == "step"] == [1, 1, 2, 2]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all("val_objective" in r for r in epochs)
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["world_size"] == 2
    from ptalker_cli.model.network import PTalker

    PTalker.from_pretrained(run)
    PTalker.from_pretrained(run / "last")

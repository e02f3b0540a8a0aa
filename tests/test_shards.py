"""Batch animate split across processes (issue 14, scale out): ``--shard K/N`` and ``torchrun``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ptalker_cli.errors import PtalkerError
from ptalker_cli.export.shards import (
    Shard,
    parse_shard,
    partial_report_path,
    shard_from_env,
    shard_inputs,
    write_shard_report,
)

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["d", "a", "c", "b"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _inputs(tmp_path) -> list[Path]:
    from conftest import speech_like

    paths = []
    for k, name in enumerate(NAMES):
        path = tmp_path / f"{name}.wav"
        sf.write(path, speech_like(0.4 + 0.1 * k, seed=k), 16000)
        paths.append(path)
    return paths


def test_shards_split_the_sorted_inputs_once_each():
    inputs = [Path(f"{n}.wav") for n in NAMES]
    parts = [shard_inputs(inputs, Shard(k, 3)) for k in range(3)]
    assert [[p.stem for p in part] for part in parts] == [["a", "d"], ["b"], ["c"]]
    assert shard_inputs(list(reversed(inputs)), Shard(0, 3)) == parts[0]  # the order given does not matter
    assert shard_inputs(inputs, None) == inputs


@pytest.mark.parametrize("text", ["2/2", "1", "-1/2", "a/b", "0/0"])
def test_a_bad_shard_is_a_one_line_error(text):
    with pytest.raises(PtalkerError, match="use K/N with 0 <= K < N"):
        parse_shard(text)
    assert parse_shard(" 1/4 ") == Shard(1, 4)


def test_torchrun_environment_gives_the_shard_and_the_local_rank():
    assert shard_from_env({}) is None
    assert shard_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (Shard(3, 4), 1)
    with pytest.raises(PtalkerError, match="outside WORLD_SIZE"):
        shard_from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_the_last_shard_to_finish_merges_and_stale_reports_are_not_merged(tmp_path):
    report = tmp_path / "report.json"
    inputs = [Path("a.wav"), Path("b.wav")]
    old = {"shard": "1/2", "inputs": ["x.wav"], "results": [{"input": "x.wav", "status": "ok"}]}
    partial_report_path(report, Shard(1, 2)).write_text(json.dumps(old))  # left by a run over other inputs
    assert not write_shard_report(report, Shard(0, 2), inputs, [{"input": "a.wav", "status": "ok"}])
    assert not report.exists()
    assert write_shard_report(report, Shard(1, 2), inputs, [{"input": "b.wav", "status": "ok"}])
    merged = json.loads(report.read_text())
    assert merged == [{"input": "a.wav", "status": "ok", "shard": "0/2"}, {"input": "b.wav", "status": "ok",
                                                                          "shard": "1/2"}]


def _check_outputs(outs: Path, ranks: int):
    merged = json.loads((outs / "report.json").read_text())
    assert [Path(e["input"]).stem for e in merged] == ["a", "b", "c", "d"]
    assert all(e["status"] == "ok" for e in merged)
    assert sorted(e["shard"] for e in merged) == sorted(f"{k % ranks}/{ranks}" for k in range(4))
    for entry in merged:
        stem = Path(entry["input"]).stem
        assert entry["output"] == [str(outs / f"{stem}.npy"), str(outs / f"{stem}.json")]
        assert np.load(outs / f"{stem}.npy").shape == (entry["frames"], 192, 3)
    assert sorted(p.name for p in outs.glob("report.rank-*.json")) == [f"report.rank-{k}-of-{ranks}.json"
                                                                        for k in range(ranks)]


def test_two_shard_processes_write_every_output_and_one_report(tmp_path):
    inputs = _inputs(tmp_path)
    outs = tmp_path / "outs"
    cmd = [sys.executable, "-m", "ptalker_cli", "animate", *map(str, inputs), "-m", "tiny", "-o", f"{outs}/", "-q"]
    procs = [subprocess.Popen(cmd + ["--shard", f"{k}/2"], env=_env(), cwd=tmp_path, stderr=subprocess.PIPE)
             for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    _check_outputs(outs, 2)


@pytest.mark.slow  # torchrun's rendezvous and two interpreters: about 35 s on the loaded 2-core machine
def test_torchrun_splits_the_inputs_by_rank(tmp_path):
    inputs = _inputs(tmp_path)
    outs = tmp_path / "outs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "ptalker_cli", "animate", *map(str, inputs), "-m", "tiny", "-o", f"{outs}/", "-q"]
    res = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    _check_outputs(outs, 2)

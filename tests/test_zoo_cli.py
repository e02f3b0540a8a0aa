"""`ptalker models …` (list, info, download, verify, path, push) and the generated model card."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from ptalker_cli.cli.models_cmd import models_app
from ptalker_cli.errors import PtalkerError
from ptalker_cli.zoo.card import find_metrics, model_card, push_model
from ptalker_cli.zoo.registry import ZooEntry, ZooFile, add_user_entry, load_registry
from ptalker_cli.zoo.testing import FakeHub, sha256

app = typer.Typer()
app.add_typer(models_app, name="models")
runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["models", *map(str, args)])


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("PTALKER_CACHE", str(tmp_path / "ptalker-cache"))
    monkeypatch.setenv("PTALKER_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


@pytest.fixture
def published(zoo, tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "model")
    files = {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors")}
    commit = zoo.add_repo("someone/tiny-talker", files)
    add_user_entry(ZooEntry("tiny-talker", "model", description="tiny test model", license="test-only",
                            repo_id="someone/tiny-talker", revision=commit,
                            files=tuple(ZooFile(n, sha256(b), len(b)) for n, b in files.items()),
                            topology="tiny", fps=25.0, subjects=("S1", "S2", "S3")))
    return zoo, commit, files


def test_list_shows_every_entry_and_cache_state(published):
    res = run("list")
    assert res.exit_code == 0, res.output
    for name in ("hubert-large-ls960-ft", "wav2vec2-large-superb-sid", "wav2vec2-large-superb-er", "tiny-talker"):
        assert name in res.stdout
    assert "apache-2.0" in res.stdout and "cached" in res.stdout
    rows = {r["name"]: r for r in json.loads(run("list", "--json").stdout)}
    assert rows["tiny-talker"]["cached"] == "no" and rows["tiny-talker"]["subjects"] == ["S1", "S2", "S3"]
    assert rows["hubert-large-ls960-ft"]["kind"] == "audio-encoder" and rows["hubert-large-ls960-ft"]["size"] is None
    assert run("download", "tiny-talker").exit_code == 0
    rows = {r["name"]: r for r in json.loads(run("list", "--json").stdout)}
    assert rows["tiny-talker"]["cached"] == "yes" and rows["tiny-talker"]["size"] > 1000


def test_info_download_path_verify(published):
    zoo, commit, files = published
    info = json.loads(run("info", "wav2vec2-large-superb-er", "--json").stdout)
    assert info["revision"] == "306186e4b83667e06d6817940b2c1c823b8e1487" and info["folder"] is None
    assert run("info", "tiny-talker").exit_code == 0
    res = run("path", "tiny-talker")
    assert res.exit_code == 1 and "ptalker models download tiny-talker" in " ".join(res.output.split())
    res = run("download", "tiny-talker")
    assert res.exit_code == 0, res.output
    folder = Path(res.stdout.split(": ", 1)[1].strip())
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert run("path", "tiny-talker").stdout.strip() == str(folder)
    assert run("path", f"hf://someone/tiny-talker@{commit}").stdout.strip() == str(folder)
    res = run("verify", "tiny-talker", "--json")
    assert res.exit_code == 0 and {r["status"] for r in json.loads(res.stdout)} == {"ok"}
    res = run("verify")  # every entry: the audio encoders are simply not cached
    assert res.exit_code == 0 and "missing" in res.stdout
    # bit rot in the cache: verify fails, --delete removes it, download fetches it again
    blob = Path(os.path.realpath(folder / "model.safetensors"))
    blob.write_bytes(b"\0" + files["model.safetensors"][1:])
    res = run("verify", "tiny-talker")
    assert res.exit_code == 1 and "do not match their hashes" in " ".join(res.output.split())
    res = run("verify", "tiny-talker", "--delete")
    assert res.exit_code == 1 and not blob.exists()
    assert run("download", "tiny-talker").exit_code == 0
    assert run("verify", "tiny-talker").exit_code == 0


def test_download_errors_are_one_line(published, monkeypatch):
    res = run("download", "hf://someone/tiny-talker@nope")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "revision 'nope' does not exist" in " ".join(res.output.split())
    res = run("download", "not-a-model")
    assert "not in the model registry" in " ".join(res.output.split())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run("download", "tiny-talker")
    assert "download it once with network access: ptalker models download tiny-talker" in " ".join(res.output.split())


# ----------------------------------------------------------------------------- card and push
def _run_folder(tiny, tmp_path) -> Path:
    """A training-run-like folder: the model, train_config.json, best.json and an eval results.json."""
    run_dir = tiny.save_pretrained(tmp_path / "run")
    (run_dir / "train_config.json").write_text(json.dumps({
        "train": {"epochs": 3}, "dataset": {"name": "biwi", "fps": 25.0, "topology": "biwi",
                                            "train_subjects": ["F2", "F3"], "train_sequences": 12}}))
    (run_dir / "best.json").write_text(json.dumps({"epoch": 2, "step": 30, "metric": "val_lve", "value": 1.5e-4}))
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "results.json").write_text(json.dumps({
        "protocol": {"split": {"name": "test-a"}, "dataset": {"name": "biwi"}},
        "overall": {"lve": 4.1e-4, "fdd": 3.2e-5, "mve": 1e-3, "sequences": 24}}))
    (run_dir / "metrics_extra.json").write_text(json.dumps({"lrp": {"score": 0.81}, "note": "text is ignored"}))
    return run_dir


def test_model_card_from_a_run(tiny, tmp_path):
    run_dir = _run_folder(tiny, tmp_path)
    rows = {(r.source, r.name): r.value for r in find_metrics(run_dir)}
    assert rows[("best.json", "val_lve")] == 1.5e-4
    assert rows[("eval/results.json", "lve")] == 4.1e-4
    assert rows[("metrics_extra.json", "lrp.score")] == 0.81
    card = model_card(run_dir, "me/biwi-run")
    assert card.startswith("---\nlicense: other\nlicense_name: biwi-research-only\n")
    assert "# biwi-run" in card and "`tiny`, 192 vertices" in card and "25 fps" in card
    assert "BIWI 3D Audiovisual Corpus" in card and "research purposes only" in card
    assert "| `eval/results.json` | biwi test-a (all) | lve | 0.00041 |" in card
    assert "train subjects: F2, F3" in card
    assert "ptalker animate speech.wav --model hf://me/biwi-run" in card


def test_model_card_without_known_data_says_so(tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "m")
    card = model_card(folder, "me/m")
    assert "not recorded" in card and "did not state the training data's license" in card
    assert "No metrics were found" in card
    assert "license: cc-by-4.0" in model_card(folder, "me/m", license="cc-by-4.0", dataset="my-own-recordings")


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, **kw):
        self.calls.append(("create_repo", kw))

    def upload_folder(self, **kw):
        root = Path(kw["folder_path"])
        files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        self.calls.append(("upload_folder", {**kw, "files": files}))
        return SimpleNamespace(oid="f" * 40, commit_url="http://hub/me/biwi-run/commit/" + "f" * 40)


def test_push_uploads_card_and_files_and_registers(zoo, tiny, tmp_path):
    run_dir = _run_folder(tiny, tmp_path)
    api = FakeApi()
    result = push_model(run_dir, "me/biwi-run", private=True, api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "me/biwi-run", "repo_type": "model", "private": True, "exist_ok": True}
    uploaded = api.calls[1][1]["files"]
    assert set(uploaded) == {"README.md", "config.json", "model.safetensors", "train_config.json", "best.json",
                             "eval/results.json", "metrics_extra.json"}
    assert uploaded["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()
    assert "research purposes only" in uploaded["README.md"].decode()
    assert result.revision == "f" * 40
    entry = load_registry().get("biwi-run")
    assert entry.repo_id == "me/biwi-run" and entry.revision == "f" * 40 and entry.dataset == "biwi"
    assert entry.files[1].sha256 == sha256((run_dir / "model.safetensors").read_bytes())
    assert entry.license == "biwi-research-only" and entry.subjects == tiny.config.train_subjects
    res = run("list", "--json")
    assert "biwi-run" in {r["name"] for r in json.loads(res.stdout)}


def test_push_command_dry_run_and_errors(zoo, tiny, tmp_path):
    run_dir = _run_folder(tiny, tmp_path)
    res = run("push", run_dir, "me/biwi-run", "--dry-run")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("---\nlicense: other") and zoo.requests == []
    res = run("push", tmp_path, "me/x", "--dry-run")
    assert "is not a ptalker model folder" in " ".join(res.output.split())
    res = run("push", run_dir, "not a repo", "--dry-run")
    assert "not a hub repository id" in " ".join(res.output.split())
    with pytest.raises(PtalkerError, match="pushing to me/biwi-run failed"):
        class Broken(FakeApi):
            def create_repo(self, **kw):
                raise RuntimeError("401 Unauthorized")

        push_model(run_dir, "me/biwi-run", api=Broken())

"""The model zoo: registry, verified hub downloads, cache and offline rules, model resolution.

Every network test talks to ptalker_cli.zoo.testing.FakeHub, a threaded HTTP server on
127.0.0.1 answering huggingface_hub's file-resolve requests; HF_ENDPOINT points at it
and the hub cache, ptalker's verification records and the user registry live in tmp_path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ptalker_cli.config import HUBERT_LARGE, W2V2_EMOTION, W2V2_SPEAKER_ID, AudioEncoderConfig
from ptalker_cli.errors import ConfigError, PtalkerError
from ptalker_cli.zoo import hub
from ptalker_cli.zoo.registry import ZooEntry, ZooFile, add_user_entry, load_registry
from ptalker_cli.zoo.testing import FakeHub, sha256

BLOB = os.urandom(200_000)


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A private hub cache, ptalker cache and user registry, and a fake hub at HF_ENDPOINT."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("PTALKER_CACHE", str(tmp_path / "ptalker-cache"))
    monkeypatch.setenv("PTALKER_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        fake.cache = tmp_path / "hf" / "hub"
        fake.registry = tmp_path / "registry.json"
        yield fake


def _blobs(cache: Path, repo: str) -> list[Path]:
    folder = cache / f"models--{repo.replace('/', '--')}" / "blobs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _snapshot_files(cache: Path, repo: str) -> list[Path]:
    folder = cache / f"models--{repo.replace('/', '--')}" / "snapshots"
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()) if folder.is_dir() else []


# ----------------------------------------------------------------------------- registry
def test_packaged_registry_lists_only_the_real_models():
    reg = load_registry(include_user=False)
    assert {e.kind for e in reg} == {"audio-encoder", "embedded"}
    embedded = [e for e in reg if e.kind == "embedded"]
    assert [e.name for e in embedded] == ["synthtalk-ict"]  # the shipped default, verified at load
    from ptalker_cli.zoo.hub import embedded_folder

    assert (embedded_folder(embedded[0]) / "model.safetensors").exists()
    by_repo = {e.repo_id: e for e in reg if e.kind == "audio-encoder"}
    for spec in (HUBERT_LARGE, W2V2_SPEAKER_ID, W2V2_EMOTION):
        entry = by_repo[spec.model_id]
        assert entry.revision == spec.revision and entry.license == spec.license == "apache-2.0"
        assert entry.encoder == spec.kind
        assert [f.name for f in entry.files] == ["config.json", "pytorch_model.bin"]
    er = by_repo["superb/wav2vec2-large-superb-er"]
    assert er.files[1].sha256 == "7c86063fd342fbccaabc23963d6520be3d466c4a438c83260004ee3061583e31"
    assert by_repo["facebook/hubert-large-ls960-ft"].files[1].sha256 is None  # unknown: the hub's hash is used


@pytest.mark.parametrize("change, message", [
    ({"revision": "main"}, "full 40-digit commit"),
    ({"files": [{"name": "a.bin", "sha256": "xyz"}]}, "64 lowercase hex"),
    ({"colour": "red"}, "unknown keys"),
    ({"kind": "checkpoint"}, "'kind' must be one of"),
    ({"repo_id": "no-slash"}, "org/name"),
    ({"kind": "embedded", "repo_id": None, "revision": None, "path": "x",
      "files": [{"name": "a.bin", "sha256": None}]}, "needs its sha256"),
])
def test_registry_validation(tmp_path, change, message):
    entry = {"name": "m", "kind": "model", "repo_id": "org/m", "revision": "a" * 40,
             "files": [{"name": "model.safetensors", "sha256": None}]}
    entry.update(change)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"format": 1, "models": [entry]}))
    with pytest.raises(ConfigError, match=message):
        load_registry([path], include_user=False)


def test_user_registry_is_merged_and_names_are_unique(zoo):
    entry = ZooEntry("mine", "model", repo_id="org/mine", revision="b" * 40,
                     files=(ZooFile("config.json", None), ZooFile("model.safetensors", "c" * 64, 10)))
    add_user_entry(entry)
    reg = load_registry()
    assert "mine" in reg and "hubert-large-ls960-ft" in reg and reg.get("mine").source == str(zoo.registry)
    with pytest.raises(ConfigError, match="packaged registry"):
        add_user_entry(ZooEntry("hubert-large-ls960-ft", "model", repo_id="o/x", revision="b" * 40,
                                files=(ZooFile("config.json"),)))
    with pytest.raises(ConfigError, match="not in the model registry"):
        reg.get("nope")


def test_parse_hf_uri():
    assert hub.parse_hf_uri("hf://org/repo") == ("org/repo", None)
    assert hub.parse_hf_uri("hf://org/repo@" + "a" * 40) == ("org/repo", "a" * 40)
    for bad in ("hf://repo", "hf://org/repo@", "org/repo"):
        with pytest.raises(PtalkerError, match="hf://org/repo"):
            hub.parse_hf_uri(bad)


# ----------------------------------------------------------------------------- downloads
def test_normal_download_is_verified_and_cached(zoo):
    commit = zoo.add_repo("org/m", {"config.json": b'{"a": 1}', "model.safetensors": BLOB})
    path = hub.fetch_file("org/m", "model.safetensors", commit)
    assert path.read_bytes() == BLOB
    assert Path(os.path.realpath(path)).name == sha256(BLOB)  # the blob is named by its LFS sha256
    cfg = hub.fetch_file("org/m", "config.json", "main")  # small git file: checked against its git sha1
    assert json.loads(cfg.read_text()) == {"a": 1}
    records = json.loads((Path(os.environ["PTALKER_CACHE"]) / "verified.json").read_text())
    assert {r["algo"] for r in records.values()} == {"sha256", "git-sha1"}
    n = len(zoo.requests)
    assert hub.fetch_file("org/m", "model.safetensors", commit) == path  # pinned commit: no request at all
    assert len(zoo.requests) == n


def test_corrupted_download_is_fetched_again(zoo):
    commit = zoo.add_repo("org/m", {"model.safetensors": BLOB})
    zoo.corrupt("org/m", "model.safetensors", times=1)
    path = hub.fetch_file("org/m", "model.safetensors", commit)
    assert path.read_bytes() == BLOB and zoo.downloads("model.safetensors") == 2


def test_corrupted_twice_is_an_error_and_nothing_stays_cached(zoo):
    commit = zoo.add_repo("org/m", {"model.safetensors": BLOB})
    zoo.corrupt("org/m", "model.safetensors", times=-1)
    with pytest.raises(hub.ZooError) as ei:
        hub.fetch_file("org/m", "model.safetensors", commit)
    msg = str(ei.value)
    assert "failed verification twice" in msg and sha256(BLOB) in msg and "\n" not in msg
    assert zoo.downloads("model.safetensors") == 2
    assert _blobs(zoo.cache, "org/m") == [] and _snapshot_files(zoo.cache, "org/m") == []


def test_registry_hash_wins_over_the_hub(zoo):
    commit = zoo.add_repo("org/m", {"model.safetensors": BLOB})
    with pytest.raises(hub.ZooError, match=r"instead of 0{64} \(from the registry\)"):
        hub.fetch_file("org/m", "model.safetensors", commit, sha256="0" * 64)
    assert _blobs(zoo.cache, "org/m") == []


@pytest.mark.parametrize("chunk", [16_384, None])
def test_interrupted_download_is_resumed(zoo, monkeypatch, chunk):
    import huggingface_hub.file_download as fd
    from huggingface_hub import constants

    monkeypatch.setattr(fd.time, "sleep", lambda s: None)
    if chunk:  # small chunks: huggingface_hub resumes with a Range request after the last complete chunk
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    commit = zoo.add_repo("org/m", {"model.safetensors": BLOB})
    zoo.cut("org/m", "model.safetensors", at=50_000, times=1)
    path = hub.fetch_file("org/m", "model.safetensors", commit)
    assert path.read_bytes() == BLOB and zoo.downloads("model.safetensors") == 2
    ranges = [r for m, p, r in zoo.requests if m == "GET" and p.endswith("model.safetensors")]
    if chunk:
        assert ranges[1] == f"bytes={3 * chunk}-"  # 3 whole chunks arrived before the cut at 50,000
    else:
        assert ranges == [None, None]  # nothing complete arrived: downloaded again from the start


def test_interrupted_for_good_is_a_clean_error(zoo, monkeypatch):
    import huggingface_hub.file_download as fd

    monkeypatch.setattr(fd.time, "sleep", lambda s: None)  # huggingface_hub waits 1 s between its retries
    commit = zoo.add_repo("org/m", {"model.safetensors": BLOB})
    zoo.cut("org/m", "model.safetensors", at=50_000, times=-1)
    with pytest.raises(hub.ZooError) as ei:
        hub.fetch_file("org/m", "model.safetensors", commit)
    msg = str(ei.value)
    assert msg.startswith("downloading model.safetensors of org/m@") and "partial download was discarded" in msg
    assert "\n" not in msg
    assert _blobs(zoo.cache, "org/m") == [] and _snapshot_files(zoo.cache, "org/m") == []


def test_missing_revision_repo_and_file_are_one_line_errors(zoo):
    zoo.add_repo("org/m", {"model.safetensors": BLOB})
    with pytest.raises(hub.ZooError, match=r"^revision '0{40}' does not exist in org/m on http://127\.0\.0\.1"):
        hub.fetch_file("org/m", "model.safetensors", "0" * 40)
    with pytest.raises(hub.ZooError, match="revision 'v9' does not exist"):
        hub.fetch_file("org/m", "model.safetensors", "v9")
    with pytest.raises(hub.ZooError, match="repository org/nope was not found"):
        hub.fetch_file("org/nope", "model.safetensors", "main")
    with pytest.raises(hub.ZooFileNotFound, match="weights.bin does not exist in org/m at revision main"):
        hub.fetch_file("org/m", "weights.bin", "main")


@pytest.mark.parametrize("how", ["env", "flag"])
def test_offline_without_cache_says_what_to_download(zoo, monkeypatch, how):
    commit = zoo.add_repo("org/m", {"model.safetensors": BLOB})
    entry = ZooEntry("my-model", "model", repo_id="org/m", revision=commit,
                     files=(ZooFile("model.safetensors", sha256(BLOB)),))
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.ZooNotCached) as ei:
        hub.fetch_entry(entry, offline=how == "flag")
    msg = str(ei.value)
    reason = "HF_HUB_OFFLINE=1" if how == "env" else "--offline"
    assert f"offline mode is on ({reason})" in msg and msg.endswith("ptalker models download my-model")
    assert "\n" not in msg and zoo.requests == []


def test_offline_with_cache_uses_it_without_network(zoo, monkeypatch):
    commit = zoo.add_repo("org/m", {"config.json": b"{}", "model.safetensors": BLOB})
    online = [hub.fetch_file("org/m", n, "main") for n in ("config.json", "model.safetensors")]
    n = len(zoo.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert [hub.fetch_file("org/m", f, "main") for f in ("config.json", "model.safetensors")] == online
    assert hub.fetch_file("org/m", "model.safetensors", commit, offline=True) == online[1]
    assert len(zoo.requests) == n


def test_offline_state_is_read_at_call_time(zoo, monkeypatch):
    """huggingface_hub freezes HF_HUB_OFFLINE when it is imported; ptalker decides per call, so a
    process that imported it offline downloads once the variable is gone (and the reverse)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as if imported under HF_HUB_OFFLINE=1
    zoo.add_repo("org/m", {"model.safetensors": BLOB})
    assert hub.offline_reason() is None
    assert hub.fetch_file("org/m", "model.safetensors", "main").read_bytes() == BLOB
    assert zoo.requests and constants.HF_HUB_OFFLINE is True  # the library's own switch is restored
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # imported online, offline now
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo.requests.clear()
    with pytest.raises(hub.ZooNotCached, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        hub.fetch_file("org/m", "config.json", "main")
    assert zoo.requests == [] and constants.HF_HUB_OFFLINE is False


def test_endpoint_is_read_at_call_time(zoo, monkeypatch):
    """huggingface_hub also freezes HF_ENDPOINT at import (here: a fake hub of an earlier test)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert hub.hub_endpoint() == zoo.url
    monkeypatch.delenv("HF_ENDPOINT")
    assert hub.hub_endpoint() == hub.DEFAULT_ENDPOINT == "https://huggingface.co"


def test_corrupt_cached_file_is_caught_offline_and_by_verify(zoo, monkeypatch):
    commit = zoo.add_repo("org/m", {"model.safetensors": BLOB})
    entry = ZooEntry("m", "model", repo_id="org/m", revision=commit, files=(ZooFile("model.safetensors"),))
    path = hub.fetch_entry(entry) / "model.safetensors"
    assert [r.status for r in hub.verify_entry(entry)] == ["ok"]
    blob = Path(os.path.realpath(path))
    blob.chmod(0o644)
    before = blob.stat().st_mtime_ns
    blob.write_bytes(bytes([BLOB[0] ^ 0xFF]) + BLOB[1:])  # changed in place (and a new mtime: ...
    os.utime(blob, ns=(before, before + 10**9))  # ... explicit, since file times can be coarser than this test)
    results = hub.verify_entry(entry)
    assert [r.status for r in results] == ["mismatch"] and sha256(BLOB) in results[0].detail
    with pytest.raises(hub.ZooError, match="cached model.safetensors of org/m@.* is corrupt .* removed"):
        hub.fetch_entry(entry, offline=True)
    assert not blob.exists()
    assert [r.status for r in hub.verify_entry(entry)] == ["missing"]
    hub.fetch_entry(entry)  # online again: fetched and verified
    assert [r.status for r in hub.verify_entry(entry)] == ["ok"]


# ----------------------------------------------------------------------------- model resolution
@pytest.fixture
def served_model(zoo, tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "tiny-model")
    files = {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors")}
    commit = zoo.add_repo("someone/tiny-talker", files)
    return zoo, commit, files


def test_load_model_from_hf_uri_registry_name_and_folder(served_model, tiny, tmp_path):
    from ptalker_cli.inference import load_model

    zoo, commit, files = served_model
    m1 = load_model(f"hf://someone/tiny-talker@{commit}")
    ref = tiny.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in m1.state_dict().items())
    add_user_entry(ZooEntry("tiny-talker", "model", repo_id="someone/tiny-talker", revision=commit,
                            files=tuple(ZooFile(n, sha256(b), len(b)) for n, b in files.items()),
                            topology="tiny", fps=25.0, subjects=("S1", "S2", "S3")))
    n = len(zoo.requests)
    m2 = load_model("tiny-talker", offline=True)  # same cached blobs, verified records reused
    assert m2.config == m1.config and len(zoo.requests) == n
    assert load_model(str(tmp_path / "tiny-model")).config == tiny.config
    with pytest.raises(PtalkerError, match="model 'nope' not found: give a model name "
                                           "\\(tiny, synthtalk-ict, tiny-talker\\)"):
        load_model("nope")
    with pytest.raises(PtalkerError, match="is an audio encoder"):
        load_model("hubert-large-ls960-ft")
    with pytest.raises(PtalkerError, match="revision 'v2' does not exist"):
        load_model("hf://someone/tiny-talker@v2")


def test_hf_uri_offline_without_cache(served_model, monkeypatch):
    from ptalker_cli.inference import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PtalkerError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\); download it once with "
                                           r"network access: ptalker models download hf://someone/tiny-talker$"):
        load_model("hf://someone/tiny-talker")


def test_embedded_entry_is_verified_at_every_load(zoo, tiny, tmp_path, monkeypatch):
    import ptalker_cli.resources as resources
    from ptalker_cli.inference import load_model

    weights = tmp_path / "weights"
    folder = tiny.save_pretrained(weights / "default")
    monkeypatch.setattr(resources, "weights_dir", lambda: weights)
    files = tuple(ZooFile(n, hub.sha256_file(folder / n)) for n in ("config.json", "model.safetensors"))
    registry = tmp_path / "embedded.json"
    registry.write_text(json.dumps({"format": 1, "models": [
        {"name": "default", "kind": "embedded", "path": "default", "files": [f.to_json() for f in files],
         "topology": "tiny", "license": "test"}]}))
    monkeypatch.setenv("PTALKER_REGISTRY", str(registry))
    assert load_model("default").config == tiny.config
    assert hub.cache_state(load_registry().get("default")) == "yes"
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(PtalkerError, match="installation is damaged: reinstall ptalker"):
        load_model("default")


# ----------------------------------------------------------------------------- speech encoders
def _tiny_hubert_files(tmp_path):
    from transformers import HubertConfig, HubertModel

    from ptalker_cli.config import tiny_speech_encoder

    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**tiny_speech_encoder("hubert").hf_config))
    model.save_pretrained(tmp_path / "tiny-hubert")
    files = {n: (tmp_path / "tiny-hubert" / n).read_bytes() for n in ("config.json", "model.safetensors")}
    return model, files


def test_speech_encoder_from_registry_and_hub_id(zoo, tmp_path, monkeypatch):
    from ptalker_cli.model.audio_encoders import build_speech_model
    from ptalker_cli.zoo.hub import load_pretrained_speech_model

    model, files = _tiny_hubert_files(tmp_path)
    commit = zoo.add_repo("test-org/tiny-hubert", files)
    add_user_entry(ZooEntry("tiny-hubert", "audio-encoder", repo_id="test-org/tiny-hubert", revision=commit,
                            files=tuple(ZooFile(n, sha256(b)) for n, b in files.items()), encoder="hubert",
                            license="apache-2.0"))
    spec = AudioEncoderConfig(kind="hubert", model_id="test-org/tiny-hubert", revision=commit)
    built, filled = build_speech_model(spec, load_pretrained_speech_model)
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in built.state_dict().items() if k in ref)
    assert filled.hf_config["hidden_size"] == 32
    # the same through the registry name, offline, from the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(zoo.requests)
    again, _ = build_speech_model(AudioEncoderConfig(kind="hubert", model_id="tiny-hubert"),
                                  load_pretrained_speech_model)
    assert len(zoo.requests) == n
    assert torch.equal(again.encoder.layer_norm.weight, model.encoder.layer_norm.weight)
    # an unregistered hub id not in the cache: one line naming what to download
    with pytest.raises(PtalkerError, match="ptalker models download hf://test-org/other@main"):
        build_speech_model(AudioEncoderConfig(kind="hubert", model_id="test-org/other", revision="main"),
                           load_pretrained_speech_model)


def test_unregistered_speech_encoder_falls_back_to_pytorch_model_bin(zoo, tmp_path):
    from transformers import HubertModel

    model, files = _tiny_hubert_files(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    commit = zoo.add_repo("test-org/bin-hubert", {"config.json": files["config.json"],
                                                  "pytorch_model.bin": (tmp_path / "pytorch_model.bin").read_bytes()})
    loaded = hub.load_pretrained_speech_model(HubertModel, "test-org/bin-hubert", commit)
    assert torch.equal(loaded.encoder.layer_norm.bias, model.encoder.layer_norm.bias)


def test_unreachable_hub_without_cache(zoo, monkeypatch):
    import socket

    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http.time, "sleep", lambda s: None)  # huggingface_hub backs off between retries
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(hub.ZooError, match=rf"^cannot reach the hub at http://127\.0\.0\.1:{port} and "
                                           r"model\.safetensors of org/m@main is not in the cache"):
        hub.fetch_file("org/m", "model.safetensors", "main")

"""`ptalker doctor`: every section in text and JSON, call-time offline state, cache sizes, and
probes that fail being reported instead of raised."""

import json
import os
import platform

import pytest
import torch
from typer.testing import CliRunner

from ptalker_cli import doctor as doc
from ptalker_cli.cli.app import app
from ptalker_cli.kernels import build as native

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_json():
    res = runner.invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_json_has_every_section(cli_json):
    assert list(cli_json) == list(doc.PROBES)
    assert not [k for k, v in cli_json.items() if "error" in v]  # every probe ran here
    v = cli_json["versions"]
    assert v["python"] == platform.python_version() and v["torch"] == torch.__version__
    assert {"ptalker", "cuda", "cudnn", "transformers", "huggingface_hub", "numpy"} <= set(v)
    d = cli_json["device"]
    assert d["cuda_available"] == torch.cuda.is_available() and d["torch_threads"] == torch.get_num_threads()
    k = cli_json["kernels"]
    assert k["cache"] == str(native.cache_dir()) and k["compiler"] == os.environ.get("CC", "cc")
    for key in ("decoder", "graph_encoder"):
        assert isinstance(k[key]["native"], bool) and ("library" in k[key] or k[key]["why"])
    r = cli_json["render"]
    for key in ("moderngl_egl", "pyrender_egl", "pyrender_osmesa"):
        assert isinstance(r[key]["works"], bool) and (r[key].get("renderer") or r[key].get("error"))
    assert r["auto"]
    assert {"festival", "espeak_ng"} == set(cli_json["tts"])
    assert os.path.isfile(cli_json["ffmpeg"]["path"]) and cli_json["ffmpeg"]["version"].startswith("ffmpeg")
    # tests/conftest.py points the caches at this session's folder
    assert cli_json["caches"]["hub"]["path"] == os.path.join(os.environ["HF_HOME"], "hub")
    assert cli_json["caches"]["ptalker"]["path"] == os.environ["PTALKER_CACHE"]
    assert cli_json["offline"] == {"offline": False, "reason": None, "endpoint": "https://huggingface.co"}


def test_text_block(cli_json, monkeypatch):
    """The text report: one header per section, one indented line per item, same facts as JSON."""
    fixed = {name: (lambda name=name: cli_json[name]) for name in doc.PROBES}  # no second full run
    monkeypatch.setattr(doc, "PROBES", fixed)
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert [ln[:-1] for ln in lines if not ln.startswith(" ")] == list(doc.PROBES)
    assert f"  python           {platform.python_version()}" in lines
    assert any(ln.startswith("  offline ") and ln.endswith("no") for ln in lines)
    hub = cli_json["caches"]["hub"]
    assert any(ln.split()[:2] == ["hub", hub["path"]] for ln in lines)


@pytest.mark.system("egl")
def test_egl_probe_names_the_renderer(cli_json):
    assert cli_json["render"]["moderngl_egl"]["works"] and cli_json["render"]["auto"] == "moderngl (EGL)"


def test_offline_mode_is_read_now(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert doc.doctor(["offline"]).sections["offline"]["reason"] == "HF_HUB_OFFLINE=1"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert doc.doctor(["offline"]).sections["offline"] == {"offline": False, "reason": None,
                                                         "endpoint": "http://127.0.0.1:9"}


def test_cache_sizes_follow_the_environment(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    (hub / "blobs").mkdir(parents=True)
    (hub / "blobs" / "abc").write_bytes(b"x" * 1000)
    (hub / "snapshots").mkdir()
    (hub / "snapshots" / "model.safetensors").symlink_to(hub / "blobs" / "abc")  # counted once
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("PTALKER_CACHE", str(tmp_path / "none"))
    caches = doc.doctor(["caches"]).sections["caches"]
    assert caches["hub"] == {"path": str(hub), "exists": True, "bytes": 1000}
    assert caches["ptalker"] == {"path": str(tmp_path / "none"), "exists": False, "bytes": 0}


def test_disabled_kernels_are_reported(monkeypatch):
    monkeypatch.setenv("PTALKER_NO_NATIVE", "1")
    k = doc.doctor(["kernels"]).sections["kernels"]
    assert k["disabled"] is True
    assert k["decoder"] == k["graph_encoder"] == {"native": False, "why": "disabled by PTALKER_NO_NATIVE"}


def test_failing_probe_is_reported_not_raised(monkeypatch):
    def broken():
        raise RuntimeError("probe exploded\non two lines")

    monkeypatch.setitem(doc.PROBES, "versions", broken)
    monkeypatch.setitem(doc.PROBES, "render", lambda: {"moderngl_egl": doc.probe_egl()})
    monkeypatch.setattr(doc, "_MODERNGL_EGL", "import sys; sys.exit('EGL broke here')")  # a failing child
    for name in ("tts", "ffmpeg", "kernels", "device"):
        monkeypatch.delitem(doc.PROBES, name)
    res = runner.invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["versions"] == {"error": "RuntimeError: probe exploded on two lines"}
    assert out["render"] == {"moderngl_egl": {"works": False, "error": "EGL broke here"}}
    assert out["offline"]["offline"] is False  # the others still ran
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0 and "versions:\n  error  RuntimeError: probe exploded on two lines\n" in res.stdout
    assert "  moderngl_egl  fails: EGL broke here" in res.stdout

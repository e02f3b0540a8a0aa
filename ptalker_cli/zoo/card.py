"""Model cards and publishing (``ptalker models push``).

:func:`model_card` writes the ``README.md`` of a published model from the model folder
(usually a training run): the config summary, the training data and its license, the
metrics found in the run (``best.json``, ``train_summary.json``, evaluation
``results.json`` files, and any other JSON file whose name mentions metrics / eval /
results / scores), and how to use it. :func:`push_model` creates the hub repository
(``HfApi.create_repo``), uploads the model files with the card (``HfApi.upload_folder``),
and records the pinned result in the user registry.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import ConfigError
from ..model.folder import CONFIG_FILE, MODEL_FILES, WEIGHTS_FILE, read_config, require_model_folder

#: What is known about the training data's terms (the weights inherit them).
DATASET_LICENSES: dict[str, dict[str, str]] = {
    "biwi": {
        "title": "BIWI 3D Audiovisual Corpus of Affective Communication (B3D(AC)^2), ETH Zurich",
        "license": "other",
        "license_name": "biwi-research-only",
        "terms": "distributed by ETH Zurich for research purposes only, on request; redistribution and "
                 "commercial use are not permitted",
    },
    "vocaset": {
        "title": "VOCASET (Cudeiro et al., CVPR 2019), Max Planck Institute for Intelligent Systems",
        "license": "other",
        "license_name": "vocaset-non-commercial",
        "terms": "distributed by MPI-IS under its own license for non-commercial scientific research only",
    },
}
TOPOLOGY_DATASETS = {"biwi": "biwi", "flame": "vocaset"}
METRIC_HINTS = ("metric", "eval", "result", "score")
SKIP_JSON = {CONFIG_FILE, "train_config.json", "dataset.json", "conversion.json", "trainer_state.json",
             "protocol.json", ".launch_config.json"}
UPLOAD_EXTRAS = ("train_config.json", "best.json", "train_summary.json", "conversion.json")
CITATION = """@inproceedings{wang2025ptalker,
  title     = {PTalker: Personalized Speech-Driven 3D Talking Head Animation via Style Disentanglement
               and Modality Alignment},
  author    = {Wang, Bin and Xu, Yang and Zhao, Huan and Zhang, Hao and Zhang, Zixing},
  booktitle = {Proceedings of the 33rd ACM International Conference on Multimedia},
  pages     = {10334--10342},
  year      = {2025},
  doi       = {10.1145/3746027.3755568}
}"""


# --------------------------------------------------------------------------- reading a run
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def check_model_folder(folder: str | Path) -> ModelConfig:
    """The folder's config; a clear error unless it holds ``config.json`` and a readable ``model.safetensors``."""
    from safetensors import safe_open

    folder = require_model_folder(folder)
    config = read_config(folder)
    try:
        with safe_open(str(folder / WEIGHTS_FILE), "pt") as fh:
            fh.metadata()
    except Exception as exc:
        raise ConfigError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file: {exc}") from None
    return config


@dataclass
class MetricRow:
    source: str  # file, relative to the run folder
    group: str  # split / group / what
    name: str
    value: float | int | str


def find_metrics(folder: str | Path, max_depth: int = 3) -> list[MetricRow]:
    """Metrics of a run folder: best.json, train_summary.json, evaluation results.json and *metric*/*eval* JSON."""
    folder = Path(folder)
    rows: list[MetricRow] = []
    files = []
    for root, dirs, names in os.walk(folder):
        depth = len(Path(root).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < max_depth)
        for name in sorted(names):
            if name.endswith(".json") and name not in SKIP_JSON:
                files.append(Path(root) / name)
    for path in files:
        rel = str(path.relative_to(folder))
        data = _read_json(path)
        if not isinstance(data, dict):
            continue
        name = path.name
        if name == "best.json":
            if data.get("metric") is not None and data.get("value") is not None:
                rows.append(MetricRow(rel, f"validation (best, epoch {data.get('epoch')})", str(data["metric"]),
                                      data["value"]))
        elif name == "train_summary.json":
            for key in ("epochs", "steps", "best_epoch", "best_value"):
                if isinstance(data.get(key), (int, float)):
                    rows.append(MetricRow(rel, "training", key, data[key]))
        elif isinstance(data.get("overall"), dict):  # ptalker eval results.json
            split = ((data.get("protocol") or {}).get("split") or {}).get("name", "eval")
            ds = ((data.get("protocol") or {}).get("dataset") or {}).get("name")
            label = f"{ds} {split}" if ds else str(split)
            overall = data["overall"]
            groups = [("all", overall)] + [(g, overall[g]) for g in ("seen", "unseen") if isinstance(overall.get(g),
                                                                                                      dict)]
            for group, values in groups:
                for key in ("lve", "fdd", "mve", "sequences"):
                    if isinstance(values.get(key), (int, float)):
                        rows.append(MetricRow(rel, f"{label} ({group})", key, values[key]))
        elif any(h in name.lower() for h in METRIC_HINTS) or "metrics" in path.parts[:-1]:
            for key, value in _flatten(data)[:40]:
                rows.append(MetricRow(rel, "", key, value))
    return rows


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out.append((prefix, data))
    return out


def training_dataset(folder: str | Path, config: ModelConfig, override: str | None = None) -> tuple[str | None, dict]:
    """(dataset key in :data:`DATASET_LICENSES` or a free name, facts from train_config.json)."""
    facts: dict[str, Any] = {}
    train_cfg = _read_json(Path(folder) / "train_config.json")
    if isinstance(train_cfg, dict) and isinstance(train_cfg.get("dataset"), dict):
        facts = dict(train_cfg["dataset"])
    conversion = _read_json(Path(folder) / "conversion.json")
    if override:
        return override.lower(), facts
    for candidate in (facts.get("name"), (conversion or {}).get("dataset") if isinstance(conversion, dict) else None,
                      TOPOLOGY_DATASETS.get(config.topology)):
        if isinstance(candidate, str) and candidate.lower() in DATASET_LICENSES:
            return candidate.lower(), facts
    name = facts.get("name")
    return (str(name) if name else None), facts


# --------------------------------------------------------------------------- card
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def model_card(folder: str | Path, repo_id: str, *, dataset: str | None = None, license: str | None = None,
               revision_hint: str | None = None, files: list[tuple[str, str, int]] | None = None) -> str:
    """The README.md for ``repo_id`` from a model folder (see the module docstring)."""
    folder = Path(folder)
    config = check_model_folder(folder)
    ds_key, facts = training_dataset(folder, config, dataset)
    ds_info = DATASET_LICENSES.get(ds_key or "")
    lic = license or (ds_info["license"] if ds_info else "other")
    front = ["---", f"license: {lic}"]
    if lic == "other":
        front.append(f"license_name: {ds_info['license_name'] if ds_info and not license else 'see-model-card'}")
    front += ["library_name: ptalker", "tags:", "  - talking-head", "  - speech-driven-animation", "  - 3d-face",
              "  - ptalker", "---"]
    name = repo_id.split("/")[-1]
    lines = front + ["", f"# {name}", "",
                     f"A speech-driven 3D talking-head model ({config.name}) trained with ptalker, a "
                     "reimplementation of [PTalker](https://arxiv.org/abs/2512.22602) (Wang et al., ACM MM 2025).",
                     ""]
    # ---- config
    switches = [k for k in ("use_graph_encoder", "use_motion_content", "use_motion_style", "use_audio_style",
                            "use_identity_style", "identity_attention") if getattr(config, k)]
    encoders = [config.audio_content] + (list(config.audio_style) if config.use_audio_style else [])
    lines += ["## Model", "", "| | |", "|---|---|",
              f"| preset / name | `{config.name}` |",
              f"| topology | `{config.topology}`, {config.num_vertices} vertices |",
              f"| frame rate | {config.fps:g} fps (PPE period {config.period}) |",
              f"| feature_dim | {config.feature_dim} |",
              f"| decoder | {config.decoder_layers} layers, {config.decoder_heads} heads, "
              f"ffn {config.decoder_ffn_dim} |",
              f"| components | {', '.join(switches) or 'FaceFormer baseline (none)'} |",
              f"| refinement passes | {config.refine_passes} |",
              f"| training identities (one-hot order) | {', '.join(config.train_subjects) or 'none'} |",
              f"| subjects with templates | {', '.join(config.template_subjects) or 'none'} |"]
    for spec in encoders:
        src = f"`{spec.model_id}` @ `{spec.revision}`" if spec.model_id else "random init (no pretrained weights)"
        lines.append(f"| {spec.kind} encoder | {src}{' (' + spec.license + ')' if spec.license else ''} |")
    lines += ["", f"The speech encoders' fine-tuned weights are part of `{WEIGHTS_FILE}`; nothing else is "
              f"downloaded to use this model. `{CONFIG_FILE}` holds the full configuration.", ""]
    # ---- training data
    lines += ["## Training data", ""]
    if ds_info:
        lines.append(f"Trained on **{ds_info['title']}**.")
    elif ds_key:
        lines.append(f"Trained on **{ds_key}**.")
    else:
        lines.append("The training data was not recorded in the model folder.")
    if facts:
        bits = [f"{k.replace('_', ' ')}: {v if not isinstance(v, list) else ', '.join(map(str, v))}"
                for k, v in facts.items() if k in ("train_subjects", "train_sequences", "val_sequences", "fps",
                                                     "topology")]
        if bits:
            lines += ["", "; ".join(bits) + "."]
    lines += ["", "### License of the training data", ""]
    if ds_info:
        lines.append(f"The dataset is {ds_info['terms']}. These weights are derived from it and are published under "
                     f"the same terms (`license: {lic}`{', ' + ds_info['license_name'] if lic == 'other' else ''}): "
                     "check the dataset's license before any use.")
    elif license:
        lines.append(f"Published under `{license}` as stated by the uploader; check the training data's terms.")
    else:
        lines.append("Unknown: the uploader did not state the training data's license (`ptalker models push "
                     "--license`). Do not assume any right to use these weights.")
    pretrained = [s for s in encoders if s.model_id]
    if pretrained:
        lics = sorted({s.license or "unknown" for s in pretrained})
        lines += ["", f"The pretrained speech encoders it started from are licensed {', '.join(lics)} (see the table "
                  "above)."]
    lines.append("")
    # ---- metrics
    rows = find_metrics(folder)
    lines += ["## Metrics", ""]
    if rows:
        lines += ["| source | group | metric | value |", "|---|---|---|---|"]
        lines += [f"| `{r.source}` | {r.group} | {r.name} | {_fmt(r.value)} |" for r in rows]
        lines += ["", "LVE and FDD are in the dataset's units, squared (as ptalker's evaluation reports them)."]
    else:
        lines.append("No metrics were found in the model folder (run `ptalker eval` and push again to add them).")
    lines.append("")
    # ---- usage
    rev = f"@{revision_hint}" if revision_hint else ""
    lines += ["## Usage", "", "With ptalker installed:", "", "```bash",
              f"ptalker animate speech.wav --model hf://{repo_id}{rev} -o face.npy",
              "```", "",
              "Files are verified against the hub's sha256 after download and cached; add `HF_HUB_OFFLINE=1` to use "
              "the cached copy without network.", ""]
    if files:
        lines += ["## Files", "", "| file | sha256 | bytes |", "|---|---|---|"]
        lines += [f"| `{n}` | `{h}` | {s} |" for n, h, s in files]
        lines.append("")
    lines += ["## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- push
@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    url: str | None
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (name, sha256, size)
    card: str = ""
    registry_path: str | None = None
    entry_name: str | None = None
    uploaded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "revision": self.revision, "url": self.url,
                "files": [{"name": n, "sha256": h, "size": s} for n, h, s in self.files],
                "uploaded": self.uploaded, "registry": self.registry_path, "name": self.entry_name}


def _stage(folder: Path, staging: Path, card: str) -> list[str]:
    """Link (or copy) the files to publish into ``staging``; returns their names."""
    names = list(MODEL_FILES) + [n for n in UPLOAD_EXTRAS if (folder / n).is_file()]
    for row in find_metrics(folder):
        if row.source not in names:
            names.append(row.source)
    for name in names:
        dst = staging / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink((folder / name).resolve(), dst)
        except OSError:
            shutil.copy2(folder / name, dst)
    (staging / "README.md").write_text(card)
    return names + ["README.md"]


def push_model(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
               endpoint: str | None = None, dataset: str | None = None, license: str | None = None,
               commit_message: str | None = None, name: str | None = None, register: bool = True,
               dry_run: bool = False, api: Any = None) -> PushResult:
    """Publish a model folder to ``repo_id`` with a generated model card; pin it in the user registry."""
    from .hub import hub_endpoint, sha256_file
    from .registry import REPO_RE, ZooEntry, add_user_entry

    folder = Path(folder)
    if not REPO_RE.match(repo_id):
        raise ConfigError(f"'{repo_id}' is not a hub repository id; write org/name")
    config = check_model_folder(folder)
    files = [(n, sha256_file(folder / n), (folder / n).stat().st_size) for n in MODEL_FILES]
    card = model_card(folder, repo_id, dataset=dataset, license=license, files=files)
    result = PushResult(repo_id, None, None, files, card)
    if dry_run:
        result.uploaded = list(MODEL_FILES) + [n for n in UPLOAD_EXTRAS if (folder / n).is_file()]
        return result
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub_endpoint(endpoint), token=token)
    with tempfile.TemporaryDirectory(prefix="ptalker-push-") as tmp:
        staging = Path(tmp)
        result.uploaded = _stage(folder, staging, card)
        try:
            api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(staging),
                                     commit_message=commit_message or f"Upload {config.name} model with ptalker")
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"pushing to {repo_id} failed: {first} (log in with 'hf auth login' or pass "
                              "--token)") from None
    result.revision = getattr(info, "oid", None)
    result.url = getattr(info, "commit_url", None) or str(info)
    if register and result.revision:
        ds_key, facts = training_dataset(folder, config, dataset)
        ds_info = DATASET_LICENSES.get(ds_key or "")
        metrics = {f"{r.group} {r.name}".strip(): r.value for r in find_metrics(folder)
                   if isinstance(r.value, (int, float))}
        entry = ZooEntry(
            name=name or _default_name(repo_id), kind="model",
            description=f"{config.name} model published from {folder.name}",
            license=license or (ds_info["license_name"] if ds_info else "unknown"),
            repo_id=repo_id, revision=result.revision,
            files=tuple(_zoo_file(n, h, s) for n, h, s in files), topology=config.topology, fps=config.fps,
            subjects=config.train_subjects, dataset=ds_key, training_data=ds_info["title"] if ds_info else ds_key,
            metrics=dict(list(metrics.items())[:20]),
        )
        result.registry_path = str(add_user_entry(entry))
        result.entry_name = entry.name
    return result


def _default_name(repo_id: str) -> str:
    """The repo's name, or ``org--name`` when the packaged registry already uses that name."""
    from .registry import load_registry

    short = repo_id.split("/")[-1]
    packaged = load_registry(include_user=False)
    return repo_id.replace("/", "--") if short in packaged or short == "tiny" else short


def _zoo_file(name: str, sha: str, size: int):
    from .registry import ZooFile

    return ZooFile(name, sha, size)

"""``ptalker models``: list, inspect, download, verify, locate and publish models.

Mounted by the application as ``app.add_typer(models_app, name="models")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ..errors import PtalkerError
from .common import GuardedTyper, console, print_json

models_app = GuardedTyper(
    name="models",
    help="The model zoo: list, inspect, download, verify, locate and publish models.",
    no_args_is_help=True,
    add_completion=False,
)

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:  # logs and pipes: no folding of the tables at 80 columns
    out = Console(highlight=False, soft_wrap=True, width=160)


KIND_LABELS = {"audio-encoder": "encoder"}


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0  # type: ignore[assignment]
    return "?"


def _entry_size(entry) -> int | None:
    from ..zoo.hub import entry_files

    states = entry_files(entry)
    sizes = [s.size for s in states]
    return sum(sizes) if sizes and all(s is not None for s in sizes) else None  # type: ignore[misc]


def _subjects(entry) -> str:
    if not entry.subjects:
        return "–"
    if len(entry.subjects) <= 3:
        return ", ".join(entry.subjects)
    return f"{len(entry.subjects)} ({entry.subjects[0]} …)"


@models_app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List the registry: name, kind, topology, subjects, size, license, cached."""
    from ..zoo.hub import cache_state
    from ..zoo.registry import load_registry

    registry = load_registry()
    rows = []
    for e in registry:
        rows.append({"name": e.name, "kind": e.kind, "topology": e.topology, "fps": e.fps,
                     "subjects": list(e.subjects), "size": _entry_size(e), "license": e.license,
                     "cached": cache_state(e), "location": e.location, "description": e.description,
                     "source": e.source})
    if as_json:
        print_json(rows)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("name", "kind", "topology", "subjects", "size", "license", "cached"):
        table.add_column(col, no_wrap=col != "subjects", overflow="ellipsis" if col == "license" else "fold")
    colors = {"yes": "green", "partial": "yellow", "no": "dim"}
    for r in rows:
        table.add_row(r["name"], KIND_LABELS.get(r["kind"], r["kind"]), r["topology"] or "–",
                      _subjects(registry.get(r["name"])),
                      _size(r["size"]), r["license"] or "?", f"[{colors[r['cached']]}]{r['cached']}[/]")
    out.print(table)
    out.print("also: 'tiny' (built in, random weights), a model folder, or hf://org/repo@revision",
              style="dim", markup=False)


@models_app.command("info")
def info(name: str = typer.Argument(..., help="A registry name."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """Everything the registry knows about a model, and where its files are cached."""
    from ..zoo.hub import entry_files, entry_folder
    from ..zoo.registry import load_registry

    entry = load_registry().get(name)
    states = entry_files(entry)
    folder = entry_folder(entry)
    data = entry.to_json()
    data["source"] = entry.source
    data["location"] = entry.location
    data["folder"] = str(folder) if folder else None
    data["files"] = [{**f.to_json(), "cached": str(s.path) if s.path else None, "size": s.size}
                     for f, s in zip(entry.files, states)]
    if as_json:
        print_json(data)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key in ("name", "kind", "description", "location", "license", "role", "encoder", "topology", "fps",
                "dataset", "training_data", "needs", "source", "folder"):
        value = data.get(key)
        if value not in (None, "", []):
            table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    if entry.subjects:
        table.add_row("subjects", ", ".join(entry.subjects))
    for k, v in entry.metrics.items():
        table.add_row(f"metric {k}", str(v))
    out.print(table)
    files = Table("file", "sha256", "size", "cached")
    for f in data["files"]:
        files.add_row(f["name"], f["sha256"] or "[dim]from the hub at download[/]", _size(f["size"]),
                      "[green]yes[/]" if f["cached"] else "[dim]no[/]")
    out.print(files)


def _fetch(spec: str, offline: bool):
    from ..zoo.hub import fetch_entry, fetch_hf_model, parse_hf_uri
    from ..zoo.registry import load_registry

    if spec.startswith("hf://"):
        repo, rev = parse_hf_uri(spec)
        return fetch_hf_model(repo, rev, offline=offline or None)
    registry = load_registry()
    return fetch_entry(registry.get(spec), offline=offline or None, registry=registry)


@models_app.command("download")
def download(
    names: List[str] = typer.Argument(..., help="Registry names or hf://org/repo[@revision].", show_default=False),
    offline: bool = typer.Option(False, "--offline", help="Do not use the network: check the cache only."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Download (and verify) models into the hub cache; prints each model's local folder."""
    results = []
    for spec in names:
        folder = _fetch(spec, offline)
        results.append({"name": spec, "folder": str(folder)})
        if not as_json:
            out.print(f"{spec}: {folder}")
    if as_json:
        print_json(results)


@models_app.command("verify")
def verify(
    name: Optional[str] = typer.Argument(None, help="A registry name (default: every model)."),
    delete: bool = typer.Option(False, "--delete", help="Remove corrupt cached files (download them again)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Rehash the cached files of one or every model (no network). Exit code 1 on a mismatch."""
    from ..zoo.hub import verify_entry
    from ..zoo.registry import load_registry

    registry = load_registry()
    entries = [registry.get(name)] if name else list(registry)
    results = [r for e in entries for r in verify_entry(e, delete_bad=delete)]
    bad = [r for r in results if r.status == "mismatch"]
    if as_json:
        print_json([r.__dict__ for r in results])
    else:
        table = Table("model", "file", "status", "detail")
        colors = {"ok": "green", "mismatch": "red", "missing": "dim", "unverifiable": "yellow"}
        for r in results:
            table.add_row(r.entry, r.file, f"[{colors[r.status]}]{r.status}[/]", r.detail)
        out.print(table)
        if name and all(r.status == "missing" for r in results):
            out.print(f"[dim]{name} is not cached: ptalker models download {name}[/]")
    if bad:
        raise PtalkerError(f"{len(bad)} cached file(s) do not match their hashes"
                           + ("; they were removed: download them again" if delete else
                              "; run 'ptalker models verify --delete' and download them again"))


@models_app.command("path")
def path(
    name: str = typer.Argument(..., help="A registry name or hf://org/repo[@revision]."),
    download_missing: bool = typer.Option(False, "--download", help="Download it first if it is not cached."),
) -> None:
    """Print the local folder of a cached model (nothing else on stdout)."""
    from ..zoo.hub import MODEL_FILES, cached_file, entry_folder, parse_hf_uri, snapshot_root
    from ..zoo.registry import load_registry

    if download_missing:
        folder = _fetch(name, False)
    elif name.startswith("hf://"):
        repo, rev = parse_hf_uri(name)
        found = [cached_file(repo, f, rev) for f in MODEL_FILES]
        if any(p is None for p in found):
            raise PtalkerError(f"{name} is not in the cache; download it: ptalker models download {name}")
        folder = snapshot_root(found[0])  # type: ignore[arg-type]
    else:
        folder = entry_folder(load_registry().get(name))
        if folder is None:
            raise PtalkerError(f"{name} is not in the cache; download it: ptalker models download {name}")
    typer.echo(str(folder))


@models_app.command("push")
def push(
    folder: Path = typer.Argument(..., help="Model folder (config.json + model.safetensors), e.g. a training run.",
                                  show_default=False),
    repo_id: str = typer.Argument(..., help="Hub repository, org/name (created if needed).", show_default=False),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    license: Optional[str] = typer.Option(None, "--license", help="License of the weights (default: from the "
                                          "training data's terms)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Training data (biwi, vocaset or a name), if "
                                          "the run does not record it."),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="Commit message."),
    name: Optional[str] = typer.Option(None, "--name", help="Name in your registry (default: the repo's name)."),
    register: bool = typer.Option(True, "--register/--no-register", help="Record the pinned upload in your "
                                  "registry (ptalker models list)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="HF_TOKEN", help="Hub token (default: your login)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the model card and the files; upload nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Publish a trained model to the hub with a generated model card."""
    from ..zoo.card import push_model

    result = push_model(folder, repo_id, private=private, token=token, dataset=dataset, license=license,
                        commit_message=message, name=name, register=register, dry_run=dry_run)
    if as_json:
        data = result.to_json()
        if dry_run:
            data["card"] = result.card
        print_json(data)
        return
    if dry_run:
        typer.echo(result.card)
        console.print(f"dry run: would upload {', '.join(result.uploaded)} and README.md to {repo_id}",
                      highlight=False)
        return
    console.print(f"pushed {folder} → {repo_id} @ {result.revision}", highlight=False)
    if result.entry_name:
        console.print(f"registered as '{result.entry_name}' in {result.registry_path}; use it with "
                      f"--model {result.entry_name} or --model hf://{repo_id}@{result.revision}", highlight=False)

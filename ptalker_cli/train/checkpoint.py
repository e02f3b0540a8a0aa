"""Resumable training checkpoints without pickle: safetensors for tensors, JSON for the rest.

A checkpoint folder (the run's ``last/``) holds

* ``config.json`` + ``model.safetensors`` — the model (:meth:`PTalker.save_pretrained`,
  so ``last/`` is itself a loadable model folder);
* ``optimizer.safetensors`` — every tensor of the optimizer state (``state.<param>.<key>``);
* ``rng.safetensors`` — each rank's torch CPU (and CUDA) generator states (uint8 tensors);
* ``trainer_state.json`` — epoch, batch in the epoch, optimizer step, best validation
  value, the optimizer's param groups and scalar state, the LR scheduler's and the
  gradient scaler's state, each rank's Python and NumPy RNG states, the running
  epoch sums, and a ``complete`` marker.

Writing is atomic at the folder level: the checkpoint is written to ``.last.tmp/``,
then the old ``last/`` is renamed to ``.last.old/``, the new one to ``last/``, and the
old one removed. A crash at any point leaves either ``last/`` or ``.last.old/``
complete; :func:`find_checkpoint` finds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..fileio import write_errors

LAST = "last"
STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"
RNG_NAME = "rng.safetensors"
STATE_VERSION = 1


# ----------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """This process's RNG states: torch CPU / CUDA (uint8 tensors), Python and NumPy (JSON-able)."""
    py = random.getstate()
    np_state = np.random.get_state(legacy=False)
    np_json = {
        "bit_generator": np_state["bit_generator"],
        "key": np_state["state"]["key"].tolist(),
        "pos": int(np_state["state"]["pos"]),
        "has_gauss": int(np_state["has_gauss"]),
        "gauss": float(np_state["gauss"]),
    }
    cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
        "python": [py[0], list(py[1]), py[2]],
        "numpy": np_json,
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        for i, s in enumerate(cuda):
            torch.cuda.set_rng_state(s.cpu(), i)
    v, key, gauss = state["python"]
    random.setstate((v, tuple(key), gauss))
    n = state["numpy"]
    np.random.set_state({
        "bit_generator": n["bit_generator"],
        "state": {"key": np.asarray(n["key"], dtype=np.uint32), "pos": n["pos"]},
        "has_gauss": n["has_gauss"],
        "gauss": n["gauss"],
    })


# ----------------------------------------------------------------------- optimizer
def optimizer_to_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups = json.loads(json.dumps(sd["param_groups"]))
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_parts(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------- folders
def find_checkpoint(run_dir: Path) -> Path | None:
    """The run's complete last checkpoint (``last/``, or ``.last.old/`` after a crash mid-swap)."""
    for name in (LAST, ".last.old"):
        folder = run_dir / name
        if (folder / STATE_NAME).is_file():
            try:
                if json.loads((folder / STATE_NAME).read_text()).get("complete"):
                    return folder
            except (OSError, json.JSONDecodeError):
                continue
    return None


def save_checkpoint(run_dir: Path, model, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    rng_states: list[dict[str, Any]]) -> Path:
    """Write ``run_dir/last`` atomically (see the module docstring).

    A failure (no space left, an interruption ...) removes ``.last.tmp/`` and leaves the
    previous checkpoint as it was; OS errors become a one-line :class:`WriteError`.
    """
    run_dir = Path(run_dir)
    tmp, last, old = run_dir / ".last.tmp", run_dir / LAST, run_dir / ".last.old"
    try:
        with write_errors(last, scratch=tmp):
            _write_checkpoint(tmp, model, optimizer, state, rng_states)
        with write_errors(last, own=True):
            if last.exists():
                if old.exists():
                    shutil.rmtree(old)
                os.replace(last, old)
            os.replace(tmp, last)
            _fsync_dir(run_dir)
        shutil.rmtree(old, ignore_errors=True)  # inside the try: an interruption here is tidied up too
    except BaseException:
        tidy_run_dir(run_dir)
        raise
    return last


def _write_checkpoint(tmp: Path, model, optimizer, state: dict[str, Any], rng_states: list[dict[str, Any]]) -> None:
    from safetensors.torch import save_file

    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    opt_tensors, opt_meta = optimizer_to_parts(optimizer)
    save_file(opt_tensors, str(tmp / OPTIM_NAME), metadata={"format": "pt"})
    rng_tensors: dict[str, torch.Tensor] = {}
    rng_json = []
    for rank, rs in enumerate(rng_states):
        rng_tensors[f"torch.{rank}"] = rs["torch"].contiguous()
        for i, c in enumerate(rs.get("cuda", [])):
            rng_tensors[f"cuda.{rank}.{i}"] = c.cpu().contiguous()
        rng_json.append({"python": rs["python"], "numpy": rs["numpy"], "cuda_devices": len(rs.get("cuda", []))})
    save_file(rng_tensors, str(tmp / RNG_NAME), metadata={"format": "pt"})
    full = {"version": STATE_VERSION, **state, "optimizer": opt_meta, "rng": rng_json, "complete": True}
    (tmp / STATE_NAME).write_text(json.dumps(full, indent=1) + "\n")
    _fsync_dir(tmp)


def tidy_run_dir(run_dir: Path) -> None:
    """After a failed or interrupted save: drop ``.last.tmp/``; put ``.last.old/`` back as ``last/`` if needed."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / ".last.tmp", ignore_errors=True)
    last, old = run_dir / LAST, run_dir / ".last.old"
    if old.is_dir():
        if not last.exists():
            with contextlib.suppress(OSError):
                os.replace(old, last)
        elif find_checkpoint(run_dir) == last:
            shutil.rmtree(old, ignore_errors=True)


def resume_hint(run_dir: Path, command: str = "ptalker train") -> str:
    """What to tell a user whose training stopped: how to resume, or that there is nothing to resume yet."""
    if find_checkpoint(Path(run_dir)) is not None:
        return f"resume with `{command} --out {run_dir} --resume`"
    return f"no checkpoint was saved yet; start again with `{command} --out {run_dir} --force`"


def _fsync_dir(folder: Path) -> None:
    for p in list(folder.iterdir()) + [folder]:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def load_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[dict[str, Any]]]:
    """(trainer state, optimizer tensors, per-rank RNG states) of a checkpoint folder."""
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / STATE_NAME).read_text())
        opt_tensors = load_file(str(folder / OPTIM_NAME))
        rng_tensors = load_file(str(folder / RNG_NAME))
    except Exception as exc:  # noqa: BLE001 - reported as a user error
        raise ConfigError(f"cannot read the checkpoint in {folder}: {exc}") from None
    if state.get("version") != STATE_VERSION:
        raise ConfigError(f"{folder} was written by another ptalker version (state version {state.get('version')})")
    rngs = []
    for rank, rj in enumerate(state.get("rng", [])):
        rngs.append({
            "torch": rng_tensors[f"torch.{rank}"],
            "cuda": [rng_tensors[f"cuda.{rank}.{i}"] for i in range(rj.get("cuda_devices", 0))],
            "python": rj["python"],
            "numpy": rj["numpy"],
        })
    return state, opt_tensors, rngs

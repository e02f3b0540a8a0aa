"""Batch jobs over many inputs split across processes: ``--shard K/N`` or ``torchrun``.

Shard ``K`` of ``N`` takes every N-th input of the sorted input list, starting at the K-th,
so the split does not depend on the order the inputs were given in and every input belongs
to exactly one shard. Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` in the environment) the
shard is the rank and the device ``cuda:LOCAL_RANK`` when CUDA exists.

Each shard writes its own outputs and its own partial report ``REPORT.rank-K-of-N.json``
(atomically). Whichever shard finds all N partial reports present after writing its own
merges them into ``REPORT`` (one list, in sorted input order): the last to finish does it,
and when two finish at once both write the same content atomically. No process waits for
another and no ``torch.distributed`` process group is needed; the partial reports stay as
the record of each shard.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import PtalkerError
from ..fileio import atomic_path


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``K/N`` with 0 ≤ K < N → :class:`Shard`; a one-line error otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise PtalkerError(f"cannot read --shard '{text}'; use K/N with 0 <= K < N, e.g. 0/4")
    return Shard(int(m.group(1)), int(m.group(2)))


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[Shard, int] | None:
    """``(shard, local rank)`` under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else None."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"]))
    except ValueError:
        raise PtalkerError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise PtalkerError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Shard(rank, world), local


def shard_inputs(inputs: Sequence[Path], shard: Shard | None) -> list[Path]:
    """This shard's inputs: the sorted list's every ``count``-th from ``index`` (all of them without a shard)."""
    if shard is None:
        return list(inputs)
    return sorted(inputs, key=str)[shard.index::shard.count]


def partial_report_path(report: Path, shard: Shard) -> Path:
    return report.with_name(f"{report.stem}.rank-{shard.index}-of-{shard.count}{report.suffix or '.json'}")


def write_shard_report(report: Path, shard: Shard, inputs: Sequence[Path], results: list[dict[str, Any]]) -> bool:
    """Write this shard's partial report; merge all into ``report`` when every shard's is there.

    Returns whether the merged report was written (by this call).
    """
    part = {"shard": shard.label, "inputs": sorted(map(str, inputs)), "results": results}
    write_json(partial_report_path(report, shard), part)
    parts = []
    for k in range(shard.count):
        path = partial_report_path(report, Shard(k, shard.count))
        try:
            other = json.loads(path.read_text())
        except FileNotFoundError:
            return False  # another shard still runs: it merges when it ends
        except (OSError, ValueError) as exc:
            raise PtalkerError(f"cannot read the partial report {path}: {exc}") from None
        if other.get("inputs") != part["inputs"]:
            return False  # left by a run over other inputs: that shard has not run for these yet
        parts.append(other)
    write_json(report, merge_reports(parts))
    return True


def merge_reports(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shards' results as one list in sorted input order, each entry with its ``shard``."""
    merged = [{**entry, "shard": p["shard"]} for p in parts for entry in p["results"]]
    return sorted(merged, key=lambda e: e["input"])


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")

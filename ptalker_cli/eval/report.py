"""Presenting an :class:`~ptalker_cli.eval.protocol.EvalResult`: rich tables, JSON, CSV.

Files written by :func:`write_results` (each atomically: temporary file, then rename):

=================  ==========================================================
``results.json``   protocol + overall + per-subject + per-sequence + the paper's
                   reference tables (marked as the paper's numbers)
``protocol.json``  the protocol alone (split, conditioning, frames, regions, units)
``overall.csv``    one row per group (``all``, and ``seen`` / ``unseen`` when mixed)
``subjects.csv``   one row per subject
``sequences.csv``  one row per sequence
=================  ==========================================================

Raw columns (``lve``, ``fdd``, ``mve`` ...) are in data units (squared for LVE/FDD);
``lve_scaled`` / ``fdd_scaled`` are divided by the paper's scale (``lve_scale`` /
``fdd_scale`` in ``overall.csv`` and the protocol), e.g. BIWI LVE ×1e-4.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

from ..fileio import atomic_path
from .protocol import EvalResult

RESULT_FILES = ("results.json", "protocol.json", "overall.csv", "subjects.csv", "sequences.csv")

_AGG_COLUMNS = ("sequences", "frames", "frames_dropped", "lve", "lve_sequence_mean", "fdd", "fdd_abs",
                "mve", "mve_sequence_mean", "dyn_gt", "dyn_pred")
_SEQ_COLUMNS = ("sequence", "subject", "seen", "condition", "frames_gt", "frames_pred", "frames",
                "dropped_pred", "dropped_gt", "lve", "fdd", "fdd_abs", "mve", "dyn_gt", "dyn_pred",
                "lve_scaled", "fdd_scaled", "prediction")


def sci(scale: float) -> str:
    """1e-4 -> "1e-4" (powers of ten), else the general format."""
    exp = math.log10(scale) if scale > 0 else 0.0
    return f"1e{int(round(exp))}" if abs(exp - round(exp)) < 1e-9 else f"{scale:g}"


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value / scale


def _fmt(value: float | None, scale: float = 1.0) -> str:
    if value is None:
        return "–"
    v = value / scale
    if scale == 1.0 and v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.4e}"
    return f"{v:.4f}"


def _csv(rows: Iterable[dict[str, Any]], columns: Iterable[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _agg_row(group: str, agg: dict[str, Any], lve_s: float, fdd_s: float, **extra) -> dict[str, Any]:
    row = {"group": group, **extra, **{k: agg.get(k) for k in _AGG_COLUMNS}}
    row["lve_scaled"] = _scaled(agg.get("lve"), lve_s)
    row["fdd_scaled"] = _scaled(agg.get("fdd"), fdd_s)
    row["fdd_abs_scaled"] = _scaled(agg.get("fdd_abs"), fdd_s)
    return row


def overall_rows(result: EvalResult) -> list[dict[str, Any]]:
    lve_s, fdd_s = result.scales
    rows = [_agg_row("all", result.overall, lve_s, fdd_s)]
    for g in ("seen", "unseen"):
        if g in result.overall:
            rows.append(_agg_row(g, result.overall[g], lve_s, fdd_s))
    for r in rows:
        r.update(split=result.protocol["split"]["name"], lve_scale=lve_s, fdd_scale=fdd_s,
                 units=result.protocol["units"]["data"])
    return rows


def subject_rows(result: EvalResult) -> list[dict[str, Any]]:
    lve_s, fdd_s = result.scales
    return [_agg_row(s, agg, lve_s, fdd_s, seen=agg.get("seen")) | {"subject": s}
            for s, agg in result.subjects.items()]


def sequence_rows(result: EvalResult) -> list[dict[str, Any]]:
    lve_s, fdd_s = result.scales
    out = []
    for r in result.sequences:
        d = r.to_json()
        d["sequence"] = d.pop("name")
        d["fdd_abs"] = None if r.fdd is None else abs(r.fdd)
        d["lve_scaled"] = _scaled(r.lve, lve_s)
        d["fdd_scaled"] = _scaled(r.fdd, fdd_s)
        out.append(d)
    return out


def write_results(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Write the five result files into ``out_dir`` (created); returns their paths."""
    out = Path(out_dir)
    overall_cols = ("group", "split", "units", "lve_scale", "fdd_scale", *_AGG_COLUMNS,
                    "lve_scaled", "fdd_scaled", "fdd_abs_scaled")
    subject_cols = ("subject", "seen", *_AGG_COLUMNS, "lve_scaled", "fdd_scaled", "fdd_abs_scaled")
    files = {
        "results.json": json.dumps(result.to_json(), indent=2, default=str) + "\n",
        "protocol.json": json.dumps(result.protocol, indent=2, default=str) + "\n",
        "overall.csv": _csv(overall_rows(result), overall_cols),
        "subjects.csv": _csv(subject_rows(result), subject_cols),
        "sequences.csv": _csv(sequence_rows(result), _SEQ_COLUMNS),
    }
    paths = []
    with contextlib.ExitStack() as stack:  # all five or none: each is renamed into place only when all are written
        for name, text in files.items():
            tmp = stack.enter_context(atomic_path(out / name))
            tmp.write_text(text, encoding="utf-8")
            paths.append(out / name)
    return paths


# --------------------------------------------------------------------------- rich


def _unit_labels(result: EvalResult) -> tuple[str, str, str]:
    lve_s, fdd_s = result.scales
    u = result.protocol["units"]["data"]
    if lve_s == 1.0 and fdd_s == 1.0:
        return f"{u}²", f"{u}²", u
    return f"×{sci(lve_s)} {u}²", f"×{sci(fdd_s)} {u}²", u


def protocol_panel(result: EvalResult):
    """A rich table describing the protocol of the run."""
    from rich.table import Table

    p = result.protocol
    t = Table(title="evaluation protocol", show_header=False, title_justify="left")
    t.add_column("", style="bold")
    t.add_column("")
    src = p["source"]
    t.add_row("mode", p["mode"] + (f" — {src.get('model')}" if p["mode"] == "model"
                                   else f" — {src.get('predictions')}"))
    d = p["dataset"]
    t.add_row("dataset", f"{d['name']} ({d['kind']}), {d['num_vertices']} vertices, {d['fps']:g} fps, "
                         f"units {d['units']}")
    t.add_row("split", f"{p['split']['name']}: {p['split']['sequences']} sequences, "
                       f"subjects {', '.join(p['split']['subjects'])}")
    counts: dict[str, int] = {}
    for c in p["conditioning"]["per_sequence"].values():
        counts[c] = counts.get(c, 0) + 1
    t.add_row("seen subjects", p["conditioning"]["seen"])
    t.add_row("unseen subjects", p["conditioning"]["unseen"])
    t.add_row("conditions used", ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items())))
    f = p["frames"]
    t.add_row("frames", f"{f['rule']}; dropped {f['dropped_total']} frame(s) "
                        f"(pred {f['dropped_pred']}, GT {f['dropped_gt']}) in {f['sequences_truncated']} sequence(s)")
    for k in ("lip", "upper_face"):
        r = p["regions"][k]
        t.add_row(f"{k} region", f"{r['source']}" + (f" — {r['vertices']} vertices" if r["vertices"] else ""))
    t.add_row("units", p["units"]["scaling"] + f"; MVE in {p['units']['mve']}")
    for n in p.get("notes", []):
        t.add_row("note", f"[yellow]{n}[/yellow]")
    return t


def results_table(result: EvalResult):
    from rich.table import Table

    lve_s, fdd_s = result.scales
    lu, fu, mu = _unit_labels(result)
    t = Table(title=f"results — {result.protocol['split']['name']} (ours)", title_justify="left")
    t.add_column("metric")
    groups = [("all", result.overall)] + [(g, result.overall[g]) for g in ("seen", "unseen") if g in result.overall]
    for g, _ in groups:
        t.add_column(g, justify="right")
    t.add_column("unit")
    spec = [
        ("LVE ↓ (frames pooled)", "lve", lve_s, lu),
        ("LVE, mean of sequences", "lve_sequence_mean", lve_s, lu),
        ("FDD ↓ (signed mean)", "fdd", fdd_s, fu),
        ("FDD, mean |FDD_seq|", "fdd_abs", fdd_s, fu),
        ("MVE ↓", "mve", 1.0, mu),
    ]
    for label, key, scale, unit in spec:
        t.add_row(label, *[_fmt(agg.get(key), scale) for _, agg in groups], unit)
    t.add_row("sequences / frames", *[f"{agg['sequences']} / {agg['frames']}" for _, agg in groups], "")
    return t


def closure_table(result: EvalResult):
    """Bilabial closure of prediction and ground truth (ptalker_cli/eval/closure.py), or None without phones."""
    from rich.table import Table

    c = result.overall.get("closure")
    if not c:
        return None
    unit = result.protocol["dataset"]["units"]
    t = Table(title="lip closure on p b m (inner-lip gap; phones from the dataset)", title_justify="left")
    for col, justify in (("", "left"), ("prediction", "right"), ("ground truth", "right"), ("unit", "left")):
        t.add_column(col, justify=justify)

    def pct(x):
        return "—" if x is None else f"{100 * x:.1f} %"

    p, g = c["pred"], c["gt"]
    t.add_row("bilabials closed ↑", f"{pct(p['closure_rate'])} ({p['closed']}/{p['bilabials']})",
              f"{pct(g['closure_rate'])} ({g['closed']}/{g['bilabials']})", "")
    t.add_row("vowel-opening ratio ↑", _fmt(p["vowel_opening_ratio"]), _fmt(g["vowel_opening_ratio"]),
              "vowel gap / bilabial gap")
    t.add_row("mean gap on vowels", _fmt(p["vowel_gap"]), _fmt(g["vowel_gap"]), unit)
    t.add_row("mean gap at bilabial middles", _fmt(p["bilabial_gap"]), _fmt(g["bilabial_gap"]), unit)
    return t


def subjects_table(result: EvalResult):
    from rich.table import Table

    lve_s, fdd_s = result.scales
    lu, fu, mu = _unit_labels(result)
    t = Table(title="per subject", title_justify="left")
    for col in ("subject", "seen", "seqs", "frames", f"LVE ({lu})", f"FDD ({fu})", f"MVE ({mu})"):
        t.add_column(col, justify="left" if col in ("subject", "seen") else "right")
    for s, agg in result.subjects.items():
        t.add_row(s, "yes" if agg.get("seen") else "no", str(agg["sequences"]), str(agg["frames"]),
                  _fmt(agg.get("lve"), lve_s), _fmt(agg.get("fdd"), fdd_s), _fmt(agg.get("mve")))
    return t


def sequences_table(result: EvalResult):
    from rich.table import Table

    lve_s, fdd_s = result.scales
    t = Table(title="per sequence", title_justify="left")
    for col in ("sequence", "condition", "frames", "dropped", "LVE", "FDD", "MVE"):
        t.add_column(col, justify="left" if col in ("sequence", "condition") else "right")
    for r in result.sequences:
        t.add_row(r.name, r.condition, str(r.frames), str(r.dropped_pred + r.dropped_gt),
                  _fmt(r.lve, lve_s), _fmt(r.fdd, fdd_s), _fmt(r.mve))
    return t


def paper_tables(result: EvalResult):
    """The paper's tables for this dataset/split, clearly labelled, with this run appended."""
    from rich.table import Table

    out = []
    lve_s, fdd_s = result.scales
    for pt in result.paper_tables:
        t = Table(title=f"{pt.title} — [bold]the paper's numbers, not ours[/bold] "
                        f"(LVE ×{sci(pt.lve_scale)}, FDD ×{sci(pt.fdd_scale)})",
                  title_justify="left", caption=pt.note or None)
        for col in ("method", "LVE ↓", "FDD ↓", "LRP ↑"):
            t.add_column(col, justify="left" if col == "method" else "right")
        for r in pt.rows:
            t.add_row(r.method + (" *" if r.note else ""), _fmt(r.lve), _fmt(r.fdd),
                      "–" if r.lrp is None else f"{r.lrp:.2f} %")
        if pt.key != "table4":
            t.add_section()
            t.add_row("[bold cyan]this run (ptalker eval)[/bold cyan]",
                      _fmt(result.overall.get("lve"), pt.lve_scale), _fmt(result.overall.get("fdd"), pt.fdd_scale),
                      "not computed")
        out.append(t)
    return out


def print_report(result: EvalResult, console, *, sequences: bool = False) -> None:
    console.print(protocol_panel(result))
    console.print(results_table(result))
    closure = closure_table(result)
    if closure is not None:
        console.print(closure)
    console.print(subjects_table(result))
    if sequences:
        console.print(sequences_table(result))
    tables = paper_tables(result)
    if tables:
        for t in tables:
            console.print(t)
    else:
        console.print("[dim]The paper reports no numbers for this dataset/split (its tables: BIWI test-a, "
                      "VOCASET test).[/dim]")


__all__ = [
    "RESULT_FILES",
    "overall_rows",
    "paper_tables",
    "print_report",
    "protocol_panel",
    "results_table",
    "sequence_rows",
    "sequences_table",
    "subject_rows",
    "subjects_table",
    "write_results",
]

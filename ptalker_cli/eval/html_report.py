"""The evaluation report as one self-contained HTML page: ``ptalker eval … --html report.html``.

The page (``export/web/report.html``) holds, with no external file or script:

* the protocol of the run (:attr:`EvalResult.protocol`: split, conditioning, frames rule,
  regions, units, metric definitions, notes);
* the metrics table of this run, and each of the paper's tables for the dataset and split
  beside it, marked as the paper's numbers (:mod:`.paper`);
* the per-subject table, and the per-sequence errors as a table sortable by any column
  (click a header) and as an inline SVG plot;
* three players (:mod:`ptalker_cli.export.html_player`): prediction beside ground truth with
  the error heat map, for the best, the median and the worst sequence by LVE (by MVE when the
  split has no lip region), with the sequence's audio.

The players need the predictions: ``predictions`` is the folder the model's predictions were
saved to (``<sequence>.npy``), or for ``--pred`` the folder scored, whose files each row names.
"""

from __future__ import annotations

import contextlib
import html
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import PtalkerError
from ..export.html_player import data_script, player_data, player_scripts, web_file
from ..fileio import atomic_path
from . import metrics as M
from .protocol import EvalResult, SequenceResult
from .report import _fmt, _unit_labels, sci

SLOTS = ("best", "median", "worst")


@contextlib.contextmanager
def prediction_folder(save_predictions: str | Path | None, needed: bool = True) -> Iterator[tuple[Path | None, bool]]:
    """Where :func:`~ptalker_cli.eval.protocol.evaluate` should save predictions: ``save_predictions``
    when given, else (when the report's players are ``needed``) a temporary folder removed afterwards,
    else None. Yields ``(folder, temporary)``."""
    if save_predictions is not None or not needed:
        yield (None if save_predictions is None else Path(save_predictions)), False
        return
    with tempfile.TemporaryDirectory(prefix="ptalker-eval-") as tmp:
        yield Path(tmp), True


def key_metric(result: EvalResult) -> str:
    """``lve`` when every sequence has one, else ``mve``: what best / median / worst are ranked by."""
    return "lve" if result.sequences and all(r.lve is not None for r in result.sequences) else "mve"


def pick_sequences(result: EvalResult) -> list[tuple[str, SequenceResult]]:
    """(slot, row) for the best, median and worst sequence by :func:`key_metric` (fewer when the split
    has fewer than three sequences; a sequence appears once)."""
    key = key_metric(result)
    rows = sorted(result.sequences, key=lambda r: (getattr(r, key), r.name))
    if not rows:
        return []
    picks, seen = [], set()
    for slot, row in zip(SLOTS, (rows[0], rows[(len(rows) - 1) // 2], rows[-1])):
        if row.name not in seen:
            seen.add(row.name)
            picks.append((slot, row))
    return picks


def _prediction(row: SequenceResult, folder: Path, num_vertices: int) -> np.ndarray:
    names = [f"{row.name}.npy"] if row.prediction == "model" else row.prediction.split(", ")
    preds = []
    for n in names:
        path = folder / n
        if not path.is_file():
            raise PtalkerError(f"the report's player for {row.name} needs its prediction {path}, which is missing")
        preds.append(M.as_motion(np.load(path, allow_pickle=False), f"prediction {path}"))
    n = min(len(p) for p in preds)
    pred = preds[0] if len(preds) == 1 else np.mean(np.stack([p[:n] for p in preds]), axis=0)
    if pred.shape[1] != num_vertices:
        raise PtalkerError(f"prediction {folder / names[0]} has {pred.shape[1]} vertices; "
                           f"the dataset has {num_vertices}")
    return pred


def _players(result: EvalResult, dataset_root: Path, predictions: Path) -> tuple[list[tuple[str, SequenceResult,
                                                                                             dict]], str | None]:
    """The players' data, or a note saying why there are none."""
    from ..data.dataset import TalkingHeadDataset
    from ..mesh import Topology

    picks = pick_sequences(result)
    ds = TalkingHeadDataset(dataset_root, [r.name for _, r in picks], load_audio=False, require_audio=False)
    if not (ds.layout.topology_dir / "topology.json").is_file():
        return [], "no players: the dataset has no topology/ (faces)"
    topo = Topology.load_saved(ds.layout.topology_dir)
    fps = float(ds.manifest.fps)
    out = []
    for slot, row in picks:
        p, g, _ = M.truncate(_prediction(row, predictions, topo.num_vertices), ds.vertices(row.name))
        wav = ds.layout.wav_path(row.name)
        data = player_data(topo, [("prediction", np.asarray(p, np.float32), fps),
                                  ("ground truth", np.asarray(g, np.float32), fps)],
                           audio=wav if wav.is_file() else None, error_heatmap=True, title=f"{slot}: {row.name}")
        out.append((slot, row, data))
    return out, None


# --------------------------------------------------------------------------- HTML pieces


def _e(x) -> str:
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[str]], cls: str = "", caption: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _protocol(result: EvalResult) -> str:
    p = result.protocol
    src, d, sp, f = p["source"], p["dataset"], p["split"], p["frames"]
    counts: dict[str, int] = {}
    for c in p["conditioning"]["per_sequence"].values():
        counts[c] = counts.get(c, 0) + 1
    rows = [
        ["mode", _e(p["mode"] + f" — {src.get('model') if p['mode'] == 'model' else src.get('predictions')}")],
        ["dataset", _e(f"{d['name']} ({d['kind']}), {d['num_vertices']} vertices, {d['fps']:g} fps, "
                       f"units {d['units']}")],
        ["split", _e(f"{sp['name']}: {sp['sequences']} sequences, subjects {', '.join(sp['subjects'])}")],
        ["seen subjects", _e(p["conditioning"]["seen"])],
        ["unseen subjects", _e(p["conditioning"]["unseen"])],
        ["conditions used", _e(", ".join(f"{k} ×{v}" for k, v in sorted(counts.items())))],
        ["template", _e(p.get("template", ""))],
        ["frames", _e(f"{f['rule']}; dropped {f['dropped_total']} frame(s) (pred {f['dropped_pred']}, "
                      f"GT {f['dropped_gt']}) in {f['sequences_truncated']} sequence(s)")],
    ]
    for k in ("lip", "upper_face"):
        r = p["regions"][k]
        rows.append([f"{k.replace('_', '-')} region",
                     _e(f"{r['source']}" + (f" — {r['vertices']} vertices" if r.get("vertices") else ""))])
    rows.append(["units", _e(p["units"]["scaling"] + f"; MVE in {p['units']['mve']}")])
    rows += [[_e(k.upper()), _e(v)] for k, v in p.get("metrics", {}).items()]
    rows += [["note", f'<span class="note">{_e(n)}</span>'] for n in p.get("notes", [])]
    rows.append(["ptalker", _e(f"{p.get('ptalker_version', '')}, {p.get('created', '')}")])
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="protocol"><tbody>{body}</tbody></table>'


def _results(result: EvalResult) -> str:
    lve_s, fdd_s = result.scales
    lu, fu, mu = _unit_labels(result)
    groups = [("all", result.overall)] + [(g, result.overall[g]) for g in ("seen", "unseen") if g in result.overall]
    spec = [("LVE ↓ (frames pooled)", "lve", lve_s, lu), ("LVE, mean of sequences", "lve_sequence_mean", lve_s, lu),
            ("FDD ↓ (signed mean)", "fdd", fdd_s, fu), ("FDD, mean |FDD_seq|", "fdd_abs", fdd_s, fu),
            ("MVE ↓", "mve", 1.0, mu)]
    rows = [[_e(label), *[_e(_fmt(agg.get(key), scale)) for _, agg in groups], _e(unit)]
            for label, key, scale, unit in spec]
    rows.append(["sequences / frames", *[_e(f"{agg['sequences']} / {agg['frames']}") for _, agg in groups], ""])
    out = _table(["metric", *[g for g, _ in groups], "unit"], rows, "metrics",
                 f"this run — split {_e(result.protocol['split']['name'])} (ours)")
    for pt in result.paper_tables:
        prow = [[_e(r.method + (" *" if r.note else "")), _e(_fmt(r.lve)), _e(_fmt(r.fdd)),
                 "–" if r.lrp is None else _e(f"{r.lrp:.2f} %")] for r in pt.rows]
        if pt.key != "table4":
            prow.append(['<td class="ours">this run (ptalker eval), not the paper\'s</td>',
                         f'<td class="ours">{_e(_fmt(result.overall.get("lve"), pt.lve_scale))}</td>',
                         f'<td class="ours">{_e(_fmt(result.overall.get("fdd"), pt.fdd_scale))}</td>',
                         '<td class="ours">not computed</td>'])
        cap = (f"{_e(pt.title)} — <strong>the paper's numbers, not ours</strong> (LVE ×{sci(pt.lve_scale)}, "
               f"FDD ×{sci(pt.fdd_scale)})" + (f"<br><small>{_e(pt.note)}</small>" if pt.note else ""))
        out += _table(["method", "LVE ↓", "FDD ↓", "LRP ↑"], prow, "metrics paper", cap)
    if not result.paper_tables:
        out += ('<p class="muted">The paper reports no numbers for this dataset/split (its tables: BIWI test-a, '
                'VOCASET test).</p>')
    return out


def _subjects(result: EvalResult) -> str:
    lve_s, fdd_s = result.scales
    lu, fu, mu = _unit_labels(result)
    rows = [[_e(s), "yes" if agg.get("seen") else "no", str(agg["sequences"]), str(agg["frames"]),
             _e(_fmt(agg.get("lve"), lve_s)), _e(_fmt(agg.get("fdd"), fdd_s)), _e(_fmt(agg.get("mve")))]
            for s, agg in result.subjects.items()]
    return _table(["subject", "seen", "seqs", "frames", f"LVE ({lu})", f"FDD ({fu})", f"MVE ({mu})"], rows, "metrics")


def _num_cell(value, scale: float = 1.0) -> str:
    key = "" if value is None else repr(float(value) / scale)
    shown = str(value) if isinstance(value, int) else _fmt(value, scale)
    return f'<td data-value="{key}">{_e(shown)}</td>'


def _sequences(result: EvalResult) -> str:
    lve_s, fdd_s = result.scales
    lu, fu, mu = _unit_labels(result)
    rows = [[f'<td data-value="{_e(r.name)}">{_e(r.name)}</td>', _e(r.subject), "yes" if r.seen else "no",
             _e(r.condition), _num_cell(r.frames), _num_cell(r.dropped_pred + r.dropped_gt),
             _num_cell(r.lve, lve_s), _num_cell(r.fdd, fdd_s), _num_cell(r.mve)] for r in result.sequences]
    header = ["sequence", "subject", "seen", "condition", "frames", "dropped", f"LVE ({lu})", f"FDD ({fu})",
              f"MVE ({mu})"]
    return _table(header, rows, "metrics sortable")


def _plot(result: EvalResult, picks: dict[str, str]) -> str:
    """Inline SVG: one bar per sequence, sorted by the key metric; best / median / worst coloured."""
    key = key_metric(result)
    scale = result.scales[0] if key == "lve" else 1.0
    rows = sorted(result.sequences, key=lambda r: (getattr(r, key), r.name))
    if not rows:
        return ""
    vals = [getattr(r, key) / scale for r in rows]
    top = max(max(vals), 1e-30)
    W, H, pad, left = 720, 220, 24, 64
    bw = (W - left - pad) / len(rows)
    bars = []
    colour = {"best": "#2a7", "median": "#e90", "worst": "#c33"}
    for i, (r, v) in enumerate(zip(rows, vals)):
        h = (H - 2 * pad) * v / top
        fill = colour.get(picks.get(r.name, ""), "#6b8fc7")
        bars.append(f'<rect x="{left + i * bw + bw * 0.1:.2f}" y="{H - pad - h:.2f}" width="{bw * 0.8:.2f}" '
                    f'height="{h:.2f}" fill="{fill}"><title>{_e(r.name)}: {_e(_fmt(getattr(r, key), scale))}'
                    f'</title></rect>')
    unit = _unit_labels(result)[0 if key == "lve" else 2]
    axis = (f'<line x1="{left}" y1="{H - pad}" x2="{W - pad}" y2="{H - pad}" stroke="#999"/>'
            f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{H - pad}" stroke="#999"/>'
            f'<text x="{left - 6}" y="{pad + 4}" text-anchor="end" font-size="11">{_e(f"{top:.4g}")}</text>'
            f'<text x="{left - 6}" y="{H - pad}" text-anchor="end" font-size="11">0</text>'
            f'<text x="{left}" y="{pad - 8}" font-size="12">{_e(key.upper())} per sequence ({_e(unit)}), '
            f'sorted; green best, orange median, red worst</text>')
    return (f'<svg class="plot" viewBox="0 0 {W} {H}" width="100%" role="img" '
            f'aria-label="{_e(key.upper())} per sequence">{axis}{"".join(bars)}</svg>')


def report_page(result: EvalResult, players: list[tuple[str, SequenceResult, dict]], note: str | None) -> str:
    """The whole page (text)."""
    p = result.protocol
    key = key_metric(result)
    lve_s = result.scales[0]
    scale = lve_s if key == "lve" else 1.0
    title = f"ptalker evaluation — {p['dataset']['name']} {p['split']['name']}"
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(p["mode"])} mode; {p["split"]["sequences"]} sequences; written by ptalker '
        f'{_e(p.get("ptalker_version", ""))} on {_e(p.get("created", ""))}.</p>',
        "<h2>Protocol</h2>", _protocol(result),
        "<h2>Results</h2>", _results(result),
        "<h2>Per subject</h2>", _subjects(result),
        "<h2>Per sequence</h2>",
        '<p class="muted">Click a column header to sort by it (again to reverse).</p>',
        _plot(result, {row.name: slot for slot, row, _ in players}), _sequences(result),
        "<h2>Players: prediction beside ground truth</h2>",
        f'<p class="muted">Best, median and worst sequence by {key.upper()}; the prediction is coloured by its '
        f'per-vertex distance to the ground truth. Drag to orbit, scroll to zoom.</p>',
    ]
    if note:
        sections.append(f'<p class="note">{_e(note)}</p>')
    scripts = []
    for slot, row, data in players:
        sections.append(f'<h3>{_e(slot)}: {_e(row.name)} — {key.upper()} {_e(_fmt(getattr(row, key), scale))}, '
                        f'MVE {_e(_fmt(row.mve))}</h3><div id="player-{slot}" class="ptalker-player"></div>')
        scripts.append(data_script(data, element_id=f"ptalker-data-{slot}"))
    page = web_file("report.html")
    return (page.replace("{{TITLE}}", _e(title))
                .replace("{{STYLE}}", web_file("player.css") + web_file("report.css"))
                .replace("<!--BODY-->", "\n".join(sections))
                .replace("<!--DATA-->", "\n".join(scripts))
                .replace("<!--SCRIPTS-->", player_scripts()))


def write_html_report(result: EvalResult, out: str | Path, *, dataset_root: str | Path,
                      predictions: str | Path | None) -> Path:
    """Write the report to ``out`` (atomically). ``predictions``: the folder holding the predictions
    (see the module docstring); None leaves the players out, with a note."""
    out = Path(out)
    if out.is_dir():
        raise PtalkerError(f"{out} is a folder; give a file name ending in .html for --html")
    if predictions is None:
        players, note = [], "no players: the predictions were not kept"
    else:
        players, note = _players(result, Path(dataset_root), Path(predictions))
    text = report_page(result, players, note)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


__all__ = ["key_metric", "pick_sequences", "prediction_folder", "report_page", "write_html_report"]

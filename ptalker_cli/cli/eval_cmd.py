"""``ptalker eval``: the paper's metrics on a dataset split, for a model or for existing predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import interrupts
from ..errors import PtalkerError
from .common import console, print_json, progress


def eval_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (tiny) or model folder: predict "
                                        "every sequence of the split with it."),
    pred: Optional[Path] = typer.Option(None, "--pred", help="Folder of existing predictions to score instead: "
                                        "<sequence>.npy (or <sequence>_condition_<subject>.npy), (T,V,3) or (T,V*3)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder in the standard layout (dataset.json)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of the manifest: test-a, test-b, test, val, "
                                        "... (default: test-a, else test)."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Folder for results.json, protocol.json and "
                             "the CSV files."),
    unseen_style: str = typer.Option("audio", "--unseen-style", help="Style for subjects the model was not "
                                     "trained on: audio (from the audio alone), average (mean of the predictions "
                                     "conditioned on each training identity), blend (uniform identity blend) or "
                                     "voice (identities "
                                     "blended by whose voice it sounds like; models with a speaker head)."),
    lip_region: Optional[str] = typer.Option(None, "--lip-region", help="Lip region for LVE: a file of vertex ids, "
                                             "a VOCASET list (mouth_map, lve, lip, sorted_unique) or none "
                                             "(default: the dataset's)."),
    upper_face_region: Optional[str] = typer.Option(None, "--upper-face-region", help="Upper-face region for "
                                                    "FDD: a file of vertex ids or none (default: the dataset's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    videos: bool = typer.Option(False, "--videos", help="Also render <out>/videos/<sequence>.mp4: prediction "
                                "beside ground truth with an error heat map (skipped if no renderer)."),
    save_predictions: bool = typer.Option(False, "--save-predictions", help="Keep the model's predictions in "
                                          "<out>/predictions/ (re-score them with --pred)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report: the "
                                        "protocol, the metrics beside the paper's, per-sequence table and plot, and "
                                        "players for the best, median and worst sequence (docs/evaluation.md)."),
    sequences: bool = typer.Option(False, "--sequences", help="Also print the per-sequence table."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json on stdout instead of tables."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display and no tables."),
) -> None:
    """Evaluate LVE, FDD and MVE on a dataset split (the paper's protocol, printed and saved)."""
    from ..eval import evaluate, evaluate_predictions, print_report, write_results
    from ..eval.protocol import UNSEEN_STYLES

    if (model is None) == (pred is None):
        raise PtalkerError("give either --model NAME|DIR (predict and score) or --pred DIR (score existing "
                           "predictions), not both")
    if unseen_style not in UNSEEN_STYLES:
        raise PtalkerError(f"unknown --unseen-style '{unseen_style}'; choose one of: {', '.join(UNSEEN_STYLES)}")
    if pred is not None and (save_predictions or unseen_style != "audio"):
        raise PtalkerError("--save-predictions and --unseen-style apply to --model only")
    if not data.is_dir():
        raise PtalkerError(f"dataset folder {data} does not exist")
    if html is not None and html.is_dir():
        raise PtalkerError(f"--html {html} is a folder; give a file name ending in .html")
    from ..data.layout import DatasetLayout
    from ..eval.protocol import default_split

    layout = DatasetLayout(data)  # check the manifest and the split before loading a model
    layout.resolve_split(split or default_split(layout.manifest()))
    videos_dir = out / "videos" if videos else None
    kept = [f"{out / d}" for d, on in (("predictions", save_predictions), ("videos", videos)) if on]
    interrupts.set_note("no results written" + (f"; what was finished in {' and '.join(kept)} is kept" if kept
                                                else ""))
    from ..eval.html_report import prediction_folder, write_html_report

    kept_dir = out / "predictions" if save_predictions and pred is None else None
    with progress(quiet or as_json) as bar, prediction_folder(kept_dir, html is not None and pred is None) as (
            pred_dir, temporary):
        task = bar.add_task("evaluating", total=None)

        def report(done: int, total: int, name: str) -> None:
            bar.update(task, total=total, completed=done, description=f"evaluating {name}" if name else "done")

        if pred is not None:
            result = evaluate_predictions(pred, data, split, lip_region=lip_region,
                                          upper_face_region=upper_face_region, videos_dir=videos_dir,
                                          progress=report)
        else:
            from ..inference import load_model

            result = evaluate(load_model(model, device), data, split, unseen_style=unseen_style,
                              lip_region=lip_region, upper_face_region=upper_face_region, device=device,
                              save_predictions=pred_dir, videos_dir=videos_dir, progress=report)
            result.protocol["source"]["model"] = model
            if temporary:  # kept only for the report's players
                result.protocol["source"].pop("predictions_saved_to", None)
        paths = write_results(result, out)
        if html is not None:
            write_html_report(result, html, dataset_root=data, predictions=pred if pred is not None else pred_dir)
    if as_json:
        print_json(result.to_json())
        return
    if not quiet:
        print_report(result, console, sequences=sequences)
        console.print(f"[green]✓[/] wrote {', '.join(p.name for p in paths)} to {out}", highlight=False)
        if html is not None:
            console.print(f"[green]✓[/] wrote {html}", highlight=False)

"""``ptalker data synth OUT_DIR``: generate the SynthTalk corpus (docs/synthtalk.md).

A plain function with Typer defaults; the main app registers it on the ``data`` group
(``data_app.command("synth")(synth)``). Errors are ``PtalkerError`` for the app to print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def synth(
    out_dir: Path = typer.Argument(..., help="Output dataset folder (standard layout)."),
    speakers: int = typer.Option(10, "--speakers", "-n", help="Number of synthetic speakers (spk01, spk02, ...)."),
    sentences: int = typer.Option(
        50, "--sentences", "-m", help="Harvard sentences per speaker (M of 720, from --first-sentence on)."),
    first_sentence: int = typer.Option(
        1, "--first-sentence", help="Number of the first Harvard sentence spoken (1-720); e.g. 31 for text that a "
        "--sentences 30 corpus never speaks."),
    fps: float = typer.Option(25.0, "--fps", help="Frame rate of the vertex sequences."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
    unseen: Optional[int] = typer.Option(
        None, "--unseen", help="Speakers held out of training (the last K; default about a fifth, at least 1)."),
    force: bool = typer.Option(False, "--force", help="Replace a corpus already in OUT_DIR."),
    workers: int = typer.Option(2, "--workers", "-j", help="Parallel processes (one speaker each)."),
    tts: str = typer.Option(
        "auto", "--tts", help='Speech engine: espeak (pip install "ptalker[tts]"), festival (apt-get), '
        "or auto (espeak when installed, else festival)."),
    speech_only: bool = typer.Option(
        False, "--speech-only", help="Speech and phone timings only, no faces: data for the phonetic pretraining "
        "of the speech content encoder (--set phone_pretrain_data=OUT_DIR)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Synthesise a speech + 4D face corpus with known speaking styles (eSpeak NG or Festival, ICT-FaceKit head)."""
    from ..data.synth.generator import generate_corpus
    from .common import progress as make_progress

    with make_progress(quiet) as bar:
        task = bar.add_task("synthesising speakers", total=max(1, speakers))

        def report(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total,
                       description=f"synthesising speakers ({name} done)" if name else "synthesising speakers")

        summary = generate_corpus(out_dir, speakers=speakers, sentences=sentences, fps=fps, seed=seed,
                                  progress=report, unseen=unseen, force=force, workers=workers, tts=tts,
                                  first_sentence=first_sentence, speech_only=speech_only)
    out = Console()
    table = Table(title=f"SynthTalk corpus {summary.root}")
    table.add_column("item")
    table.add_column("value")
    table.add_row("speakers (train)", ", ".join(summary.train_subjects))
    table.add_row("speakers (unseen)", ", ".join(summary.unseen_subjects) or "-")
    table.add_row("sequences", str(summary.sequences))
    table.add_row("audio", f"{summary.audio_seconds / 60:.1f} min")
    table.add_row("time", f"{summary.elapsed_s:.1f} s ({summary.seconds_per_sentence:.2f} s per sequence)")
    table.add_row("splits", ", ".join(f"{k} {v}" for k, v in summary.split_sizes.items()))
    out.print(table)
    if speech_only:
        out.print(f"speech only: pretrain a content encoder on it with --set phone_pretrain_data={summary.root}")
    else:
        out.print(f"check it with: ptalker data check {summary.root}")

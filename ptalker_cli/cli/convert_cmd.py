"""``ptalker convert``: import a checkpoint trained with the authors' released PTalker code."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import PtalkerError
from .common import console, print_json


def convert(
    checkpoint: Path = typer.Argument(..., help="The released code's checkpoint (.pth, a state dict).",
                                      show_default=False),
    out_dir: Path = typer.Argument(..., help="Folder to write the ptalker model into.", show_default=False),
    dataset: str = typer.Option(..., "--dataset", help="What it was trained on: biwi or vocaset."),
    data: Optional[Path] = typer.Option(None, "--data", help="The prepared dataset (ptalker data prepare): mesh, "
                                        "regions and subject templates."),
    template: Optional[str] = typer.Option(None, "--template", help="Instead of --data: a mesh file of the "
                                           "dataset's topology (no per-subject templates)."),
    subjects: Optional[str] = typer.Option(None, "--subjects", help="Training identities in one-hot order "
                                           "(the released --train_subjects), comma or space separated; default: "
                                           "the dataset's standard order."),
    content_config: Optional[Path] = typer.Option(None, "--content-config", help="HuBERT config.json (or its "
                                                  "folder); default: the pinned hub config."),
    style_config: Optional[Path] = typer.Option(None, "--style-config", help="Emotion wav2vec2 config.json (or its "
                                                "folder); default: superb/wav2vec2-large-superb-er's, pinned."),
    fill_speech_from_pretrained: bool = typer.Option(False, "--fill-speech-from-pretrained", help="Take speech "
                                                     "weights missing from the checkpoint from the pinned "
                                                     "pretrained encoders (as the released test.py does)."),
    offline: bool = typer.Option(False, "--offline", help="Never use the network (cached hub files only)."),
    force: bool = typer.Option(False, "--force", help="Overwrite a model already in OUT_DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print the conversion report as JSON on stdout."),
) -> None:
    """Convert a checkpoint of the authors' released code into a ptalker model folder."""
    from ..model.folder import resolve_template
    from ..zoo.convert import (
        DATASETS,
        FORWARD_DIFFERENCES,
        convert_released,
        dataset_topology,
        load_released_state,
        write_converted,
    )

    ds = dataset.lower()
    if ds not in DATASETS:
        raise PtalkerError(f"unknown --dataset '{dataset}'; choose one of: {', '.join(DATASETS)}")
    if (data is None) == (template is None):
        raise PtalkerError("give either --data (a prepared dataset) or --template (a mesh of the dataset's topology)")
    names = tuple(s for s in (subjects or "").replace(",", " ").split() if s) or tuple(DATASETS[ds]["subjects"])
    if data is not None:
        topo, templates, template_subjects, _ = dataset_topology(data, names)
    else:
        topo, templates, template_subjects = resolve_template(template), None, ()
    state = load_released_state(checkpoint)
    model, report = convert_released(
        state, ds, topo, subject_templates=templates, template_subjects=template_subjects, subjects=names,
        content_config=content_config, style_config=style_config,
        fill_speech_from_pretrained=fill_speech_from_pretrained, offline=offline or None, source=str(checkpoint))
    write_converted(model, report, out_dir, force=force)
    if as_json:
        data_out = report.to_json()
        data_out["output"] = str(out_dir)
        print_json(data_out)
        return
    console.print(f"converted {checkpoint} → {out_dir} ({len(report.mapped)} tensors mapped, "
                  f"{sum(len(v) for v in report.folded.values())} folded into the identity codes, "
                  f"{len(report.initialized)} set by ptalker)", highlight=False)
    for reason, n in report.grouped_unused().items():
        console.print(f"  unused ({n}): {reason}", highlight=False)
    for key in report.unmatched:
        console.print(f"  [yellow]unmatched[/]: {key}", highlight=False)
    for line in report.filled_from_pretrained:
        console.print(f"  filled from pretrained: {line}", highlight=False)
    for w in report.warnings:
        console.print(f"  [yellow]warning[/]: {w}", highlight=False)
    console.print("not reproduced exactly (see conversion.json and docs/models.md):", highlight=False)
    for line in FORWARD_DIFFERENCES:
        console.print(f"  - {line}", highlight=False)

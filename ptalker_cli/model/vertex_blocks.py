"""The motion as blocks of frames: the output head applied to a few hundred frames at a time.

:func:`~.decoding.decode_motion` returns the whole (B, T, V, 3) motion; for the default ICT head
10 minutes are 15000 × 14062 × 3 float32 = 2.5 GB. The decoder's hidden states (B, T, d) are
what the passes need whole, and they are small (d = 64..256), so :func:`decode_blocks` decodes
them and then yields the vertices block by block, each (B, n, V, 3) made when it is asked for.
A consumer that writes each block (``.npy``, OBJ/PLY frames, MP4) holds one block at a time.

Concatenated, the blocks are :func:`~.decoding.decode_motion`'s result up to float32 round-off
(each block is the same product on fewer rows; one block when T ≤ ``block_frames``, then
bit for bit). Released checkpoints (``inference_form="released"``) decode all vertices in their
own loops, so their blocks are slices of the whole motion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch
from torch import Tensor

from .decoding import StyleSpec, apply_head, decode_hidden
from .released import released_decode_motion

if TYPE_CHECKING:  # pragma: no cover
    from .network import PTalker

#: frames per block: 256 × 14062 × 3 float32 = 43 MB for the default ICT head
BLOCK_FRAMES = 256


@torch.inference_mode()
def iter_vertices(model: "PTalker", hidden: Tensor, template: Tensor,
                  block_frames: int = BLOCK_FRAMES) -> Iterator[Tensor]:
    """The output head on ``hidden`` (B, T, d) in blocks of ``block_frames``: (B, n, V, 3) each."""
    step = max(1, int(block_frames))
    for i in range(0, hidden.shape[1], step):
        yield apply_head(model, hidden[:, i: i + step], template)


def decode_blocks(model: "PTalker", feats: dict[str, Tensor | None], template: Tensor,
                  style: StyleSpec | None = None, use_cache: bool = True, refine_passes: int | None = None,
                  block_frames: int = BLOCK_FRAMES) -> tuple[int, Iterator[Tensor]]:
    """``(T, blocks)``: the decoder passes run now; the vertices come block by block as they are asked for."""
    if model.config.inference_form == "released":
        with torch.inference_mode():
            whole = released_decode_motion(model, feats, template, style or StyleSpec())
        step = max(1, int(block_frames))
        return whole.shape[1], (whole[:, i: i + step] for i in range(0, whole.shape[1], step))
    hidden = decode_hidden(model, feats, style, use_cache, refine_passes)
    return hidden.shape[1], iter_vertices(model, hidden, template, block_frames)

"""Pace ARKit curves out to live senders at the curves' frame rate."""

from __future__ import annotations

import time
from typing import Callable, Protocol, Sequence

from ..arkit.curves import ArkitCurves


class Sender(Protocol):
    def send(self, frame: int, values: dict, fps: float) -> None: ...

    def close(self) -> None: ...


def stream_curves(curves: ArkitCurves, senders: Sequence[Sender], realtime: bool = True,
                  clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """Send every frame to every sender; frame k leaves at start + k/fps when ``realtime``.

    ``realtime=False`` sends as fast as possible (tests, piping into a recorder). Returns the
    number of frames sent.
    """
    start = clock()
    for k in range(curves.num_frames):
        if realtime:
            delay = start + k / curves.fps - clock()
            if delay > 0:
                sleep(delay)
        values = curves.frame(k)
        for s in senders:
            s.send(k, values, curves.fps)
    return curves.num_frames

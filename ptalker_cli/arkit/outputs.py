"""ARKit outputs of one animate run: a curve file, a driven rig, live senders.

:class:`ArkitOutputs` is what ``ptalker animate`` hands a motion to when the user asked for
ARKit curves (``-o out.csv``, ``--format arkit-json``), a rig (``--rig``) or a live stream
(``--livelink``, ``--osc``): it solves the curves once and sends them everywhere asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..blendshapes import DEFAULT_REGULARIZATION, DEFAULT_SMOOTHNESS
from ..errors import PtalkerError
from ..mesh import Topology
from ..motion import Motion


@dataclass
class ArkitOutputs:
    rig: Path | None = None
    blendshapes: Path | None = None
    regularization: float = DEFAULT_REGULARIZATION
    smoothness: float = DEFAULT_SMOOTHNESS
    livelink: str | None = None
    osc: str | None = None
    realtime: bool = True

    @classmethod
    def from_options(cls, rig, blendshapes, regularization, smoothness, livelink, osc, realtime) -> "ArkitOutputs":
        if regularization < 0 or smoothness < 0:
            raise PtalkerError("--bs-regularization and --bs-smoothness must be >= 0")
        if rig is not None and not Path(rig).exists():
            raise PtalkerError(f"rig {rig} does not exist")
        if blendshapes is not None and not Path(blendshapes).exists():
            raise PtalkerError(f"blendshape basis {blendshapes} does not exist")
        out = cls(rig, blendshapes, regularization, smoothness, livelink, osc, realtime)
        out.senders()  # check HOST:PORT now, before any inference
        return out

    def check_output(self, output: Path | None, fmt: str | None, many: bool) -> None:
        """One-line errors before any inference: --rig without -o, a bare .json curve output."""
        if self.rig is not None and output is None:
            raise PtalkerError(f"--rig needs -o OUT{Path(self.rig).suffix.lower()} (the rig with its animation)")
        if output is not None and not many:
            self.writes_curves(output, fmt)

    @property
    def live(self) -> bool:
        return bool(self.livelink or self.osc)

    def writes_curves(self, out: Path | None, fmt: str | None) -> bool:
        """Whether ``out`` is an ARKit output (a rig, a .csv, --format arkit-json) rather than a motion file."""
        from ..export.curves import curve_format

        return out is not None and (self.rig is not None or curve_format(out, fmt) is not None)

    def rig_output(self, out: Path, audio: Path, many: bool) -> Path:
        """With several inputs and --rig, -o is a folder: each input gets FOLDER/STEM.glb (or .gltf)."""
        if self.rig is not None and many:
            return out.parent / f"{Path(audio).stem}{Path(self.rig).suffix.lower()}"
        return out

    def senders(self) -> list:
        from ..live import LiveLinkSender, OscSender

        out = []
        if self.livelink:
            out.append(LiveLinkSender(self.livelink))
        if self.osc:
            out.append(OscSender(self.osc))
        return out

    def curves(self, motion: Motion, topology: Topology):
        """The motion's ARKit curves (solved once per motion)."""
        from .solve import solve_arkit

        cached = getattr(self, "_cache", None)
        if cached is None or cached[0] is not motion:
            self._cache = (motion, solve_arkit(motion, topology, self.blendshapes, self.regularization,
                                               self.smoothness))
        return self._cache[1]

    def write(self, motion: Motion, topology: Topology, out: Path, fmt: str | None,
              force: bool = False) -> tuple[list[Path], str | None]:
        """Write the curves to ``out`` (a driven rig or a curve file): (files written, the rig's summary or None)."""
        from ..export.curves import curve_format, write_curves
        from ..export.rig_gltf import animate_rig

        curves = self.curves(motion, topology)
        if self.rig is not None:
            path, note = animate_rig(self.rig, curves, out, force)
            return [path], note
        return write_curves(curves, out, curve_format(out, fmt), force), None

    def stream(self, motion: Motion, topology: Topology) -> int:
        """Send the curves to --livelink/--osc (paced at the motion's fps unless realtime is off)."""
        from ..live import stream_curves

        senders = self.senders()
        try:
            return stream_curves(self.curves(motion, topology), senders, realtime=self.realtime)
        finally:
            for s in senders:
                s.close()

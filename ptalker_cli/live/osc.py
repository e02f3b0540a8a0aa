"""ARKit curves over OSC in the VMC protocol, as VTuber apps receive them.

Per frame, one OSC bundle (immediate time tag) to ``host:port`` holding

* ``/VMC/Ext/Blend/Val`` ``s:NAME f:VALUE`` for each of the 52 ARKit shapes, NAME in the
  capitalized "perfect sync" spelling (``EyeBlinkLeft``, ``JawOpen``) that VSeeFace,
  VMagicMirror, Warudo and other VMC receivers map onto a model's blendshape clips;
* then ``/VMC/Ext/Blend/Apply`` (no arguments): apply the values just sent.

VMC receivers listen on UDP port 39539 by default. Uses python-osc.
"""

from __future__ import annotations

import socket
from typing import Mapping

from ..arkit.names import ARKIT_NAMES, arkit_name, pascal
from ..errors import PtalkerError
from .target import parse_host_port

DEFAULT_PORT = 39539
BLEND_VAL = "/VMC/Ext/Blend/Val"
BLEND_APPLY = "/VMC/Ext/Blend/Apply"


def _osc():
    try:
        from pythonosc import osc_bundle_builder, osc_message_builder
    except ImportError:
        raise PtalkerError("--osc needs python-osc: pip install python-osc") from None
    return osc_bundle_builder, osc_message_builder


def build_bundle(values: Mapping[str, float]) -> bytes:
    """The OSC bundle (bytes) for one frame of {ARKit name in any spelling: weight}."""
    bundle_builder, message_builder = _osc()
    by_name = {n: 0.0 for n in ARKIT_NAMES}
    for name, v in values.items():
        a = arkit_name(name)
        if a is not None:
            by_name[a] = float(v)
    bundle = bundle_builder.OscBundleBuilder(bundle_builder.IMMEDIATELY)
    for name, v in by_name.items():
        msg = message_builder.OscMessageBuilder(address=BLEND_VAL)
        msg.add_arg(pascal(name), "s")
        msg.add_arg(v, "f")
        bundle.add_content(msg.build())
    bundle.add_content(message_builder.OscMessageBuilder(address=BLEND_APPLY).build())
    return bundle.build().dgram


class OscSender:
    """Sends frames to ``host:port`` as VMC-protocol OSC bundles over UDP."""

    def __init__(self, target: str):
        self.host, self.port = parse_host_port(target, "--osc", DEFAULT_PORT)
        _osc()  # fail early, with the install hint, when python-osc is missing
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, frame: int, values: Mapping[str, float], fps: float) -> None:
        self.sock.sendto(build_bundle(values), (self.host, self.port))

    def close(self) -> None:
        self.sock.close()

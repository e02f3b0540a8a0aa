"""Live Link Face UDP packets: what the iPhone app sends to Unreal's Live Link (and Blender add-ons).

One datagram per frame, all integers and floats big-endian:

| bytes | field |
|---|---|
| 1 | packet version, ``6`` (uint8) |
| 4 + n | device id: length n (int32) then n bytes of UTF-8 (no terminator) |
| 4 + m | subject name: length m (int32) then m bytes of UTF-8 |
| 4 | frame number (int32) |
| 4 | sub-frame (float32), 0 here |
| 4 | frame rate numerator (int32), e.g. 25 |
| 4 | frame rate denominator (int32), e.g. 1 |
| 1 | value count, ``61`` (uint8) |
| 61 × 4 | float32: the 52 shapes in Apple's order (:data:`~ptalker_cli.arkit.ARKIT_NAMES`), then head  |
|        | yaw, pitch, roll, left-eye yaw, pitch, roll, right-eye yaw, pitch, roll (0 here)               |

The values are placed by name into that order, whatever order the curves hold them in.
Unreal's Live Link Face source listens on UDP port 11111 by default; the subject appears
under the subject name.
"""

from __future__ import annotations

import socket
import struct
import uuid
from fractions import Fraction
from typing import Mapping

from ..arkit.names import ARKIT_NAMES, LIVELINK_EXTRAS, arkit_name
from .target import parse_host_port

PACKET_VERSION = 6
DEFAULT_PORT = 11111
VALUE_COUNT = len(ARKIT_NAMES) + len(LIVELINK_EXTRAS)  # 61


def frame_rate(fps: float) -> tuple[int, int]:
    """(numerator, denominator) of ``fps`` (25 → 25/1, 29.97 → 2997/100)."""
    f = Fraction(fps).limit_denominator(1001)
    return f.numerator, f.denominator


def encode_packet(values: Mapping[str, float], frame: int, fps: float, subject: str = "ptalker",
                  device_id: str = "ptalker") -> bytes:
    """One Live Link Face packet for ``values`` ({ARKit name in any spelling: weight})."""
    slots = [0.0] * VALUE_COUNT
    for name, v in values.items():
        a = arkit_name(name)
        if a is not None:
            slots[ARKIT_NAMES.index(a)] = float(v)
    dev, subj = device_id.encode("utf-8"), subject.encode("utf-8")
    num, den = frame_rate(fps)
    return b"".join([
        struct.pack(">B", PACKET_VERSION),
        struct.pack(">i", len(dev)), dev,
        struct.pack(">i", len(subj)), subj,
        struct.pack(">ifii", int(frame), 0.0, num, den),
        struct.pack(">B", VALUE_COUNT),
        struct.pack(f">{VALUE_COUNT}f", *slots),
    ])


class LiveLinkSender:
    """Sends frames to ``host:port`` as Live Link Face packets over UDP."""

    def __init__(self, target: str, subject: str = "ptalker", device_id: str | None = None):
        self.host, self.port = parse_host_port(target, "--livelink", DEFAULT_PORT)
        self.subject = subject
        self.device_id = device_id or str(uuid.uuid4())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, frame: int, values: Mapping[str, float], fps: float) -> None:
        self.sock.sendto(encode_packet(values, frame, fps, self.subject, self.device_id), (self.host, self.port))

    def close(self) -> None:
        self.sock.close()

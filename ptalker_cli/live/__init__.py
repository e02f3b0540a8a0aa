"""Send ARKit curves live: Live Link Face UDP packets (Unreal, Blender) and VMC OSC (VTuber apps)."""

from .livelink import LiveLinkSender, encode_packet
from .osc import OscSender, build_bundle
from .stream import stream_curves

__all__ = ["LiveLinkSender", "OscSender", "build_bundle", "encode_packet", "stream_curves"]

"""Exporters (npy, OBJ/PLY sequences, GLB) and the MP4 renderer."""

from .video import render_still, render_video
from .writers import FORMATS, detect_format, glb_options, write_motion

__all__ = ["FORMATS", "detect_format", "glb_options", "render_still", "render_video", "write_motion"]

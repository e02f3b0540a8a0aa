"""``ptalker serve``: a WebSocket server streaming motion for live speech (docs/streaming.md)."""

from __future__ import annotations

import sys

import typer

from .. import interrupts
from ..config import DEFAULT_MODEL


def serve(
    port: int = typer.Option(8765, "--port", "-p", help="TCP port (0: any free port, printed)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model: a registry name, a model folder, "
                              "hf://org/repo[@rev], or tiny."),
    lookahead: float = typer.Option(0.2, "--lookahead", help="Seconds of audio past a frame the model waits for."),
    left: float = typer.Option(1.0, "--left-context", help="Seconds of past audio each speech window sees."),
    hop: int = typer.Option(3, "--hop", help="Motion frames decoded per speech window."),
    kv_window: float = typer.Option(20.0, "--kv-window", help="Seconds of past frames the decoder attends to."),
    workers: int = typer.Option(2, "--workers", help="Threads running the model (shared by all clients)."),
    threads: int = typer.Option(1, "--threads", help="PyTorch threads per worker (1: the per-frame steps are tiny)."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda."),
) -> None:
    """Serve motion frames over WebSocket: ws://HOST:PORT/?subject=…&style=…&output=vertices|arkit."""
    from functools import partial

    import torch

    from ..inference import Animator, load_model
    from ..live.server import run_server
    from ..model.streaming import StreamSettings

    torch.set_num_threads(max(1, threads))  # the workers run side by side; each step is too small to split
    settings = StreamSettings(lookahead_s=lookahead, left_s=left, hop_frames=hop, kv_window_s=kv_window)
    animator = Animator(load_model(model, device))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def ready(bound: int) -> None:
        print(f"ptalker serve: model {animator.config.name}, listening on ws://{host}:{bound}/", flush=True)

    interrupts.set_note("server stopped")  # SIGINT / SIGTERM: one line, exit 130 / 143 (docs/streaming.md)
    run_server(partial(animator.stream, settings=settings), host, port, animator.config.fps, workers, log, ready)

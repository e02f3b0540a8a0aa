"""``ptalker serve``: motion frames for live speech over WebSocket (the contract is in docs/streaming.md).

A client connects to ``ws://HOST:PORT/?subject=…&style=…&output=vertices|arkit``, sends binary
messages of little-endian float32 mono 16-kHz PCM (any length), then the text ``{"type": "end"}``.
The server answers ``{"type": "start", …}`` (frame rate, vertex count, look-ahead), then every
frame as soon as it is decoded — ``output=vertices``: one binary message, a little-endian uint32
frame index then V×3 little-endian float32 vertices; ``output=arkit``: a JSON text message
``{"type": "arkit", "frame": i, "curves": {name: weight, …}}`` with the 52 ARKit names — and,
after the end, ``{"type": "done", "frames": T}``. A malformed message or a bad query gets
``{"type": "error", "message": …}`` and a close.

This module does not know the network: it is given ``open_stream(subject, style)``, which returns a
session with ``push(samples)`` / ``finish()`` returning (n, V, 3) frames and ``topology`` /
``subject`` / ``style_label`` / ``settings`` (:meth:`ptalker_cli.inference.Animator.stream`).
The model's work runs in a thread pool; each connection has its own bounded queue of outgoing
messages and its own sender, so a client that does not read (or has vanished) holds up only
itself: its queue fills, its receive loop waits, the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..arkit.curves import ArkitMapping
from ..arkit.names import ARKIT_NAMES
from ..arkit.solve import basis_for
from ..blendshapes import DEFAULT_REGULARIZATION, BlendshapeSolver
from ..errors import PtalkerError
from ..interrupts import SIGNALS, interrupted

OUTPUTS = ("vertices", "arkit")
QUERY_KEYS = ("subject", "style", "output")
#: outgoing messages a connection may have waiting before its audio input is paused
QUEUE_MESSAGES = 64
#: largest incoming message (bytes): 16 s of audio
MAX_MESSAGE = 1 << 20


class Session(Protocol):
    frames_out: int

    def push(self, samples: np.ndarray) -> np.ndarray: ...

    def finish(self) -> np.ndarray: ...


OpenStream = Callable[[str | None, str | None], Session]


class _ArkitEncoder:
    """Frames → ARKit curves, solved frame by frame (no temporal smoothing, so a frame never waits)."""

    def __init__(self, topology):
        basis = basis_for(topology)
        self.mapping = ArkitMapping.for_names(basis.names)
        if not self.mapping.driven:
            raise PtalkerError(f"the blendshape basis of topology '{topology.name}' has no ARKit names")
        self.solver = BlendshapeSolver(basis, DEFAULT_REGULARIZATION, 0.0)
        self.template = topology.vertices

    def messages(self, first: int, frames: np.ndarray) -> list[str]:
        weights = self.mapping.to_arkit(self.solver.solve(frames, self.template).weights)
        return [json.dumps({"type": "arkit", "frame": first + i,
                            "curves": {n: round(float(w), 6) for n, w in zip(ARKIT_NAMES, row)}})
                for i, row in enumerate(weights)]


def vertex_message(index: int, frame: np.ndarray) -> bytes:
    """One ``output=vertices`` message: uint32 LE frame index + V×3 float32 LE."""
    return struct.pack("<I", index) + np.ascontiguousarray(frame, dtype="<f4").tobytes()


class _Connection:
    """One client's stream: the session, its encoder, counters."""

    def __init__(self, session, output: str):
        self.session = session
        self.arkit = _ArkitEncoder(session.topology) if output == "arkit" else None
        self.samples = 0

    def step(self, samples: np.ndarray | None) -> list[bytes | str]:
        """Run in the pool: push audio (None = the end) and encode the frames that came out."""
        first = self.session.frames_out
        if samples is None:
            frames = self.session.finish()
        else:
            self.samples += samples.size
            frames = self.session.push(samples)
        if self.arkit is not None:
            return self.arkit.messages(first, frames) if len(frames) else []
        return [vertex_message(first + i, f) for i, f in enumerate(frames)]


class _ClientError(Exception):
    """A malformed message or query: told to the client, then the connection closes with ``code``
    (1008 policy violation: the query; 1003 unsupported data: a message)."""

    def __init__(self, message: str, code: int = 1003):
        super().__init__(message)
        self.code = code


class StreamServer:
    """The WebSocket handler and the pool the model work runs in."""

    def __init__(self, open_stream: OpenStream, fps: float, workers: int = 2,
                 log: Callable[[str], None] | None = None, queue_messages: int = QUEUE_MESSAGES,
                 socket_send_buffer: int | None = None):
        self.open_stream = open_stream
        self.fps = float(fps)
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ptalker-serve")
        self.log = log or logging.getLogger("ptalker.serve").info
        self.queue_messages = queue_messages
        #: SO_SNDBUF of each client's socket (None: the system's): how much the kernel holds for a slow client
        self.socket_send_buffer = socket_send_buffer
        self.connections = 0
        #: each open connection's queue of outgoing messages (by peer address): what a slow client has not taken
        self.pending: dict[str, asyncio.Queue] = {}
        #: set when the server shuts down (a signal): connections it closes are logged as such
        self.stopping = False

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _query(self, path: str) -> dict[str, str]:
        query = parse_qs(urlsplit(path).query, keep_blank_values=True)
        unknown = sorted(set(query) - set(QUERY_KEYS))
        if unknown:
            raise _ClientError(f"unknown query parameter '{unknown[0]}'; use {', '.join(QUERY_KEYS)}", 1008)
        out = {k: v[-1] for k, v in query.items()}
        output = out.setdefault("output", "vertices")
        if output not in OUTPUTS:
            raise _ClientError(f"unknown output '{output}'; use {' or '.join(OUTPUTS)}", 1008)
        return out

    async def handler(self, ws) -> None:
        self.connections += 1
        loop = asyncio.get_running_loop()
        began, peer = time.monotonic(), _peer(ws)
        status, conn, output = "ended", None, "?"
        queue: asyncio.Queue = asyncio.Queue(self.queue_messages)
        sender = asyncio.create_task(_send_all(ws, queue))
        self.pending[peer] = queue
        if self.socket_send_buffer is not None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)
        try:
            query = self._query(ws.request.path)
            output = query["output"]
            conn = await self._run(loop, lambda: _Connection(
                self.open_stream(query.get("subject") or None, query.get("style") or None), output), 1008)
            await queue.put(json.dumps(self._start_message(conn, output)))
            status = await self._receive(ws, loop, conn, queue)
            await queue.put(None)
            await sender
        except _ClientError as exc:
            status = f"error: {exc}"
            sender.cancel()
            with contextlib.suppress(Exception):
                await ws.send(json.dumps({"type": "error", "message": str(exc)}))
                await ws.close(exc.code, "error")
        except _closed_errors() as exc:
            status = f"closed by client ({type(exc).__name__})"
            sender.cancel()
        except Exception as exc:  # a bug: this connection ends with 1011, the server goes on
            status = f"failed: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await ws.close(1011, "internal error")
        finally:
            sender.cancel()
            self.pending.pop(peer, None)
            frames = conn.session.frames_out if conn else 0
            seconds = conn.samples / 16000 if conn else 0.0
            self.log(f"{peer} output={output} subject={getattr(conn and conn.session, 'subject', '-') or '-'} "
                     f"audio={seconds:.2f}s frames={frames} {status} ({time.monotonic() - began:.2f}s)")

    def _start_message(self, conn: _Connection, output: str) -> dict[str, Any]:
        s = conn.session
        settings = getattr(s, "settings", None)
        return {"type": "start", "output": output, "fps": self.fps, "vertices": int(s.topology.num_vertices),
                "subject": getattr(s, "subject", ""), "style": getattr(s, "style_label", ""),
                "lookahead_s": getattr(settings, "lookahead_s", None), "sample_rate": 16000}

    async def _run(self, loop, fn, code: int = 1003):
        try:
            return await loop.run_in_executor(self.pool, fn)
        except PtalkerError as exc:
            raise _ClientError(str(exc), code) from None

    async def _receive(self, ws, loop, conn: _Connection, queue: asyncio.Queue) -> str:
        async for msg in ws:
            if isinstance(msg, (bytes, bytearray, memoryview)):
                data = bytes(msg)
                if len(data) % 4:
                    raise _ClientError(f"binary messages are little-endian float32 samples; {len(data)} bytes "
                                       "is not a multiple of 4")
                samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
                for m in await self._run(loop, lambda s=samples: conn.step(s)):
                    await queue.put(m)
                continue
            try:
                obj = json.loads(msg)
            except ValueError:
                raise _ClientError("text messages are JSON; send {\"type\": \"end\"} after the audio") from None
            if not isinstance(obj, dict) or obj.get("type") != "end":
                raise _ClientError("the only text message is {\"type\": \"end\"}")
            for m in await self._run(loop, lambda: conn.step(None)):
                await queue.put(m)
            await queue.put(json.dumps({"type": "done", "frames": conn.session.frames_out}))
            return "done"
        return "closed as the server stopped" if self.stopping else "closed by client before the end"


def _closed_errors():
    from websockets.exceptions import ConnectionClosed

    return (ConnectionClosed,)


async def _send_all(ws, queue: asyncio.Queue) -> None:
    """The connection's sender: messages in order until None, then a normal close."""
    while True:
        item = await queue.get()
        if item is None:
            await ws.close()
            return
        await ws.send(item)


def _peer(ws) -> str:
    addr = getattr(ws, "remote_address", None)
    return f"{addr[0]}:{addr[1]}" if addr else "?"


async def serve_async(server: StreamServer, host: str, port: int, ready: Callable[[int], None] | None = None,
                      stop: asyncio.Event | None = None, ping_interval: float | None = 20.0) -> None:
    """Serve until ``stop`` is set (forever without one); ``ready(port)`` is called once listening.

    ``ping_interval``: websockets' keepalive; a client that answers no ping within as long is closed
    (None: never, so a stalled client stays connected).
    """
    from websockets.asyncio.server import serve

    if not 0 <= int(port) <= 65535:
        raise PtalkerError(f"port must be between 0 and 65535 (0: any free port); got {port}")
    # no permessage-deflate: float32 vertices barely compress, and zlib on 170 kB per frame costs
    # more CPU than the model's frame
    try:
        async with serve(server.handler, host, port, max_size=MAX_MESSAGE, ping_interval=ping_interval,
                         ping_timeout=ping_interval, compression=None) as ws_server:
            bound = ws_server.sockets[0].getsockname()[1]
            if ready is not None:
                ready(bound)
            await (stop.wait() if stop is not None else asyncio.Future())
    except OSError as exc:  # the address is taken, not this machine's, or the host name does not resolve
        raise PtalkerError(f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}; "
                           "choose another --port or --host") from None


def run_server(open_stream: OpenStream, host: str, port: int, fps: float, workers: int = 2,
               log: Callable[[str], None] | None = None, ready: Callable[[int], None] | None = None) -> None:
    """Serve forever; SIGINT / SIGTERM stop it gracefully, then raise :class:`..interrupts.Interrupted`."""
    server = StreamServer(open_stream, fps, workers, log)
    try:
        asyncio.run(_serve_until_signal(server, host, port, ready))
    finally:
        server.close()


#: seconds the server waits for its connections to close after SIGINT / SIGTERM before it cancels them
SHUTDOWN_S = 15.0


async def _serve_until_signal(server: StreamServer, host: str, port: int,
                              ready: Callable[[int], None] | None) -> None:
    """Serve until SIGINT or SIGTERM, taken by the event loop (main thread): the server closes every
    connection (1001) and its tasks end before the interruption is raised, rather than a
    KeyboardInterrupt cutting a send in half. A repeated signal while it stops is ignored."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    got: list[int] = []
    installed: list[tuple[int, Any]] = []

    def on_signal(signum: int) -> None:
        got.append(signum)
        server.stopping = True
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            previous = signal.getsignal(s)
            if previous is signal.SIG_IGN:  # nohup, background jobs: stays ignored
                continue
            try:
                loop.add_signal_handler(s, on_signal, int(s))
            except (NotImplementedError, RuntimeError, ValueError):  # no loop signals (Windows): Python's handler
                continue
            installed.append((s, previous))
    serving = asyncio.create_task(serve_async(server, host, port, ready, stop))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # it could not start (the port is taken, ...): that error
        else:  # a signal: the graceful close gets a bounded time, then the rest is cancelled
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, SHUTDOWN_S)
    finally:
        stopped.cancel()
        for s, previous in installed:
            loop.remove_signal_handler(s)
            signal.signal(s, previous)
    if got:
        raise interrupted(got[0])


class ServerThread:
    """A server on a background thread (tests, benchmarks): ``with ServerThread(...) as port: ...``."""

    def __init__(self, open_stream: OpenStream, fps: float, host: str = "127.0.0.1", port: int = 0,
                 workers: int = 2, log: Callable[[str], None] | None = None, ping_interval: float | None = 20.0,
                 **kwargs):
        self.server = StreamServer(open_stream, fps, workers, log, **kwargs)
        self.ping_interval = ping_interval
        self.host, self.port = host, port
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve_async(self.server, self.host, self.port, self._bound, self._stop, self.ping_interval)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._ready.set()

    def _bound(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def __enter__(self) -> int:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self.port

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.server.close()

"""``ptalker serve`` (ptalker_cli/live/server.py): real sockets on 127.0.0.1, real audio, real websockets clients."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from system import stderr_lines
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from ptalker_cli.audio import load_audio
from ptalker_cli.inference import Animator, tiny_model
from ptalker_cli.live.server import ServerThread
from ptalker_cli.model.streaming import StreamSettings

ROOT = Path(__file__).resolve().parent.parent
ARCTIC = sorted((ROOT / "tests" / "data" / "arctic").glob("*.wav"))
SETTINGS = StreamSettings(lookahead_s=0.2, left_s=0.5, hop_frames=3, kv_window_s=2.0, style_s=1.0)


@pytest.fixture(scope="module")
def animator():
    return Animator(tiny_model())


@pytest.fixture(scope="module")
def server(animator):
    lines: list[str] = []
    with ServerThread(partial(animator.stream, settings=SETTINGS), animator.config.fps, log=lines.append) as port:
        yield f"ws://127.0.0.1:{port}/", lines


@pytest.fixture(scope="module")
def speech():
    return [load_audio(p, 16000)[: int(1.5 * 16000)] for p in ARCTIC[:2]]


def _library(animator, wave, subject=None):
    s = animator.stream(subject=subject, settings=SETTINGS)
    return np.concatenate([s.push(wave), s.finish()])


async def _read_all(ws) -> list:
    """Every message until the server closes (an error close ends the iteration with an exception)."""
    got = []
    try:
        async for msg in ws:
            got.append(msg)
    except ConnectionClosedError:
        pass
    return got


async def _client(url, wave, chunk=1000, query="", read=True):
    """Send the audio in chunks, then end; return (start message, frames by index, other messages)."""
    frames, texts = {}, []
    async with connect(url + query, max_size=None) as ws:
        start = json.loads(await ws.recv())
        for i in range(0, len(wave), chunk):
            await ws.send(wave[i: i + chunk].astype("<f4").tobytes())
        await ws.send(json.dumps({"type": "end"}))
        async for msg in ws:
            if isinstance(msg, bytes):
                (index,) = struct.unpack_from("<I", msg)
                frames[index] = np.frombuffer(msg, "<f4", offset=4).reshape(-1, 3)
            else:
                texts.append(json.loads(msg))
    return start, frames, texts


def test_vertices_equal_the_library_streamer(server, animator, speech):
    url, lines = server
    start, frames, texts = asyncio.run(_client(url, speech[0], chunk=777))
    want = _library(animator, speech[0])
    assert start["type"] == "start" and start["vertices"] == animator.config.num_vertices and start["fps"] == 25
    assert texts == [{"type": "done", "frames": len(want)}]
    assert sorted(frames) == list(range(len(want)))
    np.testing.assert_array_equal(np.stack([frames[i] for i in range(len(want))]), want)
    assert any("frames=" + str(len(want)) in line and "done" in line for line in lines)


def test_two_clients_at_once_each_get_their_own_stream(server, animator, speech):
    url, _ = server
    subjects = animator.config.train_subjects[:2]

    async def both():
        return await asyncio.gather(*(_client(url, w, 500, f"?subject={s}") for w, s in zip(speech, subjects)))

    results = asyncio.run(both())
    for (start, frames, texts), wave, subj in zip(results, speech, subjects):
        want = _library(animator, wave, subj)
        assert start["subject"] == subj and texts[-1] == {"type": "done", "frames": len(want)}
        np.testing.assert_array_equal(np.stack([frames[i] for i in range(len(want))]), want)


def test_arkit_output_sends_named_curves(animator, speech):
    """output=arkit on a model whose mesh has an ARKit basis (the tiny mesh has none: a clear error)."""
    from ptalker_cli.arkit.names import ARKIT_NAMES
    from ptalker_cli.inference import load_model

    async def run(url):
        return await _client(url, speech[0], 1600, "?output=arkit")

    async def refused(url):
        async with connect(url + "?output=arkit") as ws:
            return [json.loads(m) for m in await _read_all(ws)], ws.close_code

    lines: list[str] = []
    with ServerThread(partial(animator.stream, settings=SETTINGS), 25.0, log=lines.append) as port:
        texts, code = asyncio.run(refused(f"ws://127.0.0.1:{port}/"))
    assert code == 1008 and len(texts) == 1 and "blendshape basis" in texts[0]["message"]
    ict = Animator(load_model())
    with ServerThread(partial(ict.stream, settings=SETTINGS), 25.0, log=lines.append) as port:
        start, frames, texts = asyncio.run(run(f"ws://127.0.0.1:{port}/"))
    assert start["output"] == "arkit" and not frames
    curves = [t for t in texts if t["type"] == "arkit"]
    assert texts[-1] == {"type": "done", "frames": len(curves)} and len(curves) == ict.model.num_motion_frames(
        len(speech[0]))
    assert [c["frame"] for c in curves] == list(range(len(curves)))
    assert all(set(c["curves"]) == set(ARKIT_NAMES) for c in curves)
    jaw = np.array([c["curves"]["jawOpen"] for c in curves])
    assert (jaw >= 0).all() and (jaw <= 1).all() and jaw.max() > 0.05  # the mouth moves while speaking


def test_a_client_that_stops_reading_does_not_stall_another(animator, speech):
    """A client that sends its audio but never reads: its frames back up to the server (its queue fills and
    stays full), and another client meanwhile gets its whole stream."""
    lines: list[str] = []
    long = np.tile(speech[0], 2)  # 3 s: 75 frames, 172 kB, far more than the small socket buffers hold
    # no keepalive: the server must not get out of a stall by dropping the stalled client after a missed ping
    stream = ServerThread(partial(animator.stream, settings=SETTINGS), 25.0, log=lines.append, queue_messages=4,
                          socket_send_buffer=4096, ping_interval=None)
    with stream as port:
        url = f"ws://127.0.0.1:{port}/"

        async def scenario():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            # no keepalive from this side either: a missed pong would make the stalled client give up
            stalled = await connect(url, sock=sock, max_size=None, max_queue=1, ping_interval=None)
            for i in range(0, len(long), 4000):
                await stalled.send(long[i: i + 4000].astype("<f4").tobytes())
            await stalled.send(json.dumps({"type": "end"}))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # wait until its queue on the server is full
                queues = list(stream.server.pending.values())
                if queues and queues[0].full():
                    break
                await asyncio.sleep(0.05)
            assert queues and queues[0].full(), "the stalled client's frames never backed up"
            result = await asyncio.wait_for(_client(url, speech[1], 800), 60)
            still_full = [queues[0].full(), queues[0] in stream.server.pending.values()]
            await stalled.close()
            return result, still_full

        (start, frames, texts), still_full = asyncio.run(scenario())
    want = _library(animator, speech[1])
    assert texts == [{"type": "done", "frames": len(want)}]
    np.testing.assert_array_equal(np.stack([frames[i] for i in range(len(want))]), want)
    assert still_full == [True, True]  # the other client finished while the stalled one was still backed up


@pytest.mark.parametrize("query, message, match", [
    ("", "not json", "JSON"),
    ("", b"\x00\x00\x80", "multiple of 4"),
    ("", json.dumps({"type": "start"}), "only text message"),
    ("?subject=nobody", None, "unknown subject 'nobody'"),
    ("?output=bvh", None, "unknown output 'bvh'"),
    ("?colour=red", None, "unknown query parameter 'colour'"),
    ("", np.array([0.0, np.nan], "<f4").tobytes(), "finite"),
])
def test_malformed_input_gets_an_error_and_a_close_and_the_server_goes_on(server, animator, speech, query,
                                                                         message, match):
    url, _ = server

    async def bad():
        got = []
        async with connect(url + query) as ws:
            if message is not None:
                got.append(json.loads(await ws.recv()))  # start
                await ws.send(message)
            elif query:
                pass  # refused at once
            got += [json.loads(m) for m in await _read_all(ws)]
            return got, ws.close_code

    got, code = asyncio.run(bad())
    assert got[-1]["type"] == "error" and match in got[-1]["message"], got
    assert code in (1003, 1008)
    _, frames, texts = asyncio.run(_client(url, speech[0][:8000]))  # still serving
    assert texts[-1]["type"] == "done" and len(frames) == texts[-1]["frames"] > 0


def test_ptalker_serve_subprocess_answers_a_client(speech, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "ptalker_cli", "serve", "--port", "0", "-m", "tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert "listening on ws://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.strip().rsplit(" ", 1)[-1]
        start, frames, texts = asyncio.run(_client(url, speech[0], 3200))
        assert texts[-1]["type"] == "done" and len(frames) == texts[-1]["frames"] == 37
        assert start["vertices"] == next(iter(frames.values())).shape[0]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)
    log = out[1]
    assert "frames=37 done" in log and "Traceback" not in log


def test_the_client_example_in_docs_streaming_works(server, animator, speech, tmp_path):
    """docs/streaming.md's Python client, extracted and run as a program against a server."""
    import soundfile as sf

    text = (ROOT / "docs" / "streaming.md").read_text()
    block = text.split("### A Python client", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    client = tmp_path / "client.py"
    client.write_text(block)
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech[1], 16000, subtype="FLOAT")
    url, _ = server
    done = subprocess.run([sys.executable, str(client), url, str(wav), str(tmp_path / "frames.npy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    want = _library(animator, speech[1])
    assert f"frames: {len(want)}" in done.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "frames.npy"), want)


def test_a_vanished_client_is_dropped_with_a_log_line(server, animator, speech):
    """A client whose connection drops mid-stream (no close handshake) ends in one log line; the server goes on."""
    url, lines = server
    before = len(lines)

    async def vanish():
        ws = await connect(url)
        await ws.recv()  # start
        await ws.send(speech[0][:16000].astype("<f4").tobytes())
        await asyncio.sleep(0.2)
        ws.transport.abort()

    asyncio.run(vanish())
    deadline = time.monotonic() + 30
    while len(lines) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(lines) == before + 1 and "closed by client" in lines[-1] and "done" not in lines[-1], lines[before:]
    _, frames, texts = asyncio.run(_client(url, speech[1][:8000]))
    assert texts[-1]["type"] == "done" and len(frames) == texts[-1]["frames"] > 0


@pytest.mark.parametrize("port, expected", [("99999", "port must be between 0 and 65535"),
                                            ("taken", "address already in use")])
def test_serve_on_a_bad_or_taken_port_is_one_line(tmp_path, port, expected):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if port == "taken":
            port = str(busy.getsockname()[1])
        res = subprocess.run([sys.executable, "-m", "ptalker_cli", "serve", "--port", port, "-m", "tiny"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode != 0
    lines = stderr_lines(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr

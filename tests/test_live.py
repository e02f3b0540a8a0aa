"""Live senders: Live Link Face UDP packets and VMC OSC bundles, received on 127.0.0.1 and decoded here."""

import socket
import struct
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from ptalker_cli.arkit import ARKIT_NAMES, ArkitCurves
from ptalker_cli.errors import PtalkerError
from ptalker_cli.live import LiveLinkSender, OscSender, stream_curves
from ptalker_cli.live.target import parse_host_port

APPLE_ORDER = ARKIT_NAMES  # test_arkit checks this equals Apple's documented list


def decode_livelink(packet: bytes) -> dict:
    """An independent parser of the documented layout (docs/arkit.md)."""
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, packet, pos)
        pos += struct.calcsize(fmt)
        return vals

    (version,) = take(">B")
    (n,) = take(">i")
    device = packet[pos : pos + n].decode()
    pos += n
    (m,) = take(">i")
    subject = packet[pos : pos + m].decode()
    pos += m
    frame, sub, num, den = take(">ifii")
    (count,) = take(">B")
    values = take(f">{count}f")
    assert pos == len(packet), "trailing bytes"
    return dict(version=version, device=device, subject=subject, frame=frame, subframe=sub, rate=(num, den),
                count=count, values=values)


@pytest.fixture
def udp_receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def curves(T=6, fps=25.0):
    rng = np.random.default_rng(0)
    return ArkitCurves(fps, rng.uniform(0, 1, (T, 52)).astype(np.float32))


def test_livelink_packets_decode_to_the_curves(udp_receiver):
    c = curves()
    port = udp_receiver.getsockname()[1]
    sender = LiveLinkSender(f"127.0.0.1:{port}", subject="Face", device_id="dev-1")
    assert stream_curves(c, [sender], realtime=False) == c.num_frames
    sender.close()
    for k in range(c.num_frames):
        p = decode_livelink(udp_receiver.recv(2048))
        assert p["version"] == 6 and p["device"] == "dev-1" and p["subject"] == "Face"
        assert p["frame"] == k and p["subframe"] == 0.0 and p["rate"] == (25, 1) and p["count"] == 61
        for name in ("jawOpen", "eyeBlinkLeft", "mouthLeft", "browInnerUp", "tongueOut"):
            assert p["values"][APPLE_ORDER.index(name)] == pytest.approx(float(c.curve(name)[k]), abs=1e-6)
        assert p["values"][52:] == (0.0,) * 9  # head and eye rotations


def test_osc_vmc_bundles(udp_receiver):
    from pythonosc.osc_packet import OscPacket

    c = curves(T=3)
    port = udp_receiver.getsockname()[1]
    sender = OscSender(f"127.0.0.1:{port}")
    stream_curves(c, [sender], realtime=False)
    sender.close()
    for k in range(3):
        msgs = [m.message for m in OscPacket(udp_receiver.recv(65536)).messages]
        vals = {m.params[0]: m.params[1] for m in msgs if m.address == "/VMC/Ext/Blend/Val"}
        assert len(vals) == 52 and msgs[-1].address == "/VMC/Ext/Blend/Apply"
        assert vals["JawOpen"] == pytest.approx(float(c.curve("jawOpen")[k]), abs=1e-6)
        assert vals["EyeBlinkRight"] == pytest.approx(float(c.curve("eyeBlinkRight")[k]), abs=1e-6)


def test_osc_with_a_python_osc_server():
    """The same bundles through python-osc's own server and dispatcher."""
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import ThreadingOSCUDPServer

    got, applied = {}, threading.Event()
    disp = Dispatcher()
    disp.map("/VMC/Ext/Blend/Val", lambda addr, name, value: got.__setitem__(name, value))
    disp.map("/VMC/Ext/Blend/Apply", lambda addr: applied.set())
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        c = curves(T=1)
        sender = OscSender(f"127.0.0.1:{server.server_address[1]}")
        sender.send(0, c.frame(0), c.fps)
        sender.close()
        assert applied.wait(5.0)
    finally:
        server.shutdown()
        server.server_close()
    assert got["MouthSmileLeft"] == pytest.approx(float(c.curve("mouthSmileLeft")[0]), abs=1e-6)


def test_realtime_pacing_sends_frame_k_at_k_over_fps():
    now = [100.0]
    sent = []

    class Recorder:
        def send(self, frame, values, fps):
            sent.append((frame, now[0]))

        def close(self):
            pass

    def sleep(dt):
        now[0] += dt

    stream_curves(curves(T=5, fps=20.0), [Recorder()], realtime=True, clock=lambda: now[0], sleep=sleep)
    assert [f for f, _ in sent] == [0, 1, 2, 3, 4]
    assert np.allclose([t - 100.0 for _, t in sent], np.arange(5) / 20.0)
    sent.clear()
    now[0] = 0.0
    stream_curves(curves(T=5, fps=20.0), [Recorder()], realtime=False, clock=lambda: now[0], sleep=sleep)
    assert [t for _, t in sent] == [0.0] * 5


def test_host_port_parsing():
    assert parse_host_port("127.0.0.1:9000", "--osc") == ("127.0.0.1", 9000)
    assert parse_host_port("localhost", "--livelink", 11111) == ("127.0.0.1", 11111)
    for bad in ("127.0.0.1:http", "127.0.0.1:0", "127.0.0.1:70000"):
        with pytest.raises(PtalkerError, match="--osc"):
            parse_host_port(bad, "--osc", 1)


def test_cli_streams_livelink_and_osc(udp_receiver, tmp_path, wav_file):
    from test_arkit import tiny_basis

    from ptalker_cli.cli.app import app

    osc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    osc.bind(("127.0.0.1", 0))
    osc.settimeout(5.0)
    try:
        r = CliRunner().invoke(app, [
            "animate", str(wav_file(0.6)), "-m", "tiny", "--blendshapes", str(tiny_basis(tmp_path)),
            "--livelink", f"127.0.0.1:{udp_receiver.getsockname()[1]}", "--osc", f"127.0.0.1:{osc.getsockname()[1]}",
            "--no-realtime", "-q"])
        assert r.exit_code == 0, r.output
        frames = [decode_livelink(udp_receiver.recv(2048))["frame"] for _ in range(14)]
        assert frames == list(range(14))
        assert osc.recv(65536).startswith(b"#bundle\0")
    finally:
        osc.close()
    assert not list(tmp_path.glob("*.csv"))  # live only: no -o, no file


def test_cli_needs_an_output_or_a_live_target(wav_file):
    from ptalker_cli.cli.app import app

    r = CliRunner().invoke(app, ["animate", str(wav_file(0.3)), "-m", "tiny"])
    assert r.exit_code != 0 and "--livelink/--osc" in r.output
    r = CliRunner().invoke(app, ["animate", str(wav_file(0.3)), "-m", "tiny", "--osc", "127.0.0.1:port"])
    assert r.exit_code != 0 and "not a port number" in r.output

"""The recorded speech shipped in tests/data/arctic keeps its licence and matches its provenance record."""

import hashlib
import re
from pathlib import Path

import soundfile as sf

DATA = Path(__file__).resolve().parent / "data" / "arctic"


def test_every_file_is_recorded_with_its_sha256():
    record = (DATA / "PROVENANCE.md").read_text()
    files = sorted(p.name for p in DATA.iterdir() if p.name != "PROVENANCE.md")
    assert files == ["LICENSE", "cmu_us_awb_arctic_a0007.lab", "cmu_us_awb_arctic_a0007.wav",
                     "cmu_us_slt_arctic_a0009.lab",
                     "cmu_us_slt_arctic_a0009.wav"]
    for name in files:
        digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
        row = next((ln for ln in record.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} has no row in PROVENANCE.md"
        assert digest in row, f"{name}: sha256 {digest} is not the one PROVENANCE.md records"


def test_licence_is_the_arctic_notice_and_the_clips_are_as_described():
    notice = (DATA / "LICENSE").read_text()
    assert "Carnegie Mellon University" in notice and "Any modifications must be clearly marked" in notice
    for name, seconds in (("cmu_us_awb_arctic_a0007.wav", 4.0), ("cmu_us_slt_arctic_a0009.wav", 3.095)):
        info = sf.info(DATA / name)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.frames / info.samplerate - seconds) < 1e-9
    # the phone label covers the slt recording: HTS times in 100 ns, silence at both ends
    rows = [ln.split() for ln in (DATA / "cmu_us_slt_arctic_a0009.lab").read_text().splitlines()]
    phones = [re.search(r"-(.+?)\+", lab).group(1) for _, _, lab in rows]
    assert phones[0] == phones[-1] == "sil" and len(phones) == 40
    assert all(int(a[1]) == int(b[0]) for a, b in zip(rows, rows[1:]))
    assert abs(int(rows[-1][1]) * 1e-7 - 3.095) < 0.05
    # the awb label (forced alignment, seconds) covers its recording and holds the one /p/ of "superlative"
    from ptalker_cli.eval.closure import read_lab

    awb = read_lab(DATA / "cmu_us_awb_arctic_a0007.lab")
    assert awb[0][0] == awb[-1][0] == "sil" and abs(awb[-1][2] - 4.0) < 0.05
    assert all(abs(a[2] - b[1]) < 1e-9 for a, b in zip(awb, awb[1:]))
    assert [p for p, _, _ in awb if p in ("p", "b", "m")] == ["p"]

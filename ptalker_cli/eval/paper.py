"""The PTalker paper's reference numbers (Tables 1, 2 and 4) as data.

Source: Wang et al., *PTalker*, ACM MM 2025 (arXiv 2512.22602v1), as transcribed in
the project's spec §5.5. These are **the paper's numbers, not ours**: the report
prints them beside our results for reference only.

Units: the tables label LVE/FDD "mm" with a power-of-ten factor, but the values are
squared data units (BIWI: normalised unit-area faces; VOCASET: metres). A displayed
value ``x`` means ``x × scale`` in squared data units (e.g. BIWI LVE 3.8211 ⇒
3.8211e-4). LRP is in percent; ptalker does not compute LRP (docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CITATION = (
    "Wang, Xu, Zhao, Zhang, Zhang. PTalker: Personalized Speech-Driven 3D Talking Head Animation via "
    "Style Disentanglement and Modality Alignment. ACM MM 2025, arXiv 2512.22602"
)


@dataclass(frozen=True)
class PaperRow:
    method: str
    lve: float | None
    fdd: float | None
    lrp: float | None = None  # percent
    note: str = ""


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    dataset: str  # "biwi" | "vocaset"
    split: str  # our split name
    lve_scale: float
    fdd_scale: float
    rows: tuple[PaperRow, ...] = field(default_factory=tuple)
    note: str = ""

    def row(self, method: str) -> PaperRow:
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(method)

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "title": self.title,
            "source": CITATION,
            "dataset": self.dataset,
            "split": self.split,
            "lve_scale": self.lve_scale,
            "fdd_scale": self.fdd_scale,
            "note": self.note,
            "rows": [
                {"method": r.method, "lve": r.lve, "fdd": r.fdd, "lrp_percent": r.lrp, "note": r.note}
                for r in self.rows
            ],
        }


_R = PaperRow
_STAR = "reproduced by the PTalker authors"

TABLE1 = PaperTable(
    key="table1",
    title="PTalker paper, Table 1 — VOCASET-Test",
    dataset="vocaset",
    split="test",
    lve_scale=1e-5,
    fdd_scale=1e-7,
    rows=(
        _R("VOCA", 4.9245, 4.8447, 72.67),
        _R("MeshTalk", 4.5441, 5.2062, 79.64),
        _R("FaceFormer", 4.1090, 4.6675, 88.90),
        _R("CodeTalker", 3.9445, 4.5422, 86.30),
        _R("FaceDiffuser", 3.2432, 4.4326, None),
        _R("DiffSpeaker", 3.1478, None, None),
        _R("SelfTalk", 3.2238, 4.0912, 91.37),
        _R("TalkingStyle", 3.3159, 4.2874, None, _STAR),
        _R("NewTalker", 3.2026, None, None),
        _R("PTalker", 2.8856, 3.7325, 93.77),
    ),
    note="VOCASET lip/upper-face region files used by the paper are not documented upstream",
)

TABLE2 = PaperTable(
    key="table2",
    title="PTalker paper, Table 2 — BIWI-Test-A",
    dataset="biwi",
    split="test-a",
    lve_scale=1e-4,
    fdd_scale=1e-5,
    rows=(
        _R("VOCA", 6.5563, 8.1816, 73.83),
        _R("MeshTalk", 5.9181, 5.1025, 80.97),
        _R("FaceFormer", 5.3077, 4.6408, 83.15),
        _R("CodeTalker", 4.7914, 4.1170, 84.62),
        _R("FaceDiffuser", 4.7823, 3.9225, None),
        _R("DiffSpeaker", 4.2829, 3.6823, None),
        _R("SelfTalk", 4.2485, 3.5761, 88.31),
        _R("TalkingStyle", 4.3646, 3.8361, None),
        _R("NewTalker", 4.2361, 3.4903, None),
        _R("DCPTalk", 3.8548, 2.8067, None),
        _R("PTalker", 3.8211, 2.5493, 91.68),
    ),
)

TABLE4 = PaperTable(
    key="table4",
    title="PTalker paper, Table 4 — ablation on BIWI-Test-A",
    dataset="biwi",
    split="test-a",
    lve_scale=1e-4,
    fdd_scale=1e-5,
    rows=(
        _R("full model", 3.8211, 2.5493, 91.68),
        _R("w/o L_adv", 4.0093, 2.8528, 90.87),
        _R("w/o L_cos", 3.9821, 2.6309, 91.02),
        _R("w/o L_orth + L_info", 4.1792, 3.2826, 89.45),
        _R("w/o L_cts", 4.3107, 3.3024, 88.64),
        _R("w/o L_EG (GAT encoder)", 4.0612, 2.8951, 90.85),
        _R("w/o audio disentanglement", 4.2356, 3.2157, 89.13),
        _R("w/o motion disentanglement", 4.2844, 3.2679, 88.92),
    ),
    note="with the released code, 'w/o L_cos' and 'w/o L_EG' are not reproducible ablations",
)

TABLES: dict[str, PaperTable] = {t.key: t for t in (TABLE1, TABLE2, TABLE4)}


def tables_for(dataset: str | None, split: str | None) -> list[PaperTable]:
    """The paper tables that report numbers for this (dataset kind, split), main table first."""
    if dataset is None:
        return []
    return [t for t in TABLES.values() if t.dataset == dataset and t.split == split]


__all__ = ["CITATION", "PaperRow", "PaperTable", "TABLE1", "TABLE2", "TABLE4", "TABLES", "tables_for"]

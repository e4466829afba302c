"""The recorded benchmark results (bench/results/, written by bench/quality_table.py) meet issue 3's criteria.

These read the files the scripts wrote; they fail if a rerun with a broken sampler or solver is committed."""
import csv
import json
from pathlib import Path

import pytest
from deq_ddim_nb.quality import METHODS

RES = Path(__file__).resolve().parents[1] / "bench" / "results"
TWIN = {"DEQ-DDIM": "DDIM (sequential)", "DEQ-sDDIM eta=1": "DDPM (sequential, eta=1)"}  # same x_T and noises


def _cells():
    return {(r["method"], int(r["T"])): r for r in csv.DictReader(open(RES / "quality.csv"))}


def test_quality_table_is_complete():
    cells = _cells()
    missing = [(m, T) for m in METHODS for T in (10, 20, 50, 100) if (m, T) not in cells]
    assert not missing, f"cells not in quality.csv: {missing}"
    assert all(int(r["n"]) >= 256 for r in cells.values())


@pytest.mark.parametrize("deq,seq", list(TWIN.items()))
def test_deq_cells_equal_their_sequential_twins(deq, seq):
    cells = _cells()
    for T in (10, 20, 50, 100):
        a, b = float(cells[(deq, T)]["fd"]), float(cells[(seq, T)]["fd"])
        assert abs(a - b) <= 0.01 * b, (deq, T, a, b)


def test_every_cell_has_all_ten_digits():
    for (m, T), r in _cells().items():
        assert float(r["min_class_share"]) >= 0.04, (m, T, r["min_class_share"])


def test_thousand_sample_check():
    big = json.loads((RES / "quality_T100_n1000.json").read_text())
    assert big["settings"]["T"] == 100 and big["settings"]["n"] >= 1000
    for m in ("DDIM (sequential)", "DEQ-DDIM"):
        assert big[m]["n"] >= 1000
    hist = big["DEQ-DDIM"]["class_hist"]
    assert len(hist) == 10 and abs(sum(hist) - 1) < 1e-9 and all(0.05 <= h <= 0.15 for h in hist), hist
    assert abs(big["DEQ-DDIM"]["fd"] / big["DDIM (sequential)"]["fd"] - 1) <= 0.05
    assert big["max_rel_diff"] <= 1e-3

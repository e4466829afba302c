"""The recorded benchmark results (deq_ddim_nb/assets/results, `files.recorded()`): the quality table (bench/quality_table.py)
meets its criteria; the speed table (`deq-ddim bench --record`) and the window's stopping log keep their promises.

These read the files the scripts wrote; they fail if a rerun with a broken sampler or solver is committed."""
import csv
import json
import pytest
from deq_ddim_nb.files import recorded
from deq_ddim_nb.quality import METHODS

RES = recorded()
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


# --- the speed benchmark (bench/benchmark.py, deq_ddim_nb.benchmark) ------------------------------------------------

def test_speed_table_has_the_peers_on_the_same_inputs():
    from deq_ddim_nb.benchmark import read_bench
    rows = read_bench(RES)
    cells = {}
    for r in rows: cells.setdefault((r["model"], r["T"], r["batch"], r["seed"]), {})[r["variant"]] = r
    peers = {"default", "picard", "window", "anderson-authors"}
    assert any(m == "digits" and T == 100 and peers <= set(v) for (m, T, B, _), v in cells.items())
    for v in cells.values():                                        # one DDIM reference per x_T: every peer shares it
        assert len({r["ddim_seconds"] for r in v.values()}) == 1


def test_speed_table_converged_means_close_to_sequential():
    from deq_ddim_nb.benchmark import read_bench
    rows = read_bench(RES)
    for r in rows:
        if r["converged"] and r["variant"] in ("default", "window", "picard"):
            assert r["final_err"] <= 1e-2, r
    dflt = [r for r in rows if r["variant"] == "default" and r["model"] == "digits"]
    assert dflt and all(r["converged"] for r in dflt)


def test_speed_table_rounds_to_tol_is_the_first_round_within_1e3():
    "rounds_to_tol is a round of the run (or inf when x_0 never came within 1e-3 of DDIM), and a run that ends within 1e-3 has one."
    from deq_ddim_nb.benchmark import read_bench
    for r in read_bench(RES):
        assert r["rounds_to_tol"] == float("inf") or 1 <= r["rounds_to_tol"] <= r["rounds"], r
        if r["final_err"] <= 1e-3: assert r["rounds_to_tol"] <= r["rounds"], r


def _median_rounds_to_tol(rows, variant):
    import statistics
    return statistics.median(r["rounds_to_tol"] for r in rows if r["variant"] == variant)


def test_speed_table_torchdeq_anderson_per_image_reaches_ddim_in_every_cell_and_beats_per_state():
    "Per image is Anderson's stronger setting: x_0 reaches 1e-3 of DDIM in every cell, in fewer rounds than per state."
    from deq_ddim_nb.benchmark import read_bench
    rows = read_bench(RES)
    per_image = [r for r in rows if r["variant"] == "torchdeq-anderson-per-image"]
    assert per_image and all(r["rounds_to_tol"] <= r["rounds"] for r in per_image)
    assert _median_rounds_to_tol(rows, "torchdeq-anderson-per-image") < _median_rounds_to_tol(rows, "torchdeq-anderson")


def test_speed_table_torchdeq_broyden_per_image_is_no_worse_than_per_state():
    "For Broyden the two ways of handing over the chain are about even: the median rounds to 1e-3 per image is no larger."
    from deq_ddim_nb.benchmark import read_bench
    rows = read_bench(RES)
    assert _median_rounds_to_tol(rows, "torchdeq-broyden-per-image") <= _median_rounds_to_tol(rows, "torchdeq-broyden")


def test_recorded_results_are_tables_not_plots():
    "The lessons draw the plots from the recorded tables; no stored PNG goes stale beside them."
    assert not sorted(RES.glob("*.png"))


def test_speed_markdown_is_the_csv():
    from deq_ddim_nb.benchmark import markdown_table, read_bench, summarize
    assert markdown_table(summarize(read_bench(RES))) == (RES / "speed.md").read_text()


def test_window_stopping_log_keeps_its_promise():
    import re
    lines = [l for l in (RES / "window_stopping.txt").read_text().splitlines() if l.startswith("eta ")]
    runs = [re.search(r"eta (\S+) seed +(\d+): converged (\w+) .*\|x_0 - DDIM\|/\|DDIM\| (\S+)", l).groups() for l in lines]
    assert len([r for r in runs if r[0] == "0"]) == 16
    for eta, seed, conv, err in runs:
        if conv == "True": assert float(err) <= 1e-3, (eta, seed, err)

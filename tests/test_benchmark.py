"deq_ddim_nb.benchmark: the speed benchmark's variants, measurements, files and command line."
import csv
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import randn, rel
from deq_ddim_nb import benchmark as bm
from deq_ddim_nb.ddim import ddim_sample
from deq_ddim_nb.deq import deq_sample
from deq_ddim_nb.schedules import DDIMSchedule

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_measure_variant_counts_rounds_errors_and_start_cost(digits_model):
    s, x_T = DDIMSchedule.make(20), randn(1, 1, 8, 8, seed=6)
    ref = ddim_sample(digits_model, x_T, s)
    r = bm.measure_variant(digits_model, x_T, s, ref, "picard")
    assert r["converged"] and r["rounds"] <= 20 and r["nfe"] == 20 * r["rounds"] and r["final_err"] < 1e-3
    assert r["rounds_to_tol"] <= r["rounds"] and len(r["errs"]) == r["rounds"]
    assert abs(r["errs"][-1] - r["final_err"]) < 1e-12                  # the last round's x_0 is what was returned
    c = bm.measure_variant(digits_model, x_T, s, ref, "anderson-tri+coarse4")
    assert c["nfe"] == 4 + 20 * (c["rounds"] - 4)
    short = bm.measure_variant(digits_model, x_T, s, ref, "picard", max_rounds=2)
    assert not short["converged"] and short["rounds"] == 2 and short["rounds_to_tol"] == math.inf and short["final_err"] > 1e-3
    with pytest.raises(ValueError, match="variant must be one of"): bm.measure_variant(digits_model, x_T, s, ref, "nope")


def test_default_row_is_deq_sample_as_a_user_calls_it(digits_model):
    s, x_T = DDIMSchedule.make(20), randn(1, 1, 8, 8, seed=3)
    ref = ddim_sample(digits_model, x_T, s)
    x0, info = deq_sample(digits_model, x_T, s)
    r = bm.measure_variant(digits_model, x_T, s, ref, "default")
    assert r["rounds"] == info.rounds and r["converged"] == info.converged and abs(r["final_err"] - rel(x0, ref)) < 1e-12


def test_authors_anderson_published_settings(digits_model):
    # per-state coefficients, m = 5, absolute lam = 1e-3, whole-tensor relative residual, at most 15 rounds
    assert bm.VARIANTS["anderson-authors"][1]["max_iter"] == 15
    b = randn(4, 3, 5, seed=9)                                           # a linear contraction: fixed point 2 b
    z, st = bm.authors_anderson(lambda z: 0.5 * z + b, torch.zeros_like(b), max_iter=15, tol=1e-4)
    assert st.converged and rel(z, 2 * b) < 1e-3
    s, x_T = DDIMSchedule.make(20), randn(2, 1, 8, 8, seed=1)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                              # 15 rounds may not converge: recorded, not warned
        _, info = deq_sample(digits_model, x_T, s, solver=bm.authors_anderson, max_iter=15, callback=lambda k, z, fz, r: seen.append(
            (r, float(torch.linalg.vector_norm(fz - z) / (1e-5 + torch.linalg.vector_norm(fz))))))
    assert info.rounds == len(seen) <= 15 and all(abs(a - b) < 1e-12 for a, b in seen)
    assert all(a >= 1e-3 for a, _ in seen[:-1]) and (seen[-1][0] < 1e-3) == info.converged
    assert info.converged or info.rounds == 15
    with pytest.raises(ValueError, match="stop_mode"): bm.authors_anderson(lambda z: z, torch.zeros(2, 1, 3), stop_mode="abs")


def test_torchdeq_rows_only_when_installed(monkeypatch, digits_model):
    monkeypatch.setattr(bm, "torchdeq_available", lambda: False)
    assert not any(v.startswith("torchdeq") for v in bm.available_variants())
    assert not any(v.startswith("torchdeq") for c in bm.default_grid("quick") for v in c["variants"])
    monkeypatch.undo()
    if not bm.torchdeq_available(): pytest.skip("torchdeq is not installed (pip install torchdeq)")
    s, x_T = DDIMSchedule.make(10), randn(1, 1, 8, 8, seed=2)
    ref = ddim_sample(digits_model, x_T, s)
    for v in ("torchdeq-anderson", "torchdeq-broyden", "torchdeq-anderson-per-image", "torchdeq-broyden-per-image"):
        r = bm.measure_variant(digits_model, x_T, s, ref, v, max_rounds=30)
        assert r["rounds"] <= 30 and (not r["converged"] or r["final_err"] < 1e-2), (v, r["final_err"])
    assert set(bm.PEERS) <= set(bm.available_variants())


def _fake_torchdeq(monkeypatch, seen):
    "A stand-in for torchdeq.solver: plain fixed-point iteration per row, recording the batch layout it is handed."
    import types
    def fixed_point(func, x0, max_iter=50, tol=1e-3, stop_mode="rel", **kw):
        seen.append(tuple(x0.shape))
        x = x0
        for _ in range(max_iter):
            fx = func(x)
            done = bool(((fx - x).norm(dim=1) / (fx.norm(dim=1) + 1e-9)).max() < tol)
            x = fx
            if done: break
        return x, [], {}
    solver = types.ModuleType("torchdeq.solver"); solver.get_solver = lambda name: fixed_point
    top = types.ModuleType("torchdeq"); top.solver = solver
    monkeypatch.setitem(sys.modules, "torchdeq", top); monkeypatch.setitem(sys.modules, "torchdeq.solver", solver)


@pytest.mark.parametrize("per", ["state", "image"])
def test_torchdeq_adapter_hands_over_one_row_per_state_or_per_image(monkeypatch, digits_model, per):
    seen = []
    _fake_torchdeq(monkeypatch, seen)
    T, B = 10, 3
    s, x_T = DDIMSchedule.make(T), randn(B, 1, 8, 8, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x0, info = deq_sample(digits_model, x_T, s, solver=bm.torchdeq_solver("anderson", per), max_iter=T + 1, tol=1e-12)
    assert seen == [(T * B, 64) if per == "state" else (B, T * 64)]
    # plain iteration is exact after T rounds whatever the layout: the rows were put back where they belong
    assert rel(x0, ddim_sample(digits_model, x_T, s)) < 1e-12
    assert info.rounds == T + 1


def test_interrupted_run_leaves_the_saved_csv_intact(tmp_path, monkeypatch):
    bm.run_benchmark(bm.default_grid("tiny"), tmp_path, efficiency=False, progress=False)
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    assert len(bm.read_bench(tmp_path)) == 2 * 4 + 1
    calls = []
    def dies_midway(*a, **k):
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt                      # killed in the middle of the grid
        return real(*a, **k)
    real = bm.measure_variant
    monkeypatch.setattr(bm, "measure_variant", dies_midway)
    for merge in (False, True):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            bm.run_benchmark(bm.default_grid("tiny"), tmp_path, efficiency=False, progress=False, merge=merge, overwrite=True)
        assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == before   # nothing replaced, no temporaries


def test_merge_keeps_rows_of_cells_not_rerun(tmp_path):
    grid = bm.default_grid("tiny")
    bm.run_benchmark(grid, tmp_path, efficiency=False, progress=False)
    with pytest.raises(FileExistsError):                                  # merging replaces speed.csv: only when asked
        bm.run_benchmark([dict(grid[0], variants=("picard",))], tmp_path, efficiency=False, progress=False, merge=True)
    bm.run_benchmark([dict(grid[0], variants=("picard",))], tmp_path, efficiency=False, progress=False, merge=True, overwrite=True)
    rows = bm.read_bench(tmp_path)
    assert sorted({r["variant"] for r in rows if r["batch"] == 1}) == sorted(grid[0]["variants"]) and len(rows) == 2 * 4 + 1
    assert set(json.loads((tmp_path / "speed_traces.json").read_text())) == {f"toy|10|1|{v}" for v in grid[0]["variants"]} | {"toy|10|2|default"}


def test_table_reports_rounds_evaluations_error_and_ratio(tmp_path):
    bm.run_benchmark(bm.default_grid("tiny"), tmp_path, efficiency=False, progress=False)
    rows = bm.read_bench(tmp_path)
    md = (tmp_path / "speed.md").read_text()
    mask = os.umask(0); os.umask(mask)
    for f in ("speed.csv", "speed.md", "speed_traces.json"):                # published with the usual file mode
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o666 & ~mask
    for col in ("rounds (median)", "evals / image", "x_0 error (median)", "DEQ / DDIM", "converged"): assert col in md
    summ = bm.summarize(rows)
    for srow in summ:
        mine = [r for r in rows if (r["model"], r["T"], r["batch"], r["variant"]) == (srow["model"], srow["T"], srow["batch"], srow["variant"])]
        assert srow["seeds"] == len(mine) and srow["rounds_max"] == max(r["rounds"] for r in mine)
        assert all(abs(r["ratio"] - r["deq_seconds"] / r["ddim_seconds"]) < 1e-12 for r in mine)
    assert bm.markdown_table(summ) == md


def test_benchmark_script_runs_on_a_tiny_grid(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "benchmark.py"), "--quick", "--out", str(tmp_path), "--no-progress"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in bm.bench_files(tmp_path, efficiency=False))
    rows = bm.read_bench(tmp_path)
    assert rows and all(r["converged"] for r in rows if r["variant"] in ("default", "picard", "window"))
    assert all(r["final_err"] < 1e-2 for r in rows if r["converged"])
    # the tiny grid: picard evaluates all T states in every round
    assert all(r["nfe"] == r["rounds"] * r["T"] for r in rows if r["variant"] == "picard")
    assert bm.markdown_table(bm.summarize(rows)) == (tmp_path / "speed.md").read_text() and "| model | T |" in r.stdout


def test_report_is_rebuilt_from_the_saved_files(tmp_path):
    bm.run_benchmark(bm.default_grid("tiny"), tmp_path, efficiency=False, progress=False)
    md = (tmp_path / "speed.md").read_text()
    with pytest.raises(FileExistsError): bm.write_report(tmp_path)
    for f in ("speed.md", "speed_rounds.png", "speed_traces.png"): (tmp_path / f).unlink()
    paths = bm.write_report(tmp_path)
    assert (tmp_path / "speed.md").read_text() == md and [p.name for p in paths] == ["speed.md", "speed_rounds.png", "speed_traces.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths[1:])


def test_reading_a_fifo_or_a_missing_table_is_an_error_not_a_hang(tmp_path):
    with pytest.raises(FileNotFoundError, match="speed table"): bm.read_bench(tmp_path)
    os.mkfifo(tmp_path / "speed.csv")
    with pytest.raises(ValueError, match="a FIFO, not a regular file"): bm.read_bench(tmp_path)
    (tmp_path / "speed.csv").unlink(); (tmp_path / "speed.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks model"): bm.read_bench(tmp_path)


def test_select_grid_names_what_emptied_it():
    assert [c["T"] for c in bm.select_grid("quick", T=[100], models=["toy"])] == [100, 100]
    with pytest.raises(ValueError, match="^T: "): bm.select_grid("tiny", T=[999])
    with pytest.raises(ValueError, match="^models: "): bm.select_grid("tiny", models=["digits"])
    with pytest.raises(ValueError, match="^variants: "): bm.select_grid("tiny", variants=["broyden"])
    with pytest.raises(ValueError, match="^seeds must be"): bm.select_grid("tiny", seeds=0)
    assert all(c["seeds"] == 4 for c in bm.select_grid("tiny", seeds=4))


def test_the_peers_include_torchdeq_per_state_and_per_image():
    assert {"torchdeq-anderson", "torchdeq-broyden", "torchdeq-anderson-per-image", "torchdeq-broyden-per-image"} <= set(bm.PEERS)
    assert bm.VARIANTS["torchdeq-anderson-per-image"][1]["solver"].__name__ == "torchdeq_anderson_per_image"
    assert bm.VARIANTS["torchdeq-anderson"][1]["solver"].__name__ == "torchdeq_anderson_per_state"


def test_a_variant_that_blows_up_is_recorded_not_fatal(digits_model):
    s, x_T = DDIMSchedule.make(10), randn(1, 1, 8, 8, seed=4)
    ref = ddim_sample(digits_model, x_T, s)
    calls = []
    def breaks(x, t):
        calls.append(1)
        out = digits_model(x, t)
        return out * float("nan") if len(calls) == 3 else out
    r = bm.measure_variant(breaks, x_T, s, ref, "picard")
    assert not r["converged"] and r["final_err"] == math.inf and r["rounds"] == 3

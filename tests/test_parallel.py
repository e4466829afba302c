"""deq_ddim_nb.parallel (starts, the sliding window, sharded calls) and deq_ddim_nb.distributed (torchrun, image sets by
rank); the lesson's exercises; the scripts behind its recorded results (bench/paper_solver.py, bench/threads_study.py);
the GPU and torchrun scripts."""
import importlib.util
import inspect
import json
import math
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import randn, rel
from deq_ddim_nb.ddim import ddim_sample, draw_noise
from deq_ddim_nb.deq import ShardedEps, deq_sample, deq_update
from deq_ddim_nb.distributed import DistributedEps, image_inputs, sample_images, shard_bounds
from deq_ddim_nb.parallel import coarse_init, make_init, scaled_init, window_budget, window_sample
from deq_ddim_nb.schedules import DDIMSchedule

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def unet():
    from deq_ddim_nb.models import load_model
    return load_model("digits")


def test_eq10_scaled_init_is_constant_eps_trajectory():
    s, x_T = DDIMSchedule.make(30), randn(2, 1, 8, 8)
    eps = (x_T / (1 - s.abar[-1]).sqrt()).expand(30, *x_T.shape)
    assert rel(scaled_init(x_T, s), deq_update(eps, x_T, s)) < 1e-13
    assert float(scaled_init(x_T, s)[0].abs().max()) == 0      # x_0 starts at the predicted x̂_0 = 0


def test_coarse_init_with_K_equal_T_is_sequential_ddim(digits_model):
    s, x_T = DDIMSchedule.make(25, skip="quad"), randn(2, 1, 8, 8, seed=1)
    _, xs = ddim_sample(digits_model, x_T, s, return_traj=True)
    assert rel(coarse_init(digits_model, x_T, s, 25), xs[:-1]) < 1e-12
    assert rel(coarse_init(digits_model, x_T, s, 3), xs[:-1]) > 1e-3   # a coarse start is only a start
    assert make_init("coarse:3", digits_model, x_T, s)[1:] == (3, 3)
    with pytest.raises(ValueError, match="init must be one of"): make_init("ones", digits_model, x_T, s)
    with pytest.raises(ValueError, match="K must be <= 25"): coarse_init(digits_model, x_T, s, 26)
    with pytest.raises(TypeError, match="K must be an int"): coarse_init(digits_model, x_T, s, 2.0)


def test_window_of_one_is_sequential_ddim(digits_model):
    s, x_T = DDIMSchedule.make(20), randn(1, 1, 8, 8, seed=2)
    x0, info = window_sample(digits_model, x_T, s, window=1)
    # 20 window rounds of one state each, then one full round that checks every state
    assert info.rounds == 21 and info.checks == 1 and info.windows == [1] * 20 + [20] and info.converged
    assert rel(x0, ddim_sample(digits_model, x_T, s)) < 1e-12


def test_window_reaches_sequential_sample_with_fewer_evaluations_than_picard(digits_model):
    s, x_T = DDIMSchedule.make(50), randn(2, 1, 8, 8, seed=3)
    ref = ddim_sample(digits_model, x_T, s)
    x0, info = window_sample(digits_model, x_T, s, tol=1e-6)
    _, pic = deq_sample(digits_model, x_T, s, solver="picard", max_iter=51, tol=1e-6)
    assert info.converged and rel(x0, ref) < 1e-5 and info.residuals[-1] < 1e-6
    assert info.nfe < pic.nfe and len(info.residuals) == info.rounds == len(info.windows)


def test_eq24_window_with_noise_solves_sddim(digits_model):
    s, x_T = DDIMSchedule.make(20, eta=1.0), randn(1, 1, 8, 8, seed=4)
    nz = draw_noise(s, x_T, torch.Generator().manual_seed(0))
    x0, _ = window_sample(digits_model, x_T, s, noise=nz, tol=1e-7)
    assert rel(x0, ddim_sample(digits_model, x_T, s, nz)) < 1e-8


def test_window_bad_inputs(digits_model):
    s, x_T = DDIMSchedule.make(5), randn(1, 1, 8, 8)
    for kw, msg in ((dict(window=0), "window must be"), (dict(tol=0), "tol must be"), (dict(freeze_tol=-1), "freeze_tol must be"),
                    (dict(noise_tol=0), "noise_tol must be"), (dict(max_iter=0), "max_iter must be"), (dict(init="nope"), "init must be")):
        with pytest.raises(ValueError, match=msg): window_sample(digits_model, x_T, s, **kw)
    for kw, msg in ((dict(window=2.5), "window must be an int"), (dict(max_iter=2.5), "max_iter must be an int"),
                    (dict(tol="0.1"), "tol must be a real number"), (dict(init=3), "init must be one of")):
        with pytest.raises(TypeError, match=msg): window_sample(digits_model, x_T, s, **kw)
    with pytest.raises(TypeError, match="DDIMSchedule"): window_sample(digits_model, x_T, "sched")
    with pytest.raises(ValueError, match="shape"): window_sample(digits_model, x_T, s, noise=torch.zeros(4, 1, 1, 8, 8, dtype=torch.float64))


@pytest.mark.filterwarnings("ignore:.*did not converge")
def test_sharded_devices_equal_single_device_float32(unet):
    from deq_ddim_nb.deq import deq_map
    s = DDIMSchedule.from_config(20, unet.config, dtype=torch.float32)
    x_T = randn(2, 1, 16, 16, seed=5, dtype=torch.float32)
    xs = randn(20, 2, 1, 16, 16, seed=6, dtype=torch.float32)
    with torch.no_grad():
        a, ia = deq_sample(unet, x_T, s, max_iter=8)
        b, ib = deq_sample(unet, x_T, s, max_iter=8, devices=["cpu", "cpu"])
        w1, _ = window_sample(unet, x_T, s, max_iter=5)
        w2, _ = window_sample(unet, x_T, s, max_iter=5, devices=["cpu", "cpu"])
        m1 = deq_map(unet, xs, x_T, s)
        m3 = deq_map(ShardedEps(unet, ["cpu"] * 3), xs, x_T, s)         # uneven slices (14, 13, 13)
    assert ia.rounds == ib.rounds and rel(b, a) <= 1e-6
    assert rel(w2, w1) <= 1e-6
    assert rel(m3, m1) <= 1e-6


def test_shard_bounds_cover_everything_once():
    for n in (0, 1, 7, 40):
        for world in (1, 2, 3, 8):
            parts = [shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n and all(parts[i][1] == parts[i + 1][0] for i in range(world - 1))
            assert [hi - lo for lo, hi in parts] == [len(c) for c in torch.arange(n).tensor_split(world)]
    with pytest.raises(ValueError, match="rank must be <= 1"): shard_bounds(4, 2, 2)
    with pytest.raises(TypeError, match="world must be an int"): shard_bounds(4, 0, 2.0)


def test_distributed_eps_needs_a_process_group(unet):
    with pytest.raises(RuntimeError, match="process group"): DistributedEps(unet)


def test_sample_images_do_not_depend_on_batching(digits_model):
    s = DDIMSchedule.make(10)
    a = sample_images(digits_model, s, 5, batch_size=2, sampler="ddim", dtype=torch.float64)
    b = sample_images(digits_model, s, 5, batch_size=3, sampler="ddim", dtype=torch.float64)
    x_all, _ = image_inputs(range(5), (1, 8, 8), dtype=torch.float64)
    assert rel(a, b) < 1e-12 and rel(a, ddim_sample(digits_model, x_all, s)) < 1e-12
    assert rel(image_inputs([3], (1, 8, 8), dtype=torch.float64)[0][0], x_all[3]) == 0


def _free_port():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def test_torchrun_two_processes_equal_single_process():
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available(): pytest.skip("torch.distributed with gloo is not available")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(ROOT / "bench" / "torchrun_check.py")]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "OK: worst relative difference" in r.stdout and "2 ranks, backend gloo" in r.stdout


def test_gpu_bench_python_part_on_cpu():
    pytest.importorskip("diffusers")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_bench.py"), "--device", "cpu", "--quick"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert "DEQ/DDIM" in r.stdout and lines[-1].startswith("diffusers UNet2DModel")


def test_window_never_reports_convergence_further_than_its_tolerance(digits_model):
    # 16 seeds, T = 100, the exact denoiser in float64: converged must mean x_0 within tol of the sequential sample
    s = DDIMSchedule.make(100)
    for seed in range(16):
        x_T = randn(1, 1, 8, 8, seed=seed)
        x0, info = window_sample(digits_model, x_T, s, tol=1e-3)
        assert info.converged, seed
        assert rel(x0, ddim_sample(digits_model, x_T, s)) <= 1e-3, seed
        assert info.checks >= 1 and info.residuals[-1] < 1e-3         # declared on a full check of the final iterate


def test_window_convergence_needs_the_full_check(digits_model):
    # with a freeze threshold as loose as the tolerance, states freeze early; the full check must catch it
    s, x_T = DDIMSchedule.make(100), randn(1, 1, 8, 8, seed=2)
    x0, info = window_sample(digits_model, x_T, s, tol=1e-3, freeze_tol=1e-3)
    assert info.converged and info.residuals[-1] < 1e-3 and rel(x0, ddim_sample(digits_model, x_T, s)) <= 1e-3
    assert info.checks >= 1 and info.windows[-1] == 100


def test_window_unconverged_warns_with_budget_advice(digits_model):
    s, x_T = DDIMSchedule.make(30), randn(1, 1, 8, 8, seed=1)
    with pytest.warns(UserWarning) as rec:
        _, info = window_sample(digits_model, x_T, s, max_iter=3)
    msg = str(rec[0].message)
    assert not info.converged and info.rounds == 3
    for part in ("3 rounds", "residual", "tol 0.001", "max_iter"): assert part in msg, msg


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_window_default_budget_converges_on_the_shipped_model(unet, eta):
    from deq_ddim_nb.ddim import ddim_sample as seq
    s = DDIMSchedule.from_config(20, unet.config, eta=eta, dtype=torch.float32)
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        x_T = torch.randn((1, *unet.config["sample_shape"]), generator=g)
        nz = draw_noise(s, x_T, g) if eta else None
        with warnings.catch_warnings():
            warnings.simplefilter("error")                              # an unconverged default would fail here
            with torch.no_grad(): x0, info = window_sample(unet, x_T, s, noise=nz)
        assert info.converged and rel(x0, seq(unet, x_T, s, nz)) <= 1e-3


def test_window_max_batch_gives_identical_results_float64(digits_model):
    s, x_T = DDIMSchedule.make(30), randn(3, 1, 8, 8, seed=7)
    sizes = []
    def pointwise(x, t):                                                 # row by row: equal bits for any batching
        sizes.append(len(x)); return torch.tanh(x) * (1 + t.view(-1, 1, 1, 1) / 1000)
    a, ia = window_sample(pointwise, x_T, s)
    full = max(sizes); sizes.clear()
    b, ib = window_sample(pointwise, x_T, s, max_batch=8)
    assert torch.equal(a, b) and torch.equal(ia.xs, ib.xs) and ia.rounds == ib.rounds and max(sizes) <= 8 < full
    sizes.clear()                                                        # with devices: each capped call is then split
    c, _ = window_sample(pointwise, x_T, s, max_batch=4, devices=["cpu", "cpu"])
    assert torch.equal(a, c) and max(sizes) <= 2
    # a real denoiser (float64): the same samples up to the rounding of differently sized matrix products
    assert rel(window_sample(digits_model, x_T, s, max_batch=8)[0], window_sample(digits_model, x_T, s)[0]) < 1e-12
    with pytest.raises(ValueError, match="max_batch"): window_sample(digits_model, x_T, s, max_batch=0)
    with pytest.raises(TypeError, match="max_batch"): window_sample(digits_model, x_T, s, max_batch=2.5)


class _NotATensor:
    "A pickled object of an arbitrary class: loading it would run code from the file."


def test_load_image_shards_refuses_pickled_code(tmp_path):
    "Shards load with weights_only=True: tensors and numbers come back, an arbitrary pickled object is refused."
    from deq_ddim_nb.distributed import load_image_shards
    imgs = torch.arange(6.0).reshape(3, 1, 1, 2)
    torch.save({"indices": torch.tensor([2, 0, 1]), "images": imgs, "seed": 0, "n": 3}, tmp_path / "rank00000.pt")
    assert torch.equal(load_image_shards(tmp_path), imgs[torch.tensor([2, 0, 1]).argsort()])
    torch.save({"indices": torch.tensor([0]), "images": imgs[:1], "seed": 0, "n": 1, "x": _NotATensor()}, tmp_path / "rank00000.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|not allowed|unsupported"):
        load_image_shards(tmp_path)


# ---------- one validation policy, one set of keyword options ----------
@pytest.mark.parametrize("bad,exc", [(2.5, TypeError), (0, ValueError), (True, TypeError)])
def test_max_iter_is_checked_the_same_way_by_both_samplers(digits_model, bad, exc):
    s, x_T = DDIMSchedule.make(5), randn(1, 1, 8, 8)
    for sampler in (deq_sample, window_sample):
        with pytest.raises(exc, match="max_iter"): sampler(digits_model, x_T, s, max_iter=bad)


def test_samplers_share_their_keyword_only_options():
    deq, win = inspect.signature(deq_sample).parameters, inspect.signature(window_sample).parameters
    shared = ("tol", "max_iter", "init", "noise", "devices", "max_batch", "generator", "progress", "callback", "check")
    for name in shared:
        assert deq[name].kind is win[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert list(win)[:3] == list(deq)[:3] == ["eps_model", "x_T", "sched"]


def test_window_default_budget_is_window_budget(digits_model):
    s, x_T = DDIMSchedule.make(12), randn(1, 1, 8, 8, seed=3)
    assert window_budget(12) == 25
    _, info = window_sample(digits_model, x_T, s)
    assert info.max_iter == window_budget(12) and info.converged
    with pytest.raises(ValueError, match="T must be >= 1"): window_budget(0)


def test_window_generator_draws_the_sddim_noises_as_deq_sample_does(digits_model):
    from deq_ddim_nb.ddim import draw_noise
    s, x_T = DDIMSchedule.make(15, eta=0.8), randn(1, 1, 8, 8, seed=4)
    x0, _ = window_sample(digits_model, x_T, s, tol=1e-9, generator=torch.Generator().manual_seed(5))
    nz = draw_noise(s, x_T, torch.Generator().manual_seed(5))
    assert rel(x0, ddim_sample(digits_model, x_T, s, nz)) < 1e-8


def test_parallel_does_not_import_the_benchmark():
    code = ("import sys, deq_ddim_nb.parallel as p; assert 'deq_ddim_nb.benchmark' not in sys.modules; "
            "assert not hasattr(p, 'run_bench') and not hasattr(p, '__getattr__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_sample_images_never_replaces_rank_files_unasked(digits_model, tmp_path):
    s = DDIMSchedule.make(5)
    a = sample_images(digits_model, s, 3, sampler="ddim", dtype=torch.float64, out_dir=tmp_path)
    before = (tmp_path / "rank00000.pt").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sample_images(digits_model, s, 3, sampler="ddim", dtype=torch.float64, seed=9, out_dir=tmp_path)
    assert (tmp_path / "rank00000.pt").read_bytes() == before
    b = sample_images(digits_model, s, 3, sampler="ddim", dtype=torch.float64, seed=9, out_dir=tmp_path, overwrite=True)
    from deq_ddim_nb.distributed import load_image_shards
    assert torch.equal(load_image_shards(tmp_path), b) and not torch.equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank00000.pt"]     # no temporary file left behind


# ---------- the lesson's exercises ----------
NB09 = ROOT / "nbs" / "09_parallel.ipynb"


def _src(c):
    return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


def _exercise_namespace():
    ns = {}
    exec("import math, torch\nfrom deq_ddim_nb.parallel import *\nfrom deq_ddim_nb.files import read_recorded\n"
         "from deq_ddim_nb.schedules import DDIMSchedule\nfrom deq_ddim_nb.toy import digits_eps", ns)
    return ns


def test_lesson_exercises_fail_a_wrong_answer_and_pass_the_reference():
    from deq_ddim_nb.classroom import exercises
    nb = json.loads(NB09.read_text())
    exs = exercises(nb, NB09.name)
    assert len(exs) >= 2 and all(e.has_metadata for e in exs)
    assert any("pen and paper" in _src(nb["cells"][e.question]).lower() for e in exs)
    strip = lambda s: "\n".join(l for l in s.splitlines() if not l.startswith("#|"))
    for e in exs:
        check = strip(_src(nb["cells"][e.check]))
        ns = _exercise_namespace(); exec(strip(_src(nb["cells"][e.solution])), ns); exec(check, ns)      # the reference passes
        for name in e.answers: assert name in ns, (e.number, name)
        ns = _exercise_namespace(); exec(e.wrong, ns)
        with pytest.raises(AssertionError): exec(check, ns)                                       # the wrong answer fails
        # the check reads nothing else from the lesson: it passes on the answers alone
        ns_ref = _exercise_namespace(); exec(strip(_src(nb["cells"][e.solution])), ns_ref)
        only = {**_exercise_namespace(), **{n: ns_ref[n] for n in e.answers}}
        exec(check, only)


# ---------- the scripts behind the lesson's recorded results ----------
def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_paper_solver_script_on_the_exact_denoiser(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "paper_solver.py"), "--model", "toy", "--T", "12", "--seeds", "0", "2",
                        "--out", str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import csv
    rows = list(csv.DictReader(open(tmp_path / "paper_solver_T12_toy.csv")))
    traces = list(csv.DictReader(open(tmp_path / "paper_solver_T12_toy_traces.csv")))
    assert {r["solver"] for r in rows} == set(_load_script("paper_solver").SOLVERS) and len(rows) == 12
    for row in rows:
        n = sum(t["solver"] == row["solver"] and t["seed"] == row["seed"] for t in traces)
        assert n == int(row["rounds"])                                          # one trace line per round
        if row["solver"] == "anderson-authors": assert int(row["rounds"]) <= 15
        if row["solver"] in ("chain_newton", "picard"):                       # exact after at most T rounds on the toy
            assert row["converged"] == "True" and int(row["rounds"]) <= 13 and float(row["x0_err"]) < 1e-3


def test_stays_below_counts_from_the_last_crossing():
    sb = _load_script("paper_solver").stays_below
    assert sb([1, 0.1, 1e-4, 2e-3, 1e-4], 1e-3) == 5 and sb([1e-4], 1e-3) == 1 and sb([1, 2], 1e-3) == math.inf


def test_recorded_paper_solver_rows_reproduce_for_seed_0():
    "The lesson's recorded study: rerun seed 0 of the paper's Anderson and of chain_newton on the shipped UNet."
    from deq_ddim_nb.files import read_recorded
    from deq_ddim_nb.models import load_model
    ps = _load_script("paper_solver")
    rows = {(r["solver"], int(r["seed"])): r for r in read_recorded("paper_solver_T100.csv")}
    assert {int(s) for _, s in rows} >= set(range(8))                          # at least eight seeds
    model = load_model("digits")
    sched = DDIMSchedule.from_config(100, model.config, dtype=torch.float32)
    x_T = torch.randn((1, *model.config["sample_shape"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): ref = ddim_sample(model, x_T, sched)
    for name in ("anderson-authors", "chain_newton"):
        row, _ = ps.run_solver(name, model, x_T, sched, ref)
        rec = rows[(name, 0)]
        assert row["rounds"] == int(rec["rounds"]) and row["converged"] == (rec["converged"] == "True"), name
        assert abs(row["x0_err"] - float(rec["x0_err"])) <= 0.05 * float(rec["x0_err"]), name


def test_threads_study_script_records_what_the_lesson_reads(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "threads_study.py"), "--threads", "1", "--sizes", "1", "2", "4",
                        "--T", "4", "--seeds", "1", "--repeats", "1", "--runs", "1", "--out", str(tmp_path)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = json.loads((tmp_path / "threads_study.json").read_text())
    one = d["threads"]["1"]
    assert d["T"] == 4 and set(one["call_seconds"]) == {"1", "2", "4"} and d["raw"][0]["torch_threads"] == 1
    assert one["batch_T_over_1"] == pytest.approx(one["call_seconds"]["4"] / one["call_seconds"]["1"])
    assert one["deq"]["anderson-authors"]["rounds"] <= 15 and one["deq"]["chain_newton"]["rounds"] <= 5


def test_recorded_threads_study_has_what_the_lesson_reads():
    from deq_ddim_nb.files import read_recorded
    d = read_recorded("threads_study.json")
    assert {"1", "2"} <= set(d["threads"]) and d["T"] == 100
    for n, s in d["threads"].items():
        assert s["batch_T_over_1"] == pytest.approx(s["call_seconds"]["100"] / s["call_seconds"]["1"])
        assert d["raw"] and all(r["torch_threads"] == int(r["threads"]) for r in d["raw"])

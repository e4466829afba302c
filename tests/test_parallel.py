"deq_ddim_nb.parallel: starts, the sliding window, sharded and torch.distributed sampling, the benchmark and GPU scripts."
import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import randn, rel
from deq_ddim_nb.ddim import ddim_sample, draw_noise
from deq_ddim_nb.deq import ShardedEps, deq_sample, deq_update
from deq_ddim_nb.parallel import (coarse_init, make_init, scaled_init, window_sample, sample_images, image_inputs,
                                  shard_bounds, DistributedEps, measure_variant, VARIANTS, bench_main)
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
    with pytest.raises(ValueError, match="K"): coarse_init(digits_model, x_T, s, 26)


def test_window_of_one_is_sequential_ddim(digits_model):
    s, x_T = DDIMSchedule.make(20), randn(1, 1, 8, 8, seed=2)
    x0, info = window_sample(digits_model, x_T, s, window=1)
    assert info.rounds == 20 and info.nfe == 20 and info.converged
    assert rel(x0, ddim_sample(digits_model, x_T, s)) < 1e-12


def test_window_reaches_sequential_sample_with_fewer_evaluations_than_picard(digits_model):
    s, x_T = DDIMSchedule.make(50), randn(2, 1, 8, 8, seed=3)
    ref = ddim_sample(digits_model, x_T, s)
    x0, info = window_sample(digits_model, x_T, s, tol=1e-4)
    _, pic = deq_sample(digits_model, x_T, s, solver="picard", max_iter=50, tol=1e-6)
    assert info.converged and rel(x0, ref) < 1e-6
    assert info.nfe < pic.nfe and len(info.residuals) == info.rounds == len(info.windows)


def test_eq24_window_with_noise_solves_sddim(digits_model):
    s, x_T = DDIMSchedule.make(20, eta=1.0), randn(1, 1, 8, 8, seed=4)
    nz = draw_noise(s, x_T, torch.Generator().manual_seed(0))
    x0, _ = window_sample(digits_model, x_T, s, noise=nz, tol=1e-7)
    assert rel(x0, ddim_sample(digits_model, x_T, s, nz)) < 1e-8


def test_window_bad_inputs(digits_model):
    s, x_T = DDIMSchedule.make(5), randn(1, 1, 8, 8)
    for kw, msg in ((dict(window=0), "window must be"), (dict(window=2.5), "window must be"), (dict(tol=0), "tol must be"),
                    (dict(max_iter=0), "max_iter must be"), (dict(init="nope"), "init must be")):
        with pytest.raises(ValueError, match=msg): window_sample(digits_model, x_T, s, **kw)
    with pytest.raises(TypeError, match="DDIMSchedule"): window_sample(digits_model, x_T, "sched")
    with pytest.raises(ValueError, match="shape"): window_sample(digits_model, x_T, s, noise=torch.zeros(4, 1, 1, 8, 8, dtype=torch.float64))


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
    with pytest.raises(ValueError, match="rank"): shard_bounds(4, 2, 2)


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


def test_measure_variant_counts_rounds_and_start_cost(digits_model):
    s, x_T = DDIMSchedule.make(20), randn(1, 1, 8, 8, seed=6)
    ref = ddim_sample(digits_model, x_T, s)
    r = measure_variant(digits_model, x_T, s, ref, "picard")
    assert r["reached"] and r["rounds"] <= 20 and r["nfe"] == 20 * r["rounds"] and r["final_err"] < 1e-3
    c = measure_variant(digits_model, x_T, s, ref, "anderson-tri+coarse4")
    assert c["reached"] and c["nfe"] == 4 + 20 * (c["rounds"] - 4)
    short = measure_variant(digits_model, x_T, s, ref, "picard", max_rounds=2)
    assert not short["reached"] and short["rounds"] == float("inf")
    with pytest.raises(ValueError, match="variant must be one of"): measure_variant(digits_model, x_T, s, ref, "nope")
    assert {"picard", "anderson-paper", "anderson-tri", "broyden", "window"} <= set(VARIANTS)


def test_benchmark_script_runs_on_a_tiny_grid(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "benchmark.py"), "--quick", "--out", str(tmp_path), "--no-progress"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for f in ("speed.csv", "speed.md", "speed_traces.json", "speed_rounds.png", "speed_traces.png"): assert (tmp_path / f).stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "speed.csv")))
    assert rows and all(r["reached"] == "True" for r in rows)
    assert "| toy | 10 | 1 | anderson-tri |" in (tmp_path / "speed.md").read_text() and "| model | T |" in r.stdout
    assert bench_main(["--quick", "--out", str(tmp_path), "--report-only"]) == 0
    assert bench_main(["--quick", "--out", str(tmp_path), "--T", "999", "--no-progress"]) == 2


def test_gpu_bench_python_part_on_cpu():
    pytest.importorskip("diffusers")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_bench.py"), "--device", "cpu", "--quick"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert "DEQ/DDIM" in r.stdout and lines[-1].startswith("diffusers UNet2DModel")

"""GPU check and timing: sequential DDIM vs DEQ-DDIM for one image at T in {100, 1000}.

    python bench/gpu_bench.py                       # on a CUDA machine (what bench/gpu.sh runs)
    python bench/gpu_bench.py --device cpu --quick  # tiny sizes, checks the script itself on a CPU

Models: the shipped digits UNet (16x16) and a 32x32 diffusers UNet2DModel built here with random weights (no download).
For each: correctness (DEQ x_0 vs the sequential x_0, relative), then median wall times of DDIM and of DEQ
(triangular Anderson, stopped at relative residual 1e-3) and their ratio. The table is printed last.
"""
import argparse
import os
import statistics
import sys
import time

import torch


def timed(fn, device, repeats):
    out, times = None, []
    for _ in range(repeats + 1):                      # the first run warms up (cuDNN autotuning, allocator)
        if device.type == "cuda": torch.cuda.synchronize(device)
        t0 = time.perf_counter(); out = fn()
        if device.type == "cuda": torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times[1:])


def random_diffusers_unet(size, device, dtype):
    "A 32x32 UNet2DModel like the DDPM CIFAR-10 one, scaled down, randomly initialised."
    from diffusers import UNet2DModel
    from deq_ddim_nb.models import DiffusersEps
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64, 64),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), layers_per_block=1)
    unet = unet.to(device).eval().requires_grad_(False)            # built in float32: no cast
    config = dict(name=f"UNet2DModel {size}x{size} (random)", n_train=1000, beta_start=1e-4, beta_end=0.02,
                  beta_schedule="linear", sample_shape=(3, size, size))
    return DiffusersEps(unet, config).to(device).eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="T in {10, 20}, one repeat, a 16x16 diffusers model")
    p.add_argument("--T", nargs="+", type=int)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-iter", type=int, default=30)
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_bench: error: --device cuda but torch.cuda.is_available() is False (use --device cpu --quick to test the script)")
        return 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from deq_ddim_nb.schedules import DDIMSchedule
    from deq_ddim_nb.ddim import ddim_sample
    from deq_ddim_nb.deq import deq_sample
    from deq_ddim_nb.models import load_model
    from deq_ddim_nb.parallel import batch_efficiency
    device = torch.device(args.device)
    Ts = args.T or ((10, 20) if args.quick else (100, 1000))
    repeats = 1 if args.quick else args.repeats
    models = {"digits UNet 16x16": load_model("digits", device=device),
              "diffusers UNet2DModel": random_diffusers_unet(16 if args.quick else 32, device, torch.float32)}
    rows, failures = [], []
    for name, model in models.items():
        eff = {e["batch"]: e["ms_per_state"] for e in batch_efficiency(model, (1, *Ts), repeats=repeats, device=device)}
        for T in Ts:
            sched = DDIMSchedule.from_config(T, model.config, dtype=torch.float32)
            x_T = torch.randn((1, *model.config["sample_shape"]), generator=torch.Generator().manual_seed(0)).to(device)
            with torch.no_grad():
                ref, t_ddim = timed(lambda: ddim_sample(model, x_T, sched), device, repeats)
                (x0, info), t_deq = timed(lambda: deq_sample(model, x_T, sched, max_iter=args.max_iter), device, repeats)
            err = float(torch.linalg.vector_norm(x0 - ref) / torch.linalg.vector_norm(ref))
            # a stop at residual 1e-3 leaves x_0 within about 1e-2 of the sequential sample; random weights may not converge
            ok = bool(torch.isfinite(x0).all()) and (err < 2e-2 or "random" in model.config["name"])   # random weights: timing only
            if not ok: failures.append(f"{name} T={T}: rel. error {err:.1e}")
            rows.append((name, T, info.rounds, err, t_ddim, t_deq, t_deq / t_ddim,
                         eff[T] / eff[1]))
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\nDDIM vs DEQ-DDIM, one image, float32, {dev}, median of {repeats} run(s)")
    print(f"{'model':24s} {'T':>5s} {'rounds':>6s} {'rel.err':>8s} {'DDIM s':>8s} {'DEQ s':>8s} {'DEQ/DDIM':>9s} {'cost/state, batch T vs 1':>26s}")
    for r in rows:
        print(f"{r[0]:24s} {r[1]:5d} {r[2]:6d} {r[3]:8.1e} {r[4]:8.3f} {r[5]:8.3f} {r[6]:9.2f} {r[7]:26.3f}")
    if failures: print("FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

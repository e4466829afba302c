"""GPU check and timing: sequential DDIM vs DEQ-DDIM at T in {100, 1000}, batches of 1 and 16, one GPU and all GPUs.

    python bench/gpu_bench.py                       # on a CUDA machine (what bench/gpu.sh runs)
    python bench/gpu_bench.py --device cpu --quick  # tiny sizes, checks the script itself on a CPU (2 "devices": cpu, cpu)

Models: the shipped digits UNet (16x16) and a 32x32 diffusers UNet2DModel built here with random weights (no download).
For each T, batch and device set: correctness (DEQ x_0 vs the sequential x_0, relative), then median wall times of
sequential DDIM (on one device) and of DEQ (`deq_sample`'s defaults, each round split over the device set with
`devices=`, at most --max-batch states per call) and their ratio. The table is printed last.
"""
import argparse
import os
import statistics
import sys
import time
import warnings

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
    p.add_argument("--quick", action="store_true", help="T in {10, 20}, batches 1 and 2, one repeat, a 16x16 diffusers model")
    p.add_argument("--T", nargs="+", type=int)
    p.add_argument("--batches", nargs="+", type=int, help="images per batch (default 1 16)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-iter", type=int, default=None, help="DEQ round budget (default: deq_sample's)")
    p.add_argument("--max-batch", type=int, default=4096, help="at most this many states per model call")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_bench: error: --device cuda but torch.cuda.is_available() is False (use --device cpu --quick to test the script)")
        return 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from deq_ddim_nb.schedules import DDIMSchedule
    from deq_ddim_nb.ddim import ddim_sample
    from deq_ddim_nb.deq import deq_sample
    from deq_ddim_nb.models import load_model
    device = torch.device(args.device)
    Ts = args.T or ((10, 20) if args.quick else (100, 1000))
    batches = args.batches or ((1, 2) if args.quick else (1, 16))
    repeats = 1 if args.quick else args.repeats
    if device.type == "cuda":
        n = torch.cuda.device_count()
        device_sets = [("1 GPU", [device])] + ([(f"{n} GPUs", [f"cuda:{i}" for i in range(n)])] if n >= 2 else [])
    else:                                                # exercises the split on a CPU
        device_sets = [("1 device", [device]), ("2 devices", [device, device])]
    models = {"digits UNet 16x16": load_model("digits", device=device),
              "diffusers UNet2DModel": random_diffusers_unet(16 if args.quick else 32, device, torch.float32)}
    rows, failures = [], []
    for name, model in models.items():
        for T in Ts:
            sched = DDIMSchedule.from_config(T, model.config, dtype=torch.float32)
            for B in batches:
                x_T = torch.randn((B, *model.config["sample_shape"]), generator=torch.Generator().manual_seed(0)).to(device)
                with torch.no_grad():
                    ref, t_ddim = timed(lambda: ddim_sample(model, x_T, sched), device, repeats)
                for label, devs in device_sets:
                    with torch.no_grad(), warnings.catch_warnings(record=True) as warned:
                        warnings.simplefilter("always")
                        (x0, info), t_deq = timed(lambda: deq_sample(model, x_T, sched, max_iter=args.max_iter, devices=devs,
                                                                     max_batch=args.max_batch), device, repeats)
                    err = float(torch.linalg.vector_norm(x0 - ref) / torch.linalg.vector_norm(ref))
                    # random weights may not converge: timing only for them
                    ok = bool(torch.isfinite(x0).all()) and (err < 2e-2 or "random" in model.config["name"])
                    if not ok: failures.append(f"{name} T={T} B={B} {label}: rel. error {err:.1e}")
                    rows.append((name, T, B, label, info.rounds, info.converged, err, t_ddim, t_deq, t_deq / t_ddim))
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\nDDIM vs DEQ-DDIM, float32, {dev}, median of {repeats} run(s); DDIM runs on one device")
    print(f"{'model':24s} {'T':>5s} {'B':>3s} {'devices':>9s} {'rounds':>6s} {'conv.':>5s} {'rel.err':>8s} {'DDIM s':>8s} {'DEQ s':>8s} {'DEQ/DDIM':>9s}")
    for r in rows:
        print(f"{r[0]:24s} {r[1]:5d} {r[2]:3d} {r[3]:>9s} {r[4]:6d} {r[5]!s:>5s} {r[6]:8.1e} {r[7]:8.3f} {r[8]:8.3f} {r[9]:9.2f}")
    if failures: print("FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of deq_sample against the chain length T, with and without `max_batch`, on the shipped digits UNet.

    OMP_NUM_THREADS=1 python bench/peak_memory_T.py [--T 100 1000] [--max-batch 50] [--rounds 2] [--device cpu]

Each setting runs in a fresh subprocess: load the model, draw x_T (one image), record the resident set size (RSS), run
`deq_sample(model, x_T, sched, max_iter=ROUNDS, max_batch=...)` (a fixed number of rounds: convergence does not matter
for memory, and the non-convergence warning is silenced), then read the process's peak RSS (`resource.getrusage(
RUSAGE_SELF).ru_maxrss`; on CUDA also `torch.cuda.max_memory_allocated`). Prints a table with the peak, the increment
over the RSS before the solve, and the T=max/T=min ratio per max_batch setting. Writes nothing.
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, warnings, torch
torch.set_num_threads(1)
from deq_ddim_nb.models import load_model
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.deq import deq_sample
T, max_batch, rounds, device = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = load_model("digits", device=device)
s = DDIMSchedule.from_config(T, model.config)
x_T = torch.randn((1, *model.config["sample_shape"]), generator=torch.Generator().manual_seed(0)).to(device)
with torch.no_grad(): model(x_T, torch.zeros(1, dtype=torch.long, device=device))      # warm-up: allocator, kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if device.startswith("cuda"): torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)                 # a fixed number of rounds: unconverged by design
    x0, info = deq_sample(model, x_T, s, solver="anderson", max_iter=rounds, max_batch=max_batch or None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
cuda = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
print(json.dumps(dict(rss_before_mb=before, peak_rss_mb=peak, cuda_peak_mb=cuda, rounds=info.rounds)))
"""


def run(T, max_batch, rounds, device):
    "One fresh child process; returns its JSON line."
    out = subprocess.run([sys.executable, "-c", CHILD, str(T), str(max_batch), str(rounds), device], capture_output=True,
                         text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--max-batch", type=int, default=50, help="the capped setting (0 runs only the uncapped one)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    settings = [0] + ([args.max_batch] if args.max_batch else [])
    print(f"shipped digits UNet, one image, {args.rounds} Anderson rounds, device {args.device}; RSS in MiB (peak of the process)")
    print(f"{'T':>5} {'max_batch':>9} | {'RSS before':>10} {'peak RSS':>9} {'increment':>9} | {'CUDA peak':>9}")
    res = {}
    for mb in settings:
        for T in args.T:
            r = res[mb, T] = run(T, mb, args.rounds, args.device)
            print(f"{T:5d} {mb or 'None':>9} | {r['rss_before_mb']:10.0f} {r['peak_rss_mb']:9.0f} "
                  f"{r['peak_rss_mb'] - r['rss_before_mb']:9.0f} | {r['cuda_peak_mb']:9.1f}", flush=True)
    lo, hi = min(args.T), max(args.T)
    for mb in settings:
        a, b = res[mb, lo], res[mb, hi]
        key = "cuda_peak_mb" if args.device.startswith("cuda") else "peak_rss_mb"
        print(f"max_batch={mb or 'None'}: peak T={hi} / T={lo} = {b[key] / a[key]:.2f}x "
              f"(increment {b['peak_rss_mb'] - b['rss_before_mb']:.0f} vs {a['peak_rss_mb'] - a['rss_before_mb']:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

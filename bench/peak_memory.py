"""Peak memory of one inversion run per (method, T), each in a fresh subprocess (resource.getrusage(RUSAGE_CHILDREN) on
CPU; torch.cuda.max_memory_allocated on GPU). Usage:
    OMP_NUM_THREADS=1 python bench/peak_memory.py [--T 10 20 100] [--targets 10] [--epochs 1] [--device cpu] [--out DIR | --record] [--force]
Prints a table and writes inversion_memory.csv into --out (default: the user's cache folder), or with --record into the
package's recorded results as deq_ddim_nb/assets/results/inversion_memory.csv (method,T,targets,peak_rss_mb,increment_mb,
cuda_peak_mb,device,max_batch), which lesson 08 reads with deq_ddim_nb.files.read_recorded. Every run is invert() with
its defaults from x_T ~ N(0, I) drawn from seed 0."""
import argparse, csv, io, json, os, resource, subprocess, sys
from pathlib import Path
from deq_ddim_nb.files import csv_text
from _results import Results, add_output_args

CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from deq_ddim_nb.models import load_model
from deq_ddim_nb.toy import digits_data
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.inversion import invert
method, T, B, epochs, device, max_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
m = load_model("digits", device=device)
x = digits_data(16, "test", torch.float32)[0][:B].to(device)
s = DDIMSchedule.from_config(T, m.config)
if device.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
if method != "none":
    meth, grad = {"bptt": ("bptt", "phantom"), "deq": ("deq", "phantom"), "deq_ift": ("deq", "ift")}[method]
    invert(m, x, s, method=meth, grad=grad, epochs=epochs, init="random", seed=0, progress=False,
           max_batch=max_batch or None)
cuda = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
print(json.dumps(dict(cuda_peak_mb=cuda)))
"""

def run(method, T, B, epochs, device, max_batch):
    "Run one child and return (its peak RSS in MiB, its CUDA peak in MiB)."
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(T), str(B), str(epochs), device, str(max_batch)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss        # KiB on Linux: the max over children so far
    if rss <= before: rss = float("nan")                                 # hidden by an earlier, larger child
    return rss / 1024, json.loads(out.stdout.strip().splitlines()[-1])["cuda_peak_mb"]

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[10, 20, 100])
    p.add_argument("--methods", nargs="+", default=["deq", "bptt"])
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=100, help="images per model call in the DEQ solve (0: all T·B at once)")
    p.add_argument("--device", default="cpu")
    add_output_args(p)
    a = p.parse_args()
    res = Results(p, a, ["inversion_memory.csv"])                    # checked before any work
    rows = []
    # RUSAGE_CHILDREN keeps the maximum over all children, so run them from small to large expected peak:
    # a child whose peak is below an earlier one's is re-measured alone in its own grandparent (see run_isolated).
    base = run_isolated("none", 10, a)
    for method in a.methods:
        for T in a.T:
            rss, cuda = run_isolated(method, T, a)
            rows.append(dict(method=method, T=T, targets=a.targets, peak_rss_mb=round(rss, 1),
                             increment_mb=round(rss - base[0], 1), cuda_peak_mb=round(cuda, 1), device=a.device,
                             max_batch=a.max_batch))
            print(rows[-1], flush=True)
    res.publish({"inversion_memory.csv": csv_text(rows)})           # the old file or the new one, never half
    print(f"baseline (model + data loaded, no inversion): {base[0]:.1f} MiB; wrote {res.path('inversion_memory.csv')}")

def run_isolated(method, T, a):
    "One measurement in a fresh grandparent, so RUSAGE_CHILDREN holds exactly this child's peak."
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import peak_memory as pm, json; "
            f"print(json.dumps(pm.run({method!r}, {T}, {a.targets}, {a.epochs}, {a.device!r}, {a.max_batch})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))

if __name__ == "__main__": main()

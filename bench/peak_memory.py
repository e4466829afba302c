"""Peak memory of one inversion run per (method, T), each in a fresh subprocess (resource.getrusage(RUSAGE_CHILDREN) on
CPU; torch.cuda.max_memory_allocated on GPU). Usage:
    OMP_NUM_THREADS=1 python bench/peak_memory.py [--T 10 20 100] [--targets 10] [--epochs 3] [--device cpu] [--out FILE]
Prints a table and writes bench/results/inversion_memory.csv (method,T,peak_rss_mb,increment_mb,cuda_peak_mb)."""
import argparse, csv, json, os, resource, subprocess, sys
from pathlib import Path

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
x_T = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device)
if device.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
if method != "none":
    meth, grad = {"bptt": ("bptt", "phantom"), "deq": ("deq", "phantom"), "deq_ift": ("deq", "ift")}[method]
    invert(m, x, s, method=meth, grad=grad, epochs=epochs, init=x_T, progress=False, max_batch=max_batch or None,
           solver_kwargs=dict(solver="picard", tol=1e-2))
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
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=100, help="images per model call in the DEQ solve (0: all T·B at once)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "inversion_memory.csv"))
    a = p.parse_args()
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
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
    print(f"baseline (model + data loaded, no inversion): {base[0]:.1f} MiB; wrote {a.out}")

def run_isolated(method, T, a):
    "One measurement in a fresh grandparent, so RUSAGE_CHILDREN holds exactly this child's peak."
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import peak_memory as pm, json; "
            f"print(json.dumps(pm.run({method!r}, {T}, {a.targets}, {a.epochs}, {a.device!r}, {a.max_batch})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))

if __name__ == "__main__": main()

"""How much does one table cell's d_F^2 move with the seed? (the DDPM T=100 question in nbs/07_quality.ipynb)

    python bench/fd_spread.py [--n 256] [--Ts 50 100] [--seeds 0 1 2 3 4] [--methods "DDPM (sequential, eta=1)"]

Each (method, T, seed) draws its own x_T and noises (`generate(..., seed=seed)`; seed 0 is the table's draw) and
scores n samples with the shipped classifier, as bench/quality_table.py does. Rows are merged into the fd_spread.csv in
--out (default: the user's cache folder) or, with --record, in the package's recorded results (a rerun replaces its own
cells; replacing the file needs --force), so the grid can be grown a piece at a time.
"""
import argparse
import csv
import io
import time

import torch
from deq_ddim_nb.models import load_model
from deq_ddim_nb.files import csv_text
from deq_ddim_nb.quality import METHODS, generate, load_classifier, sample_quality
from _results import Results, add_output_args

NAME = "fd_spread.csv"
FIELDS = ["method", "T", "seed", "n", "fd", "confidence", "min_class_share", "max_class_share", "seconds"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--Ts", type=int, nargs="+", default=[50, 100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--methods", nargs="+", default=["DDPM (sequential, eta=1)"], choices=[m for m, (e, k) in METHODS.items() if k == "ddim"],
                   help="sequential methods only (the DEQ ones reproduce them; see quality.csv)")
    add_output_args(p)
    a = p.parse_args()
    res = Results(p, a, [NAME])                                      # checked before any work
    old = res.existing(NAME)
    rows = list(csv.DictReader(io.StringIO(old))) if old else []
    torch.set_num_threads(1)
    model, clf = load_model("digits"), load_classifier()
    for m in a.methods:
        for T in a.Ts:
            for seed in a.seeds:
                t0 = time.perf_counter()
                x, _ = generate(model, m, T, a.n, seed=seed)
                q = sample_quality(x, clf)
                row = dict(method=m, T=T, seed=seed, n=a.n, fd=round(q["fd"], 3), confidence=round(q["confidence"], 4),
                           min_class_share=round(min(q["class_hist"]), 3), max_class_share=round(max(q["class_hist"]), 3),
                           seconds=round(time.perf_counter() - t0, 1))
                print(row, flush=True)
                key = lambda r: (r["method"], int(r["T"]), int(r["seed"]), int(r["n"]))
                rows = sorted([r for r in rows if key(r) != key(row)] + [row], key=key)
                res.publish({NAME: csv_text(rows, FIELDS)})           # after every cell: a long run keeps its progress
    summarize(rows)


def summarize(rows):
    import statistics as st
    for k in sorted({(r["method"], int(r["T"]), int(r["n"])) for r in rows}):
        fds = [float(r["fd"]) for r in rows if (r["method"], int(r["T"]), int(r["n"])) == k]
        print(f"{k[0]} T={k[1]} n={k[2]}: seeds {len(fds)}, d_F^2 median {st.median(fds):.2f}, min {min(fds):.2f}, max {max(fds):.2f}")


if __name__ == "__main__":
    main()

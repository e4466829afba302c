"""Choose deq_sample's Anderson settings on validation seeds, then measure them on the test seeds.

    python bench/anderson_sweep.py [--val 8 32] [--test 0 8]

Model: the exact denoiser of the digits training split (8x8, float64), T=100, one image per solve, m=5, triangular
coefficients. Metric: the first round at which x_0 of the iterate is within 1e-3 (relative) of the sequential DDIM
sample (no stopping rule involved). The grid spans restart_after x restart x lam x mixing; the chosen setting has the
smallest worst case over the validation seeds (ties: smallest mean). The test seeds 0-7 are the ones issue 2 names,
and are never used for the choice. Writes anderson_sweep.csv into --out (default: the user's cache folder), or into
the package's recorded results with --record (--force replaces a file that is there).
"""
import argparse
import itertools
import time

import numpy as np
import torch
from deq_ddim_nb.ddim import ddim_sample
from deq_ddim_nb.deq import DEQ_ANDERSON, deq_sample
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.files import csv_text
from deq_ddim_nb.toy import digits_eps
from _results import Results, add_output_args


def rounds_to_1e3(model, s, seed, max_iter=40, **kw):
    x_T = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ref, errs = ddim_sample(model, x_T, s), []
    deq_sample(model, x_T, s, solver="anderson", m=5, max_iter=max_iter, tol=1e-14,
               callback=lambda k, z, fz, r: errs.append(float((fz[0] - ref).norm() / ref.norm())), **kw)
    return next((k + 1 for k, e in enumerate(errs) if e < 1e-3), max_iter + 1)   # max_iter + 1: never within 1e-3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--val", type=int, nargs=2, default=[8, 32], help="validation seeds: range(a, b)")
    p.add_argument("--test", type=int, nargs=2, default=[0, 8], help="test seeds: range(a, b)")
    add_output_args(p)
    a = p.parse_args()
    res = Results(p, a, ["anderson_sweep.csv"])                     # checked before any work
    torch.set_num_threads(1)                                         # the recorded rounds do not depend on it; the time does
    model, s = digits_eps(), DDIMSchedule.make(100)
    grid = [dict(restart=r, restart_after=g, lam=l, mixing=mx)
            for g, r, l, mx in itertools.product([0, 3, 5, 8], [1.0, 1.5], [1e-4, 1e-6], [1.0, 0.9])]
    grid.append(dict(restart=None, restart_after=0, lam=1e-4, mixing=1.0))        # no safeguard (textbook settings)
    rows, t0 = [], time.perf_counter()
    for kw in grid:
        val = [rounds_to_1e3(model, s, sd, **kw) for sd in range(*a.val)]
        rows.append(dict(kw, val_max=max(val), val_mean=round(float(np.mean(val)), 2), val_median=float(np.median(val))))
        print(rows[-1], flush=True)
    best = min(rows, key=lambda r: (r["val_max"], r["val_mean"]))
    chosen = {k: best[k] for k in ("restart", "restart_after", "lam", "mixing")}
    for r in rows: r["chosen"] = r is best
    res.publish({"anderson_sweep.csv": csv_text(rows)})
    test = [rounds_to_1e3(model, s, sd, **chosen) for sd in range(*a.test)]
    default = {k: DEQ_ANDERSON[k] for k in chosen}
    print(f"\nchosen on validation seeds {a.val}: {chosen} (worst {best['val_max']}, mean {best['val_mean']})")
    print(f"deq_sample's default:            {default}  {'(the same)' if default == chosen else '(DIFFERENT: update DEQ_ANDERSON)'}")
    print(f"test seeds {a.test}: rounds to 1e-3 {test}, max {max(test)}, median {np.median(test)}  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()

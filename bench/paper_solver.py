"""The paper's solver on the shipped UNet: rounds and x_0 error against sequential DDIM, seed by seed, next to this
package's solvers on the same x_T's.

    OMP_NUM_THREADS=1 python bench/paper_solver.py --record        # seeds 0-15, T = 100: about 10 minutes on one core

Model: the shipped digits UNet (`load_model("digits")`), `DDIMSchedule.from_config(T, model.config)`, float32, one image
per seed (`torch.randn(1, 1, 16, 16)` from `torch.Generator().manual_seed(seed)`, as the speed benchmark draws it).
Solvers, each through the sampler a user calls:

- `anderson-authors`: `deq_sample(solver=authors_anderson, max_iter=15)`, the DEQ-DDIM authors' published settings
  (deq_ddim_nb.benchmark.authors_anderson: m = 5, λ = 1e-3, mixing 1, per-state coefficients, stop when the relative
  residual of the whole stacked trajectory is below 1e-3, at most 15 rounds);
- `anderson-authors-40`: the same with room for 40 rounds, to see where its own stopping rule fires;
- `chain_newton`: `deq_sample` with its defaults (this package's quasi-Newton solver on the chain);
- `anderson`: `deq_sample(solver="anderson")` (this package's triangular Anderson);
- `picard`: `deq_sample(solver="picard")` (plain fixed-point iteration, budget T + 1);
- `window`: `window_sample` with its defaults (ParaDiGMS-style sliding window).

A round is one batched model call. After round k the trace records ||x_0^(k) - x_0^DDIM|| / ||x_0^DDIM||, where x_0^(k)
is the map's output h̃(x)_0 of that round; `x0_err` is the error of the x_0 the sampler returned. Nothing is timed, so a
rerun on the same CPU reproduces the files: paper_solver_T<T>.csv (one row per solver and seed) and
paper_solver_T<T>_traces.csv (one row per solver, seed and round), written together into --out (default: the user's
cache folder), or with --record into the package's recorded results (replacing them only with --force).
"""
import argparse
import math
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch

SOLVERS = ("anderson-authors", "anderson-authors-40", "chain_newton", "anderson", "picard", "window")
FIELDS = ("solver", "T", "seed", "rounds", "evals", "converged", "residual", "x0_err", "rounds_to_1e-3", "rounds_to_1e-2")
TRACE_FIELDS = ("solver", "seed", "round", "x0_err", "residual")


def stays_below(errs, thr):
    "First round (1-based) from which the error stays below thr to the end of the run; inf if it never does."
    for k in range(len(errs)):
        if all(e < thr for e in errs[k:]): return k + 1
    return math.inf


def run_solver(name, model, x_T, sched, ref):
    "One solver on one x_T: (row without solver/T/seed, per-round (x0_err, residual) trace)."
    from deq_ddim_nb.benchmark import authors_anderson
    from deq_ddim_nb.deq import deq_sample
    from deq_ddim_nb.parallel import window_sample
    rel = lambda a: float(torch.linalg.vector_norm(a - ref) / torch.linalg.vector_norm(ref))
    trace = []
    cb = lambda k, z, fz, r: trace.append((rel(fz[0]), float(r)))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")                                  # an unconverged run is recorded, not warned
        if name == "window": x0, info = window_sample(model, x_T, sched, callback=cb)
        else:
            kw = {"anderson-authors": dict(solver=authors_anderson, max_iter=15),
                  "anderson-authors-40": dict(solver=authors_anderson, max_iter=40),
                  "chain_newton": dict(), "anderson": dict(solver="anderson"), "picard": dict(solver="picard")}[name]
            x0, info = deq_sample(model, x_T, sched, callback=cb, **kw)
    errs = [e for e, _ in trace]
    row = dict(rounds=info.rounds, evals=info.nfe, converged=bool(info.converged), residual=info.residuals[-1],
               x0_err=rel(x0), **{"rounds_to_1e-3": stays_below(errs, 1e-3), "rounds_to_1e-2": stays_below(errs, 1e-2)})
    return row, trace


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs=2, default=[0, 16], metavar=("A", "B"), help="seeds range(A, B)")
    p.add_argument("--T", type=int, default=100, help="number of DDIM steps")
    p.add_argument("--model", default="digits", choices=("digits", "toy"), help="toy: the exact 8x8 denoiser (float64), for a quick check")
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    from _results import Results, add_output_args                      # bench/'s shared output options
    add_output_args(p)
    a = p.parse_args(argv)
    stem = f"paper_solver_T{a.T}" + ("" if a.model == "digits" else f"_{a.model}")
    res = Results(p, a, [f"{stem}.csv", f"{stem}_traces.csv"])         # checked before any work
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from deq_ddim_nb.ddim import ddim_sample
    from deq_ddim_nb.files import csv_text
    from deq_ddim_nb.schedules import DDIMSchedule
    if a.model == "digits":
        from deq_ddim_nb.models import load_model
        model, dtype = load_model("digits"), torch.float32
        shape, sched = model.config["sample_shape"], DDIMSchedule.from_config(a.T, model.config, dtype=torch.float32)
    else:
        from deq_ddim_nb.toy import digits_eps
        model, dtype, shape, sched = digits_eps(8), torch.float64, (1, 8, 8), DDIMSchedule.make(a.T)
    rows, traces, t0 = [], [], time.perf_counter()
    for seed in range(*a.seeds):
        x_T = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)
        with torch.no_grad(): ref = ddim_sample(model, x_T, sched)
        for name in a.solvers:
            row, trace = run_solver(name, model, x_T, sched, ref)
            rows.append(dict(solver=name, T=a.T, seed=seed, **row))
            traces += [dict(solver=name, seed=seed, round=k + 1, x0_err=f"{e:.6g}", residual=f"{r:.6g}") for k, (e, r) in enumerate(trace)]
            print(f"seed {seed:2d} {name:20s} rounds {row['rounds']:3d} converged {row['converged']!s:5s} "
                  f"residual {row['residual']:.2e} x_0 error {row['x0_err']:.2e} "
                  f"stays below 1e-3 from round {row['rounds_to_1e-3']}", flush=True)
    for r in rows:
        r["residual"], r["x0_err"] = f"{r['residual']:.6g}", f"{r['x0_err']:.6g}"
    paths = res.publish({f"{stem}.csv": csv_text(rows, FIELDS), f"{stem}_traces.csv": csv_text(traces, TRACE_FIELDS)})
    print(f"wrote {paths[0]} and {paths[1].name} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

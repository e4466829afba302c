"""Fewer DEQ rounds: compare solvers by the rounds they need until x_0 is within 1e-3 of sequential DDIM.

    python bench/rounds_study.py --seeds 100 104 --methods anderson qn_prior chain_newton qn2 qn_jump   # validation
    python bench/rounds_study.py --seeds 1000 1016 --rounds 16 --tag heldout                       # held-out, T = 100
    python bench/rounds_study.py --seeds 1000 1004 --T 1000 --rounds 14 --methods chain_newton --tag T1000
    python bench/rounds_study.py --seeds 1000 1004 --eta 0.5 --rounds 16 --tag eta0.5               # DEQ-sDDIM

Model: the shipped digits UNet (`load_model("digits")`), `DDIMSchedule.from_config(T, model.config)`, float32. One
x_T per seed (`torch.randn(1, 1, 16, 16)` from `torch.Generator().manual_seed(seed)`); the seeds of a run are solved
as one batch, which changes nothing for these solvers (every image is its own problem) except that the run stops when
every image has converged. A round is one batched network call over all T states. After round k the error of a run
is that of x_0 of what the solver would return if it stopped there, ||x_0 - x_0^DDIM|| / ||x_0^DDIM||, against
`ddim_sample` from the same x_T (with eta > 0 both use the same noises, drawn from seed a + 12345). Writes
rounds_study[_TAG].csv and .md (per-method table and the median error by round) and _traces.csv (median and worst error
after every round) into --out (default: the user's cache folder), or with --record into the package's recorded results
(--force replaces files that are there). Methods: "anderson" is deq_sample's default; the others are
`solvers.chain_newton` with the options in METHODS ("chain_newton": the chosen settings).
"""
import argparse
import csv
import io
import time

import numpy as np
import torch
from deq_ddim_nb.ddim import ddim_sample, draw_noise
from deq_ddim_nb.deq import deq_map, deq_sample, init_trajectory
from deq_ddim_nb.models import load_model
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb import solvers as S
from deq_ddim_nb.files import csv_text
from _results import Results, add_output_args


def chain_kwargs(sched, dtype):
    "ratio r_j = sqrt(a_{j-1}/a_j) and the first-round slope of each step (solvers.chain_slopes), in the run's dtype."
    return tuple(v.to(dtype) for v in S.chain_slopes(sched.abar, sched.abar_prev, sched.sigma))


def run_method(name, model, x_T, sched, noise, ref, R, tol):
    "Per-round relative x_0 errors (rounds, B) of one method; the run stops by the solver's own rule."
    T = len(sched)
    f = lambda xs: deq_map(model, xs, x_T, sched, noise, check=False)
    errs = []
    err = lambda x0: ((x0 - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).tolist()
    t0 = time.perf_counter()
    if name == "anderson":            # deq_sample's default today (triangular Anderson, DEQ_ANDERSON)
        _, info = deq_sample(model, x_T, sched, noise=noise, max_iter=R, tol=tol, check=False,
                             callback=lambda k, z, fz, r: errs.append(err(fz[0])))
        rounds = info.rounds
    else:
        ratio, slope = chain_kwargs(sched, x_T.dtype)
        kw = dict(METHODS[name])
        if not kw.pop("prior", True): slope = ratio
        z0, extra = init_trajectory(x_T, T), 0
        if kw.pop("jump", False):      # one extra round (B images): eps at x_T, then x_j = sqrt(a_j) x0_hat + sqrt(1 - a_j) eps
            s = sched.to(x_T.device, x_T.dtype)
            eps = model(x_T, s.t[-1].expand(len(x_T)))
            x0 = (x_T - (1 - s.abar[-1]).sqrt() * eps) / s.abar[-1].sqrt()
            ap = s.abar_prev.view(-1, *[1] * x_T.ndim)
            z0, extra = ap.sqrt() * x0 + (1 - ap).sqrt() * eps, 1
            errs.append(err(z0[0]))
        # the error after round k is that of the iterate the solver would return: the update computed from round k
        seen = []
        def f_seen(xs):
            if seen: errs.append(err(xs[0]))      # xs is the update computed from the previous round
            seen.append(1)
            return f(xs)
        z, st = S.chain_newton(f_seen, z0, max_iter=R, tol=tol, sample_dim=(0, 1), ratio=ratio, slope=slope, **kw)
        errs.append(err(z[0]))                    # the update from the last round, which the solver returns
        rounds = st.nfe + extra
    return np.array(errs), rounds, time.perf_counter() - t0


METHODS = {                                              # "anderson": deq_sample's default (triangular Anderson)
    "picard": dict(secant=0, prior=False),               # slope = ratio: exactly Picard (a check of the harness)
    "qn_prior": dict(secant=0),                          # the first-round slope only, never updated
    "chain_newton": dict(secant=1),                      # secant slope from the last two rounds (chosen)
    "qn2": dict(secant=2),                               # least squares over the last three rounds
    "qn_noprior": dict(secant=1, prior=False),           # secant, Picard slope (= ratio) in round 1
    "qn_jump": dict(secant=1, jump=True),                # + a one-jump DDIM start (one extra round of B images)
}


def first_below(e, thr):
    "First round (1-based) from which the error stays below thr; inf if never."
    ok = e < thr
    for k in range(len(e)):
        if ok[k:].all(): return k + 1
    return np.inf


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs=2, default=[100, 116], help="seeds range(a, b)")
    p.add_argument("--T", type=int, default=100, help="number of DDIM steps")
    p.add_argument("--eta", type=float, default=0.0, help="eta > 0: DEQ-sDDIM")
    p.add_argument("--rounds", type=int, default=20, help="round budget of every run")
    p.add_argument("--tol", type=float, default=1e-3, help="the solvers' stopping tolerance")
    p.add_argument("--methods", nargs="+", default=["anderson", "chain_newton"], choices=["anderson", *METHODS])
    p.add_argument("--tag", default="")
    add_output_args(p)
    a = p.parse_args()
    stem = "rounds_study" + (f"_{a.tag}" if a.tag else "")
    res = Results(p, a, [f"{stem}.csv", f"{stem}.md", f"{stem}_traces.csv"])   # checked before any work
    torch.set_num_threads(1)
    model = load_model("digits")
    sched = DDIMSchedule.from_config(a.T, model.config, eta=a.eta)
    seeds = list(range(*a.seeds))
    x_T = torch.cat([torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(s)) for s in seeds])
    noise = draw_noise(sched, x_T, torch.Generator().manual_seed(seeds[0] + 12345)) if a.eta > 0 else None
    t0 = time.perf_counter()
    with torch.no_grad(): ref = ddim_sample(model, x_T, sched, noise=noise, check=False)
    print(f"sequential DDIM, T={a.T}, eta={a.eta}, seeds {a.seeds}: {time.perf_counter() - t0:.1f} s", flush=True)
    rows, traces, errs_all = [], {}, {}
    for name in a.methods:
        with torch.no_grad(): e, rounds, sec = run_method(name, model, x_T, sched, noise, ref, a.rounds, a.tol)
        r3 = np.array([first_below(e[:, i], 1e-3) for i in range(len(seeds))])
        r2 = np.array([first_below(e[:, i], 1e-2) for i in range(len(seeds))])
        traces[name], errs_all[name] = np.median(e, axis=1), e
        rows.append(dict(method=name, T=a.T, eta=a.eta, seeds=f"{a.seeds[0]}-{a.seeds[1] - 1}",
                         median_1e3=float(np.median(r3)), max_1e3=float(r3.max()),
                         median_1e2=float(np.median(r2)), max_1e2=float(r2.max()),
                         stop_round=rounds, final_err_max=float(e[-1].max()), seconds=round(sec, 1),
                         per_seed_1e3=" ".join(str(int(v)) if np.isfinite(v) else "inf" for v in r3)))
        print(rows[-1], flush=True)
        print("  median error by round:", " ".join(f"{v:.2g}" for v in traces[name]), flush=True)
    fh = io.StringIO()                                                 # the .md, in memory
    if True:
        fh.write(f"# Rounds to x_0 within 1e-3 / 1e-2 of sequential DDIM (digits UNet, float32, T={a.T}, eta={a.eta}, "
                 f"seeds {seeds[0]}-{seeds[-1]}, tol={a.tol:g}, round budget {a.rounds})\n\n")
        fh.write("| method | median 1e-3 | max 1e-3 | median 1e-2 | max 1e-2 | stopped after | per seed (1e-3) |\n|---|---|---|---|---|---|---|\n")
        for r in rows:
            fh.write(f"| {r['method']} | {r['median_1e3']:g} | {r['max_1e3']:g} | {r['median_1e2']:g} | {r['max_1e2']:g} | "
                     f"{r['stop_round']} | {r['per_seed_1e3']} |\n")
        fh.write("\n## Median x_0 error by round\n\n")
        for k, v in traces.items(): fh.write(f"- {k}: " + ", ".join(f"{x:.2g}" for x in v) + "\n")
    tr = [dict(method=name, round=k + 1, median_err=f"{np.median(e[k]):.4g}", max_err=f"{e[k].max():.4g}")
          for name, e in errs_all.items() for k in range(len(e))]
    res.publish({f"{stem}.csv": csv_text(rows), f"{stem}.md": fh.getvalue(), f"{stem}_traces.csv": csv_text(tr)})
    print(f"wrote {res.path(stem)}.csv/.md/_traces.csv  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Probe the Python API with bad arguments: every call must either work or raise the policy's error.

    OMP_NUM_THREADS=1 python scripts/fuzz_api.py        # a table per function, then the totals (about a minute)

For each public function below, a small valid call is built first (the exact 8x8 digits denoiser, T = 5, float64), and
then each argument in turn is replaced by values of the wrong type or an out-of-range value (None, a string, a bool, a
float where an int belongs, negative, zero, NaN, inf, a huge number, an empty list, tensors of the wrong shape or dtype,
a tensor holding NaN; a huge count is not tried for `epochs` and `k`, the amount of work asked for). The process runs
under an 8 GiB address-space limit, so a probe that would exhaust memory fails as `raw` instead of stopping the machine.
A probe is

- `clear error`: a TypeError or ValueError whose message names the argument (the package's one validation policy);
- `accepted`: the call returned (a value the function can honestly use, e.g. a NumPy integer for an int);
- `unnamed`: a TypeError or ValueError that does not name the argument;
- `raw`: any other exception (IndexError, RuntimeError, ZeroDivisionError, ...), i.e. a traceback from deep inside.

Exit status: the number of `unnamed` plus `raw` probes (0: every bad input is a clear error or is honestly accepted).
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections import Counter

import numpy as np
import torch


def cases():
    "(function name, callable, baseline kwargs, {argument: [bad values]}) for each probed function."
    from deq_ddim_nb.schedules import DDIMSchedule, make_betas, make_timesteps
    from deq_ddim_nb.ddim import ddim_invert, ddim_sample, ddim_step, draw_noise
    from deq_ddim_nb.deq import deq_map, deq_sample, round_budget
    from deq_ddim_nb.parallel import window_sample
    from deq_ddim_nb.inversion import invert
    from deq_ddim_nb.solvers import anderson, broyden, chain_newton, picard
    from deq_ddim_nb.toy import digits_eps
    from deq_ddim_nb.files import load_target
    from deq_ddim_nb.wrappers import wrap_model

    m = digits_eps()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s, s5 = DDIMSchedule.make(5), DDIMSchedule.make(5, eta=0.5)
    xs = x.expand(5, *x.shape).clone()
    INT = [None, "3", 2.5, True, -1, 0, float("nan"), 10 ** 12]
    WORK = INT[:-1]   # epochs and k are work the caller asks for: 10**12 of them runs as long (and as large) as asked
    NUM = [None, "0.1", True, -1.0, 0.0, float("nan"), float("inf"), 1e30, [0.1]]
    TENS = [None, "x", [1.0], torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.zeros(1, 1, 8, 8, dtype=torch.complex64),
            torch.zeros(1, 1, 8, 8, dtype=torch.float16), torch.zeros(0, 1, 8, 8, dtype=torch.float64),
            torch.zeros(1, 1, 4, 4, dtype=torch.float64), torch.full((1, 1, 8, 8), float("nan"), dtype=torch.float64)]
    f = lambda z: 0.5 * z + 1.0
    z0 = torch.zeros(5, 1, 3, dtype=torch.float64)
    solver_bad = dict(max_iter=INT, tol=NUM, stop_mode=[None, 3, "max"], callback=["x", 3])
    return [
        ("DDIMSchedule.make", DDIMSchedule.make, dict(T=5),
         dict(T=INT, eta=NUM, n_train=INT, beta_start=NUM, beta_end=NUM, skip=[None, 3, "cubic"], steps_offset=INT,
              beta_schedule=[None, 3, "cosine"], trained_betas=["x", [0.5] * 3, [0.1, "a"], [2.0] * 1000],
              set_alpha_to_one=[None, 1, "yes"], prediction_type=[None, 3, "noise"], clip_sample=NUM, sampler=[None, 3, "sde"],
              dtype=[None, "float", torch.int64, torch.complex64])),
        ("DDIMSchedule.from_config", DDIMSchedule.from_config, dict(T=5, config=dict(n_train=1000)),
         dict(T=INT, config=[None, "x", [1], dict(n_train="1000"), dict(num_train_timesteps=0), dict(beta_schedule=3),
                             dict(timestep_spacing="karras"), dict(thresholding=True), dict(variance_type="learned"),
                             dict(trained_betas=[0.1, "x"]), dict(clip_sample="yes"), dict(steps_offset=-3)])),
        ("make_betas", make_betas, dict(n_train=10), dict(n_train=INT, beta_start=NUM, beta_end=NUM, beta_schedule=[None, 3, "x"])),
        ("make_timesteps", make_timesteps, dict(T=5), dict(T=INT, skip=[None, 3, "x"], n_train=INT, steps_offset=INT)),
        ("ddim_step", ddim_step, dict(x=x, eps=x, abar=0.5, abar_prev=0.8),
         dict(x=TENS, eps=TENS, abar=NUM + [torch.ones(3)], abar_prev=NUM, sigma=NUM, noise=TENS[1:])),
        ("draw_noise", draw_noise, dict(sched=s5, x_T=x), dict(sched=[None, 5, "s"], x_T=TENS, generator=["g", 3])),
        ("ddim_sample", ddim_sample, dict(eps_model=m, x_T=x, sched=s),
         dict(eps_model=[None, 3, lambda a, b: a[:, :1], lambda a, b: a * float("nan"), lambda a, b: "eps"], x_T=TENS,
              sched=[None, 5, "s"], noise=TENS[1:], generator=["g", 3])),
        ("ddim_invert", ddim_invert, dict(eps_model=m, x_0=x, sched=s), dict(x_0=TENS, sched=[None, 5, s5])),
        ("deq_map", deq_map, dict(eps_model=m, xs=xs, x_T=x, sched=s), dict(xs=TENS, x_T=TENS, sched=[None, 5], noise=TENS[1:])),
        ("deq_sample", deq_sample, dict(eps_model=m, x_T=x, sched=s),
         dict(x_T=TENS, sched=[None, 5], solver=[None, 3, "newton"], max_iter=INT, tol=NUM, m=INT, init=[None, 3, "ones", torch.zeros(2)],
              noise=TENS[1:], devices=["cpu", 3, [], ["nodevice"]], max_batch=INT, stop_mode=[None, 3, "max"], generator=["g", 3],
              progress=["yes"], callback=["x", 3])),
        ("round_budget", round_budget, dict(T=5), dict(T=INT, batch=INT, eta=NUM, solver=[None, 3, "x"])),
        ("window_sample", window_sample, dict(eps_model=m, x_T=x, sched=s),
         dict(x_T=TENS, sched=[None, 5], window=INT, tol=NUM, freeze_tol=NUM, noise_tol=NUM, max_iter=INT, init=[None, 3, "ones"],
              max_batch=INT, devices=["cpu", 3, []], generator=["g", 3])),
        ("invert", invert, dict(eps_model=m, x_target=x.clamp(-1, 1), sched=s, epochs=1, progress=False),
         dict(x_target=TENS, sched=[None, 5], method=[None, 3, "sgd"], grad=[None, 3, "exact"], tau=NUM, k=WORK, lr=NUM,
              epochs=WORK, stop_loss=NUM, seed=INT, generator=["g", 3], noise=TENS[1:])),
        ("picard", picard, dict(f=f, z0=z0), dict(z0=[None, "x", torch.zeros(0)], mixing=NUM, **solver_bad)),
        ("anderson", anderson, dict(f=f, z0=z0), dict(m=INT, lam=NUM, mixing=NUM, **solver_bad)),
        ("broyden", broyden, dict(f=f, z0=z0), dict(m=INT, **solver_bad)),
        ("chain_newton", chain_newton, dict(f=f, z0=z0, ratio=torch.ones(5, dtype=torch.float64)),
         dict(ratio=[None, "x", torch.ones(3)], slope=["x", torch.ones(3)], secant=INT, clip=NUM, **solver_bad)),
        ("wrap_model", wrap_model, dict(eps_model=m), dict(devices=["cpu", 3, []], max_batch=INT, state_dtype=["x", 3])),
        ("load_target", load_target, dict(path_or_digit=3),
         dict(path_or_digit=[None, -1, 10 ** 6, True, 2.5, "/nonexistent.png", "/tmp", [3]], sample_shape=[None, "x", (1, 8), (0, 8, 8), (2, 16, 16)],
              max_pixels=INT)),
    ]


def classify(fn, kw, name):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(**kw)
        return "accepted", ""
    except (TypeError, ValueError, FileNotFoundError) as e:
        msg = str(e)
        named = name in msg or name.replace("_", " ") in msg or (name == "path_or_digit" and ("target" in msg or "digit" in msg))
        return ("clear error" if named else "unnamed"), f"{type(e).__name__}: {msg[:160]}"
    except Exception as e:                                           # anything else is a traceback from deep inside
        return "raw", f"{type(e).__name__}: {str(e)[:160]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-memory-limit", action="store_true", help="skip the 8 GiB address-space limit (when called in-process)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if not args.no_memory_limit:
      try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2 ** 30, 8 * 2 ** 30))
      except (ImportError, ValueError, OSError): pass               # not on this platform: run without the limit
    total, bad_lines = Counter(), []
    print(f"{'function':26s} {'probes':>6s} {'clear error':>11s} {'accepted':>8s} {'unnamed':>7s} {'raw':>4s}")
    for fname, fn, base, bads in cases():
        row = Counter()
        for arg, values in bads.items():
            for v in values:
                outcome, detail = classify(fn, {**base, arg: v}, arg)
                row[outcome] += 1
                if outcome in ("unnamed", "raw"): bad_lines.append(f"{fname}({arg}={v!r:.40}): {outcome}: {detail}")
        total.update(row)
        print(f"{fname:26s} {sum(row.values()):6d} {row['clear error']:11d} {row['accepted']:8d} {row['unnamed']:7d} {row['raw']:4d}")
    print(f"{'all':26s} {sum(total.values()):6d} {total['clear error']:11d} {total['accepted']:8d} {total['unnamed']:7d} {total['raw']:4d}")
    if bad_lines:
        print("\nprobes that are not a clear error:")
        for l in bad_lines: print("  " + l)
    return total["unnamed"] + total["raw"]


if __name__ == "__main__":
    sys.exit(main())

"""Does window_sample's "converged" keep its promise on the shipped UNet? Seeds 0-15, T = 100, float32, batch 1.

    OMP_NUM_THREADS=1 python bench/window_stopping.py            # about 10 minutes on one busy CPU core

For every seed: window_sample with its defaults (eta = 0) and with eta = 0.5 (DEQ-sDDIM, the same noises as the
sequential sampler), the rounds, full checks, evaluations per image, whether it converged, and the relative distance
of its x_0 to the sequential sample. Prints the table (the recorded window_stopping.txt is this output) and writes
window_stopping.csv into --out (default: the user's cache folder), or with --record into the package's recorded results.
"""
import sys
import warnings

from deq_ddim_nb.files import csv_text
from _results import Results, add_output_args


def main(argv=None):
    import argparse
    import torch
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5])
    add_output_args(p)
    args = p.parse_args(argv)
    res = Results(p, args, ["window_stopping.csv"])                  # checked before any work
    from deq_ddim_nb.ddim import ddim_sample, draw_noise
    from deq_ddim_nb.models import load_model
    from deq_ddim_nb.parallel import window_sample
    from deq_ddim_nb.schedules import DDIMSchedule
    model = load_model("digits")
    rows = []
    for eta in args.etas:
        sched = DDIMSchedule.from_config(args.T, model.config, eta=eta, dtype=torch.float32)
        for seed in range(args.seeds):
            g = torch.Generator().manual_seed(seed)
            x_T = torch.randn((1, *model.config["sample_shape"]), generator=g)
            noise = draw_noise(sched, x_T, g) if eta > 0 else None
            with torch.no_grad(), warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                ref = ddim_sample(model, x_T, sched, noise)
                x0, info = window_sample(model, x_T, sched, noise=noise)
            err = float(torch.linalg.vector_norm(x0 - ref) / torch.linalg.vector_norm(ref))
            rows.append(dict(eta=eta, seed=seed, converged=info.converged, rounds=info.rounds, checks=info.checks,
                             nfe=info.nfe, residual=info.residuals[-1], x0_err=err, warned=bool(w)))
            print(f"eta {eta:g} seed {seed:2d}: converged {info.converged!s:5s} rounds {info.rounds:3d} checks {info.checks} "
                  f"evals/image {info.nfe:5d} residual {info.residuals[-1]:.1e} |x_0 - DDIM|/|DDIM| {err:.2e}", flush=True)
    res.publish({"window_stopping.csv": csv_text(rows)})
    bad = [r for r in rows if r["converged"] and r["x0_err"] > 1e-3]
    print(f"{len(rows)} runs, {sum(r['converged'] for r in rows)} converged, "
          f"{len(bad)} converged with x_0 further than 1e-3 from the sequential sample")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Does window_sample's "converged" keep its promise on the shipped UNet? Seeds 0-15, T = 100, float32, batch 1.

    OMP_NUM_THREADS=1 python bench/window_stopping.py            # about 10 minutes on one busy CPU core

For every seed: window_sample with its defaults (eta = 0) and with eta = 0.5 (DEQ-sDDIM, the same noises as the
sequential sampler), the rounds, full checks, evaluations per image, whether it converged, and the relative distance
of its x_0 to the sequential sample. Writes bench/results/window_stopping.csv (row by row) and prints the table.
"""
import csv
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None):
    import argparse
    import torch
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "window_stopping.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from deq_ddim_nb.ddim import ddim_sample, draw_noise
    from deq_ddim_nb.models import load_model
    from deq_ddim_nb.parallel import window_sample
    from deq_ddim_nb.schedules import DDIMSchedule
    model = load_model("digits")
    rows = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fh = open(args.out, "w", newline="")
    wr = csv.DictWriter(fh, ("eta", "seed", "converged", "rounds", "checks", "nfe", "residual", "x0_err", "warned"))
    wr.writeheader()
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
            wr.writerow(rows[-1]); fh.flush()
            print(f"eta {eta:g} seed {seed:2d}: converged {info.converged!s:5s} rounds {info.rounds:3d} checks {info.checks} "
                  f"evals/image {info.nfe:5d} residual {info.residuals[-1]:.1e} |x_0 - DDIM|/|DDIM| {err:.2e}", flush=True)
    fh.close()
    bad = [r for r in rows if r["converged"] and r["x0_err"] > 1e-3]
    print(f"{len(rows)} runs, {sum(r['converged'] for r in rows)} converged, "
          f"{len(bad)} converged with x_0 further than 1e-3 from the sequential sample")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

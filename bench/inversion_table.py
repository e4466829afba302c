"""Table 3 / Figures 3, 4, 6, 8 at digits scale: invert held-out digits with BPTT, DEQ-DDIM (phantom and exact IFT
gradients) and DDIM ODE inversion, with `deq_ddim_nb.inversion.invert` and its defaults.
Usage (writes inversion_table.json into --out, by default the user's cache folder; with --record into the package's
recorded results, which lesson 08 reads with deq_ddim_nb.files.read_recorded; --force replaces a file that is there):
    OMP_NUM_THREADS=1 python bench/inversion_table.py [--T 10 20 100] [--epochs 100 80 15] [--targets 10] [--lr 0.01]
        [--inits random ode] [--ift-T 10] [--ift-epochs 30] [--no-fig8] [--out DIR | --record] [--force]
The paper's setting first: x_T ~ N(0, I) drawn from seed 0 (a CPU generator: the same latents on every device), then the
same runs started from the DDIM ODE inversion (init="ode") as an extra. All B targets are inverted jointly (one batch per
method and T; Adam is elementwise, so this equals B separate runs). Every optimiser run stops at its epoch limit, when
every image's per-pixel MSE is <= --stop-mse, or after the epoch in which its wall time passed --max-seconds (a safety
cap); `stop` in the JSON says which. For DEQ runs the sequential DDIM sample of every epoch's latent is computed too
(`true_losses`; its time is not counted in `seconds`), so the JSON shows that the loss the optimiser saw is the true one.
Per run the JSON holds: cumulative seconds and per-image losses (Eq. 14) per epoch, solver rounds and convergence per
epoch, the min loss / per-pixel MSE per image (of the sequential DDIM sample of the best latent), and the regenerated
images. Results go to <out>.partial after every run and to <out> when everything has finished."""
import argparse, json, time
from pathlib import Path
import torch
from deq_ddim_nb.models import load_model
from deq_ddim_nb.toy import digits_data
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.ddim import ddim_sample
from deq_ddim_nb.inversion import DEQ_SOLVER, IFT_SOLVER, image_loss, invert
from _results import Results, add_output_args


def record(r, *, images=True, true_losses=None, **meta):
    "A JSON-able summary of one InversionResult."
    D = r.x_0[0].numel()
    out = dict(**meta, epochs=r.epochs, seconds=[round(s, 3) for s in r.seconds],
               losses=[[round(v, 6) for v in row] for row in r.image_losses.tolist()], rounds=r.rounds,
               converged=r.converged, min_loss=r.final_loss.tolist(), mse=(r.final_loss / D).tolist(),
               best_epoch=r.best_epoch.tolist(), stopped_early=r.stopped_early)
    if true_losses is not None: out["true_losses"] = [[round(v, 6) for v in row] for row in true_losses]
    if images: out["x_0"] = [[[round(v, 3) for v in row] for row in im] for im in r.x_0[:, 0].tolist()]
    return out


def run(m, tg, s, D, *, max_seconds, stop_mse, check_true=False, **kw):
    """invert() with a wall-time cap (checked after each epoch); with `check_true` also the loss of the sequential DDIM
    sample of every epoch's latent (its time taken out of `seconds`). Returns (result, why it stopped, true losses)."""
    t0, capped, true, spent, seen = time.perf_counter(), [], [], 0.0, []
    def cb(epoch, x_T, l):
        nonlocal spent
        if check_true:
            c0 = time.perf_counter()
            with torch.no_grad(): true.append(image_loss(ddim_sample(m, x_T, s), tg).tolist())
            spent += time.perf_counter() - c0
        seen.append(spent)
        if max_seconds and time.perf_counter() - t0 - spent > max_seconds: capped.append(epoch); return True
        return False
    r = invert(m, tg, s, stop_loss=stop_mse * D if stop_mse else None, progress=False, callback=cb, **kw)
    r.seconds = [sec - c for sec, c in zip(r.seconds, seen)]    # the optimiser's own wall time
    stop = "time" if capped else "stop_mse" if r.stopped_early else "epochs"
    return r, stop, (true if check_true else None)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[10, 20, 100])
    p.add_argument("--epochs", type=int, nargs="+", default=[100, 80, 15], help="max epochs, one per T or one for all")
    p.add_argument("--max-seconds", type=float, default=1800, help="safety cap on one optimiser run's wall time (0: none)")
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0, help="seed of the random initial latents")
    p.add_argument("--inits", nargs="+", default=["random", "ode"], choices=["random", "ode"])
    p.add_argument("--ift-T", type=int, nargs="*", default=[10], help="T values that also get a DEQ-IFT run (random init)")
    p.add_argument("--ift-epochs", type=int, default=30)
    p.add_argument("--stop-mse", type=float, default=1e-3, help="stop when every image's mean per-pixel MSE is below")
    p.add_argument("--no-fig8", action="store_true", help="skip exact (IFT) vs phantom gradients at lr 0.001/0.005/0.01")
    p.add_argument("--fig8-T", type=int, default=10)
    p.add_argument("--fig8-targets", type=int, default=3)
    p.add_argument("--fig8-epochs", type=int, default=10)
    add_output_args(p)
    a = p.parse_args()
    res = Results(p, a, ["inversion_table.json", "inversion_table.json.partial"])   # checked before any work
    torch.set_num_threads(1)
    m = load_model("digits")
    tg = digits_data(16, "test", torch.float32)[0][:a.targets]
    D = tg[0].numel()
    out = dict(config={k: v for k, v in vars(a).items() if k not in ("out", "record", "force")}, model=m.config.get("name"),
               model_final_loss=m.config.get("final_loss"), torch=torch.__version__, threads=torch.get_num_threads(),
               deq_solver={k: v for k, v in DEQ_SOLVER.items()}, ift_solver=IFT_SOLVER,
               targets=tg[:, 0].tolist(), runs=[], fig8=[], started=time.strftime("%Y-%m-%d %H:%M:%S"))
    partial = "inversion_table.json.partial"
    save = lambda name=partial: res.publish({name: json.dumps(out)})   # a reader sees the old file or the new
    per_T = lambda v: v * len(a.T) if len(v) == 1 else v
    t_start = time.perf_counter()
    def report(r, stop, what):
        print(f"{what}: mean mse {r.final_loss.mean() / D:.2e} (max {(r.final_loss / D).max():.2e}) in {r.epochs} epochs, "
              f"{r.seconds[-1]:.1f}s, stop={stop}; bench at {time.perf_counter() - t_start:.0f}s", flush=True)
    for T, E in zip(a.T, per_T(a.epochs)):
        s = DDIMSchedule.from_config(T, m.config)
        r = invert(m, tg, s, method="ode", progress=False)
        out["runs"].append(record(r, method="ode", grad=None, T=T, init="ode", stop="none")); save()
        report(r, "none", f"T={T} ode")
        plan = [(method, "phantom", init, E) for init in a.inits for method in ("bptt", "deq")]
        if T in a.ift_T: plan.append(("deq", "ift", "random", a.ift_epochs))
        for method, grad, init, epochs in plan:
            r, stop, true = run(m, tg, s, D, max_seconds=a.max_seconds, stop_mse=a.stop_mse, check_true=method == "deq",
                                method=method, grad=grad, lr=a.lr, epochs=epochs, init=init, seed=a.seed)
            out["runs"].append(record(r, true_losses=true, method=method, grad=grad if method == "deq" else None, T=T,
                                      init=init, lr=a.lr, max_epochs=epochs, stop=stop)); save()
            report(r, stop, f"T={T} {method}{'/' + grad if method == 'deq' else ''} init={init}")
    if not a.no_fig8:
        s = DDIMSchedule.from_config(a.fig8_T, m.config)
        for lr in (0.001, 0.005, 0.01):
            for grad in ("ift", "phantom"):
                r, stop, _ = run(m, tg[:a.fig8_targets], s, D, max_seconds=a.max_seconds, stop_mse=None, method="deq",
                                 grad=grad, lr=lr, epochs=a.fig8_epochs, init="random", seed=a.seed)
                out["fig8"].append(record(r, images=False, method="deq", grad=grad, T=a.fig8_T, init="random", lr=lr,
                                          max_epochs=a.fig8_epochs, stop=stop)); save()
                report(r, stop, f"fig8 lr={lr} {grad}")
    out["finished"], out["bench_seconds"] = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter() - t_start
    save("inversion_table.json"); res.path(partial).unlink(missing_ok=True); print("wrote", res.path("inversion_table.json"), flush=True)


if __name__ == "__main__": main()

"""Table 3 / Figures 3, 4, 6, 8 at digits scale: invert held-out digits with BPTT, DEQ (phantom, IFT) and DDIM ODE inversion.
Usage (writes bench/results/inversion_table.json, a few hundred KB):
    OMP_NUM_THREADS=1 python bench/inversion_table.py [--T 10 20 100] [--epochs 40 30 15] [--max-seconds 200 240 360]
        [--targets 10] [--lr 0.01] [--random-T 10] [--ift-T 10] [--fig8]
All B targets are inverted jointly (one batch per method and T; Adam is elementwise, so this equals B separate runs).
Every optimiser run stops at its epoch limit, when every image's per-pixel MSE is <= --stop-mse, or after the epoch in
which its wall time passed --max-seconds (the per-T cap), whichever comes first; `stop` in the JSON says which.
Per run the JSON holds: cumulative seconds and per-image losses (Eq. 14) per epoch, solver rounds per epoch, the min
loss / per-pixel MSE per image (of the sequential DDIM sample of the best latent), and the regenerated images.
Results go to <out>.partial after every run (atomically) and are renamed to <out> only when everything has finished."""
import argparse, json, os, time
from pathlib import Path
import torch
from deq_ddim_nb.models import load_model
from deq_ddim_nb.toy import digits_data
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.inversion import invert

IFT_BACKWARD = dict(solver="picard", tol=1e-8)          # exact adjoint: Picard solves the triangular system in T products

def record(r, *, images=True, **meta):
    "A JSON-able summary of one InversionResult."
    D = r.x_0[0].numel()
    out = dict(**meta, epochs=r.epochs, seconds=[round(s, 3) for s in r.seconds],
               losses=[[round(v, 5) for v in row] for row in r.image_losses.tolist()], rounds=r.rounds,
               min_loss=r.final_loss.tolist(), mse=(r.final_loss / D).tolist(), best_epoch=r.best_epoch.tolist(),
               stopped_early=r.stopped_early)
    if images: out["x_0"] = [[[round(v, 3) for v in row] for row in im] for im in r.x_0[:, 0].tolist()]
    return out

def run(m, tg, s, D, *, max_seconds, stop_mse, **kw):
    "invert() with a wall-time cap (checked after each epoch); returns (result, why it stopped)."
    t0, capped = time.perf_counter(), []
    def cap(epoch, x_T, l):
        if max_seconds and time.perf_counter() - t0 > max_seconds: capped.append(epoch); return True
        return False
    r = invert(m, tg, s, stop_loss=stop_mse * D if stop_mse else None, progress=False, callback=cap, **kw)
    stop = "time" if capped else "stop_mse" if r.stopped_early else "epochs"
    return r, stop

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[10, 20, 100])
    p.add_argument("--epochs", type=int, nargs="+", default=[40, 30, 15], help="max epochs, one per T or one for all")
    p.add_argument("--max-seconds", type=float, nargs="+", default=[200, 240, 360],
                   help="wall-time cap per optimiser run, one per T or one for all (0: none)")
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--random-T", type=int, nargs="*", default=[10], help="T values that also get random-init runs")
    p.add_argument("--random-max-seconds", type=float, default=100)
    p.add_argument("--ift-T", type=int, nargs="*", default=[10], help="T values that also get a DEQ-IFT run (ODE init)")
    p.add_argument("--ift-max-seconds", type=float, default=120)
    p.add_argument("--stop-mse", type=float, default=1e-3, help="stop when every image's mean per-pixel MSE is below")
    p.add_argument("--fig8", action="store_true", help="also exact (IFT) vs phantom gradients at lr 0.001/0.005/0.01")
    p.add_argument("--fig8-T", type=int, default=10)
    p.add_argument("--fig8-targets", type=int, default=3)
    p.add_argument("--fig8-epochs", type=int, default=15)
    p.add_argument("--fig8-max-seconds", type=float, default=60)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "inversion_table.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    m = load_model("digits")
    tg = digits_data(16, "test", torch.float32)[0][:a.targets]
    D = tg[0].numel()
    out = dict(config=vars(a), model=m.config.get("name"), model_final_loss=m.config.get("final_loss"),
               torch=torch.__version__, threads=torch.get_num_threads(), ift_backward=IFT_BACKWARD,
               deq_solver="invert() default: picard, max_iter 15, tol 1e-2, warm start",
               targets=tg[:, 0].tolist(), runs=[], fig8=[], started=time.strftime("%Y-%m-%d %H:%M:%S"))
    out_path = Path(a.out); partial = out_path.with_name(out_path.name + ".partial")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    def save(path=partial):                                    # atomic: a reader sees the old file or the new one
        tmp = path.with_name(path.name + ".tmp"); tmp.write_text(json.dumps(out)); os.replace(tmp, path)
    per_T = lambda v: v * len(a.T) if len(v) == 1 else v
    t_start = time.perf_counter()
    for T, E, cap in zip(a.T, per_T(a.epochs), per_T(a.max_seconds)):
        s = DDIMSchedule.from_config(T, m.config)
        r = invert(m, tg, s, method="ode", progress=False)
        out["runs"].append(record(r, method="ode", grad=None, T=T, init="ode", stop="none")); save()
        print(f"T={T} ode: mse {r.final_loss.mean() / D:.2e}, {r.seconds[-1]:.1f}s", flush=True)
        plan = [("bptt", "phantom", "ode", cap), ("deq", "phantom", "ode", cap)]
        if T in a.ift_T: plan.append(("deq", "ift", "ode", a.ift_max_seconds))
        if T in a.random_T: plan += [("bptt", "phantom", "random", a.random_max_seconds), ("deq", "phantom", "random", a.random_max_seconds)]
        for method, grad, init, c in plan:
            r, stop = run(m, tg, s, D, max_seconds=c, stop_mse=a.stop_mse, method=method, grad=grad, lr=a.lr, epochs=E,
                          init=init, seed=0, backward_kwargs=IFT_BACKWARD if grad == "ift" else None)
            out["runs"].append(record(r, method=method, grad=grad if method == "deq" else None, T=T, init=init, lr=a.lr,
                                      max_epochs=E, max_seconds=c, stop=stop)); save()
            print(f"T={T} {method}{'/' + grad if method == 'deq' else ''} init={init}: min mse {r.final_loss.mean() / D:.2e} "
                  f"(max {(r.final_loss / D).max():.2e}) in {r.epochs} epochs, {r.seconds[-1]:.1f}s, stop={stop}; "
                  f"bench at {time.perf_counter() - t_start:.0f}s", flush=True)
    if a.fig8:
        s = DDIMSchedule.from_config(a.fig8_T, m.config)
        for lr in (0.001, 0.005, 0.01):
            for grad in ("ift", "phantom"):
                r, stop = run(m, tg[:a.fig8_targets], s, D, max_seconds=a.fig8_max_seconds, stop_mse=None, method="deq",
                              grad=grad, lr=lr, epochs=a.fig8_epochs, init="random", seed=0,
                              backward_kwargs=IFT_BACKWARD if grad == "ift" else None)
                out["fig8"].append(record(r, images=False, method="deq", grad=grad, T=a.fig8_T, init="random", lr=lr,
                                          max_epochs=a.fig8_epochs, max_seconds=a.fig8_max_seconds, stop=stop)); save()
                print(f"fig8 lr={lr} {grad}: min mse {r.final_loss.mean() / D:.2e}, {r.epochs} epochs, {r.seconds[-1]:.1f}s, "
                      f"stop={stop}; bench at {time.perf_counter() - t_start:.0f}s", flush=True)
    out["finished"], out["bench_seconds"] = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter() - t_start
    save(); os.replace(partial, out_path); print("wrote", out_path, flush=True)

if __name__ == "__main__": main()

"""Table 3 / Figures 3, 4, 6, 8 at digits scale: invert held-out digits with BPTT, DEQ (phantom, IFT) and DDIM ODE inversion.
Usage (writes bench/results/inversion_table.json, a few hundred KB at most):
    OMP_NUM_THREADS=1 python bench/inversion_table.py [--T 10 20] [--targets 10] [--epochs 30] [--lr 0.01] [--fig8]
All B targets are inverted jointly (one batch; Adam is elementwise, so this equals B separate runs). Loss curves,
cumulative seconds, per-image min losses and the regenerated images are stored per (method, T, init)."""
import argparse, json, time
from pathlib import Path
import torch
from deq_ddim_nb.models import load_model
from deq_ddim_nb.toy import digits_data
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.inversion import invert

def record(r, **meta):
    "A JSON-able summary of one InversionResult."
    D = r.x_0[0].numel()
    return dict(**meta, epochs=r.epochs, seconds=r.seconds, losses=r.image_losses.tolist(), rounds=r.rounds,
                min_loss=r.final_loss.tolist(), mse=(r.final_loss / D).tolist(), x_0=r.x_0[:, 0].tolist(),
                stopped_early=r.stopped_early)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[10, 20, 100])
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--epochs", type=int, nargs="+", default=[40], help="one per T, or one for all")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--inits", nargs="+", default=["random", "ode"])
    p.add_argument("--methods", nargs="+", default=["bptt", "deq"])
    p.add_argument("--stop-mse", type=float, default=1e-3, help="stop when every image's mean per-pixel MSE is below")
    p.add_argument("--fig8", action="store_true", help="also exact (IFT) vs phantom gradients at lr 0.001/0.005/0.01")
    p.add_argument("--fig8-T", type=int, default=10)
    p.add_argument("--fig8-targets", type=int, default=3)
    p.add_argument("--fig8-epochs", type=int, default=20)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "inversion_table.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    m = load_model("digits")
    tg = digits_data(16, "test", torch.float32)[0][:a.targets]
    D = tg[0].numel()
    out = dict(config=vars(a), model=m.config.get("name"), model_final_loss=m.config.get("final_loss"),
               torch=torch.__version__, threads=torch.get_num_threads(), targets=tg[:, 0].tolist(), runs=[], fig8=[])
    save = lambda: Path(a.out).write_text(json.dumps(out))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    epochs = a.epochs * len(a.T) if len(a.epochs) == 1 else a.epochs
    for T, E in zip(a.T, epochs):
        s = DDIMSchedule.from_config(T, m.config)
        r = invert(m, tg, s, method="ode", progress=False)
        out["runs"].append(record(r, method="ode", T=T, init="ode")); save()
        print(f"T={T} ode: mse {r.final_loss.mean() / D:.2e}, {r.seconds[-1]:.1f}s", flush=True)
        for init in a.inits:
            for method in a.methods:
                r = invert(m, tg, s, method=method, lr=a.lr, epochs=E, init=init, seed=0, stop_loss=a.stop_mse * D,
                           progress=False)
                out["runs"].append(record(r, method=method, T=T, init=init, lr=a.lr)); save()
                print(f"T={T} {method} init={init}: min mse {r.final_loss.mean() / D:.2e} in {r.epochs} epochs, "
                      f"{r.seconds[-1]:.1f}s", flush=True)
    if a.fig8:
        s = DDIMSchedule.from_config(a.fig8_T, m.config)
        for lr in (0.001, 0.005, 0.01):
            for grad in ("ift", "phantom"):
                r = invert(m, tg[:a.fig8_targets], s, method="deq", grad=grad, lr=lr, epochs=a.fig8_epochs, init="random",
                           seed=0, progress=False)
                out["fig8"].append(record(r, method="deq", grad=grad, T=a.fig8_T, init="random", lr=lr)); save()
                print(f"fig8 lr={lr} {grad}: min mse {r.final_loss.mean() / D:.2e}, {r.seconds[-1]:.1f}s", flush=True)
    save(); print("wrote", a.out)

if __name__ == "__main__": main()

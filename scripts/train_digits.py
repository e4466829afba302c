#!/usr/bin/env python
"""Reproduce the shipped digits ε-model (`load_model("digits")`).

    OMP_NUM_THREADS=1 python scripts/train_digits.py            # writes deq_ddim_nb/assets/digits_unet.*
    python scripts/train_digits.py --out /tmp/mine --steps 500  # a quick run elsewhere

Writes `<out>/<stem>.safetensors` (EMA weights), `<stem>.json` (config, schedule, training settings, time)
and `<stem>_loss.csv` (mean loss per 50 steps). The recipe and the network are in nbs/06_digits_model.ipynb
(module `deq_ddim_nb.models`); this script only parses arguments and calls them. About 22 minutes on one idle CPU core (28-36 with the other core busy).
"""
import argparse, dataclasses, os, time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
from deq_ddim_nb.models import TrainConfig, train_digits, save_model


def main(argv=None):
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "deq_ddim_nb" / "assets"))
    ap.add_argument("--stem", default="digits_unet", help="file name stem (default: digits_unet)")
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--max-shift", type=int, default=d.max_shift, help="random shifts of at most this many pixels (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a small busy machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    cfg = dataclasses.replace(d, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed, max_shift=a.max_shift)
    t0 = time.time()
    model, history = train_digits(cfg, device=a.device, progress=not a.no_progress)
    seconds = time.time() - t0
    stem = save_model(model, Path(a.out) / a.stem, cfg, history, name="digits", train_seconds=round(seconds, 1),
                      train_threads=a.threads, train_device=a.device)
    print(f"{a.steps} steps in {seconds / 60:.1f} min, final loss {history[-1]['loss']:.4f}; wrote {stem}.safetensors/.json/_loss.csv")


if __name__ == "__main__":
    main()

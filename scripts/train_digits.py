#!/usr/bin/env python
"""Reproduce the shipped digits ε-model (`load_model("digits")`).

    OMP_NUM_THREADS=1 python scripts/train_digits.py --out /tmp/mine            # writes /tmp/mine/digits_unet.*
    python scripts/train_digits.py --out /tmp/mine --steps 500                  # a quick run
    OMP_NUM_THREADS=1 python scripts/train_digits.py --record --force           # replaces the shipped weights

Writes `<out>/<stem>.safetensors` (EMA weights), `<stem>.json` (config, schedule, training settings, time) and
`<stem>_loss.csv` (mean loss per 50 steps), all three together through `save_model` (deq_ddim_nb.files.publish), into
--out (default: $XDG_CACHE_HOME/deq-ddim-nb/models, ~/.cache/deq-ddim-nb/models), or with --record into the package's
assets, next to the shipped model; files that are there are replaced only with --force, and that is checked before
training starts. The recipe and the network are in nbs/06_digits_model.ipynb (module `deq_ddim_nb.models`); this script
only parses arguments and calls them. About 22 minutes on one idle CPU core (28-36 with the other core busy).
"""
import argparse, dataclasses, time
from pathlib import Path

import torch
from deq_ddim_nb.files import assets_dir, check_targets, default_results_dir
from deq_ddim_nb.models import TrainConfig, train_digits, save_model


def main(argv=None):
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="folder for the model files (default: the user's cache folder)")
    where.add_argument("--record", action="store_true", help="write into the package's assets, where the shipped model lives")
    ap.add_argument("--force", action="store_true", help="replace model files that are already there")
    ap.add_argument("--stem", default="digits_unet", help="file name stem (default: digits_unet)")
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--max-shift", type=int, default=d.max_shift, help="random shifts of at most this many pixels (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a small busy machine; "
                    "recorded in the model's config)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    a = ap.parse_args(argv)
    out = assets_dir() if a.record else Path(a.out).expanduser() if a.out else default_results_dir().parent / "models"
    stem = out / a.stem
    try:                                                             # before the 20 minutes of training
        check_targets([out / f"{a.stem}{s}" for s in (".safetensors", ".json", "_loss.csv")], a.force, make_dirs=True)
    except (OSError, ValueError) as e:
        ap.error(f"argument --out: {e}".replace("with overwrite", "with --force").replace("record=True", "--record"))
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    cfg = dataclasses.replace(d, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed, max_shift=a.max_shift)
    t0 = time.time()
    model, history = train_digits(cfg, device=a.device, progress=not a.no_progress)
    seconds = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, stem, cfg, history, name="digits", overwrite=a.force, train_seconds=round(seconds, 1),
               train_threads=a.threads, train_device=a.device)
    print(f"{a.steps} steps in {seconds / 60:.1f} min, final loss {history[-1]['loss']:.4f}; wrote {stem}.safetensors/.json/_loss.csv")


if __name__ == "__main__":
    main()

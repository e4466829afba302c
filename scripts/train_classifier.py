"""Reproduce the shipped digits classifier (deq_ddim_nb/assets/digits_classifier.safetensors): about 2 minutes on 1 CPU core.

    python scripts/train_classifier.py --out /tmp/clf              # /tmp/clf/digits_classifier.safetensors
    python scripts/train_classifier.py --record --force            # replaces the shipped classifier

Default folder: $XDG_CACHE_HOME/deq-ddim-nb/models (~/.cache/deq-ddim-nb/models). The file is written with
`save_classifier` (deq_ddim_nb.files.publish); one that is there is replaced only with --force, checked before training.
"""
import argparse
from pathlib import Path

import torch
from deq_ddim_nb.files import assets_dir, check_targets, default_results_dir
from deq_ddim_nb.quality import train_classifier, save_classifier

NAME = "digits_classifier.safetensors"

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="folder for the weights (default: the user's cache folder)")
    where.add_argument("--record", action="store_true", help="write into the package's assets, replacing the shipped classifier")
    ap.add_argument("--force", action="store_true", help="replace a file that is already there")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = ap.parse_args()
    path = (assets_dir() if a.record else Path(a.out).expanduser() if a.out else default_results_dir().parent / "models") / NAME
    try: check_targets([path], a.force, make_dirs=True)
    except (OSError, ValueError) as e:
        ap.error(f"argument --out: {e}".replace("with overwrite", "with --force").replace("record=True", "--record"))
    torch.set_num_threads(a.threads)
    clf, acc = train_classifier()
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"held-out accuracy {acc:.4f}; wrote {save_classifier(clf, path, overwrite=a.force)}")

#!/usr/bin/env python
"""Time every notebook top to bottom, as a student runs it, and record the table the course guide shows.

    OMP_NUM_THREADS=1 python scripts/time_notebooks.py --out /tmp/times        # all of nbs/*.ipynb -> /tmp/times/notebook_times.csv
    OMP_NUM_THREADS=1 python scripts/time_notebooks.py --record --force        # into the package's recorded results
    OMP_NUM_THREADS=1 python scripts/time_notebooks.py --record --force 04_fixed_point   # only these (others keep their rows)

Without --out or --record the table goes to $XDG_CACHE_HOME/deq-ddim-nb/bench (~/.cache/deq-ddim-nb/bench); rows of
notebooks not run now are kept from the table that is there (those of notebooks no longer in nbs/ are dropped), and replacing it needs --force. The file is written with
deq_ddim_nb.files.publish.

Each notebook runs in a fresh kernel (nbclient), from nbs/, with the same environment as `nbdev-test` minus its `slow`
skipping: cells flagged `slow` do their work only with RUN_SLOW=1, so they are quick here too. Wall and CPU seconds
(kernel process and children) are recorded; run it on an idle machine, since a busy one inflates wall time.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "notebook_times.csv"
FIELDS = ("notebook", "wall_s", "cpu_s", "cells", "machine")


def time_one(path: Path, timeout: int = 900) -> dict:
    import nbformat
    import psutil
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    with client.setup_kernel():
        pid = client.km.provisioner.process.pid if getattr(client.km, "provisioner", None) else None
        proc = psutil.Process(pid) if pid else None
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        cpu = 0.0
        if proc is not None:
            for p in [proc, *proc.children(recursive=True)]:
                try: ct = p.cpu_times(); cpu += ct.user + ct.system
                except psutil.Error: pass
    wall = time.perf_counter() - t0
    return dict(notebook=path.stem, wall_s=f"{wall:.0f}", cpu_s=f"{cpu:.0f}", cells=len(nb.cells),
                machine=f"{platform.machine()}, {os.cpu_count()} cores")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", help="notebook stems (default: all non-scratch notebooks in nbs/)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, metavar="DIR", help="folder for notebook_times.csv (default: the user's cache folder)")
    where.add_argument("--record", action="store_true", help="write into the package's recorded results")
    p.add_argument("--force", action="store_true", help="replace a notebook_times.csv that is there")
    args = p.parse_args(argv)
    from deq_ddim_nb.files import check_targets, csv_text, publish, read_text, results_dir
    try:
        out = results_dir(args.out, record=args.record) / NAME
        check_targets([out], args.force, make_dirs=True)                 # before any notebook runs
    except (OSError, ValueError) as e:
        p.error(f"argument --out: {e}".replace("with overwrite", "with --force").replace("record=True", "--record"))
    paths = sorted(q for q in (ROOT / "nbs").glob("*.ipynb") if not q.name.startswith("_"))
    existing = {q.stem for q in paths}
    if args.notebooks:
        unknown = set(args.notebooks) - {q.stem for q in paths}
        if unknown: p.error(f"no such notebook(s): {sorted(unknown)}")
        paths = [q for q in paths if q.stem in args.notebooks]
    rows = {r["notebook"]: r for r in csv.DictReader(io.StringIO(read_text(out, "timing table")))} if out.exists() else {}
    rows = {k: r for k, r in rows.items() if k in existing}          # a notebook that was renamed or removed loses its row
    for path in paths:
        r = time_one(path)
        rows[path.stem] = r
        print(f"{r['notebook']:24s} wall {r['wall_s']:>5} s   cpu {r['cpu_s']:>5} s", flush=True)
    publish({out: csv_text([{f: rows[k].get(f, "") for f in FIELDS} for k in sorted(rows)], FIELDS)}, overwrite=args.force,
            make_dirs=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

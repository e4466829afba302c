"""Tables 1-2 of the paper at digits scale: d_F^2 (classifier features), class histogram and time per image for
DDPM, DDIM, DEQ-DDIM and DEQ-sDDIM (eta 0.2 / 0.5 / 1) at T in {10, 20, 50, 100}; plus the 1,000-sample check at T=100.

    python bench/quality_table.py [--n 256] [--big 1000] [--Ts 10 20 50 100] [--repeats 3]

Writes quality.csv, quality.md and quality_T100_n<big>.json into --out (default: the user's cache folder) or, with
--record, into the package's recorded results; cells already in the quality.csv there are kept unless recomputed, and
replacing a file needs --force.
"""
import argparse
import csv
import io
import json
import time
from pathlib import Path

import torch
from deq_ddim_nb.files import csv_text
from deq_ddim_nb.models import load_model
from deq_ddim_nb.quality import METHODS, generate, load_classifier, sample_quality, time_per_image
from _results import Results, add_output_args


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="samples per (method, T) cell")
    p.add_argument("--big", type=int, default=1000, help="samples for the T=100 DDIM vs DEQ-DDIM check (0 = skip)")
    p.add_argument("--Ts", type=int, nargs="*", default=[10, 20, 50, 100], help="table columns (none: only the big check)")
    p.add_argument("--big-batch", type=int, default=50, help="images per DEQ solve in the big check (the solve stops when all converged)")
    p.add_argument("--repeats", type=int, default=3, help="single-image timings per cell (median)")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    add_output_args(p)
    a = p.parse_args()
    names = (["quality.csv", "quality.md"] if a.Ts else []) + ([f"quality_T100_n{a.big}.json"] if a.big else [])
    res = Results(p, a, names)                                       # checked before any work
    torch.set_num_threads(1)
    model, clf = load_model("digits"), load_classifier()
    # cells already in quality.csv are kept unless recomputed now, so columns can be run one at a time
    read = lambda: list(csv.DictReader(io.StringIO(res.existing("quality.csv") or "")))
    old = read()
    rows = [r for r in old if not (int(r["T"]) in (a.Ts or []) and r["method"] in a.methods)]
    mine = []                                                       # the cells this run computes
    for T in a.Ts or []:
        for m in a.methods:
            t0 = time.perf_counter()
            x, st = generate(model, m, T, a.n, progress=True)
            q = sample_quality(x, clf)
            rows.append(dict(method=m, T=T, n=a.n, fd=round(q["fd"], 3), confidence=round(q["confidence"], 4),
                             min_class_share=round(min(q["class_hist"]), 3), max_class_share=round(max(q["class_hist"]), 3),
                             rounds=max(st["rounds"]) if st["rounds"] else "", sec_per_image=round(time_per_image(model, m, T, a.repeats), 4)))
            print(rows[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
            mine.append(rows[-1])
            # re-read before writing, so that runs of other columns in parallel keep their cells
            done = {(str(r["T"]), r["method"]) for r in mine}
            rows = [r for r in read() if (r["T"], r["method"]) not in done] + mine
            rows.sort(key=lambda r: (int(r["T"]), list(METHODS).index(r["method"])))
            res.publish({"quality.csv": csv_text(rows)})              # after every cell: a long run keeps its progress
    if rows and a.Ts: res.publish({"quality.md": table_text(rows)})
    if a.big: res.publish({f"quality_T100_n{a.big}.json": big_check(model, clf, a.big, a.big_batch)})


def table_text(rows):
    "quality.md: the table of d_F² and time per image."
    Ts = sorted({int(r["T"]) for r in rows})
    lines = ["| method | " + " | ".join(f"T={T}: d_F² / s per image" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
    for m in METHODS:
        cells = [next((r for r in rows if r["method"] == m and int(r["T"]) == T), None) for T in Ts]
        lines.append(f"| {m} | " + " | ".join(f"{float(r['fd']):.2f} / {float(r['sec_per_image']):.3f}" if r else "–" for r in cells) + " |")
    md = (f"Samples per cell: {', '.join(sorted({str(r['n']) for r in rows}, key=int))}; d_F² to the digits training split in the shipped classifier's feature space (lower is better; "
          f"the same noises for every method); time: median wall time of one single-image run on this machine's CPU "
          f"(torch threads = 1).\n\n" + "\n".join(lines) + "\n")
    print(md)
    return md


# the big check solves as `deq-ddim sample` does by default (deq_sample's Anderson, tol 1e-3 per state, at most 30 rounds)
BIG_DEQ = dict(tol=1e-3, max_iter=30)


def big_check(model, clf, n, batch) -> str:
    "The 1,000-sample check at T=100 as JSON text."
    import subprocess
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    big = dict(settings=BIG_DEQ | dict(T=100, n=n, batch=batch, seed=0, commit=commit or "unknown"))
    xs = {}
    for m in ("DDIM (sequential)", "DEQ-DDIM"):
        t0 = time.perf_counter()
        xs[m], st = generate(model, m, 100, n, batch=batch, progress=True, **(BIG_DEQ if m == "DEQ-DDIM" else {}))
        big[m] = sample_quality(xs[m], clf) | dict(rounds=st["rounds"], seconds=round(time.perf_counter() - t0, 1))
        print(m, {k: v for k, v in big[m].items() if k != "rounds"}, flush=True)
    d = (xs["DEQ-DDIM"] - xs["DDIM (sequential)"]).flatten(1)
    rel = d.norm(dim=1) / xs["DDIM (sequential)"].flatten(1).norm(dim=1)
    big["max_rel_diff"], big["median_rel_diff"] = float(rel.max()), float(rel.median())
    big["fd_ratio"] = big["DEQ-DDIM"]["fd"] / big["DDIM (sequential)"]["fd"]
    print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "rounds"}) for k, v in big.items()}, indent=1))
    return json.dumps(big, indent=1)


if __name__ == "__main__":
    main()

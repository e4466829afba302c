#!/usr/bin/env python
"""Probe `deq-ddim` with the inputs that used to end in raw tracebacks, hangs or files written where they should not be.

    OMP_NUM_THREADS=1 python scripts/fuzz_cli.py            # every probe, then a table per category (about 5 minutes)
    python scripts/fuzz_cli.py --only files                  # one category

Every probe runs the installed `deq-ddim` in a fresh process, in a fresh folder `ws` (its working directory, with HOME
and XDG_CACHE_HOME inside it), next to a folder `outside` holding files that symbolic links in `ws` point to. A probe
passes when: the exit status is the expected one (2 for an error, naming the expected option in an argparse-style
message on stderr; 0 for a run that must work), stderr holds no traceback, nothing hangs (60 s), and no file is touched
outside the run: `outside` and the package's shipped files (weights, recorded results) are unchanged, and in `ws` only the files the probe may write
changed. Exit status: the number of failed probes (0: all passed).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = Path(sys.executable).parent / "deq-ddim"
TOY = ["--model", "toy-digits", "--T", "5", "--n", "1", "--no-progress"]
INV = ["invert", "--digit", "3", "--T", "5", "--method", "ode", "--no-progress"]
BENCH = ["bench", "--quick", "--variants", "default", "--no-progress"]


def nan_checkpoint(d: Path) -> str:
    "A small UNet checkpoint (written by save_model) whose weights are all NaN."
    code = ("import sys, torch\nfrom deq_ddim_nb.models import UNet, TrainConfig, save_model\n"
            "cfg = TrainConfig(unet=dict(in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(), groups=4, heads=1, dropout=0.0))\n"
            "m = UNet(**cfg.unet)\nwith torch.no_grad():\n    for p in m.parameters(): p.fill_(float('nan'))\n"
            "save_model(m, sys.argv[1], cfg)\n")
    subprocess.run([sys.executable, "-c", code, str(d / "nan")], check=True, capture_output=True, timeout=300)
    return str(d / "nan.safetensors")


# (category, name, argv with {ws} / {out} / {nan}, setup(ws, outside), expected option or None for success, outputs it may write)
def probes():
    P = []
    add = lambda cat, name, argv, opt, setup=None, may=(), pre=None: P.append((cat, name, argv, setup, opt, may, pre))
    # sampler and library errors
    add("library errors", "NaN weights (sample)", ["sample", "--model", "{nan}", "--T", "5", "--n", "1", "--no-progress", "--out", "{ws}/x.png"], "--model")
    add("library errors", "NaN weights (invert)", ["invert", "--model", "{nan}", "--digit", "1", "--T", "5", "--no-progress", "--out", "{ws}/inv"], "--model")
    add("library errors", "--eta 2", ["sample", *TOY, "--eta", "2", "--out", "{ws}/x.png"], "--eta")
    add("library errors", "--m with the default solver", ["sample", *TOY, "--m", "3", "--out", "{ws}/x.png"], "--m")
    add("library errors", "--T above n_train", ["sample", *TOY[:2], "--T", "5000", "--out", "{ws}/x.png"], "--T")
    add("library errors", "--mixing without --solver anderson", ["sample", *TOY, "--mixing", "0.5", "--out", "{ws}/x.png"], "--mixing")
    add("library errors", "a toy model to invert", [*INV, "--model", "toy-digits", "--out", "{ws}/inv"], "--model")
    add("library errors", "unknown model", ["sample", "--model", "cifar10", "--out", "{ws}/x.png"], "--model")
    add("library errors", "not a checkpoint", ["sample", "--model", "{ws}/junk.safetensors", "--out", "{ws}/x.png"], "--model",
        setup=lambda ws, o: (ws / "junk.safetensors").write_bytes(b"\0" * 16))
    add("library errors", "target image of the wrong size", [*INV[:1], "--image", "{ws}/small.png", *INV[3:], "--out", "{ws}/inv"], "--image",
        setup=lambda ws, o: __import__("PIL.Image", fromlist=["Image"]).new("L", (8, 8)).save(ws / "small.png"))
    # bounds and values
    for opt, val in (("--n", "10001"), ("--m", "101"), ("--tol", "2"), ("--seed", "-1"), ("--T", "0"), ("--eta", "nan")):
        add("bounds", f"sample {opt} {val}", ["sample", *TOY[:2], opt, val, "--out", "{ws}/x.png"], opt)
    for opt, val in (("--lr", "11"), ("--lr", "inf"), ("--k", "1000"), ("--epochs", "0"), ("--tau", "2")):
        add("bounds", f"invert {opt} {val}", [*INV, opt, val, "--out", "{ws}/inv"], opt)
    # bench
    add("bench", "--device meta", [*BENCH, "--device", "meta", "--out", "{ws}/b"], "--device")
    add("bench", "--device cuda:7", [*BENCH, "--device", "cuda:7", "--out", "{ws}/b"], "--device")
    add("bench", "--seeds 0", [*BENCH, "--seeds", "0", "--out", "{ws}/b"], "--seeds")
    add("bench", "--T outside the grid", [*BENCH, "--T", "999", "--out", "{ws}/b"], "--T")
    add("bench", "--report-only without a table", [*BENCH, "--report-only", "--out", "{ws}/b"], "--report-only")
    add("bench", "--merge without a table", [*BENCH, "--merge", "--force", "--out", "{ws}/b"], "--merge")
    add("bench", "--report-only on a FIFO", [*BENCH, "--report-only", "--force", "--out", "{ws}/b"], "--report-only",
        setup=lambda ws, o: ((ws / "b").mkdir(), os.mkfifo(ws / "b" / "speed.csv")))
    add("bench", "--merge on a FIFO", [*BENCH, "--merge", "--force", "--out", "{ws}/b"], "--merge",
        setup=lambda ws, o: ((ws / "b").mkdir(), os.mkfifo(ws / "b" / "speed.csv")))
    add("bench", "FIFO at speed.csv", [*BENCH, "--force", "--out", "{ws}/b"], "--out",
        setup=lambda ws, o: ((ws / "b").mkdir(), os.mkfifo(ws / "b" / "speed.csv")))
    add("bench", "existing results without --force", [*BENCH, "--out", "{ws}/b"], "--out",
        setup=lambda ws, o: ((ws / "b").mkdir(), (ws / "b" / "speed.csv").write_text("old")))
    add("bench", "--out inside the package", [*BENCH, "--out", str(Path(__file__).resolve().parents[1] / "deq_ddim_nb" / "assets" / "results")], "--out")
    add("bench", "--record without --force", [*BENCH, "--record"], "--record")
    add("bench", "no --out: the cache folder", BENCH, None, may=(".cache/deq-ddim-nb/bench",))
    # files
    add("files", "dangling symlink --out", ["sample", *TOY, "--out", "{ws}/x.png"], "--out",
        setup=lambda ws, o: (ws / "x.png").symlink_to(o / "nowhere.png"))
    add("files", "symlink --out", ["sample", *TOY, "--out", "{ws}/x.png"], "--out",
        setup=lambda ws, o: (ws / "x.png").symlink_to(o / "victim.png"))
    add("files", "symlink --out --force", ["sample", *TOY, "--force", "--out", "{ws}/x.png"], None, may=("x.png",),
        setup=lambda ws, o: (ws / "x.png").symlink_to(o / "victim.png"))
    add("files", "dangling symlink as the invert folder", [*INV, "--out", "{ws}/inv"], "--out",
        setup=lambda ws, o: (ws / "inv").symlink_to(o / "nowhere"))
    add("files", "read-only parent", ["sample", *TOY, "--out", "{ws}/ro/x.png"], "--out",
        setup=lambda ws, o: ((ws / "ro").mkdir(), (ws / "ro").chmod(0o555)), pre="unprivileged")
    add("files", "read-only invert folder", [*INV, "--out", "{ws}/ro"], "--out",
        setup=lambda ws, o: ((ws / "ro").mkdir(), (ws / "ro").chmod(0o555)), pre="unprivileged")
    add("files", "undecodable name", ["sample", *TOY, "--out", b"{ws}/\xff.png"], None, may=("\udcff.png",))
    add("files", "name too long", ["sample", *TOY, "--out", "{ws}/" + "n" * 300 + ".png"], "--out")
    add("files", "--out o.png/", ["sample", *TOY, "--out", "{ws}/o.png/"], "--out")
    add("files", "--out is a directory", ["sample", *TOY, "--force", "--out", "{ws}/d.png"], "--out", setup=lambda ws, o: (ws / "d.png").mkdir())
    add("files", "--out is a FIFO", ["sample", *TOY, "--force", "--out", "{ws}/f.png"], "--out", setup=lambda ws, o: os.mkfifo(ws / "f.png"))
    add("files", "--out is /dev/null", ["sample", *TOY, "--force", "--out", "/dev/null"], "--out")
    add("files", "missing parent", ["sample", *TOY, "--out", "{ws}/no/x.png"], "--out")
    add("files", "invert: the last of three files blocked", [*INV, "--force", "--out", "{ws}/inv"], "--out",
        setup=lambda ws, o: ((ws / "inv").mkdir(), (ws / "inv" / "comparison.png").mkdir()))
    add("files", "full disk (RLIMIT_FSIZE)", ["sample", *TOY, "--out", "{ws}/x.png"], "--out", pre="fsize")
    add("files", "handout over existing notebooks", ["handout", "{ws}/h", "--notebooks", "00"], "OUT_DIR",
        setup=lambda ws, o: ((ws / "h").mkdir(), (ws / "h" / "00_schedules.ipynb").write_text("mine")))
    add("files", "handout to a dangling link", ["handout", "{ws}/h", "--notebooks", "00"], "OUT_DIR",
        setup=lambda ws, o: (ws / "h").symlink_to(o / "nowhere"))
    return P


def _snapshot(root: Path, skip=()) -> dict:
    out = {}
    if not root.exists(): return out
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for n in dirs + files:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if any(rel == s or rel.startswith(s + "/") for s in skip): continue
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if os.path.isfile(p) and not os.path.islink(p) and st.st_size < 2**24 else ""
            out[rel] = (st.st_mode, st.st_size, digest, os.readlink(p) if os.path.islink(p) else "")
    return out


def run_probe(probe, nan: str, package: Path) -> dict:
    cat, name, argv, setup, opt, may, pre = probe
    base = Path(tempfile.mkdtemp(prefix="fuzz-"))
    ws, outside = base / "ws", base / "outside"
    ws.mkdir(); outside.mkdir()
    (outside / "victim.png").write_bytes(b"KEEP")
    if setup: setup(ws, outside)
    fill = lambda a: (a.replace(b"{ws}", os.fsencode(ws)) if isinstance(a, bytes)
                      else a.replace("{ws}", str(ws)).replace("{nan}", nan))
    cmd = [str(EXE), *[fill(a) for a in argv]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(ws), "XDG_CACHE_HOME": str(ws / ".cache"), "MPLCONFIGDIR": str(base / "mpl")}
    preexec = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))) if pre == "fsize" else None
    if pre == "unprivileged" and os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    before_ws, before_out, before_pkg = _snapshot(ws), _snapshot(outside), _snapshot(package)
    t0, hang = time.perf_counter(), False
    try:
        r = subprocess.run(cmd, capture_output=True, env=env, cwd=ws, timeout=60, preexec_fn=preexec)
        rc, err = r.returncode, r.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        rc, err, hang = None, "", True
    after_ws = _snapshot(ws)
    if (ws / "ro").exists(): (ws / "ro").chmod(0o755)
    changed_ws = {k for k in set(before_ws) | set(after_ws) if before_ws.get(k) != after_ws.get(k)}
    allowed = {k for k in changed_ws if any(k == m or k.startswith(m + "/") or m.startswith(k + "/") for m in may)}
    touched = sorted((changed_ws - allowed)
                     | {f"outside/{k}" for k in set(before_out) | set(_snapshot(outside)) if before_out.get(k) != _snapshot(outside).get(k)}
                     | {f"package/{k}" for k in set(before_pkg) | set(_snapshot(package)) if before_pkg.get(k) != _snapshot(package).get(k)})
    shutil.rmtree(base, ignore_errors=True)
    tb = "Traceback (most recent call last)" in err
    if opt is None: ok_status = rc == 0
    else: ok_status = rc == 2 and f"argument {opt}:" in err
    return dict(cat=cat, name=name, rc=rc, tb=tb, hang=hang, touched=touched, ok=ok_status and not tb and not hang and not touched,
                opt=opt, err=err.strip().splitlines()[-1] if err.strip() else "", seconds=time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="run only this category (library errors, bounds, bench, files)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per probe")
    a = p.parse_args(argv)
    package = Path(__import__("deq_ddim_nb").__file__).resolve().parent / "assets"   # the shipped weights and recorded results
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-nan-"))
    nan = nan_checkpoint(tmp)
    results = []
    for probe in probes():
        if a.only and probe[0] != a.only: continue
        r = run_probe(probe, nan, package)
        results.append(r)
        if a.verbose or not r["ok"]:
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['cat']:15s} {r['name']:40s} exit {r['rc']}  {r['err'][:110]}"
                  + (f"  touched {r['touched']}" if r["touched"] else "") + ("  HANG" if r["hang"] else ""), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    cats = list(dict.fromkeys(r["cat"] for r in results))
    print(f"\n| category | probes | clear error or success | raw tracebacks | hangs | files touched outside the run |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in cats + ["all"]:
        rs = [r for r in results if c in ("all", r["cat"])]
        print(f"| {c} | {len(rs)} | {sum(r['ok'] for r in rs)} | "
              f"{sum(r['tb'] for r in rs)} | {sum(r['hang'] for r in rs)} | {sum(len(r['touched']) for r in rs)} |")
    return sum(not r["ok"] for r in results)


if __name__ == "__main__":
    sys.exit(main())

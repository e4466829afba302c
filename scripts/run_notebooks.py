"""Re-execute the notebooks as a student would, and store or compare their outputs.

Each notebook is copied alone into an empty temporary folder outside the repository and executed there with the
installed package (one thread, as in CI): a lesson that reads a file through `../` fails here as it would for a student.

    python scripts/run_notebooks.py                 # every notebook: execute, write the fresh outputs back, nbdev-clean
    python scripts/run_notebooks.py 04_fixed_point  # only these (names with or without .ipynb)
    python scripts/run_notebooks.py --check         # execute and compare with the stored outputs; write nothing

The comparison (also used by tests/test_notebook_outputs.py) is strict about words and tolerant about float noise:
text outputs are split into words and numbers; words must match exactly, integers exactly, and decimals within a
relative 1e-4 (or both below 1e-9 in magnitude: float64 round-off). Timings, dates, temporary paths and memory addresses
are masked. Images are compared by kind and count. A cell tagged `nbval-ignore-output` (cell metadata, invisible on
the page) is executed but its output is not compared: for cells that time something on the machine they run on.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
IGNORE_TAG = "nbval-ignore-output"

# ----------------------------------------------------------------------------------------------------------------------
# execution


def notebook_names(names=None) -> list[str]:
    "The notebooks to run: `names` (stems or file names), or every notebook in nbs/ that is not scratch (`_*`)."
    every = sorted(p.stem for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))
    if not names: return every
    out = []
    for n in names:
        stem = Path(n).name.removesuffix(".ipynb")
        if stem not in every: raise SystemExit(f"run_notebooks: no notebook {n!r} in nbs/ (have: {', '.join(every)})")
        out.append(stem)
    return out


def execute(stem: str, timeout: int = 600) -> tuple[dict, float]:
    "Execute nbs/<stem>.ipynb alone in an empty temporary folder; returns (executed notebook, seconds)."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(NBS / f"{stem}.ipynb", as_version=4)
    env_keep = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "IN_TEST", "RUN_SLOW", "PYTHONHASHSEED")}
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    for k in ("IN_TEST", "RUN_SLOW"): os.environ.pop(k, None)
    try:
        with tempfile.TemporaryDirectory(prefix="lesson-") as d:
            shutil.copy(NBS / f"{stem}.ipynb", Path(d) / f"{stem}.ipynb")
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": d}},
                                    allow_errors=False)
            t0 = time.perf_counter()
            client.execute()
            return nb, time.perf_counter() - t0
    finally:
        for k, v in env_keep.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v


def write_back(stem: str, executed: dict) -> None:
    "Copy the executed outputs into nbs/<stem>.ipynb (sources untouched), then nbdev-clean it."
    import nbformat
    path = NBS / f"{stem}.ipynb"
    nb = nbformat.read(path, as_version=4)
    if len(nb.cells) != len(executed.cells): raise SystemExit(f"{stem}: the notebook changed while it ran; run again")
    for c in nb.cells:                                      # cells added by a script may lack the id nbformat 4.5 requires
        if "id" not in c: c["id"] = uuid.uuid4().hex[:8]
    for c, e in zip(nb.cells, executed.cells):
        if c.cell_type == "code":
            c.outputs, c.execution_count = e.outputs, e.execution_count
    nbformat.write(nb, path)
    clean = Path(sys.executable).parent / "nbdev-clean"
    subprocess.run([str(clean) if clean.exists() else "nbdev-clean", "--fname", str(path)], check=True, cwd=ROOT)


# ----------------------------------------------------------------------------------------------------------------------
# comparison

_MASKS = [
    (re.compile(r"/tmp/[^\s'\"),\]]*"), "<tmp>"),                                 # temporary paths
    (re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "<addr>"),                              # object addresses
    (re.compile(r"\b\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}\b"), "<time>"),
    # timings: a number with a unit of time, or after a word that says it is a time
    (re.compile(r"(?<![\w.])[-+]?\d+(\.\d+)?(e[-+]?\d+)?\s*(s|ms|µs|us|min|minutes?|seconds?|sec|h|hours?)(?![\w])"), "<time>"),
    (re.compile(r"((?:seconds|wall_s|cpu_s|deq_s|seq_s|time|took)\s*[=:]\s*)[-+]?\d+(\.\d+)?(e[-+]?\d+)?"), r"\1<time>"),
    (re.compile(r"\d+(\.\d+)?\s*(it/s|s/it)"), "<rate>"),
]
_NUM = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def mask(text: str) -> str:
    for pat, rep in _MASKS: text = pat.sub(rep, text)
    return text


def _tokens(text: str) -> list[str | float | int]:
    "Words and numbers: numbers become int (no point, no exponent) or float, the text between them is kept verbatim."
    out, pos = [], 0
    for m in _NUM.finditer(text):
        if m.start() > pos: out.append(text[pos:m.start()])
        s = m.group(0)
        out.append(int(s) if re.fullmatch(r"[-+]?\d+", s) else float(s))
        pos = m.end()
    if pos < len(text): out.append(text[pos:])
    return out


def _close(a: float, b: float) -> bool:
    if isinstance(a, int) and isinstance(b, int): return a == b
    a, b = float(a), float(b)
    if math.isnan(a) and math.isnan(b): return True
    if max(abs(a), abs(b)) < 1e-9: return True                       # float64 round-off, whatever its value
    return abs(a - b) <= 1e-4 * max(abs(a), abs(b))


def compare_text(stored: str, fresh: str) -> str | None:
    "None if the two texts agree (see the module docstring), else a short description of the first difference."
    a, b = _tokens(mask(stored)), _tokens(mask(fresh))
    for i, (x, y) in enumerate(zip(a, b)):
        if isinstance(x, str) or isinstance(y, str):
            if x != y: return f"text differs: stored {str(x)[:120]!r} vs fresh {str(y)[:120]!r}"
        elif not _close(x, y): return f"number differs: stored {x!r} vs fresh {y!r} (context: {''.join(map(str, a[max(0, i - 3):i]))[-80:]!r})"
    if len(a) != len(b): return f"output length differs: stored {''.join(map(str, a[len(b):]))[:120]!r} vs fresh {''.join(map(str, b[len(a):]))[:120]!r}"
    return None


_TEXT_KINDS = ("text/markdown", "text/latex", "text/plain")   # a Markdown object's text/plain is only its repr
_IMAGE_KINDS = ("image/png", "image/svg+xml", "image/jpeg")
_WIDGET = "application/vnd.jupyter.widget-view+json"


def _summarise(outputs) -> list[tuple[str, str]]:
    "A cell's outputs as comparable (kind, text) pairs: streams by name, rich outputs by their text or image kind."
    out = []
    for o in outputs:
        if o["output_type"] == "stream":
            if out and out[-1][0] == f"stream:{o['name']}": out[-1] = (out[-1][0], out[-1][1] + o["text"])
            else: out.append((f"stream:{o['name']}", o["text"]))
        elif o["output_type"] == "error":
            out.append(("error", f"{o['ename']}: {o['evalue']}"))
        else:
            data = o.get("data", {})
            if _WIDGET in data: continue                                      # live widgets (progress bars): no static value
            img = [k for k in _IMAGE_KINDS if k in data]
            if img: out.append(("image", img[0].split("/")[1])); continue
            txt = next((k for k in _TEXT_KINDS if k in data), None)
            if txt: out.append((txt, "".join(data[txt])))
            elif "text/html" in data: out.append(("text/html", re.sub(r"<[^>]+>", " ", "".join(data["text/html"]))))
    return out


def compare_notebook(stored: dict, fresh: dict) -> list[str]:
    "Differences between a stored notebook's outputs and a fresh execution's, one line per cell that differs."
    problems = []
    code = [(i, c, f) for i, (c, f) in enumerate(zip(stored["cells"], fresh["cells"])) if c["cell_type"] == "code"]
    if len(stored["cells"]) != len(fresh["cells"]): return ["the notebooks have different cells"]
    for i, c, f in code:
        if IGNORE_TAG in c.get("metadata", {}).get("tags", []): continue
        a, b = _summarise(c.get("outputs", [])), _summarise(f.get("outputs", []))
        first = "".join(c["source"]).strip().splitlines()[:1]
        where = f"cell {i} ({first[0][:60] if first else 'empty'})"
        if [k for k, _ in a] != [k for k, _ in b]:
            problems.append(f"{where}: output kinds differ: stored {[k for k, _ in a]} vs fresh {[k for k, _ in b]}")
            continue
        for (kind, x), (_, y) in zip(a, b):
            if kind == "error": problems.append(f"{where}: raised {y}"); break
            d = None if kind == "image" else compare_text(x, y)
            if kind == "image" and x != y: d = f"image kind differs: {x} vs {y}"
            if d: problems.append(f"{where}: {d}"); break
    return problems


# ----------------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="notebooks (default: all of nbs/)")
    p.add_argument("--check", action="store_true", help="compare fresh outputs with the stored ones; write nothing")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = p.parse_args(argv)
    import nbformat
    failed = 0
    for stem in notebook_names(args.names):
        try: fresh, secs = execute(stem, args.timeout)
        except Exception as e:   # a cell raised: nbclient's CellExecutionError names the cell and shows the traceback
            print(f"{stem}: FAILED to run\n{e}", file=sys.stderr); failed += 1; continue
        if args.check:
            probs = compare_notebook(nbformat.read(NBS / f"{stem}.ipynb", as_version=4), fresh)
            print(f"{stem}: {secs:.0f} s, " + ("outputs agree" if not probs else f"{len(probs)} cells differ"))
            for line in probs[:20]: print("   ", line)
            failed += bool(probs)
        else:
            write_back(stem, fresh)
            print(f"{stem}: {secs:.0f} s, outputs written")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

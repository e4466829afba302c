"""The notebooks are the source and their pages show what the code prints now.

Every notebook is executed alone in an empty folder outside the repository (as a student who downloaded it would run it,
with only the installed package) and its fresh outputs are compared with the stored ones: words exactly, integers exactly,
decimals within float noise, timings, dates and temporary paths masked (scripts/run_notebooks.py). So a changed default that
nobody re-ran fails here. `python scripts/run_notebooks.py` re-executes the notebooks and writes the outputs back.
Exporting and cleaning the notebooks must change nothing either.
"""
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
import run_notebooks  # noqa: E402

NBS = run_notebooks.notebook_names()


@pytest.mark.parametrize("nb", NBS)
def test_stored_outputs_are_what_the_notebook_prints_now(nb):
    fresh, secs = run_notebooks.execute(nb)
    problems = run_notebooks.compare_notebook(nbformat.read(ROOT / "nbs" / f"{nb}.ipynb", as_version=4), fresh)
    assert not problems, (f"{nb}: the stored outputs are not what the notebook prints now; re-run it with "
                          f"`python scripts/run_notebooks.py {nb}`:\n  " + "\n  ".join(problems[:15]))
    assert secs < 180, f"{nb} took {secs:.0f} s; a notebook must run in at most 3 minutes"


def test_the_comparison_fails_on_a_changed_number_or_word():
    "The comparison is not vacuous: a changed word or integer fails, float noise and timings do not."
    same = run_notebooks.compare_text
    assert same("rounds 9, residual 3.2e-05, 0.51 s", "rounds 9, residual 3.2000001e-05, 0.73 s") is None
    assert same("rounds 9", "rounds 10") is not None
    assert same("solver=anderson", "solver=chain_newton") is not None
    assert same("x0 error 1.2e-15", "x0 error 3.4e-16") is None                   # float64 round-off
    assert same("wrote /tmp/abc123/x.png", "wrote /tmp/xyz789/x.png") is None
    assert same("median 16.5", "median 9.5") is not None
    md = lambda text: {"output_type": "display_data", "data": {"text/markdown": text, "text/plain": "<IPython.core.display.Markdown object>"}}
    cell = lambda out: {"cells": [{"cell_type": "code", "source": "Markdown(...)", "metadata": {}, "outputs": [out]}]}
    assert run_notebooks.compare_notebook(cell(md("The median is 16 rounds.")), cell(md("The median is 9 rounds.")))   # generated prose


def _run(cmd, cwd, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_export_and_clean_leave_the_tree_unchanged(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv*", ".git", "__pycache__", "_docs", "_proc", "*.egg-info",
                                                              ".pytest_cache", "_site*"))
    for cmd in ("nbdev-export", "nbdev-clean"):
        r = _run([str(BIN / cmd)], cwd=work)
        assert r.returncode == 0, r.stderr[-2000:]
    changed = []
    for sub, pat in (("deq_ddim_nb", "*.py"), ("nbs", "*.ipynb")):
        for f in sorted((work / sub).glob(pat)):
            orig = ROOT / sub / f.name
            if not orig.exists() or not filecmp.cmp(f, orig, shallow=False): changed.append(f"{sub}/{f.name}")
    assert not changed, f"run nbdev-export and nbdev-clean, then commit: these differ: {changed}"

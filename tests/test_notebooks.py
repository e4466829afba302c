"The notebooks are the source: each one runs (nbdev-test), and exporting/cleaning them changes nothing."
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NBS = sorted(p.name for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))


def _run(cmd, cwd, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("nb", NBS)
def test_notebook_runs(nb):
    r = _run([str(BIN / "nbdev-test"), str(ROOT / "nbs" / nb), "--do-print"], cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Success" in r.stdout + r.stderr


def test_export_and_clean_leave_the_tree_unchanged(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv*", ".git", "__pycache__", "_docs", "_proc", "*.egg-info", ".pytest_cache"))
    for cmd in ("nbdev-export", "nbdev-clean"):
        r = _run([str(BIN / cmd)], cwd=work)
        assert r.returncode == 0, r.stderr[-2000:]
    changed = []
    for sub, pat in (("deq_ddim_nb", "*.py"), ("nbs", "*.ipynb")):
        for f in sorted((work / sub).glob(pat)):
            orig = ROOT / sub / f.name
            if not orig.exists() or not filecmp.cmp(f, orig, shallow=False): changed.append(f"{sub}/{f.name}")
    assert not changed, f"run nbdev-export and nbdev-clean, then commit: these differ: {changed}"

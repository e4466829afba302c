"The `deq-ddim` console script, run as a user would (a subprocess)."
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXE = Path(sys.executable).parent / "deq-ddim"


def run(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_sample_toy_prints_agreement_and_writes_png(tmp_path):
    out = tmp_path / "grid.png"
    r = run("sample", "--model", "toy-digits", "--T", "20", "--n", "3", "--tol", "1e-4", "--max-iter", "30", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("image")]
    assert len(lines) == 3 and all("rounds" in l and "|x0 - x0_DDIM|" in l and "DDIM" in l for l in lines)
    diffs = [float(l.split("|x0_DDIM| ")[1].split()[0]) for l in lines]
    assert max(diffs) < 1e-3
    from PIL import Image
    im = np.asarray(Image.open(out))
    assert im.ndim == 2 and im.std() > 10                       # a real grid of digits, not a blank image
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]   # no temp file left


def test_sample_shipped_model(tmp_path):
    r = run("sample", "--model", "digits", "--T", "20", "--n", "2", "--out", str(tmp_path / "d.png"), "--no-progress", "--tol", "1e-4", "--max-iter", "30")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and (tmp_path / "d.png").exists()
    worst = float(r.stdout.split("worst |x0 - x0_DDIM|/|x0_DDIM| = ")[1].split()[0])
    assert worst < 1e-3


def test_sample_stochastic_runs(tmp_path):
    r = run("sample", "--model", "toy-digits", "--T", "10", "--eta", "1", "--n", "1", "--out", str(tmp_path / "s.png"), "--no-progress", "--tol", "1e-5")
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("|x0_DDIM| ")[1].split()[0]) < 1e-3


def test_existing_out_needs_force(tmp_path):
    out = tmp_path / "x.png"
    out.write_bytes(b"keep me")
    r = run("sample", "--model", "toy-digits", "--T", "5", "--n", "1", "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "--force" in r.stderr and out.read_bytes() == b"keep me"
    r = run("sample", "--model", "toy-digits", "--T", "5", "--n", "1", "--out", str(out), "--no-progress", "--force")
    assert r.returncode == 0 and out.read_bytes()[:4] == b"\x89PNG"


def test_unknown_model_lists_available(tmp_path):
    r = run("sample", "--model", "cifar10", "--out", str(tmp_path / "x.png"), "--no-progress")
    assert r.returncode == 2 and "digits" in r.stderr and "toy-digits" in r.stderr and "Traceback" not in r.stderr


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "ckpt"; bad.mkdir(); (bad / "config.json").write_text("{not json")
    r = run("sample", "--model", str(bad), "--out", str(tmp_path / "x.png"), "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(bad) in r.stderr
    junk = tmp_path / "w.safetensors"; junk.write_bytes(b"\x00" * 10)
    r = run("sample", "--model", str(junk), "--out", str(tmp_path / "x.png"), "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,msg", [(["--T", "0"], "--T"), (["--eta=-0.5"], "--eta"), (["--tol", "0"], "--tol"),
                                      (["--solver", "newton"], "--solver"), (["--n", "0"], "--n")])
def test_bad_arguments(tmp_path, args, msg):
    r = run("sample", "--out", str(tmp_path / "x.png"), *args)
    assert r.returncode == 2 and msg in r.stderr


def test_missing_out_directory(tmp_path):
    r = run("sample", "--model", "toy-digits", "--out", str(tmp_path / "nope" / "x.png"), "--no-progress")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_invert_ode_writes_latent_and_image(tmp_path):
    r = run("invert", "--digit", "5", "--T", "10", "--method", "ode", "--out", str(tmp_path / "inv"), "--no-progress")
    assert r.returncode == 0, r.stderr
    x_T = torch.load(tmp_path / "inv" / "x_T.pt")
    assert x_T.shape == (1, 1, 16, 16) and torch.isfinite(x_T).all()
    assert (tmp_path / "inv" / "regenerated.png").exists()


def test_invert_bad_image(tmp_path):
    from PIL import Image
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    (tmp_path / "text.png").write_text("hello")
    for name in ("small.png", "text.png"):
        r = run("invert", "--image", str(tmp_path / name), "--T", "5", "--method", "ode", "--out", str(tmp_path / "o"), "--no-progress")
        assert r.returncode == 2 and "Traceback" not in r.stderr and "16" in r.stderr, r.stderr


def test_bench_quick(tmp_path):
    r = run("bench", "--quick", "--out", str(tmp_path / "b"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "speed.md").exists() and (tmp_path / "b" / "speed.csv").exists()

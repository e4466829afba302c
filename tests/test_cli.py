"The `deq-ddim` console script, run as a user would (a subprocess), and the CLI's file rules."
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deq_ddim_nb import cli

EXE = Path(sys.executable).parent / "deq-ddim"
TOY = ["--model", "toy-digits", "--no-progress"]


def run(*args, cwd=None, env=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600, **kw)


def py(code, env=None):
    "Run `code` in a fresh interpreter (a user's shell), without OMP_/MKL_NUM_THREADS (CI sets both) unless `env` sets them."
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **(env or {})}, timeout=600)


def grid_image(path, i=0, size=8, scale=4, pad=1, nrow=2):
    "Crop image i out of a grid written by `deq-ddim sample`."
    from PIL import Image
    g = np.asarray(Image.open(path))
    r, c = divmod(i, nrow)
    y, x = (pad + r * (size + pad)) * scale, (pad + c * (size + pad)) * scale
    return g[y:y + size * scale, x:x + size * scale]


# --- sampling ----------------------------------------------------------------------------------------------------------
def test_sample_toy_prints_agreement_and_writes_png(tmp_path):
    out = tmp_path / "grid.png"
    r = run("sample", *TOY, "--T", "20", "--n", "3", "--tol", "1e-4", "--max-iter", "30", "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("image")]
    assert len(lines) == 3 and all("rounds" in l and "|x0 - x0_DDIM|" in l and "DDIM" in l for l in lines)
    diffs = [float(l.split("|x0_DDIM| ")[1].split()[0]) for l in lines]
    assert max(diffs) < 1e-3
    from PIL import Image
    im = np.asarray(Image.open(out))
    assert Image.open(out).format == "PNG" and im.ndim == 2 and im.std() > 10     # a real grid of digits
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]          # no temp file left


def test_sample_shipped_model(tmp_path):
    r = run("sample", "--model", "digits", "--T", "20", "--n", "2", "--out", str(tmp_path / "d.png"), "--no-progress", "--tol", "1e-4", "--max-iter", "30")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and (tmp_path / "d.png").exists()
    worst = float(r.stdout.split("worst |x0 - x0_DDIM|/|x0_DDIM| = ")[1].split()[0])
    assert worst < 1e-3
    # item 7: the model's name (not its class) and the median rounds as an integer
    assert r.stdout.startswith("model digits ") and "UNet" not in r.stdout.splitlines()[0]
    assert re.search(r"median \d+ rounds", r.stdout), r.stdout


def test_sample_stochastic_says_sddim_and_agrees(tmp_path):
    r = run("sample", *TOY, "--T", "10", "--eta", "1", "--n", "1", "--out", str(tmp_path / "s.png"), "--tol", "1e-5", "--max-iter", "40")
    assert r.returncode == 0, r.stderr
    assert "sequential sDDIM (same noises)" in r.stdout and "x0_DDIM" not in r.stdout
    assert r.stdout.startswith("model toy-digits ")
    assert float(r.stdout.split("|x0_sDDIM| ")[1].split()[0]) < 1e-3


def test_stochastic_image_0_does_not_depend_on_n(tmp_path):
    "Item 6: x_T and noises are drawn per image, so image 0 is the same for --n 2 and --n 4."
    for n in (2, 4):
        r = run("sample", *TOY, "--T", "10", "--eta", "0.5", "--seed", "7", "--n", str(n), "--tol", "1e-5",
                "--max-iter", "40", "--no-compare", "--out", str(tmp_path / f"n{n}.png"))
        assert r.returncode == 0, r.stderr
    a, b = grid_image(tmp_path / "n2.png"), grid_image(tmp_path / "n4.png")
    assert a.shape == (32, 32) and a.std() > 10
    np.testing.assert_array_equal(a, b)
    # and a different seed gives a different image 0
    r = run("sample", *TOY, "--T", "10", "--eta", "0.5", "--seed", "8", "--n", "2", "--tol", "1e-5", "--max-iter", "40",
            "--no-compare", "--out", str(tmp_path / "s8.png"))
    assert r.returncode == 0 and not np.array_equal(grid_image(tmp_path / "s8.png"), a)


def test_unconverged_images_get_a_warning_line(tmp_path):
    r = run("sample", *TOY, "--T", "20", "--n", "2", "--max-iter", "1", "--out", str(tmp_path / "u.png"))
    assert r.returncode == 0, r.stderr
    warn = [l for l in r.stdout.splitlines() if l.startswith("warning: image")]
    assert len(warn) == 2 and all("--max-iter" in l and "residual" in l and "1 rounds" in l for l in warn), r.stdout
    assert "0/2 converged" in r.stdout


def test_progress_bar_shows_rounds(tmp_path):
    r = run("sample", "--model", "toy-digits", "--T", "10", "--n", "1", "--out", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr
    assert re.search(r"DEQ \((picard|anderson|chain_newton)\)", r.stderr) and "images" in r.stderr    # rounds within an image, and images


def test_no_compare_skips_the_sequential_sampler(tmp_path):
    r = run("sample", *TOY, "--T", "10", "--n", "1", "--no-compare", "--out", str(tmp_path / "c.png"))
    assert r.returncode == 0, r.stderr
    assert "x0_DDIM" not in r.stdout and "DEQ" in r.stdout
    r = run("sample", *TOY, "--check", "--out", str(tmp_path / "c2.png"))        # the no-op flag is gone
    assert r.returncode == 2 and "--check" in r.stderr


# --- startup: help, version, threads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["sample", "--help"], ["--help"], ["invert", "--help"], ["handout", "--help"],
                                  ["sample", "--tol", "inf"], ["--version"]])
def test_parsing_does_not_import_torch(argv):
    code = ("import sys; from deq_ddim_nb.cli import main\n"
            f"try: main({argv!r})\n"
            "except SystemExit: pass\n"
            "print('TORCH', 'torch' in sys.modules, 'numpy' in sys.modules)")
    r = py(code)
    assert "TORCH False False" in r.stdout, r.stdout + r.stderr


def test_thread_default_is_set_before_torch(tmp_path):
    code = ("import sys; from deq_ddim_nb.cli import main\n"
            f"rc = main(['sample', '--model', 'toy-digits', '--T', '2', '--n', '1', '--no-progress', '--out', {str(tmp_path / 'a.png')!r}])\n"
            "import torch; print('THREADS', rc, torch.get_num_threads())")
    r = py(code)
    assert "THREADS 0 1" in r.stdout, r.stdout + r.stderr
    r = py(code.replace("a.png", "b.png"), env={"OMP_NUM_THREADS": "2"})        # the user's setting wins
    assert "THREADS 0 2" in r.stdout, r.stdout + r.stderr


def test_version():
    from deq_ddim_nb import __version__
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"deq-ddim {__version__}"


def _all_actions(parser):
    for a in parser._actions:
        if isinstance(a, cli.argparse._SubParsersAction):
            for sp in a.choices.values(): yield from _all_actions(sp)
        else: yield parser.prog, a


def test_every_option_has_help_and_defaults_are_shown():
    p = cli.build_parser(bench=True)
    missing = [(prog, a.dest) for prog, a in _all_actions(p) if not a.help]
    assert not missing, missing
    r = run("sample", "--help")
    assert r.returncode == 0 and "(default: 100)" in r.stdout and "(default: auto)" in r.stdout
    r = run("invert", "--help")
    r.stdout = " ".join(r.stdout.split())                                # help text wraps lines
    assert f"0 to {cli.N_HELDOUT_DIGITS - 1}" in r.stdout and "(default: 0.1)" in r.stdout


def test_digit_range_matches_the_data():
    from deq_ddim_nb.toy import digits_data
    assert cli.N_HELDOUT_DIGITS == len(digits_data(16, "test")[0])
    r = run("invert", "--digit", str(cli.N_HELDOUT_DIGITS), "--out", "x")
    assert r.returncode == 2 and "--digit" in r.stderr and f"[0, {cli.N_HELDOUT_DIGITS - 1}]" in r.stderr


def test_listed_choices_match_the_library():
    from deq_ddim_nb.schedules import SKIPS
    from deq_ddim_nb.solvers import SOLVERS
    from deq_ddim_nb.inversion import METHODS, GRADS
    assert cli.SKIP_CHOICES == tuple(SKIPS) and cli.SOLVER_CHOICES == ("auto", *SOLVERS)
    assert cli.INVERT_METHODS == tuple(METHODS) and cli.INVERT_GRADS == tuple(GRADS)


# --- bad values: argparse-style errors naming the option ----------------------------------------------------------------
BAD = [(["sample", "--T", "0"], "--T"), (["sample", "--eta=-0.5"], "--eta"), (["sample", "--tol", "0"], "--tol"),
       (["sample", "--solver", "newton"], "--solver"), (["sample", "--n", "0"], "--n"),
       (["sample", "--tol", "inf"], "--tol"), (["sample", "--tol", "nan"], "--tol"), (["sample", "--eta", "nan"], "--eta"),
       (["sample", "--mixing", "1.5"], "--mixing"), (["sample", "--seed", str(2 ** 70)], "--seed"),
       (["sample", "--model", "toy-digits", "--mixing", "0.5"], "--mixing"),      # Anderson's option, not the default solver's
       (["sample", "--seed", "-1"], "--seed"), (["sample", "--model", "toy-digits", "--device", "meta"], "--device"),
       (["sample", "--model", "toy-digits", "--device", "no-such"], "--device"),
       (["sample", "--model", "toy-digits", "--T", "5000"], "--T"),
       (["sample", "--model", "toy-digits", "--n", "2", "--seed", str(2 ** 63 - 1)], "--seed"),
       (["invert", "--digit", "1", "--lr", "inf"], "--lr"), (["invert", "--digit", "1", "--tau", "2"], "--tau"),
       (["invert", "--digit", "1", "--stop-loss", "nan"], "--stop-loss"),
       (["invert", "--digit", "1", "--method", "ode", "--eta", "0.5"], "--eta")]
if not torch.cuda.is_available(): BAD.append((["sample", "--model", "toy-digits", "--device", "cuda"], "--device"))


@pytest.mark.parametrize("args,opt", BAD, ids=[" ".join(a[1:]) for a, _ in BAD])
def test_bad_values_are_argparse_errors(tmp_path, args, opt):
    out = tmp_path / ("x.png" if args[0] == "sample" else "inv")
    r = run(*args, "--out", str(out), "--no-progress")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "usage: deq-ddim " + args[0] in r.stderr
    assert f"error: argument {opt}" in r.stderr, r.stderr
    assert not out.exists()


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


# --- files ---------------------------------------------------------------------------------------------------------------
def test_existing_out_needs_force(tmp_path):
    out = tmp_path / "x.png"
    out.write_bytes(b"keep me")
    r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and out.read_bytes() == b"keep me"
    r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out), "--force")
    assert r.returncode == 0 and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_force_never_replaces_a_non_regular_file(tmp_path, kind):
    out = tmp_path / "x.png"
    os.mkfifo(out) if kind == "fifo" else out.mkdir()
    before = os.lstat(out)
    r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out), "--force")
    assert r.returncode == 2 and "error: argument --out" in r.stderr and "Traceback" not in r.stderr, r.stderr
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert "model" not in r.stdout                                    # refused before any sampling
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_symlink_rule(tmp_path):
    "A link at --out: refused without --force; with it the link itself is replaced, never written through."
    real = tmp_path / "real.png"; real.write_bytes(b"keep me")
    out = tmp_path / "x.png"; out.symlink_to(real)
    r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and out.is_symlink()
    r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out), "--force")
    assert r.returncode == 0, r.stderr
    assert not out.is_symlink() and out.read_bytes()[:4] == b"\x89PNG" and real.read_bytes() == b"keep me"


def test_device_files_are_refused_before_writing():
    # checked on the function that guards every write (running the CLI against /dev/null as root would risk it)
    with pytest.raises(cli.CLIError, match="character device"): cli.check_replaceable("/dev/null", True)
    with pytest.raises(cli.CLIError, match="must end in"): cli.check_out("/dev/null", True)
    with pytest.raises(cli.CLIError, match="character device"): cli.publish_bytes(b"x", "/dev/null", force=True)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_out_is_checked_before_sampling(tmp_path):
    (tmp_path / "file").write_text("x")
    for out, why in [(tmp_path / "nope" / "x.png", "does not exist"), (tmp_path / "file" / "x.png", "does not exist"),
                     (tmp_path / "x.gif", "must end in"), (tmp_path / "x", "must end in")]:
        r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out))
        assert r.returncode == 2 and why in r.stderr and "model" not in r.stdout, (out, r.stderr)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory")
def test_unwritable_directory_is_refused_before_sampling(tmp_path):
    d = tmp_path / "ro"; d.mkdir(); d.chmod(0o555)
    try:
        r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(d / "x.png"))
        assert r.returncode == 2 and "not writable" in r.stderr and "model" not in r.stdout
    finally: d.chmod(0o755)


def test_file_that_appears_while_sampling_is_not_replaced(tmp_path):
    out = tmp_path / "x.png"
    cli.check_out(out)                                    # passes: nothing there yet
    out.write_bytes(b"appeared meanwhile")                # ... then something appears
    with pytest.raises(cli.CLIError, match="--force"): cli.publish_bytes(b"new", out)
    assert out.read_bytes() == b"appeared meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    cli.publish_bytes(b"new", out, force=True)
    assert out.read_bytes() == b"new"


def test_no_replace_publish_refuses_a_file_that_appears_after_the_last_check(tmp_path, monkeypatch):
    "The last line of defence is os.link, which fails if the target exists (a rename would replace it)."
    out = tmp_path / "x.png"
    real_link = os.link
    def link_after_race(src, dst, *a, **k):
        Path(dst).write_bytes(b"raced")                   # appears between the checks and the publish
        return real_link(src, dst, *a, **k)
    monkeypatch.setattr(os, "link", link_after_race)
    with pytest.raises(cli.CLIError, match="appeared"): cli.publish_bytes(b"new", out)
    assert out.read_bytes() == b"raced" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_temp_file_is_removed_on_interrupt(tmp_path, monkeypatch):
    long = tmp_path / ("d" * 250 + ".png")                # a name near the 255-byte limit still works
    cli.publish_bytes(b"x", long)
    assert long.read_bytes() == b"x"
    def killed(*a, **k): raise SystemExit(143)            # what the SIGTERM handler raises, mid-publish
    monkeypatch.setattr(os, "link", killed)
    with pytest.raises(SystemExit): cli.publish_bytes(b"y", tmp_path / "y.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [long.name]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    out = tmp_path / "x.png"
    r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out), preexec_fn=lambda: os.umask(umask))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_jpeg_name_gets_jpeg_bytes(tmp_path):
    from PIL import Image
    for name in ("x.jpg", "y.JPEG"):
        r = run("sample", *TOY, "--T", "5", "--n", "2", "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / name).read_bytes()[:3] == b"\xff\xd8\xff" and Image.open(tmp_path / name).format == "JPEG"


def test_sigterm_exits_cleanly_and_leaves_nothing(tmp_path):
    out = tmp_path / "x.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([str(EXE), "sample", "--model", "digits", "--T", "100", "--n", "50", "--no-progress", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = p.stdout.readline()                        # the header: sampling has started
        assert first.startswith("model"), first + p.stderr.read()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    err = p.stderr.read()
    assert rc == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_missing_out_directory(tmp_path):
    r = run("sample", *TOY, "--out", str(tmp_path / "nope" / "x.png"))
    assert r.returncode == 2 and "does not exist" in r.stderr


# --- invert --------------------------------------------------------------------------------------------------------------
def test_invert_ode_writes_latent_image_and_comparison(tmp_path):
    r = run("invert", "--digit", "5", "--T", "10", "--method", "ode", "--out", str(tmp_path / "inv"), "--no-progress")
    assert r.returncode == 0, r.stderr
    x_T = torch.load(tmp_path / "inv" / "x_T.pt")
    assert x_T.shape == (1, 1, 16, 16) and torch.isfinite(x_T).all()
    assert (tmp_path / "inv" / "regenerated.png").exists()
    from PIL import Image
    from deq_ddim_nb.toy import digits_data
    pair = np.asarray(Image.open(tmp_path / "inv" / "comparison.png"))
    s = 8
    assert pair.shape == ((16 + 2) * s, (2 * 16 + 3) * s)                # two enlarged 16x16 images side by side
    left = pair[s:17 * s:s, s:17 * s:s]                                   # the target, one pixel per 8x8 block
    target = digits_data(16, "test", torch.float32)[0][5, 0]
    np.testing.assert_allclose(left, ((target.clamp(-1, 1) + 1) * 127.5).round().numpy(), atol=1)
    regen = np.asarray(Image.open(tmp_path / "inv" / "regenerated.png"))
    np.testing.assert_array_equal(pair[s:17 * s:s, 18 * s:34 * s:s], regen)


def test_invert_refuses_non_regular_files_in_out(tmp_path):
    d = tmp_path / "inv"; d.mkdir(); (d / "comparison.png").mkdir()
    r = run("invert", "--digit", "5", "--T", "5", "--method", "ode", "--out", str(d), "--no-progress", "--force")
    assert r.returncode == 2 and "directory" in r.stderr and not (d / "x_T.pt").exists()


def test_invert_bad_image(tmp_path):
    from PIL import Image
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    (tmp_path / "text.png").write_text("hello")
    for name in ("small.png", "text.png"):
        r = run("invert", "--image", str(tmp_path / name), "--T", "5", "--method", "ode", "--out", str(tmp_path / "o"), "--no-progress")
        assert r.returncode == 2 and "Traceback" not in r.stderr and "16" in r.stderr, r.stderr


# --- bench and handout ---------------------------------------------------------------------------------------------------
def test_bench_quick(tmp_path):
    r = run("bench", "--quick", "--out", str(tmp_path / "b"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "speed.md").exists() and (tmp_path / "b" / "speed.csv").exists()


def test_bench_help_lists_the_harness_options():
    r = run("bench", "--help")
    assert r.returncode == 0 and "--quick" in r.stdout and "--variants" in r.stdout


def test_handout_is_a_subcommand():
    r = run("handout", "--help")
    assert r.returncode == 0 and "OUT_DIR" in r.stdout and "--force" in r.stdout
    r = run("handout")
    assert r.returncode == 2 and "OUT_DIR" in r.stderr


def test_handout_writes_notebooks(tmp_path):
    pytest.importorskip("deq_ddim_nb.classroom")
    out = tmp_path / "handout"
    r = run("handout", str(out))
    assert r.returncode == 0, r.stderr
    nbs = list(out.rglob("*.ipynb"))
    assert nbs and any("# your answer here" in p.read_text() for p in nbs)
    r = run("handout", str(out))                                       # refuses to overwrite without --force
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert run("handout", str(out), "--force").returncode == 0

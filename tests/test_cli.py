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


def run(*args, cwd=None, env=None, timeout=600, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, **kw)


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
def _expected_grid(model, T, n, seed=0, eta=0.0, dtype=torch.float64):
    "The grid the sequential sampler gives from the same x_T and noises: independent of the DEQ solver and of the CLI."
    from deq_ddim_nb.ddim import ddim_sample
    from deq_ddim_nb.distributed import image_inputs
    from deq_ddim_nb.schedules import DDIMSchedule
    sched = DDIMSchedule.from_config(T, model.config, eta=eta)
    x_T, noise = image_inputs(range(n), model.config["sample_shape"], sched, seed=seed, dtype=dtype)
    with torch.no_grad(): x0 = ddim_sample(model, x_T, sched, noise)
    return cli.image_grid(x0)


def test_sample_toy_writes_the_sequential_samples(tmp_path):
    from PIL import Image
    from deq_ddim_nb.toy import digits_eps
    out = tmp_path / "grid.png"
    r = run("sample", *TOY, "--T", "20", "--n", "3", "--tol", "1e-4", "--max-iter", "30", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert len([l for l in r.stdout.splitlines() if l.startswith("image")]) == 3
    with Image.open(out) as im: assert im.format == "PNG"; got = np.asarray(im)
    want = _expected_grid(digits_eps(8), 20, 3)
    assert got.shape == want.shape and got.std() > 10                              # a real grid of digits
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1                     # DEQ = DDIM up to a rounding step
    assert sorted(os.listdir(tmp_path)) == ["grid.png"]                             # no temp file left


def test_sample_shipped_model(tmp_path):
    from PIL import Image
    from deq_ddim_nb.models import load_model
    r = run("sample", "--model", "digits", "--T", "20", "--n", "2", "--out", str(tmp_path / "d.png"), "--no-progress", "--tol", "1e-4", "--max-iter", "30")
    assert r.returncode == 0, r.stderr
    want = _expected_grid(load_model("digits"), 20, 2, dtype=torch.float32)
    got = np.asarray(Image.open(tmp_path / "d.png"))
    assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= 2
    # the model's name (not its class) and the median rounds as an integer
    assert r.stdout.startswith("model digits ") and "UNet" not in r.stdout.splitlines()[0]
    assert re.search(r"median \d+ rounds", r.stdout), r.stdout


def test_sample_stochastic_says_sddim_and_agrees(tmp_path):
    from PIL import Image
    from deq_ddim_nb.toy import digits_eps
    r = run("sample", *TOY, "--T", "10", "--eta", "1", "--n", "2", "--out", str(tmp_path / "s.png"), "--tol", "1e-5", "--max-iter", "40")
    assert r.returncode == 0, r.stderr
    assert "sequential sDDIM (same noises)" in r.stdout and "x0_DDIM" not in r.stdout
    assert r.stdout.startswith("model toy-digits ")
    want = _expected_grid(digits_eps(8), 10, 2, eta=1.0)                              # sequential sDDIM, the same noises
    assert np.abs(np.asarray(Image.open(tmp_path / "s.png")).astype(int) - want.astype(int)).max() <= 1


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


def test_unconverged_images_get_a_warning_line_on_stderr(tmp_path):
    r = run("sample", *TOY, "--T", "20", "--n", "2", "--max-iter", "1", "--out", str(tmp_path / "u.png"))
    assert r.returncode == 0, r.stderr
    warn = [l for l in r.stderr.splitlines() if l.startswith("deq-ddim: warning: image")]
    assert len(warn) == 2 and all("--max-iter" in l and "residual" in l and "1 rounds" in l for l in warn), r.stderr
    assert "warning" not in r.stdout and "0/2 converged" in r.stdout                # results on stdout, warnings on stderr


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path):
    r = run("sample", "--model", "toy-digits", "--T", "10", "--n", "2", "--out", str(tmp_path / "p.png"))
    assert r.returncode == 0 and "images:" not in r.stderr and "it/s" not in r.stderr and "\r" not in r.stderr, r.stderr
    assert len(r.stdout.splitlines()) == 5                                           # header, 2 images, summary, wrote


def test_progress_bars_on_a_terminal_or_when_asked(tmp_path):
    import pty
    r = run("sample", "--model", "toy-digits", "--T", "10", "--n", "1", "--progress", "--out", str(tmp_path / "a.png"))
    assert r.returncode == 0 and re.search(r"DEQ \((picard|anderson|chain_newton)\)", r.stderr) and "images" in r.stderr
    import fcntl, struct, termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))       # a terminal 100 columns wide
    try:
        p = subprocess.run([str(EXE), "sample", "--model", "toy-digits", "--T", "10", "--n", "1", "--out", str(tmp_path / "b.png")],
                           stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        os.close(slave); slave = None
        err = b""
        while True:
            try: chunk = os.read(master, 65536)
            except OSError: break
            if not chunk: break
            err += chunk
    finally:
        if slave is not None: os.close(slave)
        os.close(master)
    assert p.returncode == 0 and b"images" in err
    r = run("sample", "--model", "toy-digits", "--T", "10", "--n", "1", "--no-progress", "--out", str(tmp_path / "c.png"))
    assert r.returncode == 0 and "images" not in r.stderr


def test_no_compare_skips_the_sequential_sampler(tmp_path):
    r = run("sample", *TOY, "--T", "10", "--n", "1", "--no-compare", "--out", str(tmp_path / "c.png"))
    assert r.returncode == 0, r.stderr
    assert "x0_DDIM" not in r.stdout and "DEQ" in r.stdout
    r = run("sample", *TOY, "--check", "--out", str(tmp_path / "c2.png"))        # the no-op flag is gone
    assert r.returncode == 2 and "--check" in r.stderr


# --- startup: help, version, threads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["sample", "--help"], ["--help"], ["invert", "--help"], ["handout", "--help"],
                                  ["bench", "--help"], ["sample", "--tol", "inf"], ["bench", "--seeds", "0"], ["--version"]])
def test_parsing_does_not_import_torch(argv):
    code = ("import sys; from deq_ddim_nb.cli import main\n"
            f"try: main({argv!r})\n"
            "except SystemExit: pass\n"
            "print('TORCH', 'torch' in sys.modules, 'numpy' in sys.modules)")
    r = py(code)
    assert "TORCH False False" in r.stdout, r.stdout + r.stderr


THREADS = ("import os, sys; from deq_ddim_nb.cli import main\n"
           "rc = main(sys.argv[1:])\n"
           "import torch; print('THREADS', rc, torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS'))")


def _threads(tmp_path, *extra, env=None, pre=""):
    out = tmp_path / f"t{len(list(tmp_path.iterdir()))}.png"
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", pre + THREADS, "sample", *TOY, "--T", "2", "--n", "1", "--out", str(out), *extra],
                       capture_output=True, text=True, env={**base, **(env or {})}, timeout=600)
    return r.stdout.split("THREADS ")[-1].split() if "THREADS" in r.stdout else r.stdout + r.stderr


def test_thread_settings_of_the_user_are_respected(tmp_path):
    assert _threads(tmp_path) == ["0", "1", "None"]                                    # nothing set: the default, env untouched
    assert _threads(tmp_path, env={"OMP_NUM_THREADS": "2"}) == ["0", "2", "2"]         # the user's variable wins
    assert _threads(tmp_path, env={"MKL_NUM_THREADS": "2"})[:2] == ["0", str(_torch_threads({"MKL_NUM_THREADS": "2"}))]
    assert _threads(tmp_path, "--threads", "2", env={"OMP_NUM_THREADS": "1"}) == ["0", "2", "1"]   # the option wins
    # torch imported (and set) before main: left as the caller set it
    assert _threads(tmp_path, pre="import torch; torch.set_num_threads(2)\n") == ["0", "2", "None"]


def _torch_threads(env):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], capture_output=True, text=True,
                       env={**base, **env}, timeout=300)
    return int(r.stdout)


def test_one_entry_point():
    import tomllib
    scripts = tomllib.loads((Path(cli.__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"deq-ddim": "deq_ddim_nb.cli:main"}
    r = subprocess.run([sys.executable, "-m", "deq_ddim_nb.cli", "--version"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("deq-ddim ")
    assert {n: c[3] for n, c in cli.SUBCOMMANDS.items()} == dict(sample=cli.run_sample, invert=cli.run_invert,
                                                                    bench=cli.run_bench, handout=cli.run_handout)


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
    p = cli.build_parser()
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
    from deq_ddim_nb import benchmark
    assert cli.SKIP_CHOICES == tuple(SKIPS) and cli.SOLVER_CHOICES == ("auto", *SOLVERS)
    assert cli.INVERT_METHODS == tuple(METHODS) and cli.INVERT_GRADS == tuple(GRADS)
    assert cli.BENCH_MODELS == benchmark.BENCH_MODELS and cli.BENCH_VARIANTS == tuple(benchmark.VARIANTS)


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
       (["invert", "--digit", "1", "--method", "ode", "--eta", "0.5"], "--eta"),
       (["sample", "--model", "toy-digits", "--eta", "2"], "--eta"),                  # too large for the schedule
       (["sample", "--n", str(cli.MAX_IMAGES + 1)], "--n"), (["sample", "--m", str(cli.MAX_HISTORY + 1)], "--m"),
       (["sample", "--model", "toy-digits", "--m", "3"], "--m"),                     # the default solver keeps no history
       (["invert", "--digit", "1", "--lr", "11"], "--lr"), (["invert", "--digit", "1", "--k", "1000"], "--k"),
       (["sample", "--tol", "2"], "--tol")]
if not torch.cuda.is_available(): BAD.append((["sample", "--model", "toy-digits", "--device", "cuda"], "--device"))


@pytest.mark.parametrize("args,opt", BAD, ids=[" ".join(a[1:]) for a, _ in BAD])
def test_bad_values_are_argparse_errors(tmp_path, args, opt):
    out = tmp_path / ("x.png" if args[0] == "sample" else "inv")
    r = run(*args, "--out", str(out), "--no-progress")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "usage: deq-ddim " + args[0] in r.stderr
    assert f"error: argument {opt}" in r.stderr, r.stderr
    assert "error" not in r.stdout and not out.exists()


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
    # checked on the functions that guard every write (running the CLI against /dev/null as root would risk it)
    with pytest.raises(cli.CLIError, match="a device"): cli.check_outputs(["/dev/null"], True)
    with pytest.raises(cli.CLIError, match="a device"): cli.check_image_out("/dev/null", True)
    with pytest.raises(cli.CLIError, match="a device"): cli.publish_outputs({"/dev/null": b"x"}, force=True)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_out_is_checked_before_sampling(tmp_path):
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "gone")
    for out, why in [(tmp_path / "nope" / "x.png", "does not exist"), (tmp_path / "file" / "x.png", "not a directory"),
                     (tmp_path / "gone" / "x.png", "dangling symbolic link"), (str(tmp_path / "o.png") + "/", "names a directory"),
                     (tmp_path / ("n" * 300 + ".png"), "too long"), (tmp_path / "x.gif", "must end in"), (tmp_path / "x", "must end in")]:
        r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out))
        assert r.returncode == 2 and why in r.stderr and "model" not in r.stdout and "Traceback" not in r.stderr, (out, r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["file", "gone"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory (tests/test_file_safety.py runs it unprivileged)")
def test_unwritable_directory_is_refused_before_sampling(tmp_path):
    d = tmp_path / "ro"; d.mkdir(); d.chmod(0o555)
    try:
        r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(d / "x.png"))
        assert r.returncode == 2 and "not writable" in r.stderr and "model" not in r.stdout
    finally: d.chmod(0o755)


def test_file_that_appears_while_sampling_is_not_replaced(tmp_path):
    out = tmp_path / "x.png"
    cli.check_image_out(out)                               # passes: nothing there yet
    out.write_bytes(b"appeared meanwhile")                 # ... then something appears
    with pytest.raises(cli.CLIError, match="--force"): cli.publish_outputs({out: b"new"})
    assert out.read_bytes() == b"appeared meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    cli.publish_outputs({out: b"new"}, force=True)
    assert out.read_bytes() == b"new"


def test_no_replace_publish_refuses_a_file_that_appears_after_the_last_check(tmp_path, monkeypatch):
    "The last line of defence is os.link, which fails if the target exists (a rename would replace it)."
    out = tmp_path / "x.png"
    real_link = os.link
    def link_after_race(src, dst, *a, **k):
        Path(dst).write_bytes(b"raced")                   # appears between the checks and the publish
        return real_link(src, dst, *a, **k)
    monkeypatch.setattr(os, "link", link_after_race)
    with pytest.raises(cli.CLIError, match="appeared"): cli.publish_outputs({out: b"new"})
    assert out.read_bytes() == b"raced" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_temp_file_is_removed_on_interrupt(tmp_path, monkeypatch):
    long = tmp_path / ("d" * 250 + ".png")                # a name near the 255-byte limit still works
    cli.publish_outputs({long: b"x"})
    assert long.read_bytes() == b"x"
    def killed(*a, **k): raise SystemExit(143)            # what the SIGTERM handler raises, mid-publish
    monkeypatch.setattr(os, "link", killed)
    with pytest.raises(SystemExit): cli.publish_outputs({tmp_path / "y.png": b"y"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [long.name]


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path):
    import resource
    out = tmp_path / "x.png"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))    # any write past 64 bytes fails (EFBIG)
    r = run("sample", *TOY, "--T", "5", "--n", "1", "--out", str(out), preexec_fn=limit)
    assert r.returncode == 2 and "error: argument --out: could not write" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


def test_an_undecodable_file_name_is_written_and_reported_without_a_traceback(tmp_path):
    name = os.fsdecode(b"\xff.png")
    r = subprocess.run([os.fsencode(EXE), b"sample", *[a.encode() for a in TOY], b"--T", b"5", b"--n", b"1", b"--out",
                        os.fsencode(tmp_path) + b"/\xff.png"], capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       timeout=600)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert os.listdir(os.fsencode(tmp_path)) == [b"\xff.png"] and b"wrote" in r.stdout


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
    from PIL import Image
    from deq_ddim_nb.ddim import ddim_invert, ddim_sample
    from deq_ddim_nb.models import load_model
    from deq_ddim_nb.schedules import DDIMSchedule
    from deq_ddim_nb.toy import digits_data
    model = load_model("digits"); sched = DDIMSchedule.from_config(10, model.config)
    target = digits_data(16, "test", torch.float32)[0][5:6]
    with torch.no_grad(): want = ddim_invert(model, target, sched)                  # the ODE inversion, computed here
    x_T = torch.load(tmp_path / "inv" / "x_T.pt", weights_only=True)
    torch.testing.assert_close(x_T, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad(): regen = ddim_sample(model, x_T, sched)
    got = np.asarray(Image.open(tmp_path / "inv" / "regenerated.png")).astype(int)
    assert np.abs(got - ((regen[0, 0].clamp(-1, 1) + 1) * 127.5).round().numpy()).max() <= 1
    pair = np.asarray(Image.open(tmp_path / "inv" / "comparison.png"))
    s = 8
    assert pair.shape == ((16 + 2) * s, (2 * 16 + 3) * s)                # two enlarged 16x16 images side by side
    left = pair[s:17 * s:s, s:17 * s:s]                                   # the target, one pixel per 8x8 block
    np.testing.assert_allclose(left, ((target[0, 0].clamp(-1, 1) + 1) * 127.5).round().numpy(), atol=1)
    np.testing.assert_array_equal(pair[s:17 * s:s, 18 * s:34 * s:s], got)


def test_invert_refuses_non_regular_files_in_out(tmp_path):
    d = tmp_path / "inv"; d.mkdir(); (d / "comparison.png").mkdir()
    r = run("invert", "--digit", "5", "--T", "5", "--method", "ode", "--out", str(d), "--no-progress", "--force")
    assert r.returncode == 2 and "directory" in r.stderr and "inverting" not in r.stdout and os.listdir(d) == ["comparison.png"]


def test_invert_with_a_dangling_link_as_out_is_refused_before_work(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "inv")
    r = run("invert", "--digit", "5", "--T", "5", "--method", "ode", "--out", str(tmp_path / "inv"), "--no-progress")
    assert r.returncode == 2 and "dangling symbolic link" in r.stderr and "inverting" not in r.stdout


def test_invert_bad_image(tmp_path):
    from PIL import Image
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    (tmp_path / "text.png").write_text("hello")
    for name in ("small.png", "text.png"):
        r = run("invert", "--image", str(tmp_path / name), "--T", "5", "--method", "ode", "--out", str(tmp_path / "o"), "--no-progress")
        assert r.returncode == 2 and "Traceback" not in r.stderr and "16" in r.stderr, r.stderr


# --- bench and handout ---------------------------------------------------------------------------------------------------
def test_bench_quick(tmp_path):
    from deq_ddim_nb import benchmark as bm
    r = run("bench", "--quick", "--out", str(tmp_path / "b"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "b")) == sorted(p.name for p in bm.bench_files(tmp_path / "b", efficiency=False))
    rows = bm.read_bench(tmp_path / "b")
    assert {(r["model"], r["T"], r["batch"], r["variant"]) for r in rows} == {
        (c["model"], c["T"], c["batch"], v) for c in bm.default_grid("tiny") for v in c["variants"]}
    assert bm.markdown_table(bm.summarize(rows)) in r.stdout
    r = run("bench", "--quick", "--out", str(tmp_path / "b"), "--no-progress")       # files there: only with --force
    assert r.returncode == 2 and "error: argument --out" in r.stderr and "--force" in r.stderr


def test_bench_default_folder_is_outside_the_repository_and_the_package(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = run("bench", "--quick", "--no-progress", env=env, cwd=Path(cli.__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "cache" / "deq-ddim-nb" / "bench"))[0] == "speed.csv"
    r = run("bench", "--quick", "--no-progress", "--out", str(Path(cli.__file__).parent / "assets" / "results"))
    assert r.returncode == 2 and "--record" not in r.stdout and "record=True" in r.stderr or "inside the installed package" in r.stderr


BENCH_BAD = [(["--device", "meta"], "--device"), (["--device", "cuda:7"], "--device"), (["--seeds", "0"], "--seeds"),
             (["--T", "999"], "--T"), (["--report-only"], "--report-only"), (["--merge", "--force"], "--merge"),
             (["--variants", "broyden"], "--variants"), (["--out", "x", "--record"], "--record")]


@pytest.mark.parametrize("args,opt", BENCH_BAD, ids=[" ".join(a) for a, _ in BENCH_BAD])
def test_bench_errors_name_their_option_on_stderr(tmp_path, args, opt):
    args = [a if a != "x" else str(tmp_path / "x") for a in args]
    r = run("bench", "--quick", "--no-progress", *(["--out", str(tmp_path / "o")] if "--out" not in args and "--record" not in args else []), *args)
    assert r.returncode == 2 and f"argument {opt}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == "" and not (tmp_path / "o").exists()


def test_bench_merge_or_report_on_a_fifo_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "o").mkdir(); os.mkfifo(tmp_path / "o" / "speed.csv")
    for flag in ("--merge", "--report-only"):
        r = run("bench", "--quick", "--no-progress", "--out", str(tmp_path / "o"), "--force", flag, timeout=120)
        assert r.returncode == 2 and f"argument {flag}" in r.stderr and "FIFO" in r.stderr, r.stderr


def test_bench_help_lists_the_harness_options():
    r = run("bench", "--help")
    assert r.returncode == 0 and "--quick" in r.stdout and "--variants" in r.stdout and "--record" in r.stdout


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

"""The file-safety matrix: every writer (sample, invert, bench, handout, save_model) against every hazard.

Each cell runs the writer in a fresh process on a fresh folder with one hazard planted at one of its outputs (the one
published last, so that "all or nothing" is tested too), then checks what is on disk: what must be kept is kept, nothing
is written through a link or onto a special file, no temporary file is left, and a refusal comes before any work (the
writer printed nothing). `python tests/test_file_safety.py` prints the matrix as a table.

Hazards: an existing file (without and with --force), a directory, a FIFO, a symlink to a file (without and with
--force), a dangling symlink (without and with --force), symlinks planted at temporary-like names, a read-only
directory (run without CAP_DAC_OVERRIDE when the tests run as root), SIGTERM in the middle of writing (injected right
after the first temporary file is written), and a full disk (RLIMIT_FSIZE).
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLI = "import sys; from deq_ddim_nb.cli import main; sys.exit(main(sys.argv[1:]))"
SAVE_MODEL = r"""
import sys
from deq_ddim_nb.models import UNet, TrainConfig, save_model
stem, force = sys.argv[1], sys.argv[2] == "1"
cfg = TrainConfig(unet=dict(in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(), groups=4, heads=1, dropout=0.0))
try:
    save_model(UNet(**cfg.unet), stem, cfg, history=[dict(step=1, loss=0.5, lr=1e-3, seconds=1.0)], overwrite=force)
except (OSError, ValueError) as e:
    print(f"save_model: error: {e}", file=sys.stderr); sys.exit(2)
print("wrote", stem)
"""
# SIGTERM mid-write: the process signals itself right after the first temporary file of `files.publish` is written
INJECT = r"""
import os, signal, sys
import deq_ddim_nb.files as _f
_real = _f._write_temp
def _write_then_sigterm(*args):
    tmp = _real(*args)
    print("INJECTED SIGTERM", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    return tmp
_f._write_temp = _write_then_sigterm
"""

# writer -> (folder the outputs go to, relative to the workspace; the output published last; argv builder)
WRITERS = {
    "sample": (".", "x.png", lambda ws, force: [PY, "-c", CLI, "sample", "--model", "toy-digits", "--T", "5", "--n", "1",
                                                 "--no-progress", "--no-compare", "--out", str(ws / "x.png"), *force]),
    "invert": ("inv", "comparison.png", lambda ws, force: [PY, "-c", CLI, "invert", "--digit", "3", "--T", "5", "--method", "ode",
                                                           "--no-progress", "--out", str(ws / "inv"), *force]),
    "bench": ("b", "speed_traces.png", lambda ws, force: [PY, "-c", CLI, "bench", "--quick", "--variants", "default",
                                                          "--no-progress", "--out", str(ws / "b"), *force]),
    "handout": ("h", "README.md", lambda ws, force: [PY, "-c", CLI, "handout", str(ws / "h"), "--nbs", str(ROOT / "nbs"),
                                                     "--notebooks", "00", *force]),
    "save_model": (".", "m_loss.csv", lambda ws, force: [PY, "-c", SAVE_MODEL, str(ws / "m"), "1" if force else "0"]),
}
HAZARDS = ("existing file", "existing file --force", "directory --force", "FIFO --force", "symlink to a file",
           "symlink to a file --force", "dangling symlink", "dangling symlink --force", "symlinks at temp-like names",
           "read-only directory", "SIGTERM mid-write", "full disk (RLIMIT_FSIZE)")
OLD, KEEP = b"OLD CONTENT", b"KEEP: never written through a link"
_CLEAN = {}


def _env(ws):
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLCONFIGDIR": str(ws / ".mpl"), "XDG_CACHE_HOME": str(ws / ".cache")}


def _run(argv, ws, preexec=None, timeout=600):
    "Run a writer with its caches outside the workspace (matplotlib's, the bench default folder's)."
    return subprocess.run(argv, capture_output=True, text=True, env=_env(ws.parent), cwd=ws.parent, timeout=timeout, preexec_fn=preexec)


def _tree(d: Path) -> dict:
    "Every entry under d (links not followed): relative path -> kind."
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = Path(root) / n
            st = os.lstat(p)
            out[str(p.relative_to(d))] = ("link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode)
                                          else "fifo" if stat.S_ISFIFO(st.st_mode) else "file")
    return out


def clean_outputs(writer: str) -> list[str]:
    "The files a clean run of the writer leaves in its output folder (learned once, from a real run)."
    if writer not in _CLEAN:
        base = Path(tempfile.mkdtemp(prefix="fs-clean-")); ws = base / "ws"; ws.mkdir()
        try:
            folder, _, argv = WRITERS[writer]
            r = _run(argv(ws, []), ws)
            assert r.returncode == 0, f"{writer}: a clean run failed: {r.stderr[-2000:]}"
            _CLEAN[writer] = sorted(k for k, v in _tree(ws / folder).items() if v == "file")
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return _CLEAN[writer]


def _unprivileged(argv):
    "Run without the capabilities that let root write into a read-only directory (as root); unchanged otherwise."
    if os.geteuid() != 0: return argv
    if not shutil.which("setpriv"): pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]


def check_cell(writer: str, hazard: str, base: Path) -> str:
    """Run one cell; raise AssertionError with the reason if the writer breaks a promise, else return a short note."""
    folder, victim_name, argv = WRITERS[writer]
    outputs = clean_outputs(writer)
    ws = base / "ws"; ws.mkdir(parents=True)
    out = ws / folder; out.mkdir(parents=True, exist_ok=True)
    victim, elsewhere = out / victim_name, base / "elsewhere"
    elsewhere.write_bytes(KEEP)
    force = ["--force"] if "--force" in hazard or hazard in ("SIGTERM mid-write", "full disk (RLIMIT_FSIZE)") else []
    cmd, preexec = argv(ws, force), None
    if hazard.startswith("existing file") or hazard in ("SIGTERM mid-write", "full disk (RLIMIT_FSIZE)"): victim.write_bytes(OLD)
    if hazard.startswith("directory"): victim.mkdir(); (victim / "inside").write_bytes(OLD)
    elif hazard.startswith("FIFO"): os.mkfifo(victim)
    elif hazard.startswith("symlink to a file"): victim.symlink_to(elsewhere)
    elif hazard.startswith("dangling symlink"): victim.symlink_to(base / "nowhere")
    elif hazard == "symlinks at temp-like names":
        for name in outputs:
            d = out / Path(name).parent
            for t in (f".{Path(name).name}.tmp", f"{Path(name).name}.tmp", f".{Path(name).name}.tmp.0", f".{Path(name).name}.0.tmp"):
                (d / t).symlink_to(elsewhere)
    elif hazard == "read-only directory":
        out.chmod(0o555); cmd = _unprivileged(cmd)
    elif hazard == "SIGTERM mid-write":
        cmd = [cmd[0], cmd[1], INJECT + cmd[2], *cmd[3:]]
    elif hazard == "full disk (RLIMIT_FSIZE)":
        preexec = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))   # any file past 64 bytes: EFBIG
    before = _tree(ws)
    try: r = _run(cmd, ws, preexec, timeout=300)
    finally: out.chmod(0o755)
    after = _tree(ws)
    assert "Traceback" not in r.stderr, f"a traceback:\n{r.stderr[-1500:]}"
    assert elsewhere.read_bytes() == KEEP, "written through a symbolic link"
    assert not (base / "nowhere").exists(), "created the target of a dangling link"
    temps = [k for k in after if k not in before and k.rsplit("/", 1)[-1].startswith(".")]
    assert not temps, f"temporary files left: {temps}"
    published = sorted(k for k, v in after.items() if v == "file" and k not in before and not k.startswith("."))
    expected_all = sorted(str(Path(folder) / o) if folder != "." else o for o in outputs)
    rel_victim = str(Path(folder) / victim_name) if folder != "." else victim_name

    def refused(why):
        assert r.returncode == 2, f"expected a refusal (exit 2), got {r.returncode}: {r.stderr[-800:]}"
        assert r.stdout == "", f"refused after doing work: stdout {r.stdout[:300]!r}"
        assert why in r.stderr, f"the message does not say {why!r}: {r.stderr[-800:]}"
        assert after == before, f"the folder changed: {sorted(set(after.items()) ^ set(before.items()))}"
        return f"refused: {why}"

    def all_or_nothing(*codes):
        assert r.returncode in codes, f"exit status {r.returncode}, expected one of {codes}: {r.stderr[-800:]}"
        assert not [p for p in published if p != rel_victim], f"a partial set was published: {published}"
        assert victim.read_bytes() == OLD, "the old file was not kept"
        return f"exit {r.returncode}, nothing published, old file kept"

    def written(link_replaced=False):
        assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-800:]}"
        missing = [p for p in expected_all if after.get(p) != "file"]
        assert not missing, f"outputs missing or not regular files: {missing}"
        assert victim.read_bytes() not in (OLD, KEEP) and victim.stat().st_size > 0
        return "replaced the link itself" if link_replaced else "written"

    if hazard == "existing file": return refused("exists")
    if hazard == "existing file --force": return written()
    if hazard == "directory --force": return refused("a directory")
    if hazard == "FIFO --force": return refused("a FIFO")
    if hazard in ("symlink to a file", "dangling symlink"): return refused("symbolic link")
    if hazard in ("symlink to a file --force", "dangling symlink --force"): return written(link_replaced=True)
    if hazard == "symlinks at temp-like names": return written()
    if hazard == "read-only directory": return refused("not writable")
    if hazard == "SIGTERM mid-write":
        assert "INJECTED SIGTERM" in r.stderr, "the writer does not write through deq_ddim_nb.files.publish"
        return all_or_nothing(128 + signal.SIGTERM, -signal.SIGTERM)
    if hazard == "full disk (RLIMIT_FSIZE)":
        note = all_or_nothing(2)
        assert "File too large" in r.stderr, f"no clear message: {r.stderr[-800:]}"
        return note
    raise ValueError(hazard)


@pytest.mark.parametrize("hazard", HAZARDS)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_file_safety(writer, hazard, tmp_path):
    check_cell(writer, hazard, tmp_path)


def matrix() -> int:
    "Run every cell and print the matrix; returns the number of failed cells."
    rows, failed = [], 0
    for hazard in HAZARDS:
        cells = []
        for writer in WRITERS:
            base = Path(tempfile.mkdtemp(prefix="fs-"))
            try: check_cell(writer, hazard, base); cells.append("ok")
            except AssertionError as e: cells.append("FAIL"); failed += 1; print(f"{writer} / {hazard}: {e}", file=sys.stderr)
            except pytest.skip.Exception as e: cells.append("skip"); print(f"{writer} / {hazard}: skipped ({e})", file=sys.stderr)
            finally: shutil.rmtree(base, ignore_errors=True)
        rows.append((hazard, cells))
    w = max(len(h) for h in HAZARDS)
    print(f"| {'hazard':{w}s} | " + " | ".join(f"{n:10s}" for n in WRITERS) + " |")
    print(f"|{'-' * (w + 2)}|" + "|".join("-" * 12 for _ in WRITERS) + "|")
    for hazard, cells in rows: print(f"| {hazard:{w}s} | " + " | ".join(f"{c:10s}" for c in cells) + " |")
    return failed


if __name__ == "__main__":
    sys.exit(1 if matrix() else 0)

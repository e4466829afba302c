"deq_ddim_nb.files: reading inversion targets (every bad input is a clear error) and publishing files without clobbering."
import os, signal, stat, struct, subprocess, sys, zlib
from pathlib import Path
import numpy as np
import pytest
import torch
from types import SimpleNamespace
from deq_ddim_nb import files
from deq_ddim_nb.files import atomic_write_bytes, check_targets, load_target, publish, publish_file, save_inversion, to_png

ACCEPTED = r"16x16 grayscale image .*\.npy/\.pt tensor of shape \(1,16,16\)"


def _png(path, size=(16, 16), mode="L", color=128):
    from PIL import Image
    Image.new(mode, size, color=color).save(path)
    return path


def _header_only_png(path, w, h):
    "A PNG whose header declares w x h pixels and which holds no pixel data: decoding it would fail."
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


# --- load_target: good inputs ----------------------------------------------------------------------------------------
def test_load_target_good_inputs(tmp_path):
    x = load_target(0, (1, 16, 16))
    assert x.shape == (1, 1, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    from deq_ddim_nb.toy import digits_data
    torch.testing.assert_close(x, digits_data(16, "test", torch.float32)[0][:1])
    torch.testing.assert_close(load_target(_png(tmp_path / "a.png")), torch.full((1, 1, 16, 16), 128 / 255 * 2 - 1))
    np.save(tmp_path / "a.npy", x[0].numpy())
    torch.testing.assert_close(load_target(tmp_path / "a.npy"), x)
    torch.save(x, tmp_path / "a.pt")
    torch.testing.assert_close(load_target(str(tmp_path / "a.pt")), x)
    assert load_target(_png(tmp_path / "c.png", (8, 8), "RGB", (10, 20, 30)), (3, 8, 8)).shape == (1, 3, 8, 8)


def test_load_target_rescales_uint8_tensors(tmp_path):
    u8 = np.array([0, 255] * 128, np.uint8).reshape(1, 16, 16)
    np.save(tmp_path / "u8.npy", u8)
    x = load_target(tmp_path / "u8.npy")
    torch.testing.assert_close(x, torch.from_numpy(u8).float()[None] / 127.5 - 1)
    assert x.min() == -1 and x.max() == 1


def test_load_target_16bit_png(tmp_path):
    from PIL import Image
    a = np.full((16, 16), 65535, np.uint16); a[0, 0] = 0
    Image.fromarray(a).save(tmp_path / "deep.png")
    x = load_target(tmp_path / "deep.png")
    assert float(x[0, 0, 0, 0]) == -1 and float(x[0, 0, 1, 1]) == 1


# --- load_target: each bad input -------------------------------------------------------------------------------------
def test_float_tensor_in_0_255_raises_with_hint(tmp_path):
    np.save(tmp_path / "range.npy", np.full((1, 16, 16), 200, np.float32))
    with pytest.raises(ValueError, match=r"range\.npy has values in \[200, 200\], outside \[-1, 1\].*0\.\.255 pixels"):
        load_target(tmp_path / "range.npy")


def test_float_tensor_slightly_outside_raises(tmp_path):
    a = np.zeros((1, 16, 16), np.float32); a[0, 0, 0] = -3.0
    np.save(tmp_path / "neg.npy", a)
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        load_target(tmp_path / "neg.npy")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_tensor_raises(tmp_path, bad):
    a = np.zeros((1, 16, 16), np.float32); a[0, 3, 3] = bad
    np.save(tmp_path / "nf.npy", a)
    with pytest.raises(ValueError, match="non-finite"):
        load_target(tmp_path / "nf.npy")


def test_int64_tensor_is_ambiguous(tmp_path):
    torch.save(torch.zeros(1, 16, 16, dtype=torch.int64), tmp_path / "i.pt")
    with pytest.raises(ValueError, match="torch.int64 tensor: its range is ambiguous"):
        load_target(tmp_path / "i.pt")


def test_32bit_tiff_raises(tmp_path):
    from PIL import Image
    Image.fromarray(np.full((16, 16), 100000, np.int32)).save(tmp_path / "deep.tif")     # mode I
    with pytest.raises(ValueError, match=r"deep\.tif is a 32-bit \(I\) TIFF image whose value range is ambiguous"):
        load_target(tmp_path / "deep.tif")
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(tmp_path / "float.tif")     # mode F
    with pytest.raises(ValueError, match=r"32-bit \(F\)"):
        load_target(tmp_path / "float.tif")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    p = _header_only_png(tmp_path / "bomb.png", 100_000, 100_000)      # PIL's own DecompressionBombError at open
    with pytest.raises(ValueError, match="bomb.png is too large to decode safely"):
        load_target(p)
    p = _header_only_png(tmp_path / "warn.png", 10_000, 10_000)        # PIL only warns: still our error
    with pytest.raises(ValueError, match="too large to decode safely"):
        load_target(p)


def test_huge_image_below_pil_limit_checked_against_max_pixels(tmp_path):
    p = _header_only_png(tmp_path / "wide.png", 6000, 4000)
    with pytest.raises(ValueError, match="6000x4000 pixels, more than max_pixels=16777216"):
        load_target(p)
    with pytest.raises(ValueError, match="more than max_pixels=100"):
        load_target(_header_only_png(tmp_path / "s.png", 16, 16), max_pixels=100)


def test_wrong_size_is_refused_before_decoding(tmp_path):
    with pytest.raises(ValueError, match=r"20x16 pixels; expected .*" + ACCEPTED):
        load_target(_header_only_png(tmp_path / "big.png", 20, 16))             # no pixel data: never decoded


def test_directory_as_image_path(tmp_path):
    with pytest.raises(ValueError, match="is a directory, not an image file"):
        load_target(tmp_path)


def test_fifo_as_image_path(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ValueError, match="not a regular file"):
        load_target(tmp_path / "pipe.png")                                        # would block if opened


def test_other_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="RGB image with the wrong channels.*" + ACCEPTED):
        load_target(_png(tmp_path / "rgb.png", mode="RGB", color=(1, 2, 3)))
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="not a readable image.*" + ACCEPTED):
        load_target(tmp_path / "junk.png")
    np.save(tmp_path / "shape.npy", np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 16, 16\).*" + ACCEPTED):
        load_target(tmp_path / "shape.npy")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not read"):
        load_target(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_target(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"digit index must be in \[0, 179\]"):
        load_target(10_000)
    with pytest.raises(ValueError, match="held-out digits are"):
        load_target(3, (3, 32, 32))
    with pytest.raises(TypeError, match="path or an int"):
        load_target(2.5)


@pytest.mark.parametrize("shape", [(1, 16), (1, 0, 16), (1, 16.0, 16), (True, 16, 16)])
def test_bad_sample_shape(shape):
    with pytest.raises(ValueError, match="sample_shape must be"):
        load_target(0, shape)


@pytest.mark.parametrize("mp", [0, -5, 2.5, True])
def test_bad_max_pixels(tmp_path, mp):
    with pytest.raises(ValueError, match="max_pixels must be"):
        load_target(_png(tmp_path / "a.png"), max_pixels=mp)


# --- publish: the one way to write -------------------------------------------------------------------------------------
def _listing(d):
    return sorted(os.listdir(d))


def test_publish_writes_every_file_with_its_content_and_the_usual_mode(tmp_path):
    paths = publish({tmp_path / "a.csv": "x,y\n", tmp_path / "b.bin": b"\x00\x01", tmp_path / "c.txt": lambda fh: fh.write(b"cb")})
    assert paths == [tmp_path / "a.csv", tmp_path / "b.bin", tmp_path / "c.txt"]
    assert [p.read_bytes() for p in paths] == [b"x,y\n", b"\x00\x01", b"cb"]
    mask = os.umask(0); os.umask(mask)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask for p in paths)
    assert _listing(tmp_path) == ["a.csv", "b.bin", "c.txt"]                        # no temporaries


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = atomic_write_bytes(tmp_path / "u.bin", b"x")
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640                           # not mkstemp's 0o600
    finally:
        os.umask(old)


def test_existing_file_is_replaced_only_with_overwrite(tmp_path):
    p = atomic_write_bytes(tmp_path / "a.bin", b"one")
    with pytest.raises(FileExistsError, match="replaced only with overwrite"):
        atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"one"
    atomic_write_bytes(p, b"two", overwrite=True)
    assert p.read_bytes() == b"two" and _listing(tmp_path) == ["a.bin"]


@pytest.mark.parametrize("kind", ["dir", "fifo"])
def test_never_replaces_a_non_regular_file(tmp_path, kind):
    t = tmp_path / "thing"
    t.mkdir() if kind == "dir" else os.mkfifo(t)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"thing'? is a (directory|FIFO), not a regular file"):
            publish({t: b"x"}, overwrite=overwrite)
    assert (t.is_dir() if kind == "dir" else stat.S_ISFIFO(os.lstat(t).st_mode))
    assert _listing(tmp_path) == ["thing"]                                          # no temporaries left


def test_device_is_never_replaced():
    with pytest.raises(ValueError, match="a device, not a regular file"):
        check_targets(["/dev/null"], overwrite=True)


def test_symlink_rule(tmp_path):
    (tmp_path / "real").write_bytes(b"keep")
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    for name in ("link", "dangling"):
        with pytest.raises(FileExistsError, match="symbolic link"):
            publish({tmp_path / name: b"new"})
        publish({tmp_path / name: b"new"}, overwrite=True)
        assert not (tmp_path / name).is_symlink() and (tmp_path / name).read_bytes() == b"new"
    assert (tmp_path / "real").read_bytes() == b"keep" and not (tmp_path / "nowhere").exists()   # never written through


def test_a_link_planted_at_an_old_temporary_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim"; victim.write_bytes(b"keep")
    out = tmp_path / "out"; out.mkdir()
    for name in (".x.png.tmp", "x.png.tmp", ".x.png.tmp.0", "x.tmp"):
        os.symlink(victim, out / name)
    publish({out / "x.png": b"data"})
    assert victim.read_bytes() == b"keep" and (out / "x.png").read_bytes() == b"data"


def test_checks_every_target_before_writing_any(tmp_path):
    (tmp_path / "blocked").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        publish({tmp_path / "first.csv": "1", tmp_path / "blocked": "2"}, overwrite=True)
    assert _listing(tmp_path) == ["blocked"]
    with pytest.raises(ValueError, match="named twice"):
        publish({tmp_path / "a": "1", str(tmp_path / "a"): "2"})


def test_a_failed_publish_takes_back_the_files_already_published(tmp_path):
    def someone_else_writes(fh):
        fh.write(b"ours"); (tmp_path / "race.csv").write_text("theirs")
    with pytest.raises(FileExistsError, match="appeared"):
        publish({tmp_path / "first.csv": "1", tmp_path / "race.csv": someone_else_writes})
    assert (tmp_path / "race.csv").read_text() == "theirs" and _listing(tmp_path) == ["race.csv"]


def test_a_failed_publish_with_overwrite_puts_back_what_it_replaced(tmp_path, monkeypatch):
    (tmp_path / "a.csv").write_text("old a"); (tmp_path / "b.csv").write_text("old b")
    os.symlink(tmp_path / "a.csv", tmp_path / "link")
    real = files._put
    def fails_on_b(tmp, target, overwrite):
        if target.name == "b.csv": raise OSError(5, "Input/output error")
        return real(tmp, target, overwrite)
    monkeypatch.setattr(files, "_put", fails_on_b)
    with pytest.raises(OSError, match="Input/output"):
        publish({tmp_path / "a.csv": "new a", tmp_path / "link": "new link", tmp_path / "b.csv": "new b"}, overwrite=True)
    assert (tmp_path / "a.csv").read_text() == "old a" and (tmp_path / "b.csv").read_text() == "old b"
    assert os.readlink(tmp_path / "link") == str(tmp_path / "a.csv")               # the link itself is back
    assert _listing(tmp_path) == ["a.csv", "b.csv", "link"]                         # no temporaries, no backups


def test_temp_file_removed_when_writing_fails(tmp_path):
    def disk_full(fh):
        fh.write(b"half"); raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left"):
        publish({tmp_path / "a.bin": b"fine", tmp_path / "b.bin": disk_full})
    assert _listing(tmp_path) == []


def test_make_dirs_creates_folders_and_removes_them_again_on_failure(tmp_path):
    publish({tmp_path / "x" / "y" / "f.txt": "1"}, make_dirs=True)
    assert (tmp_path / "x" / "y" / "f.txt").read_text() == "1"
    def boom(fh): raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        publish({tmp_path / "new" / "deeper" / "g.txt": boom}, make_dirs=True)
    assert _listing(tmp_path) == ["x"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        publish({tmp_path / "absent" / "f.txt": "1"})


def test_signal_while_writing_cleans_up_and_reaches_the_callers_handler(tmp_path):
    seen = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    def killed(fh):
        fh.write(b"half"); signal.raise_signal(signal.SIGTERM)
    try:
        with pytest.raises(files.Interrupted, match="SIGTERM"):
            publish({tmp_path / "a.csv": "a", tmp_path / "b.csv": killed})
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen == [signal.SIGTERM] and _listing(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is old                                   # handlers restored


def test_sigint_becomes_keyboard_interrupt_after_cleanup(tmp_path):
    def ctrl_c(fh):
        fh.write(b"half"); signal.raise_signal(signal.SIGINT)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)                  # Python's own, whoever runs pytest
    try:
        with pytest.raises(KeyboardInterrupt):
            publish({tmp_path / "a.csv": ctrl_c})
    finally:
        signal.signal(signal.SIGINT, old)
    assert _listing(tmp_path) == []


def test_sigterm_with_the_default_handler_still_ends_the_process_and_leaves_nothing(tmp_path):
    code = ("import os, signal, sys; from deq_ddim_nb.files import publish\n"
            "def killed(fh): fh.write(b'half'); os.kill(os.getpid(), signal.SIGTERM)\n"
            f"publish({{{str(tmp_path / 'a.csv')!r}: 'a', {str(tmp_path / 'b.csv')!r}: killed}})\n"
            "print('survived')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGTERM and "survived" not in r.stdout, r.stderr
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("name,err,match", [
    ("o.png/", ValueError, "names a directory"), ("n" * 300, ValueError, "too long"),
    ("\ud800.png", ValueError, "cannot be encoded"), ("a\0b", ValueError, "NUL"),
    ("missing/x.png", FileNotFoundError, "does not exist"), ("file/x.png", NotADirectoryError, "not a directory")])
def test_bad_names_are_refused_before_any_work(tmp_path, name, err, match):
    (tmp_path / "file").write_text("x")
    with pytest.raises(err, match=match):
        check_targets([f"{tmp_path}/{name}"])
    assert _listing(tmp_path) == ["file"]


def test_a_dangling_link_as_the_directory_is_refused(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="dangling symbolic link"):
        check_targets([tmp_path / "out" / "x.png"], make_dirs=True)


def test_an_undecodable_name_is_written_as_given(tmp_path):
    name = os.fsdecode(b"\xff\xfe.png")                                             # bytes that are not UTF-8
    publish({tmp_path / name: b"x"})
    assert os.listdir(os.fsencode(tmp_path)) == [b"\xff\xfe.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory")
def test_a_read_only_directory_is_refused(tmp_path):
    d = tmp_path / "ro"; d.mkdir(); d.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"): check_targets([d / "x"])
    finally: d.chmod(0o755)


def test_publish_file_onto_itself_keeps_the_file(tmp_path):
    a = tmp_path / "a"; a.write_bytes(b"precious")
    with pytest.raises(ValueError, match="same file"):
        publish_file(a, a, overwrite=True)
    assert a.read_bytes() == b"precious"


def test_publish_file_moves_a_finished_file(tmp_path):
    src = tmp_path / "src"; src.write_bytes(b"done")
    assert publish_file(src, tmp_path / "dst").read_bytes() == b"done" and not src.exists()


def test_publish_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="data must be bytes"): atomic_write_bytes(tmp_path / "f", "text")
    with pytest.raises(TypeError, match="must be bytes, str or a callable"): publish({tmp_path / "f": 3})
    with pytest.raises(TypeError, match="non-empty dict"): publish({})
    with pytest.raises(TypeError, match="overwrite must be True or False"): publish({tmp_path / "f": b""}, overwrite=1)


# --- recorded results and result folders -------------------------------------------------------------------------------
def test_read_text_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "speed.csv")
    with pytest.raises(ValueError, match="a FIFO, not a regular file"):
        files.read_text(tmp_path / "speed.csv", "speed table")
    with pytest.raises(FileNotFoundError, match="speed table .* does not exist"):
        files.read_text(tmp_path / "none.csv", "speed table")


def test_results_dir_never_writes_into_the_package_unless_recording(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert files.default_results_dir() == tmp_path / "cache" / "deq-ddim-nb" / "bench"
    assert files.results_dir() == files.default_results_dir() and files.results_dir(tmp_path) == tmp_path
    assert files.results_dir(record=True) == files.recorded()
    for inside in (files.recorded(), files.assets_dir(), files.assets_dir().parent):
        with pytest.raises(ValueError, match="record=True|inside the installed package"):
            files.results_dir(inside)
    root = Path(files.__file__).resolve().parents[1]
    assert not files._inside(files.default_results_dir(), root / "deq_ddim_nb")


def test_csv_text_round_trips():
    import csv, io
    rows = [dict(a="1", b="x,y"), dict(a="2", b='"q"')]
    assert list(csv.DictReader(io.StringIO(files.csv_text(rows)))) == rows


# --- to_png / save_inversion -----------------------------------------------------------------------------------------
def _result(B=2):
    return SimpleNamespace(x_T=torch.randn(B, 1, 16, 16), x_0=torch.rand(B, 1, 16, 16) * 2 - 1)


def test_to_png_round_trip_and_bad_images(tmp_path):
    x = load_target(5)
    to_png(x, tmp_path / "t.png")
    torch.testing.assert_close(load_target(tmp_path / "t.png"), x, atol=1 / 127, rtol=0)
    with pytest.raises(FileExistsError):
        to_png(x, tmp_path / "t.png")
    with pytest.raises(ValueError, match="non-finite"):
        to_png(torch.full((1, 1, 4, 4), float("nan")), tmp_path / "nan.png")
    with pytest.raises(ValueError, match=r"x must be a floating tensor \(B, C, H, W\)"):
        to_png(torch.zeros(1, 2, 4, 4), tmp_path / "c2.png")
    assert sorted(os.listdir(tmp_path)) == ["t.png"]


def test_save_inversion_writes_and_refuses_overwrite(tmp_path):
    from PIL import Image
    r = _result()
    paths = save_inversion(tmp_path / "out", r)
    torch.testing.assert_close(torch.load(paths["x_T"], weights_only=True), r.x_T)
    with Image.open(paths["regenerated"]) as im:
        assert im.mode == "L" and im.size == (32, 16)
        expect = ((r.x_0.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]   # the images side by side
        np.testing.assert_array_equal(np.asarray(im), torch.cat(list(expect), dim=1).numpy())
    with pytest.raises(FileExistsError, match="overwrite"):
        save_inversion(tmp_path / "out", _result())
    torch.testing.assert_close(torch.load(paths["x_T"], weights_only=True), r.x_T)    # untouched
    r2 = _result()
    save_inversion(tmp_path / "out", r2, overwrite=True)
    torch.testing.assert_close(torch.load(paths["x_T"], weights_only=True), r2.x_T)


def test_save_inversion_is_all_or_nothing(tmp_path, monkeypatch):
    save_inversion(tmp_path, _result())
    old = {p: p.read_bytes() for p in tmp_path.iterdir()}
    real = files._put
    def second_fails(tmp, target, overwrite):
        if target.suffix == ".png": raise OSError(28, "No space left on device")
        return real(tmp, target, overwrite)
    monkeypatch.setattr(files, "_put", second_fails)
    with pytest.raises(OSError):
        save_inversion(tmp_path, _result(), overwrite=True)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == old                    # old pair intact, nothing else
    with pytest.raises(OSError):
        save_inversion(tmp_path / "new", _result())
    assert not (tmp_path / "new").exists()                                           # the folder it made is gone again


def test_save_inversion_refuses_non_regular_files(tmp_path):
    (tmp_path / "x_T.pt").mkdir()
    with pytest.raises(ValueError, match="x_T.pt'? is a directory, not a regular file"):
        save_inversion(tmp_path, _result(), overwrite=True)
    f = tmp_path / "file"; f.write_text("x")
    with pytest.raises(NotADirectoryError):
        save_inversion(f, _result())


def test_inversion_module_re_exports_io():
    from deq_ddim_nb import inversion
    assert inversion.load_target is load_target and inversion.save_inversion is save_inversion and inversion.to_png is to_png


def test_sigterm_at_any_moment_leaves_the_old_set_or_the_new_one_and_no_temporaries(tmp_path):
    "A child publishes twenty files again and again (with overwrite); SIGTERM at random moments; the set is always whole."
    import random, time
    code = ("import sys; from pathlib import Path; from deq_ddim_nb.files import publish\n"
            "d, i = Path(sys.argv[1]), 0\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    i += 1; publish({d / f'f{k:02d}.txt': f'{i}\\n' * 2000 for k in range(20)}, overwrite=True)\n")
    publish({tmp_path / f"f{k:02d}.txt": "0\n" * 2000 for k in range(20)})
    rng = random.Random(0)
    for trial in range(8):
        p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.4))
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=120) == -signal.SIGTERM
        names = _listing(tmp_path)
        assert names == [f"f{k:02d}.txt" for k in range(20)], names                  # no temporaries, no backups
        contents = {(tmp_path / n).read_text() for n in names}
        assert len(contents) == 1, f"trial {trial}: a mixed set of {len(contents)} versions"


def test_sigterm_while_the_handlers_go_in_still_ends_by_sigterm_with_nothing_published(tmp_path):
    "A SIGTERM that arrives between installing the handlers of two signals: the process ends by SIGTERM, nothing written."
    code = ("import os, signal, sys; from pathlib import Path; from deq_ddim_nb.files import publish\n"
            "real, sent = signal.signal, []\n"
            "def install_then_term(s, h):\n"
            "    r = real(s, h)\n"
            "    if not sent: sent.append(s); os.kill(os.getpid(), signal.SIGTERM)   # before the next handler goes in\n"
            "    return r\n"
            "signal.signal = install_then_term\n"
            "publish({Path(sys.argv[1]) / 'out.txt': 'x'})\n"
            "print('returned', flush=True)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGTERM, (r.returncode, r.stderr[-2000:])
    assert _listing(tmp_path) == [] and "returned" not in r.stdout


# --- behaviour that the mutation run showed untested -----------------------------------------------------------------
def test_a_float_target_just_outside_the_range_is_clamped_and_beyond_the_margin_refused(tmp_path):
    "Floats within 1e-3 of [-1, 1] are rounding (clamped into range); further out is an error, with the 0..255 hint only for pixels."
    ok = torch.linspace(-1.0005, 1.0005, 256).reshape(1, 16, 16)
    np.save(tmp_path / "ok.npy", ok.numpy())
    x = load_target(tmp_path / "ok.npy", (1, 16, 16))
    assert x.dtype == torch.float32 and float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(x[0], ok.clamp(-1, 1))
    for lo, hi, hint in ((-1.002, 0.5, False), (-0.5, 1.002, False), (0.0, 255.0, True), (1.0, 200.0, True), (0.0, 256.0, False)):
        t = torch.linspace(lo, hi, 256).reshape(1, 16, 16)
        np.save(tmp_path / "bad.npy", t.numpy())
        with pytest.raises(ValueError, match="outside \\[-1, 1\\]") as e: load_target(tmp_path / "bad.npy", (1, 16, 16))
        assert ("looks like 0..255 pixels" in str(e.value)) == hint, (lo, hi, str(e.value))


def test_uint8_tensor_targets_are_rescaled_to_float32(tmp_path):
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    np.save(tmp_path / "u.npy", u.numpy())
    x = load_target(tmp_path / "u.npy", (1, 16, 16))
    assert x.dtype == torch.float32 and torch.allclose(x[0], u.float() / 127.5 - 1)


def test_a_pickled_npy_target_is_refused_without_running_its_payload(tmp_path):
    "An .npy holding a pickled object is refused; unpickling it would have created a file."
    import pickle
    marker = tmp_path / "payload-ran"
    class Payload:
        def __reduce__(self): return (open, (str(marker), "w"))
    arr = np.empty(1, dtype=object); arr[0] = Payload()
    with open(tmp_path / "evil.npy", "wb") as f: np.lib.format.write_array(f, arr, allow_pickle=True)
    assert pickle is not None and not marker.exists()
    with pytest.raises(ValueError, match="could not read evil.npy as a tensor"): load_target(tmp_path / "evil.npy", (1, 16, 16))
    assert not marker.exists()


def test_png_bytes_clamps_values_outside_the_range_instead_of_wrapping(tmp_path):
    from PIL import Image
    import io
    x = torch.tensor([-5.0, -1.0, 0.0, 1.0, 5.0]).reshape(1, 1, 1, 5)
    px = np.asarray(Image.open(io.BytesIO(files.png_bytes(x))))
    assert px.tolist() == [[0, 0, 128, 255, 255]]
    rgb = np.asarray(Image.open(io.BytesIO(files.png_bytes(torch.zeros(2, 3, 2, 2)))))
    assert rgb.shape == (2, 4, 3)                                           # two RGB images side by side
    with pytest.raises(ValueError, match="C = 1 or 3"): files.png_bytes(torch.zeros(1, 4, 2, 2))


def test_publish_file_replaces_only_when_asked_and_always_removes_its_source(tmp_path):
    target = tmp_path / "out.txt"; target.write_text("old")
    src = tmp_path / "new.tmp"; src.write_text("new")
    with pytest.raises(FileExistsError): publish_file(src, target)
    assert target.read_text() == "old" and not src.exists()                # refused, and the finished file is gone
    src.write_text("new")
    publish_file(src, target, overwrite=True)
    assert target.read_text() == "new" and not src.exists()


def test_an_image_of_exactly_max_pixels_is_read(tmp_path):
    x = load_target(_png(tmp_path / "t.png"), (1, 16, 16), max_pixels=256)
    assert x.shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="pixels"): load_target(_png(tmp_path / "t.png"), (1, 16, 16), max_pixels=255)
    assert load_target(0, (1, 16, 16), max_pixels=1).shape == (1, 1, 16, 16)   # 1 is the smallest limit allowed
    with pytest.raises(ValueError, match="max_pixels"): load_target(0, (1, 16, 16), max_pixels=0)


def test_image_targets_of_every_accepted_kind_are_scaled_to_the_unit_range(tmp_path):
    "JPEG and 8-bit PNG (0..255), 16-bit PNG (0..65535), 1-bit PNG (0/1): white is +1 and black -1 in each."
    from PIL import Image
    for name, mode, white in (("w.jpg", "L", 255), ("w.png", "L", 255), ("w16.png", "I;16", 65535), ("w1.png", "1", 1)):
        Image.new(mode, (16, 16), color=white).save(tmp_path / name)
        x = load_target(tmp_path / name, (1, 16, 16))
        assert torch.allclose(x, torch.ones_like(x), atol=1e-6), (name, float(x.min()), float(x.max()))
        Image.new(mode, (16, 16), color=0).save(tmp_path / name)
        assert torch.allclose(load_target(tmp_path / name, (1, 16, 16)), -torch.ones(1, 1, 16, 16), atol=1e-6), name


def test_an_image_for_a_model_that_is_neither_gray_nor_rgb_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"t\.png"): load_target(_png(tmp_path / "t.png"), (2, 16, 16))


def test_recorded_refuses_a_path_or_an_empty_name():
    for bad in ("", "../speed.csv", "sub/speed.csv", 3):
        with pytest.raises(ValueError, match="name must be the name of one recorded file"): files.recorded(bad)
    assert files.recorded("speed.csv").name == "speed.csv"


def test_csv_text_is_unix_lines_with_the_first_rows_keys():
    assert files.csv_text([{"a": 1, "b": "x,y"}, {"a": 2, "b": "z"}]) == 'a,b\n1,"x,y"\n2,z\n'
    assert files.csv_text([]) == "\n" and files.csv_text([], ["a", "b"]) == "a,b\n"


def test_default_results_dir_ignores_a_relative_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert files.default_results_dir() == Path.home() / ".cache" / "deq-ddim-nb" / "bench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert files.default_results_dir() == tmp_path / "deq-ddim-nb" / "bench"
    with pytest.raises(TypeError, match="record must be True or False"): files.results_dir(record="yes")


def test_without_hard_links_publish_reserves_the_name_and_never_replaces_what_appeared(tmp_path, monkeypatch):
    "On a file system without hard links (os.link fails), the name is reserved with O_EXCL | O_NOFOLLOW, then filled."
    import errno
    real_link = os.link
    def no_links(*a, **k): raise OSError(errno.EPERM, "hard links are not supported here")
    monkeypatch.setattr(files.os, "link", no_links)
    out = publish({tmp_path / "a.txt": "one", tmp_path / "b.bin": b"two"})
    assert [p.name for p in out] == ["a.txt", "b.bin"] and _listing(tmp_path) == ["a.txt", "b.bin"]
    assert (tmp_path / "a.txt").read_text() == "one" and (tmp_path / "b.bin").read_bytes() == b"two"
    for planted in ("file", "link"):                                       # something appears after the checks passed
        target = tmp_path / f"late-{planted}.txt"
        def appear_then_fail(src, dst, *a, **k):
            if planted == "file": Path(dst).write_text("theirs")
            else: os.symlink(tmp_path / "a.txt", dst)
            raise OSError(errno.EPERM, "hard links are not supported here")
        monkeypatch.setattr(files.os, "link", appear_then_fail)
        with pytest.raises(FileExistsError): publish({target: "ours"})
        assert (tmp_path / "a.txt").read_text() == "one"                   # never written through the link
        assert (target.read_text() == "theirs") if planted == "file" else target.is_symlink()
        assert not [n for n in _listing(tmp_path) if n.endswith(".tmp")]
    monkeypatch.setattr(files.os, "link", real_link)


# ---- defaults that protect files, what an interruption carries, the sample-shape rule, held-out digits ---------------
def test_check_targets_refuses_an_existing_file_unless_overwrite_is_given(tmp_path):
    (tmp_path / "a.png").write_bytes(b"ours?")
    with pytest.raises(FileExistsError, match="a.png"): check_targets(tmp_path / "a.png")
    assert check_targets(tmp_path / "a.png", overwrite=True) == [tmp_path / "a.png"]
    assert check_targets(str(tmp_path / "b.png")) == [tmp_path / "b.png"]          # one path, as a str


def test_interrupted_keeps_the_signal_number():
    e = files.Interrupted(signal.SIGTERM)
    assert e.signum == signal.SIGTERM and "SIGTERM" in str(e)


@pytest.mark.parametrize("shape, ok", [([1, 8], True), ((3, 4, 4), True), ([1], False), ("1x8", False), ([1, True], False),
                                       ([1, 2.0], False), ([0, 4], False), ([1, files.MAX_SAMPLE_NUMEL], True),
                                       ([2, files.MAX_SAMPLE_NUMEL], False)])
def test_check_sample_shape_takes_a_list_of_at_least_two_positive_ints_within_the_bound(shape, ok):
    if ok:
        assert files.check_sample_shape(shape, "m.json") == tuple(shape)
    else:
        with pytest.raises(ValueError, match="^m.json: key 'sample_shape'"): files.check_sample_shape(shape, "m.json")


def test_check_sample_shape_compares_channels_only_when_the_network_gives_them():
    assert files.check_sample_shape([3, 8, 8], "m.json") == (3, 8, 8)
    assert files.check_sample_shape([3, 8, 8], "m.json", in_channels=3) == (3, 8, 8)
    with pytest.raises(ValueError, match="3 channels but the network takes in_channels = 1"):
        files.check_sample_shape([3, 8, 8], "m.json", in_channels=1)


def test_held_out_digit_indices_stop_at_the_last_one():
    from deq_ddim_nb.toy import digits_data
    n = len(digits_data(16, "test", torch.float32)[0])
    assert load_target(n - 1).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match=rf"digit index must be in \[0, {n - 1}\]"): load_target(n)


# ---- where the temporary file lives, names at their limits, what load_target returns, and that no pickle runs ----------
def test_the_temporary_file_is_hidden_beside_its_target(tmp_path):
    "Beside it, so the final rename is atomic (same file system); hidden, named after it, ending in .tmp."
    seen = []
    publish({tmp_path / "a.csv": lambda fh: seen.append(sorted(os.listdir(tmp_path)))})
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0].startswith(".a.csv.") and seen[0][0].endswith(".tmp")
    assert _listing(tmp_path) == ["a.csv"]


def test_a_path_object_of_bytes_is_decoded_raw_bytes_are_named_and_dot_names_are_refused(tmp_path):
    class BytesPath(os.PathLike):
        def __fspath__(self): return os.fsencode(tmp_path / "a.png")
    assert check_targets(BytesPath()) == [tmp_path / "a.png"]
    with pytest.raises(TypeError, match="got bytes"): check_targets(os.fsencode(tmp_path / "a.png"))
    for bad in (f"{tmp_path}{os.sep}..", f"{tmp_path}{os.sep}", ".", ".."):
        with pytest.raises(ValueError, match="names a directory, not a file"): check_targets(bad)
    with pytest.raises(ValueError, match="is a directory"): check_targets(f"{tmp_path}{os.sep}.")   # pathlib drops the '.' 


def test_a_name_of_exactly_the_file_system_limit_is_accepted(tmp_path):
    most = os.pathconf(tmp_path, "PC_NAME_MAX")
    assert check_targets(tmp_path / ("a" * most)) == [tmp_path / ("a" * most)]
    with pytest.raises(ValueError, match="too long"): check_targets(tmp_path / ("a" * (most + 1)))
    assert check_targets(tmp_path / ("d" * most) / "x.png", make_dirs=True)
    with pytest.raises(ValueError, match="too long"): check_targets(tmp_path / ("d" * (most + 1)) / "x.png", make_dirs=True)


def test_png_bytes_names_a_non_tensor_and_to_png_replaces_only_when_asked(tmp_path):
    with pytest.raises(ValueError, match="^x must be a floating tensor"): files.png_bytes("image")
    x = torch.zeros(1, 1, 4, 4)
    to_png(x, tmp_path / "a.png")
    with pytest.raises(FileExistsError): to_png(x + 0.5, tmp_path / "a.png")
    to_png(x + 0.5, tmp_path / "a.png", overwrite=True)
    assert (tmp_path / "a.png").read_bytes() == files.png_bytes(x + 0.5)


def test_csv_text_of_one_row_takes_its_keys_as_the_header():
    assert files.csv_text([{"a": 1, "b": 2}]) == "a,b\n1,2\n"


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".pth"])
def test_load_target_returns_float32_from_a_float64_tensor_file_within_the_allowance(tmp_path, suffix):
    x = torch.zeros(1, 16, 16, dtype=torch.float64)
    x[0, 0, 0], x[0, 0, 1] = -1 - 0.9e-3, 1 + 0.9e-3                # inside the 1e-3 allowance around [-1, 1]
    p = tmp_path / f"t{suffix}"
    np.save(p, x.numpy()) if suffix == ".npy" else torch.save(x, p)
    y = load_target(p)
    assert y.dtype == torch.float32 and y.shape == (1, 1, 16, 16)


def test_load_target_never_runs_a_pickle(tmp_path):
    class Planted:
        def __reduce__(self): return (open, (str(tmp_path / "ran"), "w"))
    torch.save({"x": Planted()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError):
        load_target(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


def test_a_32_bit_tiff_of_unknown_range_is_refused(tmp_path):
    from PIL import Image
    Image.fromarray(np.zeros((16, 16), dtype=np.int32), mode="I").save(tmp_path / "a.tif")
    with pytest.raises(ValueError, match="32-bit"): load_target(tmp_path / "a.tif")

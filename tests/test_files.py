"deq_ddim_nb.files: reading inversion targets (every bad input is a clear error) and publishing files without clobbering."
import os, stat, struct, zlib
import numpy as np
import pytest
import torch
from types import SimpleNamespace
from deq_ddim_nb import files as dio
from deq_ddim_nb.files import atomic_write_bytes, load_target, publish_file, save_inversion, temp_path_for, to_png

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


# --- publish_file / atomic_write_bytes -------------------------------------------------------------------------------
def test_atomic_write_refuses_then_overwrites(tmp_path):
    p = atomic_write_bytes(tmp_path / "a.bin", b"one")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"one"
    atomic_write_bytes(p, b"two", overwrite=True)
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["a.bin"]


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = atomic_write_bytes(tmp_path / "u.bin", b"x")
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640                           # not mkstemp's 0o600
    finally:
        os.umask(old)
    p = atomic_write_bytes(tmp_path / "v.bin", b"x")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~old


@pytest.mark.parametrize("kind", ["dir", "fifo"])
def test_never_replaces_a_non_regular_file(tmp_path, kind):
    t = tmp_path / "thing"
    t.mkdir() if kind == "dir" else os.mkfifo(t)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"thing'? is a (directory|FIFO), not a regular file"):
            atomic_write_bytes(t, b"x", overwrite=overwrite)
    assert (t.is_dir() if kind == "dir" else stat.S_ISFIFO(os.lstat(t).st_mode))
    assert sorted(os.listdir(tmp_path)) == ["thing"]                                # no temporaries left


def test_device_is_never_replaced(tmp_path):
    tmp = temp_path_for(tmp_path / "x")
    with pytest.raises(ValueError, match="a device, not a regular file"):
        publish_file(tmp, "/dev/null", overwrite=True)
    assert not tmp.exists()


def test_symlink_rule(tmp_path):
    (tmp_path / "real").write_bytes(b"keep")
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(FileExistsError, match="symlink"):
        atomic_write_bytes(tmp_path / "link", b"new")
    atomic_write_bytes(tmp_path / "link", b"new", overwrite=True)
    assert (tmp_path / "real").read_bytes() == b"keep"                              # never written through the link
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").read_bytes() == b"new"


def test_publish_does_not_replace_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "race.png"
    tmp = temp_path_for(target); tmp.write_bytes(b"ours")
    real_check = dio._check_replaceable
    def check_then_someone_writes(t, overwrite):
        real_check(t, overwrite)
        t.write_bytes(b"theirs")                                                    # the race: after the check
    dio._check_replaceable = check_then_someone_writes
    try:
        with pytest.raises(FileExistsError, match="appeared while it was being written"):
            publish_file(tmp, target)
    finally:
        dio._check_replaceable = real_check
    assert target.read_bytes() == b"theirs" and not tmp.exists()


def test_temp_names_are_short(tmp_path):
    long = "é" * 120 + ".png"                                                       # 244 bytes: a legal name
    p = atomic_write_bytes(tmp_path / long, b"x")
    assert p.read_bytes() == b"x"
    tmp = temp_path_for(tmp_path / long)
    assert len(tmp.name.encode()) < 80
    tmp.unlink()


def test_temp_file_removed_when_writing_fails(tmp_path, monkeypatch):
    def bad_open(*a, **k): raise OSError("disk full")
    monkeypatch.setattr("builtins.open", bad_open)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(tmp_path / "f.bin", b"data")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_atomic_write_bytes_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="data must be bytes"):
        atomic_write_bytes(tmp_path / "f", "text")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_bytes(tmp_path / "no" / "f", b"x")


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
    with Image.open(paths["regenerated"]) as im: assert im.mode == "L" and im.size == (32, 16)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_inversion(tmp_path / "out", _result())
    torch.testing.assert_close(torch.load(paths["x_T"], weights_only=True), r.x_T)    # untouched
    r2 = _result()
    save_inversion(tmp_path / "out", r2, overwrite=True)
    torch.testing.assert_close(torch.load(paths["x_T"], weights_only=True), r2.x_T)


def test_save_inversion_is_atomic(tmp_path, monkeypatch):
    r = _result()
    def boom(x): raise OSError("disk full")
    monkeypatch.setattr(dio, "png_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        save_inversion(tmp_path, r)
    assert sorted(os.listdir(tmp_path)) == []                                        # nothing half-written, no temporaries
    monkeypatch.undo()
    save_inversion(tmp_path, r)
    old = torch.load(tmp_path / "x_T.pt", weights_only=True)
    monkeypatch.setattr(dio, "png_bytes", boom)
    with pytest.raises(OSError):
        save_inversion(tmp_path, _result(), overwrite=True)
    torch.testing.assert_close(torch.load(tmp_path / "x_T.pt", weights_only=True), old)   # old files intact
    assert sorted(os.listdir(tmp_path)) == ["regenerated.png", "x_T.pt"]


def test_save_inversion_takes_back_a_half_published_pair(tmp_path, monkeypatch):
    real = dio.publish_file
    def second_fails(tmp, target, overwrite=False):
        if str(target).endswith(".png"): raise FileExistsError("appeared meanwhile")
        return real(tmp, target, overwrite)
    monkeypatch.setattr(dio, "publish_file", second_fails)
    with pytest.raises(FileExistsError):
        save_inversion(tmp_path, _result())
    assert os.listdir(tmp_path) == []


def test_save_inversion_refuses_non_regular_files(tmp_path):
    (tmp_path / "x_T.pt").mkdir()
    with pytest.raises(ValueError, match="x_T.pt'? is a directory, not a regular file"):
        save_inversion(tmp_path, _result(), overwrite=True)
    f = tmp_path / "file"; f.write_text("x")
    with pytest.raises(NotADirectoryError, match="out_dir"):
        save_inversion(f, _result())


def test_inversion_module_re_exports_io():
    from deq_ddim_nb import inversion
    assert inversion.load_target is load_target and inversion.save_inversion is save_inversion and inversion.to_png is to_png

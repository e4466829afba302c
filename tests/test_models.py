"Tests of deq_ddim_nb.models: the shipped digits model, load_model's errors and the diffusers round trip."
import json, os, re

os.environ.setdefault("OMP_NUM_THREADS", "1")
import pytest
import torch

torch.set_num_threads(1)

from deq_ddim_nb.models import UNet, DiffusersEps, load_model, random_shift, save_model, TrainConfig, train_digits
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.ddim import ddim_sample


@pytest.fixture(scope="module")
def digits():
    return load_model("digits")


def _ddim_loop(eps_model, x, sched):
    "An independent sequential DDIM loop (Eq. 7, η = 0) to check ddim_sample against."
    for i in range(len(sched.t), 0, -1):
        a, ap = sched.abar[i - 1].to(x.dtype), sched.abar_prev[i - 1].to(x.dtype)
        eps = eps_model(x, sched.t[i - 1].expand(len(x)))
        x = ap.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - ap).sqrt() * eps
    return x


# ---------- the shipped model ----------
def test_digits_loads_with_config(digits):
    c = digits.config
    assert c["name"] == "digits"
    assert (c["n_train"], c["beta_start"], c["beta_end"], c["beta_schedule"]) == (1000, 1e-4, 0.02, "linear")
    assert c["sample_shape"] == (1, 16, 16) and isinstance(c["sample_shape"], tuple)
    assert not digits.training
    assert all(not p.requires_grad for p in digits.parameters())
    assert sum(p.numel() for p in digits.parameters()) <= 1_200_000


def test_digits_output_shape_finite_and_trained(digits):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 16, 16, generator=g)
    t = torch.tensor([0, 250, 500, 999])
    eps = digits(x, t)
    assert eps.shape == x.shape and eps.dtype == torch.float32
    assert torch.isfinite(eps).all()
    # at t = 999, x_t is almost pure noise, so a trained model predicts eps ≈ x_t
    x999 = torch.randn(16, 1, 16, 16, generator=g)
    err = (digits(x999, torch.full((16,), 999)) - x999).pow(2).mean()
    assert err < 0.05, err


def test_digits_gradient_flows_to_input(digits):
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    digits(x, torch.tensor([10, 900])).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_digits_float64():
    m = load_model("digits", dtype=torch.float64)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    eps64 = m(x, torch.tensor([5, 600]))
    assert eps64.dtype == torch.float64
    eps32 = load_model("digits")(x.float(), torch.tensor([5, 600]))
    assert torch.allclose(eps64.float(), eps32, atol=1e-4)


def test_digits_denoises_test_images(digits):
    "On held-out digits the ε-loss is far below that of predicting 0 (which is 1)."
    from deq_ddim_nb.toy import digits_data
    x0 = digits_data(16, "test", torch.float32)[0][:64]
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    abar = DDIMSchedule.make(1000).abar.float()  # T = n_train: abar[i] belongs to timestep i
    a = abar[t][:, None, None, None]
    loss = (digits(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps).pow(2).mean()
    assert loss < 0.15, loss


def test_digits_samples_in_range_and_diverse(digits):
    sched = DDIMSchedule.make(20)
    x_T = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    x0 = ddim_sample(digits, x_T, sched)
    assert x0.shape == x_T.shape and torch.isfinite(x0).all()
    assert x0.min() >= -1.2 and x0.max() <= 1.2, (x0.min(), x0.max())
    assert x0.std(0).mean() > 0.1  # not all the same image
    # background near -1, strokes near +1: the samples use the whole range like the data
    assert (x0 < -0.8).float().mean() > 0.3 and (x0 > 0.5).float().mean() > 0.03
    assert torch.allclose(x0, _ddim_loop(digits, x_T, sched), atol=1e-4)


# ---------- the network and the training loop ----------
def test_unet_shapes_and_identity_init():
    torch.manual_seed(0)
    m = UNet(ch=16, groups=4)
    x = torch.randn(3, 1, 16, 16)
    out = m(x, torch.tensor([1, 2, 3]))
    assert out.shape == x.shape and out.abs().max() == 0  # zero-initialised output convolution
    with pytest.raises(ValueError, match="must divide the channels"):
        UNet(ch=12, groups=8)


def test_random_shift_moves_by_at_most_one_pixel():
    x = -torch.ones(50, 1, 6, 6)
    x[:, :, 3, 3] = 1.0
    y = random_shift(x, 1, torch.Generator().manual_seed(0))
    rows, cols = torch.nonzero(y[:, 0] > 0, as_tuple=True)[1:]
    assert len(rows) == 50 and set(rows.tolist()) <= {2, 3, 4} and set(cols.tolist()) <= {2, 3, 4}
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 3  # really random


def test_train_save_load_round_trip(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=8, warmup=2, log_every=2,
                      unet=dict(in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(), groups=4, heads=2))
    m1, h1 = train_digits(cfg, progress=False)
    m2, h2 = train_digits(cfg, progress=False)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]  # seeded: the same run twice
    assert [h["step"] for h in h1] == [2, 4]
    stem = save_model(m1, tmp_path / "tiny", cfg, h1, name="tiny")
    assert (tmp_path / "tiny_loss.csv").read_text().splitlines()[0] == "step,loss,lr,seconds"
    m = load_model(tmp_path / "tiny.safetensors")
    x = torch.randn(2, 1, 16, 16)
    t = torch.tensor([3, 700])
    assert torch.equal(m(x, t), m1(x, t))
    assert m.config["name"] == "tiny" and m.config["n_params"] == sum(p.numel() for p in m1.parameters())


# ---------- errors ----------
def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="digits") as e:
        load_model("cifar10-no-such-model")
    assert "diffusers" in str(e.value) and "cifar10-no-such-model" in str(e.value)


def test_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="not a diffusers UNet2DModel directory"):
        load_model(tmp_path)  # an empty directory
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    with pytest.raises(ValueError, match="no weights"):
        load_model(tmp_path)  # config without weights
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(ValueError, match="not a model"):
        load_model(f)
    (tmp_path / "lonely.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="needs its config"):
        load_model(tmp_path / "lonely.safetensors")
    (tmp_path / "cond").mkdir()
    (tmp_path / "cond" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="expected a UNet2DModel"):
        load_model(tmp_path / "cond")
    with pytest.raises(TypeError, match="name or a path"):
        load_model(42)


# ---------- diffusers ----------
def _tiny_unet():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 norm_num_groups=4, layers_per_block=1,
                                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))


def test_diffusers_round_trip(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = _tiny_unet().eval()
    unet.save_pretrained(tmp_path)
    diffusers.DDIMScheduler(num_train_timesteps=500, beta_end=0.015).save_pretrained(tmp_path)
    m = load_model(tmp_path)
    c = m.config
    assert (c["n_train"], c["beta_start"], c["beta_end"], c["beta_schedule"]) == (500, 1e-4, 0.015, "linear")
    assert c["sample_shape"] == (1, 8, 8) and c["name"] == str(tmp_path)
    assert isinstance(m, DiffusersEps) and not m.training and all(not p.requires_grad for p in m.parameters())
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0, 17, 499])
    with torch.no_grad():
        ref = unet(x, t).sample
    assert torch.allclose(m(x, t), ref, atol=1e-6)
    # the wrapped model runs in the project's sampler with the schedule it reports
    sched = DDIMSchedule.make(10, n_train=c["n_train"], beta_start=c["beta_start"], beta_end=c["beta_end"])
    assert torch.isfinite(ddim_sample(m, x, sched)).all()


def test_diffusers_unreadable_weights(tmp_path):
    pytest.importorskip("diffusers")
    _tiny_unet().save_pretrained(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))) as e:
        load_model(str(tmp_path))
    assert "diffusion_pytorch_model.safetensors" in str(e.value)


def test_diffusers_defaults_and_pipeline_layout(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = _tiny_unet().eval()
    unet.save_pretrained(tmp_path / "alone")
    c = load_model(tmp_path / "alone").config
    assert (c["n_train"], c["beta_start"], c["beta_end"], c["beta_schedule"]) == (1000, 1e-4, 0.02, "linear")
    assert c["scheduler_config"] is None
    # a pipeline directory: unet/ and scheduler/ side by side
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=300, beta_start=2e-4).save_pretrained(tmp_path / "pipe" / "scheduler")
    for p in (tmp_path / "pipe", tmp_path / "pipe" / "unet"):
        m = load_model(p, dtype=torch.float64)
        assert (m.config["n_train"], m.config["beta_start"]) == (300, 2e-4), p
        x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
        assert m(x, torch.tensor([1, 2])).dtype == torch.float64


def test_diffusers_v_prediction_converted_to_eps(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = _tiny_unet().eval()
    unet.save_pretrained(tmp_path)
    diffusers.DDIMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path)
    m = load_model(tmp_path)
    assert (m.config["prediction_type"], m.config["trained_prediction_type"]) == ("epsilon", "v_prediction")
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 900])
    with torch.no_grad():
        v = unet(x, t).sample
    abar = DDIMSchedule.make(1000).abar.float()[t][:, None, None, None]
    # eps = sqrt(abar) v + sqrt(1 - abar) x_t
    assert torch.allclose(m(x, t), abar.sqrt() * v + (1 - abar).sqrt() * x, atol=1e-6)


# ---------- checkpoints load as trained or not at all ----------
def _tiny_own(tmp_path):
    cfg = TrainConfig(unet=dict(in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(), groups=4, heads=2))
    torch.manual_seed(0)
    save_model(UNet(**cfg.unet), tmp_path / "tiny", cfg, name="tiny")
    return tmp_path / "tiny.safetensors", tmp_path / "tiny.json"


def test_own_missing_weight_raises(tmp_path):
    from safetensors.torch import load_file, save_file
    w, _ = _tiny_own(tmp_path)
    sd = load_file(str(w)); del sd["conv_out.bias"]; save_file(sd, str(w))
    with pytest.raises(ValueError, match=r"tiny\.safetensors does not match .*missing weights \['conv_out.bias'\]"):
        load_model(w)


def test_own_unexpected_weight_raises(tmp_path):
    from safetensors.torch import load_file, save_file
    w, _ = _tiny_own(tmp_path)
    sd = load_file(str(w)); sd["extra.weight"] = torch.zeros(3); save_file(sd, str(w))
    with pytest.raises(ValueError, match=r"unexpected weights \['extra.weight'\]"):
        load_model(w)


def test_own_invalid_json_raises(tmp_path):
    w, c = _tiny_own(tmp_path)
    c.write_text(c.read_text()[:-20])
    with pytest.raises(ValueError, match=r"tiny\.json' is not valid JSON"):
        load_model(w)
    c.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_model(w)


@pytest.mark.parametrize("shape,match", [
    (None, "'sample_shape' is missing"), ("abc", "must be a list of ints"), ([1, 16.5, 16], "must be a list of ints"),
    ([1, -16, 16], "must hold positive sizes"), ([1, 10 ** 6, 10 ** 6], "values per sample, more than MAX_SAMPLE_NUMEL"),
    ([3, 16, 16], "has 3 channels but the network takes in_channels = 1"), ([True, 16, 16], "must be a list of ints"),
])
def test_own_bad_sample_shape_raises(tmp_path, shape, match):
    w, c = _tiny_own(tmp_path)
    cfg = json.loads(c.read_text())
    if shape is None: del cfg["sample_shape"]
    else: cfg["sample_shape"] = shape
    c.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=re.escape(str(c)) + ".*" + match):
        load_model(w)


@pytest.mark.parametrize("key,value,match", [
    ("n_train", "1000", "'n_train'\\] must be an int"), ("n_train", 0, "'n_train'\\] must be >= 1"),
    ("beta_start", "small", "'beta_start'\\] must be a real number"), ("beta_end", 2.0, "beta_end=2.0"),
    ("beta_start", 0.5, "need 0 < beta_start <= beta_end < 1, got beta_start=0.5"),
    ("beta_schedule", "cosine", "'beta_schedule'\\] must be one of"),
    ("prediction_type", "v_prediction", "'prediction_type' must be 'epsilon'"), ("unet", [1], "'unet'"),
])
def test_own_bad_schedule_keys_raise(tmp_path, key, value, match):
    w, c = _tiny_own(tmp_path)
    cfg = json.loads(c.read_text()); cfg[key] = value
    c.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=re.escape(str(c)) + ".*" + match):
        load_model(w)


def test_shipped_loader_checks_its_json(tmp_path, monkeypatch):
    "The shipped model goes through the same checks: a corrupted shipped json is a clear error, not a KeyError."
    import shutil
    from deq_ddim_nb import models
    for suffix in (".safetensors", ".json"):
        shutil.copy(models.assets_dir() / f"digits_unet{suffix}", tmp_path / f"digits_unet{suffix}")
    cfg = json.loads((tmp_path / "digits_unet.json").read_text()); del cfg["sample_shape"]
    (tmp_path / "digits_unet.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(models, "assets_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match="digits_unet.json.*'sample_shape' is missing"):
        load_model("digits")


def test_diffusers_missing_weight_raises(tmp_path):
    pytest.importorskip("diffusers")
    from safetensors.torch import load_file, save_file
    _tiny_unet().save_pretrained(tmp_path)
    f = tmp_path / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f)); del sd["conv_norm_out.weight"]; save_file(sd, str(f))
    with pytest.raises(ValueError, match=re.escape(str(f)) + r" does not match the network of config\.json: "
                                         r"missing weights \['conv_norm_out\.weight'\]"):
        load_model(tmp_path)
    # a .bin checkpoint has no header to read first: diffusers' loading report is checked instead
    b = tmp_path / "bin"
    _tiny_unet().save_pretrained(b, safe_serialization=False)
    sd = torch.load(b / "diffusion_pytorch_model.bin", weights_only=True); del sd["conv_norm_out.weight"]
    torch.save(sd, b / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.bin in .* does not match its config\.json: "
                                         r"missing keys \['conv_norm_out\.weight'\]"):
        load_model(b)


def test_diffusers_unexpected_weight_raises(tmp_path):
    pytest.importorskip("diffusers")
    from safetensors.torch import load_file, save_file
    _tiny_unet().save_pretrained(tmp_path)
    f = tmp_path / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f)); sd["extra.weight"] = torch.zeros(2); save_file(sd, str(f))
    with pytest.raises(ValueError, match=r"unexpected weights \['extra\.weight'\]"):
        load_model(tmp_path)


@pytest.mark.parametrize("size,match", [(None, "'sample_size' is missing"), (-8, "positive sizes"),
                                        ([100000, 100000], "MAX_SAMPLE_NUMEL"), ("8", "must be a list of ints")])
def test_diffusers_bad_sample_size_raises(tmp_path, size, match):
    pytest.importorskip("diffusers")
    _tiny_unet().save_pretrained(tmp_path)
    c = tmp_path / "config.json"
    cfg = json.loads(c.read_text()); cfg["sample_size"] = size
    c.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=re.escape(str(c)) + ".*" + match):
        load_model(tmp_path)


@pytest.mark.parametrize("text,match", [
    ('{"num_train_timesteps": 1000,', "is not valid JSON"),
    ('{"num_train_timesteps": "1000"}', "config\\['num_train_timesteps'\\] must be an int"),
    ('{"beta_start": "0.0001"}', "config\\['beta_start'\\] must be a real number"),
    ('{"beta_schedule": 5}', "config\\['beta_schedule'\\] must be one of"),
    ('{"prediction_type": "noise"}', "config\\['prediction_type'\\] must be one of"),
    ('{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}', "config\\['trained_betas'\\] must have one value per training step \\(n_train = 3\\)"),
    ('{"num_train_timesteps": 2, "trained_betas": [0.1, "x"]}', "config\\['trained_betas'\\] must be a sequence of numbers, got a list holding 'x'"),
])
def test_diffusers_broken_scheduler_config_raises(tmp_path, text, match):
    pytest.importorskip("diffusers")
    _tiny_unet().save_pretrained(tmp_path)
    (tmp_path / "scheduler_config.json").write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "scheduler_config.json")) + ".*" + match):
        load_model(tmp_path)


def test_v_prediction_uses_the_schedules_abar_with_trained_betas(tmp_path):
    "The v → ε conversion and DDIMSchedule.from_config use the same ᾱ, also for explicit trained_betas."
    diffusers = pytest.importorskip("diffusers")
    unet = _tiny_unet().eval()
    unet.save_pretrained(tmp_path)
    betas = torch.linspace(2e-4, 0.03, 200, dtype=torch.float64) ** 1.1
    diffusers.DDIMScheduler(num_train_timesteps=200, trained_betas=betas.tolist(),
                            prediction_type="v_prediction").save_pretrained(tmp_path)
    m = load_model(tmp_path)
    abar = torch.cumprod(1 - betas, 0)
    sched = DDIMSchedule.from_config(200, m.config)
    torch.testing.assert_close(m.conversion.abar, sched.abar)                      # one ᾱ for both
    torch.testing.assert_close(m.conversion.abar, abar)                            # and it is the trained_betas' one
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 150])
    with torch.no_grad(): v = unet(x, t).sample
    a = abar.float()[t][:, None, None, None]
    torch.testing.assert_close(m(x, t), a.sqrt() * v + (1 - a).sqrt() * x)


# ---------- every bad model file is refused, naming the file and the key, before anything is loaded ----------
def _spoil_weights(w, change):
    from safetensors.torch import load_file, save_file
    sd = load_file(str(w)); change(sd); save_file(sd, str(w))


def _spoil_config(c, change):
    cfg = json.loads(c.read_text()); change(cfg); c.write_text(json.dumps(cfg))


@pytest.mark.parametrize("change,key,match", [
    (lambda sd: sd.update({"conv_in.weight": torch.zeros(8, 1, 5, 5)}), "conv_in.weight",
     r"wrong shapes: 'conv_in\.weight' is \[8, 1, 5, 5\], needs \[8, 1, 3, 3\]"),
    (lambda sd: sd.update({"conv_out.bias": torch.zeros(1, dtype=torch.int64)}), "conv_out.bias", "not floating point: 'conv_out.bias' is I64"),
    (lambda sd: sd["conv_out.bias"].fill_(float("nan")), "conv_out.bias", "key 'conv_out.bias' holds non-finite values"),
])
def test_own_bad_weights_name_the_file_and_the_key(tmp_path, change, key, match):
    w, c = _tiny_own(tmp_path)
    _spoil_weights(w, change)
    with pytest.raises(ValueError, match=re.escape(str(w)) + ".*" + match) as e:
        load_model(w)
    assert key in str(e.value)


@pytest.mark.parametrize("change,match", [
    (lambda c: c["unet"].update(groups=0), "key 'unet': groups must be >= 1, got 0"),
    (lambda c: c["unet"].update(ch=-8), "key 'unet': ch must be >= 2, got -8"),
    (lambda c: c["unet"].update(ch=9, groups=1, heads=1), "key 'unet': ch must be even"),
    (lambda c: c["unet"].update(ch="8"), "key 'unet': ch must be an int"),
    (lambda c: c["unet"].update(groups=3), r"key 'unet': groups=3 must divide the channels of every GroupNorm \[8, 16\]"),
    (lambda c: c["unet"].update(heads=3), r"key 'unet': heads=3 must divide the channels of every attention layer \[16\]"),
    (lambda c: c["unet"].update(attn_levels=[2]), r"key 'unet': attn_levels\[0\] must be <= 1, got 2"),
    (lambda c: c["unet"].update(ch_mult=[]), "key 'unet': ch_mult must have at least one entry"),
    (lambda c: c["unet"].update(num_res_blocks=0), "key 'unet': num_res_blocks must be >= 1"),
    (lambda c: c["unet"].update(dropout=1.5), "key 'unet': dropout must be < 1"),
    (lambda c: c["unet"].update(width=3), r"key 'unet' has unknown arguments \['width'\]"),
    (lambda c: c["unet"].update(ch=10 ** 6), "key 'unet': ch must be <= 8192"),
    (lambda c: c.update(sample_shape=[1, 15, 15]), r"key 'sample_shape' = \[1, 15, 15\] cannot run: .* multiples of 2"),
    (lambda c: c.update(sample_shape=[1, 16]), r"key 'sample_shape' must be \[C, H, W\] for a 2-d UNet"),
    (lambda c: c.update(sample_shape=[1, 2048, 2048]), r"key 'sample_shape' = \[1, 2048, 2048\] is too large for this UNet"),
])
def test_own_bad_config_is_refused_before_any_weight_is_loaded(tmp_path, monkeypatch, change, match):
    import safetensors.torch
    w, c = _tiny_own(tmp_path)
    _spoil_config(c, change)
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("weights loaded before the config was checked"))
    with pytest.raises(ValueError, match=re.escape(str(c)) + ": " + match):
        load_model(w)


def test_the_shipped_architecture_refuses_a_huge_sample_at_once(tmp_path):
    "[1, 2048, 2048] passes the size cap of one sample, but the middle attention (512² positions) would need terabytes."
    import shutil
    from deq_ddim_nb.files import assets_dir
    for suffix in (".safetensors", ".json"): shutil.copy(assets_dir() / f"digits_unet{suffix}", tmp_path / f"d{suffix}")
    _spoil_config(tmp_path / "d.json", lambda c: c.update(sample_shape=[1, 2048, 2048]))
    with pytest.raises(ValueError, match=r"d\.json: key 'sample_shape' = \[1, 2048, 2048\] is too large .* 512x512 "
                                         r"\(262,144 positions, 4 heads\) needs 1,024 GiB per sample"):
        load_model(tmp_path / "d.safetensors")
    _spoil_config(tmp_path / "d.json", lambda c: c.update(sample_shape=[1, 20, 12]))   # multiples of 4 run
    m = load_model(tmp_path / "d.safetensors")
    assert m(torch.randn(2, 1, 20, 12), torch.tensor([1, 2])).shape == (2, 1, 20, 12)


def test_a_state_of_another_dtype_is_a_clear_error(digits):
    with pytest.raises(TypeError, match=r"x is torch\.float64 but the model's weights are torch\.float32.*dtype=torch\.float64"):
        digits(torch.randn(2, 1, 16, 16, dtype=torch.float64), torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64"):
        load_model("digits", dtype=torch.float16)


def test_unet_arguments_are_checked_by_name():
    with pytest.raises(ValueError, match="groups must be >= 1, got 0"): UNet(groups=0)
    with pytest.raises(ValueError, match="ch must be >= 2, got -32"): UNet(ch=-32)
    with pytest.raises(TypeError, match=r"ch_mult\[1\] must be an int"): UNet(ch_mult=(1, 2.5))
    with pytest.raises(TypeError, match="attn_levels must be a list of ints"): UNet(attn_levels=3)


def test_save_model_writes_all_files_or_none(tmp_path):
    cfg = TrainConfig(unet=dict(in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(), groups=4, heads=2))
    m, hist = UNet(**cfg.unet), [dict(step=1, loss=0.5, lr=1e-3, seconds=0.1)]
    save_model(m, tmp_path / "a", cfg, hist)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.safetensors", "a_loss.csv"]
    (tmp_path / "b.json").write_text("mine")                       # one of three exists: nothing is written
    with pytest.raises(FileExistsError, match="b.json"):
        save_model(m, tmp_path / "b", cfg, hist)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b")) == ["b.json"]
    assert (tmp_path / "b.json").read_text() == "mine"
    os.mkfifo(tmp_path / "c_loss.csv")                              # a FIFO is never replaced, even with overwrite
    with pytest.raises(ValueError, match="FIFO"):
        save_model(m, tmp_path / "c", cfg, hist, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c")) == ["c_loss.csv"]
    save_model(m, tmp_path / "b", cfg, hist, overwrite=True)
    assert load_model(tmp_path / "b.safetensors").config["name"] == "digits"
    with pytest.raises(ValueError, match="model does not match cfg.unet"):
        save_model(UNet(), tmp_path / "d", cfg)
    with pytest.raises(ValueError, match="multiples of 2"):
        save_model(m, tmp_path / "d", cfg, sample_shape=(1, 9, 9))
    assert not any(p.name.startswith("d") or p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_diffusers_bad_files_name_the_file_and_the_key(tmp_path):
    pytest.importorskip("diffusers")
    _tiny_unet().save_pretrained(tmp_path)
    f = tmp_path / "diffusion_pytorch_model.safetensors"
    _spoil_weights(f, lambda sd: sd.update({"conv_in.weight": torch.zeros(8, 1, 5, 5)}))
    with pytest.raises(ValueError, match=re.escape(str(f)) + r" does not match the network of config\.json: wrong shapes: "
                                         r"'conv_in\.weight' is \[8, 1, 5, 5\], needs \[8, 1, 3, 3\]"):
        load_model(tmp_path)
    _tiny_unet().save_pretrained(tmp_path)
    _spoil_config(tmp_path / "config.json", lambda c: c.update(sample_size=7))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "config.json")) + r": key 'sample_size' = \[1, 7, 7\] cannot run"):
        load_model(tmp_path)
    _tiny_unet().save_pretrained(tmp_path)
    (tmp_path / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000, "thresholding": True}))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "scheduler_config.json")) + r": config\['thresholding'\] = True"):
        load_model(tmp_path)
    (tmp_path / "scheduler_config.json").unlink()
    m = load_model(tmp_path)
    with pytest.raises(TypeError, match=r"x is torch\.float64 but the model's weights are torch\.float32"):
        m(torch.randn(1, 1, 8, 8, dtype=torch.float64), torch.tensor([3]))


@pytest.mark.parametrize("sched_kw", [
    dict(prediction_type="v_prediction", timestep_spacing="trailing"),
    dict(prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False, clip_sample=False),
    dict(prediction_type="epsilon", timestep_spacing="trailing", beta_schedule="scaled_linear", beta_end=0.012),
    dict(prediction_type="sample", timestep_spacing="linspace", clip_sample=True),
], ids=["v-trailing", "v-leading-offset", "eps-trailing-scaled", "x0-linspace-clip"])
def test_diffusers_directory_samples_as_diffusers_ddim_scheduler(tmp_path, sched_kw):
    """save_pretrained (UNet and DDIMScheduler) -> load_model -> DDIMSchedule.from_config -> ddim_sample agrees with a loop
    over diffusers' own DDIMScheduler on the same network (float32)."""
    diffusers = pytest.importorskip("diffusers")
    unet = _tiny_unet().eval()
    unet.save_pretrained(tmp_path)
    diffusers.DDIMScheduler(num_train_timesteps=1000, **sched_kw).save_pretrained(tmp_path)
    m = load_model(tmp_path)
    assert m.config["prediction_type"] == "epsilon" and m.config["trained_prediction_type"] == sched_kw["prediction_type"]
    assert all(m.config[k] == v for k, v in sched_kw.items() if k != "prediction_type")     # the scheduler keys, verbatim
    T = 10
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = ddim_sample(m, x_T, DDIMSchedule.from_config(T, m.config))
    ref = diffusers.DDIMScheduler.from_pretrained(tmp_path)
    ref.set_timesteps(T)
    x = x_T.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    assert torch.isfinite(x).all() and x.abs().max() > 0.1
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)

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
    assert m.config["prediction_type"] == "v_prediction"
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 900])
    with torch.no_grad():
        v = unet(x, t).sample
    abar = DDIMSchedule.make(1000).abar.float()[t][:, None, None, None]
    # eps = sqrt(abar) v + sqrt(1 - abar) x_t
    assert torch.allclose(m(x, t), abar.sqrt() * v + (1 - abar).sqrt() * x, atol=1e-6)

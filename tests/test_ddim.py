import numpy as np
import pytest
import torch
from conftest import rel, randn
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.ddim import ddim_sample, ddim_step, ddim_invert, draw_noise


def eq7_loop_numpy(model, x_T, t_seq):
    "An independent loop of Eq. (7): schedule from scratch in NumPy, the update written out."
    a_all = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    x = x_T.numpy().copy()
    for i in reversed(range(len(t_seq))):
        a_t, a_prev = a_all[t_seq[i]], (a_all[t_seq[i - 1]] if i > 0 else 1.0)
        e = model(torch.from_numpy(x), torch.full((len(x),), t_seq[i])).numpy()
        x = np.sqrt(a_prev) * (x - np.sqrt(1 - a_t) * e) / np.sqrt(a_t) + np.sqrt(1 - a_prev) * e
    return torch.from_numpy(x)


@pytest.mark.parametrize("T", [1, 10, 100])
@pytest.mark.parametrize("skip", ["uniform", "quad"])
def test_eq7_ddim_sample_matches_independent_loop(digits_model, T, skip):
    x_T = randn(3, 1, 8, 8, seed=T)
    s = DDIMSchedule.make(T, skip=skip)
    assert rel(ddim_sample(digits_model, x_T, s), eq7_loop_numpy(digits_model, x_T, s.t.tolist())) < 1e-10


def test_traj_indexing(digits_model):
    x_T = randn(2, 1, 8, 8)
    x0, xs = ddim_sample(digits_model, x_T, DDIMSchedule.make(10), return_traj=True)
    assert xs.shape == (11, 2, 1, 8, 8)
    assert torch.equal(xs[-1], x_T) and torch.equal(xs[0], x0)


def test_eq20_stochastic_step_and_noise_reproducibility(digits_model):
    x_T = randn(2, 1, 8, 8)
    s = DDIMSchedule.make(10, eta=1.0)
    nz = draw_noise(s, x_T, torch.Generator().manual_seed(0))
    a = ddim_sample(digits_model, x_T, s, nz)
    assert torch.equal(a, ddim_sample(digits_model, x_T, s, nz.clone()))
    assert rel(a, ddim_sample(digits_model, x_T, s, -nz)) > 1e-3
    # one step by hand (Eq. 20)
    x, e, n = randn(4, 3, seed=1), randn(4, 3, seed=2), randn(4, 3, seed=3)
    ab, ap, sg = 0.3, 0.6, 0.2
    ref = np.sqrt(ap) * (x - np.sqrt(1 - ab) * e) / np.sqrt(ab) + np.sqrt(1 - ap - sg ** 2) * e + sg * n
    assert torch.allclose(ddim_step(x, e, ab, ap, sg, n), ref, rtol=1e-13)


def test_diffusers_ddim_scheduler_agrees(digits_model):
    diffusers = pytest.importorskip("diffusers")
    T = 20
    ds = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                 clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    ds.set_timesteps(T)
    x_T = randn(2, 1, 8, 8)
    x = x_T.clone()
    for t in ds.timesteps:
        x = ds.step(digits_model(x, t.long().expand(len(x))), t, x, eta=0.0).prev_sample
    assert rel(x, ddim_sample(digits_model, x_T, DDIMSchedule.make(T))) < 1e-5


def test_ddim_invert_round_trip_improves_with_T():
    "ODE inversion then regeneration returns close to the start, closer for larger T (smooth Gaussian-mixture model)."
    from deq_ddim_nb.toy import GaussianMixtureEps
    gmm = GaussianMixtureEps([[-2.0, 0.0], [2.0, 1.0]], stds=[0.5, 0.7])
    x0 = gmm.sample(16, torch.Generator().manual_seed(0))
    errs = [rel(ddim_sample(gmm, ddim_invert(gmm, x0, s), s), x0) for s in (DDIMSchedule.make(10), DDIMSchedule.make(200))]
    assert errs[1] < errs[0] / 3 and errs[1] < 0.02, errs


def test_float32_and_float64_agree(digits_model):
    x_T = randn(2, 1, 8, 8)
    s = DDIMSchedule.make(20)
    a = ddim_sample(digits_model, x_T.float(), s)
    assert a.dtype == torch.float32 and rel(a.double(), ddim_sample(digits_model, x_T, s)) < 1e-4


# ---- bad inputs -------------------------------------------------------------------------------
def test_integer_x_T_rejected(digits_model):
    with pytest.raises(TypeError, match="x_T must be a floating tensor"):
        ddim_sample(digits_model, torch.zeros(2, 1, 8, 8, dtype=torch.long), DDIMSchedule.make(5))


def test_x_T_without_batch_dim_rejected(digits_model):
    with pytest.raises(ValueError, match="batch dimension"):
        ddim_sample(digits_model, torch.zeros(8), DDIMSchedule.make(5))


def test_non_finite_x_T_rejected(digits_model):
    with pytest.raises(ValueError, match="non-finite"):
        ddim_sample(digits_model, torch.full((1, 1, 8, 8), float("nan"), dtype=torch.float64), DDIMSchedule.make(5))


def test_noise_shape_mismatch(digits_model):
    s = DDIMSchedule.make(5, eta=0.5)
    with pytest.raises(ValueError, match=r"noise must have shape \(T, \*x_T.shape\)"):
        ddim_sample(digits_model, randn(2, 1, 8, 8), s, torch.zeros(5, 3, 1, 8, 8, dtype=torch.float64))


def test_model_wrong_shape_named():
    with pytest.raises(ValueError, match="eps_model must return a tensor shaped like its input"):
        ddim_sample(lambda x, t: x[:, :1], randn(2, 3), DDIMSchedule.make(5))


def test_model_non_finite_names_timestep():
    bad = lambda x, t: torch.where((t == 600)[:, None], torch.full_like(x, float("nan")), x * 0.1)
    with pytest.raises(ValueError, match=r"non-finite values .* timestep\(s\) \[600\]"):
        ddim_sample(bad, randn(2, 3), DDIMSchedule.make(5))


def test_schedule_type_checked(digits_model):
    with pytest.raises(TypeError, match="sched must be a DDIMSchedule"):
        ddim_sample(digits_model, randn(1, 1, 8, 8), 10)


@pytest.mark.parametrize("T,skip", [(1, "uniform"), (7, "quad"), (20, "uniform")])
def test_eq10_telescoped_sum_reproduces_every_state(digits_model, T, skip):
    "Eq. (10c): x_{T-k}/sqrt(a_{T-k}) = x_T/sqrt(a_T) + sum_{t=T-k+1}^{T} c_1^{(t)} eps^{(t)} / sqrt(a_{t-1}), every k."
    from deq_ddim_nb.ddim import ddim_coeffs
    x_T = randn(2, 1, 8, 8, seed=T)
    s = DDIMSchedule.make(T, skip=skip)
    _, xs = ddim_sample(digits_model, x_T, s, return_traj=True)
    a = torch.cat([torch.ones(1, dtype=torch.float64), s.abar])
    _, c1 = ddim_coeffs(s)
    eps = [digits_model(xs[t], s.t[t - 1].expand(2)) for t in range(1, T + 1)]
    for k in range(T + 1):
        y = x_T / a[T].sqrt() + sum((c1[t - 1] * eps[t - 1] / a[t - 1].sqrt() for t in range(T - k + 1, T + 1)), torch.zeros_like(x_T))
        assert rel(a[T - k].sqrt() * y, xs[T - k]) < 1e-12


def test_ddim_step_checks_its_own_arguments():
    x = randn(2, 3)
    with pytest.raises(ValueError, match=r"abar must lie in \(0, 1\]"):
        ddim_step(x, x, -0.5, 0.8)
    with pytest.raises(TypeError, match="eps must be a real floating tensor"):
        ddim_step(x, [0.0, 1.0, 2.0], 0.5, 0.8)


def test_shipped_unet_trajectory_shrinks_to_image_scale():
    "The shipped digits UNet on its own schedule: x_0 is finite, in the data range, and the chain ends at image scale."
    from deq_ddim_nb.models import load_model
    unet = load_model("digits")
    s = DDIMSchedule.from_config(10, unet.config)
    x_T = torch.randn(2, *unet.config["sample_shape"], generator=torch.Generator().manual_seed(0))
    x0, xs = ddim_sample(unet, x_T, s, return_traj=True)
    assert xs.shape == (11, 2, *unet.config["sample_shape"]) and torch.isfinite(xs).all()
    assert x0.abs().max() < 1.5 and (x0.pow(2).mean((1, 2, 3)) < x_T.pow(2).mean((1, 2, 3))).all()


# --- ODE inversion, noise drawing and defaults: each pins one behaviour a mutation of ddim.py would change -----------------
def _time_only(x, t):
    "ε that depends on t only: the DDIM ODE step is then exactly invertible, so ddim_invert must undo ddim_sample exactly."
    return torch.cos(t.to(x.dtype) / 97.0).view(-1, *[1] * (x.ndim - 1)) * torch.ones_like(x)


@pytest.mark.parametrize("T", [1, 7, 50])
def test_ddim_invert_is_the_exact_inverse_when_eps_ignores_x(T):
    s = DDIMSchedule.make(T)
    x_0 = randn(3, 1, 4, 4, seed=T)
    x_T = ddim_invert(_time_only, x_0, s)
    assert rel(ddim_sample(_time_only, x_T, s), x_0) < 1e-12
    # the same inversion written independently: x_i = (x_{i-1} - c1_i eps_i) / sqrt(a_{i-1} / a_i), i = 1 .. T
    a, ap = s.abar.numpy(), s.abar_prev.numpy()
    x = x_0.numpy().copy()
    for i in range(1, T + 1):
        c1 = np.sqrt(1 - ap[i - 1]) - np.sqrt(ap[i - 1] * (1 - a[i - 1]) / a[i - 1])
        x = (x - c1 * _time_only(torch.from_numpy(x), s.t[i - 1].expand(3)).numpy()) / np.sqrt(ap[i - 1] / a[i - 1])
    assert np.abs(x - x_T.numpy()).max() < 1e-12


def test_ddim_invert_trajectory_holds_every_state_from_x0_to_xT():
    s = DDIMSchedule.make(6)
    x_0 = randn(2, 1, 4, 4, seed=1)
    x_T, xs = ddim_invert(_time_only, x_0, s, return_traj=True)
    assert xs.shape == (7, 2, 1, 4, 4) and torch.equal(xs[0], x_0) and torch.equal(xs[-1], x_T)
    # each state maps to the next one by one inverse step of Eq. (9)
    _, back = ddim_sample(_time_only, x_T, s, return_traj=True)
    assert rel(back, xs) < 1e-12


def test_ddim_invert_refuses_a_stochastic_schedule_and_checks_the_model():
    x_0 = randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="deterministic"):
        ddim_invert(_time_only, x_0, DDIMSchedule.make(5, eta=0.5))
    with pytest.raises(ValueError, match="non-finite"):
        ddim_invert(lambda x, t: x * float("nan"), x_0, DDIMSchedule.make(5))
    class Sized:
        config = dict(sample_shape=(1, 8, 8))
        def __call__(self, x, t): return x
    with pytest.raises(ValueError, match="x_0 must have shape"):
        ddim_invert(Sized(), x_0, DDIMSchedule.make(5))
    with pytest.raises(ValueError, match="x_T must have shape"):
        ddim_sample(Sized(), x_0, DDIMSchedule.make(5))


def test_a_generator_gives_the_noises_draw_noise_gives_and_the_same_on_every_call():
    s = DDIMSchedule.make(8, eta=0.7)
    x_T = randn(2, 1, 4, 4, seed=3)
    with_gen = ddim_sample(_time_only, x_T, s, generator=torch.Generator().manual_seed(11))
    with_noise = ddim_sample(_time_only, x_T, s, draw_noise(s, x_T, torch.Generator().manual_seed(11)))
    assert torch.equal(with_gen, with_noise)
    noise = draw_noise(s, x_T, torch.Generator().manual_seed(11))
    assert noise.shape == (8, 2, 1, 4, 4) and noise.dtype == x_T.dtype and noise.device == x_T.device
    assert torch.equal(noise, torch.randn((8, 2, 1, 4, 4), generator=torch.Generator().manual_seed(11), dtype=torch.float64))


def test_ddim_step_default_is_the_deterministic_eq7():
    x, e = randn(2, 3, seed=4), randn(2, 3, seed=5)
    a, ap = 0.3, 0.6
    expect = np.sqrt(ap) * (x - np.sqrt(1 - a) * e) / np.sqrt(a) + np.sqrt(1 - ap) * e     # Eq. (7) by hand
    assert torch.allclose(ddim_step(x, e, a, ap), expect, atol=1e-15)


def test_ddim_sample_trajectory_and_defaults():
    "Defaults: no gradient kept, the model's outputs checked; the trajectory holds x_0 … x_T in order."
    s = DDIMSchedule.make(5)
    x_T = randn(2, 1, 4, 4, seed=6).requires_grad_()
    x0, xs = ddim_sample(_time_only, x_T, s, return_traj=True)
    assert not x0.requires_grad and xs.shape == (6, 2, 1, 4, 4) and torch.equal(xs[-1], x_T.detach()) and torch.equal(xs[0], x0)
    assert ddim_sample(_time_only, x_T, s, enable_grad=True).requires_grad
    with pytest.raises(ValueError, match="non-finite"):
        ddim_sample(lambda x, t: x * float("nan"), x_T.detach(), s)


# --- behaviour that the mutation run showed untested -----------------------------------------------------------------
def test_ddim_invert_keeps_x0s_dtype_names_x_0_and_honours_check_false():
    s = DDIMSchedule.make(5)
    zero = lambda x, t: 0 * x
    for dt in (torch.float32, torch.float64):
        assert ddim_invert(zero, randn(2, 1, 8, 8, dtype=dt), s).dtype == dt
    class Net(torch.nn.Module):                                             # a float32 model
        def __init__(self): super().__init__(); self.c = torch.nn.Conv2d(1, 1, 3, padding=1)
        def forward(self, x, t): return self.c(x)
    with pytest.raises(TypeError, match=r"^x_0 has dtype torch\.float64"): ddim_invert(Net(), randn(2, 1, 8, 8, dtype=torch.float64), s)
    nan = lambda x, t: x * float("nan")
    with pytest.raises(ValueError, match="non-finite"): ddim_invert(nan, randn(2, 1, 8, 8), s)
    assert bool(torch.isnan(ddim_invert(nan, randn(2, 1, 8, 8), s, check=False)).all())   # check=False: no checks


def test_sequential_sampling_and_ode_inversion_are_quiet_unless_asked(capsys):
    from deq_ddim_nb.ddim import ddim_invert
    from deq_ddim_nb.toy import GaussianMixtureEps
    gm = GaussianMixtureEps(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 0.7]))
    s, x = DDIMSchedule.make(5), torch.zeros(2, 2, dtype=torch.float64)
    ddim_sample(gm, x, s); ddim_invert(gm, x, s)
    assert capsys.readouterr().err == ""
    ddim_sample(gm, x, s, progress=True); ddim_invert(gm, x, s, progress=True)
    err = capsys.readouterr().err
    assert "DDIM:" in err and "DDIM inversion:" in err


def test_sequential_sampling_keeps_x_Ts_dtype_and_a_deterministic_run_draws_nothing():
    from deq_ddim_nb.toy import GaussianMixtureEps
    gm = GaussianMixtureEps(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 0.7]))
    s, x = DDIMSchedule.make(10), torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1); state = g.get_state()
    x64 = ddim_sample(gm, x, s, generator=g)
    assert torch.equal(g.get_state(), state)                            # η = 0 draws no noise
    x32 = ddim_sample(lambda x, t: gm(x.double(), t).float(), x.float(), s)
    x0_32 = ddim_invert(lambda x, t: gm(x.double(), t).float(), x32, s)
    assert x32.dtype == x0_32.dtype == torch.float32 and rel(x32.double(), x64) < 1e-5


def test_sequential_sampling_names_a_state_dtype_that_is_not_the_models():
    class Float32Model(torch.nn.Module):
        def __init__(self): super().__init__(); self.lin = torch.nn.Linear(4, 4)
        def forward(self, x, t): return self.lin(x)
    s, x = DDIMSchedule.make(3), torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="^x_T has dtype torch.float64, but the model's parameters are torch.float32"):
        ddim_sample(Float32Model(), x, s)
    with pytest.raises(TypeError, match="^x_0 has dtype torch.float64"):
        ddim_invert(Float32Model(), x, s)

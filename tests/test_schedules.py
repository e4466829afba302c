import numpy as np
import pytest
import torch
from deq_ddim_nb.schedules import DDIMSchedule, make_timesteps, quad_timesteps_original, make_betas, make_abar


@pytest.mark.parametrize("T", [1, 2, 10, 50, 100, 250, 999, 1000])
@pytest.mark.parametrize("skip", ["uniform", "quad"])
def test_timesteps_strictly_increasing_and_in_range(T, skip):
    t = make_timesteps(T, skip).numpy()
    assert len(t) == T and t[0] == 0 and t[-1] <= 999
    assert (np.diff(t) > 0).all()


def test_quad_original_repeats_and_ours_does_not():
    assert len(np.unique(quad_timesteps_original(1000))) == 688
    assert len(np.unique(make_timesteps(1000, "quad").numpy())) == 1000


def test_uniform_matches_ddim_code():
    assert make_timesteps(50).tolist() == list(range(0, 1000, 20))
    assert make_timesteps(30).tolist() == list(range(0, 1000, 33))[:30]


def test_schedule_fields():
    s = DDIMSchedule.make(20, skip="quad", eta=0.5)
    abar = make_abar(make_betas())
    assert torch.allclose(s.abar, abar[s.t])
    assert s.abar_prev[0] == 1 and torch.equal(s.abar_prev[1:], s.abar[:-1])
    # sigma(eta=1)^2 is DDPM's posterior variance on the same subsequence
    s1 = DDIMSchedule.make(20, eta=1.0)
    expect = (1 - s1.abar_prev) / (1 - s1.abar) * (1 - s1.abar / s1.abar_prev)
    assert torch.allclose(s1.sigma ** 2, expect, rtol=1e-12)
    assert torch.allclose(s.sigma, 0.5 * DDIMSchedule.make(20, skip="quad", eta=1.0).sigma)


@pytest.mark.parametrize("kw,msg", [
    (dict(T=0), "T must be >= 1"),
    (dict(T=1001), "T must be <= 1000"),
    (dict(T=11, n_train=10), "T must be <= 10"),
    (dict(T=10, skip="cubic"), "skip must be one of"),
    (dict(T=10, eta=-0.1), "eta must be >= 0"),
    (dict(T=10, eta=5.0), "too large"),
    (dict(T=10, dtype=torch.int32), "floating"),
])
def test_bad_schedule_inputs(kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        DDIMSchedule.make(**kw)


@pytest.mark.parametrize("T", [3, 7, 30, 300])
def test_uniform_keeps_exactly_T_when_T_does_not_divide_n_train(T):
    "The DDIM code's range(0, n_train, n_train // T) has more than T elements here; we keep its first T."
    original = list(range(0, 1000, 1000 // T))
    assert len(original) > T
    assert make_timesteps(T).tolist() == original[:T] and len(DDIMSchedule.make(T)) == T


def test_closed_form_q_xt_given_x0_matches_composed_steps():
    "Eq. (1) composed step by step gives mean coefficient sqrt(abar_t) and variance 1 - abar_t."
    b = make_betas(1000).numpy()
    m, v = 1.0, 0.0
    ms, vs = [], []
    for bt in b:
        m, v = np.sqrt(1 - bt) * m, (1 - bt) * v + bt
        ms.append(m); vs.append(v)
    abar = make_abar(make_betas(1000)).numpy()
    assert np.allclose(ms, np.sqrt(abar), rtol=0, atol=1e-13) and np.allclose(vs, 1 - abar, rtol=0, atol=1e-13)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_named_beta_schedules_in_range(schedule):
    b = make_betas(1000, 1e-4, 0.02, schedule)
    assert b.shape == (1000,) and bool(((b > 0) & (b < 1)).all())
    s = DDIMSchedule.make(10, beta_schedule=schedule)
    assert torch.allclose(s.abar, make_abar(b)[s.t], rtol=1e-14)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(T=10, beta_start="1e-4"), TypeError, "beta_start must be a real number"),
    (dict(T=10, beta_end=float("nan")), ValueError, "beta_end must be finite"),
    (dict(T=10, n_train=1000.0), TypeError, "n_train must be an int"),
    (dict(T=10, eta="0.5"), TypeError, "eta must be a real number"),
])
def test_bad_schedule_number_types(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        DDIMSchedule.make(**kw)


# --- what a mutation of schedules.py would change: each test pins one behaviour ------------------------------------------
import math
from deq_ddim_nb.schedules import make_timesteps, prev_timesteps, schedule_kwargs, MIN_ABAR


@pytest.mark.parametrize("kw,exc,name", [
    (dict(n_train=0), ValueError, "n_train"), (dict(n_train=1.0), TypeError, "n_train"),
    (dict(eta=-1.0), ValueError, "eta"), (dict(eta="1"), TypeError, "eta"),
    (dict(steps_offset=-1), ValueError, "steps_offset"), (dict(steps_offset=0.5), TypeError, "steps_offset"),
    (dict(set_alpha_to_one=1), TypeError, "set_alpha_to_one"), (dict(use_clipped_model_output="no"), TypeError, "use_clipped_model_output"),
    (dict(prediction_type="noise"), ValueError, "prediction_type"), (dict(prediction_type=1), TypeError, "prediction_type"),
    (dict(clip_sample=0.0), ValueError, "clip_sample"), (dict(clip_sample="1"), TypeError, "clip_sample"),
    (dict(sampler="ddpm++"), ValueError, "sampler"), (dict(skip="cubic"), ValueError, "skip"),
])
def test_every_make_argument_is_named_in_its_error(kw, exc, name):
    with pytest.raises(exc, match=rf"^{name} must"):
        DDIMSchedule.make(10, **kw)


def test_make_betas_bounds_and_names():
    with pytest.raises(ValueError, match="beta_start=0.0"): make_betas(10, 0.0, 0.02)
    with pytest.raises(ValueError, match="beta_end=1.0"): make_betas(10, 1e-4, 1.0)
    with pytest.raises(ValueError, match="^n_train must be >= 1"): make_betas(0)
    assert torch.equal(make_betas(5, 0.01, 0.01), torch.full((5,), 0.01, dtype=torch.float64))   # a constant schedule is fine
    for sched in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        assert make_betas(10, beta_schedule=sched, dtype=torch.float32).dtype == torch.float32


def test_scaled_linear_and_cosine_betas_against_their_formulas():
    b = make_betas(1000, 0.00085, 0.012, "scaled_linear")
    assert torch.allclose(b, torch.from_numpy(np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2), rtol=1e-14)
    ab = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2              # Nichol & Dhariwal (2021), Eq. 17
    expect = [min(1 - ab((i + 1) / 1000) / ab(i / 1000), 0.999) for i in range(1000)]
    assert torch.allclose(make_betas(1000, beta_schedule="squaredcos_cap_v2"), torch.tensor(expect, dtype=torch.float64), rtol=1e-14)
    diffusers = pytest.importorskip("diffusers")
    from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar
    assert torch.allclose(make_betas(1000, beta_schedule="squaredcos_cap_v2").float(), betas_for_alpha_bar(1000), rtol=1e-6)


def test_timesteps_of_every_spacing_against_diffusers_formulas():
    assert make_timesteps(30, "trailing").tolist() == sorted((np.round(np.arange(1000, 0, -1000 / 30)) - 1).astype(int).tolist())
    assert make_timesteps(30, "linspace").tolist() == np.linspace(0, 999, 30).round().astype(int).tolist()
    assert make_timesteps(10, "uniform", steps_offset=99).tolist() == list(range(99, 1000, 100))
    assert make_timesteps(20, "quad", n_train=500).tolist() == (np.linspace(0, np.sqrt(400), 20) ** 2).astype(int).tolist()
    with pytest.raises(ValueError, match="^steps_offset=100 moves the last timestep to 1000"):
        make_timesteps(10, "uniform", steps_offset=100)
    with pytest.raises(ValueError, match="steps_offset shifts the 'uniform'"):
        make_timesteps(10, "trailing", steps_offset=1)
    assert make_timesteps(10, "trailing").dtype == torch.long and make_timesteps(10, "linspace").dtype == torch.long


def test_prev_timesteps_marks_the_clean_end_with_minus_one():
    t = make_timesteps(10)
    assert prev_timesteps(t).tolist() == [-1] + t[:-1].tolist()                 # uniform: diffusers' rule = the previous state
    assert prev_timesteps(t, "quad").tolist() == [-1] + t[:-1].tolist()
    t30 = make_timesteps(30, "trailing")
    assert prev_timesteps(t30, "trailing").tolist() == [max(-1, v - 33) for v in t30.tolist()]
    assert prev_timesteps(t30, "trailing", sampler="ddpm").tolist() == [-1] + t30[:-1].tolist()


def test_the_schedule_keeps_its_settings_and_dtype():
    s = DDIMSchedule.make(10, skip="trailing", eta=0.5, prediction_type="sample", clip_sample=2.0, dtype=torch.float32)
    assert (s.skip, s.eta, s.prediction_type, s.clip_sample, s.sampler, s.n_train) == ("trailing", 0.5, "sample", 2.0, "ddim", 1000)
    assert all(v.dtype == torch.float32 for v in (s.abar, s.abar_prev, s.sigma)) and s.t.dtype == torch.long
    d = DDIMSchedule.make(10, eta=1.0, sampler="ddpm", clip_sample=1.0)
    assert d.sampler == "ddpm" and d.use_clipped_model_output                     # DDPM recomputes eps from the clipped x0
    assert DDIMSchedule.make(10, set_alpha_to_one=False).abar_prev[0] == make_abar(make_betas())[0]
    assert DDIMSchedule.make(10).abar_prev.dtype == torch.float64 and DDIMSchedule.make(10).abar_prev[0] == 1.0


def test_a_schedule_that_destroys_the_signal_is_refused_naming_the_first_state():
    with pytest.raises(ValueError, match=r"beta_start=0\.9, beta_end=0\.999999\) leaves no signal: .* at state x_1 \(timestep 99\)"):
        DDIMSchedule.make(10, beta_start=0.9, beta_end=0.999999, steps_offset=99)
    betas = [1e-4] * 500 + [0.6] * 500                                           # fine until t = 500, then the signal vanishes
    with pytest.raises(ValueError, match=r"\(trained_betas\) leaves no signal: .* at state x_7 \(timestep 600\)"):
        DDIMSchedule.make(10, trained_betas=betas)
    s = DDIMSchedule.make(5, trained_betas=[1e-4] * 500 + [0.01] * 500)         # abar near MIN_ABAR but above is fine
    assert bool((s.abar >= MIN_ABAR).all())


def test_eta_too_large_names_the_state():
    with pytest.raises(ValueError, match=r"eta=3.0 is too large for this schedule: sigma\^2 exceeds 1 - abar_prev at state x_2 \(timestep 100\)"):
        DDIMSchedule.make(10, eta=3.0)


def test_from_config_prefers_n_train_and_defaults_the_clip_range():
    assert DDIMSchedule.from_config(10, dict(n_train=500, num_train_timesteps=1000, clip_sample=False)).n_train == 500
    assert DDIMSchedule.from_config(10, dict(n_train=1000, clip_sample=True)).clip_sample == 1.0
    assert schedule_kwargs(dict(n_train=1000, steps_offset=1)) == dict(n_train=1000, steps_offset=1)
    assert "steps_offset" not in schedule_kwargs(dict(n_train=1000, steps_offset=1, timestep_spacing="linspace"))


# ---- bounds of n_train, the timesteps output_to_eps accepts, scaled_linear in float64 --------------------------------
@pytest.mark.parametrize("n_train", [0, -5, 10 ** 6 + 1])
def test_make_refuses_n_train_out_of_range(n_train):
    with pytest.raises(ValueError, match="^n_train"): DDIMSchedule.make(1, n_train=n_train)


def test_output_to_eps_refuses_timesteps_that_are_not_the_schedules():
    s = DDIMSchedule.make(10, prediction_type="v_prediction")
    x, out = torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    assert s.output_to_eps(out, x, s.t[[0, 9]]).shape == (2, 3)
    for t in (torch.tensor([1, s.t[9] + 1]), torch.tensor([int(s.t[9]) + 100, 0]), torch.tensor([int(s.t[3]) + 1, 0])):
        with pytest.raises(ValueError, match="are not all timesteps of this schedule"): s.output_to_eps(out, x, t)


def test_scaled_linear_betas_are_computed_in_float64():
    "β = (√β_1 + (√β_N − √β_1) k/(N − 1))², the square of a float64 linspace (a float32 one is off by about 1e-9)."
    b = make_betas(1000, 0.00085, 0.012, "scaled_linear")
    k = np.arange(1000) / 999
    ref = (np.sqrt(0.00085) + (np.sqrt(0.012) - np.sqrt(0.00085)) * k) ** 2
    assert b.dtype == torch.float64 and np.abs(b.numpy() - ref).max() < 1e-17


def test_one_training_step_is_a_valid_schedule():
    s = DDIMSchedule.make(1, n_train=1)
    assert s.t.tolist() == [0] and len(s) == 1


@pytest.mark.parametrize("skip", ["uniform", "quad", "trailing", "linspace"])
def test_timesteps_are_int64_for_every_spacing_and_all_of_them_when_T_is_N(skip):
    t = make_timesteps(10, skip=skip, n_train=1000)
    assert t.dtype == torch.int64 and len(t) == 10
    if skip != "quad":                                                   # quad repeats timesteps before N is reached
        assert make_timesteps(10, skip=skip, n_train=10).tolist() == list(range(10))

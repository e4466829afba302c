"""`DDIMSchedule.from_config` samples exactly as diffusers' schedulers do, over the grid of the keys that change the
timesteps or the coefficients: `timestep_spacing` (leading, trailing, linspace), `steps_offset`, `set_alpha_to_one`,
`prediction_type` (epsilon, v_prediction, sample) and `clip_sample`, at T that divide 1000 and T that do not.

The reference is a hand-written loop over diffusers' own `step`, with the scheduler's ᾱ table replaced by the same float64
table (diffusers keeps float32 ᾱ; with it the agreement is float32-level, see the last test). The model is a smooth,
non-contracting stand-in for a network (the exact digits denoiser collapses nearby inputs onto one training image and would
hide a wrong coefficient). Run `pytest -s` on this file to print the grid.
"""
import itertools

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

from deq_ddim_nb.ddim import ddim_sample  # noqa: E402
from deq_ddim_nb.deq import deq_sample  # noqa: E402
from deq_ddim_nb.schedules import DDIMSchedule, SCHEDULER_KEYS, make_abar, make_betas  # noqa: E402

_W = torch.randn(64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) / 8


def model(x, t):
    "A fixed smooth function of (x, t): tanh of a random linear map, plus a linear part (shape (N, 1, 8, 8) in and out)."
    h = x.reshape(len(x), -1)
    return (torch.tanh(h @ _W + t[:, None].to(h) / 1000.0) + 0.3 * h).reshape(x.shape)


def _float64_tables(sch):
    "Give a diffusers scheduler the float64 ᾱ of the same linear β (its own are float32)."
    b = make_betas()
    sch.betas, sch.alphas, sch.alphas_cumprod = b, 1 - b, make_abar(b)
    if isinstance(sch, DDIMScheduler):
        sch.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if sch.config.set_alpha_to_one else sch.alphas_cumprod[0]
    else:
        sch.one = torch.tensor(1.0, dtype=torch.float64)
    return sch


def _diffusers_ddim(cfg, T, x, eta, noise, float64=True):
    sch = DDIMScheduler(**cfg)
    if float64: _float64_tables(sch)
    sch.set_timesteps(T)
    for k, t in enumerate(sch.timesteps):                  # noisiest first; noise[i-1] belongs to the step x_i -> x_{i-1}
        x = sch.step(model(x, t.expand(len(x))), int(t), x, eta=eta,
                     variance_noise=noise[len(sch.timesteps) - 1 - k] if eta > 0 else None).prev_sample
    return x, sch.timesteps.flip(0)


def _diffusers_ddpm(cfg, T, x, seed):
    sch = _float64_tables(DDPMScheduler(**cfg))
    sch.set_timesteps(T)
    g = torch.Generator().manual_seed(seed)
    for t in sch.timesteps:
        x = sch.step(model(x, t.expand(len(x))), int(t), x, generator=g).prev_sample
    # the same noises, in the order DDPMScheduler draws them: one per step from the top, none at t = 0
    g, noise = torch.Generator().manual_seed(seed), torch.zeros((T, *x.shape), dtype=x.dtype)
    for k, t in enumerate(sch.timesteps):
        if t > 0: noise[T - 1 - k] = torch.randn(x.shape, generator=g, dtype=x.dtype)
    return x, sch.timesteps.flip(0), noise


def _rel(a, b): return float((a - b).norm() / b.norm())


DDIM_GRID = list(itertools.product(["leading", "trailing", "linspace"], [0, 1], [True, False],
                                   ["epsilon", "v_prediction", "sample"], [False, True], [0.0, 0.5], [10, 30]))


def _cfg(spacing, offset, pred, clip, **more):
    return dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", timestep_spacing=spacing,
                steps_offset=offset, prediction_type=pred, clip_sample=clip, **more)


def test_from_config_matches_ddimscheduler_over_the_key_grid():
    "Every cell of the DDIM grid: the same timesteps, and ddim_sample's x_0 equal to diffusers' loop to float64 round-off."
    rows, worst = [], 0.0
    for spacing, offset, to_one, pred, clip, eta, T in DDIM_GRID:
        cfg = _cfg(spacing, offset, pred, clip, set_alpha_to_one=to_one)
        if clip and not to_one and (spacing == "linspace" or (spacing == "leading" and offset == 0)):   # t = 0 -> ᾱ_0: clip only
            with pytest.raises(ValueError, match="zero-size step"): DDIMSchedule.from_config(T, cfg, eta=eta)
            rows.append((spacing, offset, to_one, pred, clip, eta, T, "refused")); continue
        s = DDIMSchedule.from_config(T, cfg, eta=eta)
        g = torch.Generator().manual_seed(T + int(10 * eta))
        x_T = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=g)
        noise = torch.randn(T, 2, 1, 8, 8, dtype=torch.float64, generator=g)
        ref, t = _diffusers_ddim(cfg, T, x_T, eta, noise)
        assert torch.equal(s.t, t), (spacing, offset, T, s.t, t)
        err = _rel(ddim_sample(model, x_T, s, noise if eta > 0 else None), ref)
        rows.append((spacing, offset, to_one, pred, clip, eta, T, err)); worst = max(worst, err)
        assert err < 1e-12, rows[-1]
    refused = sum(r[-1] == "refused" for r in rows)
    print(f"\nDDIMScheduler grid: {len(rows)} configurations, {len(rows) - refused} sampled, worst relative difference of x_0 "
          f"{worst:.1e}; {refused} refused (clip_sample with a zero-size last step)")
    for spacing in ("leading", "trailing", "linspace"):
        for pred in ("epsilon", "v_prediction", "sample"):
            sub = [r[-1] for r in rows if r[0] == spacing and r[3] == pred and r[-1] != "refused"]
            print(f"  {spacing:9s} {pred:13s} {len(sub):3d} sampled (offset 0/1, set_alpha_to_one, clip, eta 0/0.5, T 10/30): "
                  f"worst {max(sub):.1e}")


@pytest.mark.parametrize("spacing,offset,pred,clip", list(itertools.product(["leading", "trailing", "linspace"], [0, 1],
                                                                            ["epsilon", "v_prediction", "sample"], [False, True])))
@pytest.mark.parametrize("T", [10, 30])
def test_from_config_matches_ddpmscheduler_with_sampler_ddpm(spacing, offset, pred, clip, T):
    "sampler='ddpm', eta=1: DDPMScheduler's step (its previous timestep, ᾱ_prev = 1 at the end, ε from the clipped x̂_0)."
    cfg = _cfg(spacing, offset, pred, clip, variance_type="fixed_small")
    s = DDIMSchedule.from_config(T, cfg, eta=1.0, sampler="ddpm")
    x_T = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
    ref, t, noise = _diffusers_ddpm(cfg, T, x_T, seed=5)
    assert torch.equal(s.t, t)
    # DDPMScheduler clamps the last step's variance at 1e-20 (a standard deviation of 1e-10 where ours is 0)
    assert _rel(ddim_sample(model, x_T, s, noise), ref) < 1e-9


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_deq_is_exact_when_steps_end_off_the_next_state(spacing, eta):
    "trailing/linspace at T = 30 step from t to t - 33, not to the next state's t: DEQ (Picard, T + 1 rounds) = sequential."
    s = DDIMSchedule.from_config(30, _cfg(spacing, 0, "epsilon", False), eta=eta)
    assert not torch.equal(s.abar_prev[1:], s.abar[:-1])                 # the chain really is inconsistent here
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=g)
    noise = torch.randn(30, 2, 1, 8, 8, dtype=torch.float64, generator=g) if eta > 0 else None
    ref = ddim_sample(model, x_T, s, noise)
    x0, info = deq_sample(model, x_T, s, noise=noise, solver="picard", max_iter=31, tol=1e-13)
    assert info.converged and _rel(x0, ref) < 1e-12


def test_chain_abar_is_abar_prev_bitwise_for_consistent_schedules():
    "Eq. (10)'s ᾱ along the chain: exactly abar_prev when every step ends at the next state (no rounding from the products)."
    for kw in (dict(), dict(skip="quad"), dict(steps_offset=1), dict(set_alpha_to_one=False), dict(skip="trailing")):
        s = DDIMSchedule.make(20, **kw)                                   # 20 divides 1000: trailing is consistent too
        assert torch.equal(s.chain_abar, s.abar_prev), kw


@pytest.mark.parametrize("key,value,msg", [
    ("thresholding", True, r"config\['thresholding'\] = True is not supported"),
    ("rescale_betas_zero_snr", True, r"config\['rescale_betas_zero_snr'\] = True is not supported"),
    ("variance_type", "learned_range", r"config\['variance_type'\] must be"),
    ("timestep_spacing", "karras", r"config\['timestep_spacing'\] must be one of"),
    ("prediction_type", "flow", r"config\['prediction_type'\] must be one of"),
    ("steps_offset", -1, r"config\['steps_offset'\] must be >= 0"),
    ("set_alpha_to_one", "yes", r"config\['set_alpha_to_one'\] must be True or False"),
    ("clip_sample_range", 0.0, r"config\['clip_sample_range'\] must be > 0"),
])
def test_keys_that_are_not_honoured_are_refused_by_name(key, value, msg):
    cfg = _cfg("leading", 0, "epsilon", True)
    cfg[key] = value
    with pytest.raises((ValueError, TypeError), match=msg):
        DDIMSchedule.from_config(10, cfg)


def test_every_listed_key_is_honoured_or_refused():
    "SCHEDULER_KEYS documents each key; each one changes the schedule or is refused (none is silently dropped)."
    base = _cfg("leading", 0, "epsilon", False, set_alpha_to_one=True)
    ref = DDIMSchedule.from_config(10, base, eta=0.5)
    changed = dict(num_train_timesteps=500, beta_start=2e-4, beta_end=0.03, beta_schedule="scaled_linear",
                   trained_betas=[0.01] * 1000, timestep_spacing="trailing", steps_offset=1, set_alpha_to_one=False,
                   prediction_type="v_prediction", clip_sample=True, clip_sample_range=2.0, thresholding=True,
                   rescale_betas_zero_snr=True, variance_type="fixed_large")
    assert set(changed) == set(SCHEDULER_KEYS)
    for k, v in changed.items():
        cfg = {**base, k: v, **({"clip_sample": True} if k == "clip_sample_range" else {})}
        try: s = DDIMSchedule.from_config(10, cfg, eta=0.5)
        except ValueError: continue                                        # refused by name (checked above)
        diff = (not torch.equal(s.t, ref.t) or not torch.equal(s.abar, ref.abar) or not torch.equal(s.abar_prev, ref.abar_prev)
                or s.prediction_type != ref.prediction_type or s.clip_sample != ref.clip_sample)
        if k == "clip_sample_range": diff = s.clip_sample == 2.0
        assert diff, f"{k}={v!r} was accepted but changed nothing"


def test_a_diffusers_config_gets_diffusers_defaults_and_ours_do_not():
    "A scheduler_config.json without clip_sample clips (diffusers' default); this package's model config does not."
    assert DDIMSchedule.from_config(10, dict(num_train_timesteps=1000)).clip_sample == 1.0
    assert DDIMSchedule.from_config(10, dict(n_train=1000)).clip_sample is None


def test_with_diffusers_float32_tables_the_agreement_is_float32_level():
    "The same grid cell against diffusers as shipped (float32 ᾱ): differences are float32 round-off, not a formula."
    cfg = _cfg("trailing", 0, "v_prediction", True, set_alpha_to_one=False)
    s = DDIMSchedule.from_config(30, cfg, eta=0.5)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=g)
    noise = torch.randn(30, 2, 1, 8, 8, dtype=torch.float64, generator=g)
    ref, _ = _diffusers_ddim(cfg, 30, x_T, 0.5, noise, float64=False)
    assert _rel(ddim_sample(model, x_T, s, noise), ref) < 1e-5


@pytest.mark.parametrize("key,value,exc", [
    ("num_train_timesteps", 0, ValueError), ("num_train_timesteps", 2.5, TypeError), ("beta_start", "1e-4", TypeError),
    ("beta_end", float("inf"), ValueError), ("beta_schedule", "cosine", ValueError), ("beta_schedule", 3, TypeError),
    ("trained_betas", [0.5] * 7, ValueError), ("timestep_spacing", 1, TypeError), ("steps_offset", 1.5, TypeError),
    ("set_alpha_to_one", 1, TypeError), ("prediction_type", None, None), ("clip_sample", "yes", TypeError),
    ("thresholding", "no", TypeError), ("rescale_betas_zero_snr", 0, TypeError),
])
def test_each_config_error_names_its_key_with_the_policys_exception(key, value, exc):
    "TypeError for a wrong type, ValueError for a wrong value; the message names config[key] as it is spelled in the file."
    cfg = {"num_train_timesteps": 1000, "clip_sample": False, key: value}
    if exc is None:                                                      # None means "not given": diffusers' default applies
        assert DDIMSchedule.from_config(10, cfg).prediction_type == "epsilon"
        return
    with pytest.raises(exc, match=rf"config\['{key}'\]"):
        DDIMSchedule.from_config(10, cfg)


def test_model_config_spells_n_train_and_its_errors_say_so():
    with pytest.raises(ValueError, match=r"config\['n_train'\] must be >= 1"):
        DDIMSchedule.from_config(10, dict(n_train=0))
    with pytest.raises(TypeError, match=r"config must be a dict, got list"):
        DDIMSchedule.from_config(10, [("n_train", 1000)])


def test_trained_betas_set_the_number_of_training_steps():
    b = torch.linspace(1e-4, 0.02, 500, dtype=torch.float64)
    s = DDIMSchedule.from_config(10, dict(trained_betas=b.tolist()))
    assert s.n_train == 500 and torch.equal(s.abar, make_abar(b)[s.t])
    with pytest.raises(ValueError, match=r"config\['trained_betas'\] must have one value per training step \(n_train = 1000\)"):
        DDIMSchedule.from_config(10, dict(num_train_timesteps=1000, trained_betas=b.tolist()))


@pytest.mark.parametrize("marker", ["num_train_timesteps", "_class_name", "_diffusers_version"])
def test_any_diffusers_marker_brings_diffusers_defaults(marker):
    cfg = {"n_train": 1000, marker: 1000 if marker == "num_train_timesteps" else "x"}
    s = DDIMSchedule.from_config(10, cfg)
    assert s.clip_sample == 1.0                                          # diffusers' clip_sample=True, clip_sample_range=1.0
    assert DDIMSchedule.from_config(10, {**cfg, "clip_sample_range": 3.0}).clip_sample == 3.0


def test_variance_types_with_the_posterior_variance_are_accepted():
    for vt in ("fixed_small", "fixed_small_log"):
        assert DDIMSchedule.from_config(10, dict(num_train_timesteps=1000, variance_type=vt, clip_sample=False), eta=1.0).eta == 1.0


def test_steps_offset_shifts_leading_only_as_diffusers_does():
    lead = DDIMSchedule.from_config(10, dict(num_train_timesteps=1000, steps_offset=1, clip_sample=False))
    assert lead.t.tolist() == list(range(1, 1000, 100))
    trail = DDIMSchedule.from_config(10, dict(num_train_timesteps=1000, steps_offset=1, timestep_spacing="trailing", clip_sample=False))
    assert trail.t.tolist() == list(range(99, 1000, 100))


def test_schedule_to_moves_coefficients_and_keeps_timesteps_long():
    s = DDIMSchedule.make(10, eta=0.5)
    f = s.to(dtype=torch.float32)
    assert f.t.dtype == torch.long and all(v.dtype == torch.float32 for v in (f.abar, f.abar_prev, f.sigma))
    assert torch.allclose(f.sigma.double(), s.sigma, rtol=1e-6) and f.eta == 0.5 and torch.equal(f.t, s.t)
    assert s.to("cpu").abar.device.type == "cpu"


def test_output_to_eps_refuses_timesteps_of_another_schedule():
    s = DDIMSchedule.make(10, prediction_type="v_prediction")
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="not all timesteps of this schedule"):
        s.output_to_eps(x, x, torch.tensor([5, 100]))
    with pytest.raises(ValueError, match="not all timesteps of this schedule"):
        s.output_to_eps(x, x, torch.tensor([900, 999]))                  # past the last one
    eps = s.output_to_eps(x.float(), x.float(), torch.tensor([0, 900]))
    assert eps.dtype == torch.float32                                    # the states' dtype, whatever the table's


def test_v_and_x0_predictions_give_the_eps_of_the_same_state():
    "ε from a v-model and from an x̂_0-model at the same (x_t, t): both equal the true noise that made x_t."
    s_eps, s_v, s_x0 = (DDIMSchedule.make(10, prediction_type=p) for p in ("epsilon", "v_prediction", "sample"))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, dtype=torch.float64, generator=g), torch.randn(4, 3, dtype=torch.float64, generator=g)
    t = s_eps.t[[0, 3, 6, 9]]
    a = s_eps.abar[[0, 3, 6, 9]].view(-1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0                             # the definition of v (Salimans & Ho)
    assert torch.allclose(s_v.output_to_eps(v, x_t, t), eps, atol=1e-12)
    assert torch.allclose(s_x0.output_to_eps(x0, x_t, t), eps, atol=1e-12)
    assert torch.equal(s_eps.output_to_eps(eps, x_t, t), eps)

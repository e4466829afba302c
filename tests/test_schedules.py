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

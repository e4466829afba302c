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

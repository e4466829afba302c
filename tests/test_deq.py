import json
import math
import re
import warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import rel, randn
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.ddim import ddim_sample, draw_noise
from deq_ddim_nb.deq import ChunkedEps, DEQ_ANDERSON, deq_map, deq_sample, deq_update, round_budget, solver_options


@pytest.mark.parametrize("T,skip", [(1, "uniform"), (10, "quad"), (100, "uniform"), (100, "quad")])
def test_eq11_sequential_trajectory_is_fixed_point(digits_model, T, skip):
    x_T = randn(2, 1, 8, 8)
    s = DDIMSchedule.make(T, skip=skip)
    _, xs = ddim_sample(digits_model, x_T, s, return_traj=True)
    assert rel(deq_map(digits_model, xs[:-1], x_T, s), xs[:-1]) < 1e-12


def test_eq24_stochastic_fixed_point(digits_model):
    x_T = randn(2, 1, 8, 8)
    s = DDIMSchedule.make(30, eta=0.7)
    nz = draw_noise(s, x_T, torch.Generator().manual_seed(2))
    _, xs = ddim_sample(digits_model, x_T, s, nz, return_traj=True)
    assert rel(deq_map(digits_model, xs[:-1], x_T, s, nz), xs[:-1]) < 1e-12


def test_eq10_cumsum_equals_explicit_lower_triangular_matrix():
    T, s = 12, DDIMSchedule.make(12, skip="quad", eta=0.4)
    x_T, E, nz = randn(2, 5, seed=0), randn(T, 2, 5, seed=1), randn(T, 2, 5, seed=2)
    a = torch.cat([torch.ones(1, dtype=torch.float64), s.abar])
    ap = s.abar_prev
    c1 = torch.sqrt(1 - ap - s.sigma ** 2) - torch.sqrt(ap * (1 - s.abar) / s.abar)
    ref = torch.empty(T, 2, 5, dtype=torch.float64)
    for k in range(T):   # Eq. (23), term by term
        acc = torch.sqrt(a[k] / a[T]) * x_T
        for j in range(k + 1, T + 1):
            acc = acc + torch.sqrt(a[k] / a[j - 1]) * (c1[j - 1] * E[j - 1] + s.sigma[j - 1] * nz[j - 1])
        ref[k] = acc
    assert torch.allclose(deq_update(E, x_T, s, nz), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:deq_sample did not converge")   # a study run: its tolerance is too small to stop
def test_T_picard_iterations_reproduce_ddim(digits_model):
    T = 100
    x_T = randn(2, 1, 8, 8, seed=3)
    s = DDIMSchedule.make(T)
    x0_seq = ddim_sample(digits_model, x_T, s)
    z = torch.zeros(T, *x_T.shape, dtype=torch.float64)            # any start: exact after T rounds
    for _ in range(T):
        z = deq_map(digits_model, z, x_T, s)
    assert rel(z[0], x0_seq) < 1e-10
    x0, info = deq_sample(digits_model, x_T, s, solver="picard", max_iter=T, tol=1e-300)
    assert info.rounds <= T and rel(x0, x0_seq) < 1e-10   # may stop early: this denoiser can hit residual 0 exactly


def rounds_to_1e3(model, x_T, s, *, solver, max_iter=40, **kw):
    "First round whose x_0 is within 1e-3 of the sequential DDIM sample (a study run: no stopping rule involved)."
    ref = ddim_sample(model, x_T, s)
    errs = []
    deq_sample(model, x_T, s, solver=solver, max_iter=max_iter, tol=1e-14,
               callback=lambda k, z, fz, r: errs.append(rel(fz[0], ref)), **kw)
    return next((k + 1 for k, e in enumerate(errs) if e < 1e-3), np.inf)


def solve_over_seeds(model, s, seeds=range(8), **kw):
    "deq_sample per seed (one image each): (rounds, converged, relative error of x_0 against sequential DDIM) per seed."
    out = []
    for sd in seeds:
        x_T = randn(1, 1, 8, 8, seed=sd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)          # an unconverged run is reported in `converged`
            x0, info = deq_sample(model, x_T, s, **kw)
        out.append((info.rounds, info.converged, rel(x0, ddim_sample(model, x_T, s))))
    return out


# Anderson's settings before the tuning for the chain: per-state coefficients without the triangular sum, no restart,
# the textbook relative λ and no damping (the paper's grouping, with this package's relative λ)
UNTUNED = dict(group_dims=(0, 1), triangular=False, restart=None, lam=1e-4, mixing=1.0)


def test_anderson_converges_to_the_ddim_sample_over_seeds(digits_model):
    "solver='anderson' (DEQ_ANDERSON), m=5, tol 1e-3, T=100, 8 seeds: converged, x_0 within 1e-3 of DDIM, in at most 20 rounds."
    out = solve_over_seeds(digits_model, DDIMSchedule.make(100), solver="anderson", m=5, tol=1e-3, max_iter=20)
    assert all(c and r <= 20 and e < 1e-3 for r, c, e in out), out     # measured: rounds 11-20, errors <= 8.0e-4


@pytest.mark.filterwarnings("ignore:deq_sample did not converge")   # a study run: its tolerance is too small to stop
def test_anderson_rounds_to_1e3_over_seeds(digits_model):
    "Rounds guard for Anderson with DEQ_ANDERSON: rounds until x_0 is first within 1e-3 of DDIM, seeds 0-7, T=100."
    s = DDIMSchedule.make(100)
    rounds = [rounds_to_1e3(digits_model, randn(1, 1, 8, 8, seed=sd), s, solver="anderson") for sd in range(8)]
    assert max(rounds) <= 20 and np.median(rounds) <= 13, rounds   # measured: [11, 19, 11, 16, 11, 18, 13, 11]


def test_anderson_tuned_settings_beat_untuned_settings(digits_model):
    "DEQ_ANDERSON must earn its place: fewer rounds to tol 1e-3 than untuned Anderson on every seed, and never unconverged."
    s = DDIMSchedule.make(100)
    tuned = solve_over_seeds(digits_model, s, solver="anderson", max_iter=60)
    untuned = solve_over_seeds(digits_model, s, solver="anderson", max_iter=60, **UNTUNED)
    assert all(c for _, c, _ in tuned), tuned
    assert all(a[0] < b[0] for a, b in zip(tuned, untuned)), (tuned, untuned)   # measured: 11-20 against 29-60
    assert sum(r for r, _, _ in tuned) < 0.6 * sum(r for r, _, _ in untuned)


@pytest.mark.filterwarnings("ignore:deq_sample did not converge")   # a study run: its tolerance is too small to stop
def test_whole_trajectory_residual_would_stop_too_early(digits_model):
    "Why deq_sample stops per state: with Anderson, a residual over the whole trajectory passes 1e-3 with x_0 still > 1e-3 off (seed 6)."
    from deq_ddim_nb.solvers import residual_norms
    s, x_T = DDIMSchedule.make(100), randn(1, 1, 8, 8, seed=6)
    ref, hits = ddim_sample(digits_model, x_T, s), []
    def cb(k, z, fz, r):
        if residual_norms(fz, z, 1)[1] < 1e-3: hits.append((r, rel(fz[0], ref)))
    deq_sample(digits_model, x_T, s, solver="anderson", max_iter=20, tol=1e-14, callback=cb)
    r_state, err = hits[0]                          # first round the whole-trajectory rule would have stopped
    assert err > 1e-3 and r_state > 1e-3, hits[0]   # ... while the per-state residual still says "not yet"


def test_anderson_with_tol_stops_close_to_ddim(digits_model):
    s = DDIMSchedule.make(100)
    x_T = randn(1, 1, 8, 8, seed=0)
    x0, info = deq_sample(digits_model, x_T, s, solver="anderson", max_iter=40, tol=1e-4)
    assert info.solver == "anderson" and info.converged and not info.diverged and info.rounds < 40
    assert rel(x0, ddim_sample(digits_model, x_T, s)) < 1e-3
    assert info.nfe == info.rounds * 100 and len(info.residuals) == info.rounds and info.xs.shape == (100, *x_T.shape)


# ---- a rounds guard for every solver (digits denoiser, T = 100, seeds 0-7, tol 1e-3, x_0 against sequential DDIM) -----
def test_chain_newton_rounds_guard_over_seeds(digits_model):
    out = solve_over_seeds(digits_model, DDIMSchedule.make(100), solver="chain_newton")
    rounds = [r for r, _, _ in out]
    assert all(c and e < 1e-3 for _, c, e in out), out
    assert max(rounds) <= 15 and np.median(rounds) <= 10, rounds   # measured: [7, 15, 7, 15, 5, 12, 11, 9]


def test_default_solver_is_chain_newton_with_its_rounds(digits_model):
    s = DDIMSchedule.make(100)
    auto = solve_over_seeds(digits_model, s, seeds=range(3))
    cn = solve_over_seeds(digits_model, s, seeds=range(3), solver="chain_newton")
    assert auto == cn


def test_picard_rounds_guard_over_seeds(digits_model):
    out = solve_over_seeds(digits_model, DDIMSchedule.make(100), solver="picard")
    rounds = [r for r, _, _ in out]
    assert all(c and e < 1e-3 for _, c, e in out), out
    assert max(rounds) <= 26 and min(rounds) >= 20, rounds        # measured: 24-26; exact after T + 1 = 101 at the latest


def test_broyden_rounds_guard_over_seeds(digits_model):
    "Broyden (per image, m=5) is the weakest here: a guard on what it does today, and never a quiet wrong answer."
    out = solve_over_seeds(digits_model, DDIMSchedule.make(100), solver="broyden", max_iter=60)
    conv = [r for r, c, _ in out if c]
    assert len(conv) >= 6 and np.median(conv) <= 28, out           # measured: 24-44 rounds on 6 seeds, 2 unconverged at 60
    assert all(e < 1e-3 for _, c, e in out if c), out


@pytest.mark.parametrize("solver", ["chain_newton", "anderson"])
@pytest.mark.parametrize("eta", [0.2, 0.5, 1.0])
def test_deq_sddim_matches_sequential_sddim(digits_model, eta, solver):
    s = DDIMSchedule.make(100, eta=eta)
    for sd in range(4):
        g = torch.Generator().manual_seed(100 + sd)
        x_T = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=g)
        nz = draw_noise(s, x_T, g)
        x0, info = deq_sample(digits_model, x_T, s, noise=nz, solver=solver, max_iter=50, tol=1e-4)
        assert info.solver == solver and info.converged
        assert rel(x0, ddim_sample(digits_model, x_T, s, nz)) < 1e-3, (eta, sd, info)


def test_batch_of_images_each_converges(digits_model):
    s = DDIMSchedule.make(50)
    x_T = randn(4, 1, 8, 8, seed=7)
    x0, info = deq_sample(digits_model, x_T, s, max_iter=60, tol=1e-5)
    ref = ddim_sample(digits_model, x_T, s)
    assert info.converged
    for b in range(4):
        assert rel(x0[b], ref[b]) < 1e-3


@pytest.mark.filterwarnings("ignore:deq_sample did not converge")   # a study run: its tolerance is too small to stop
def test_init_zeros_and_tensor(digits_model):
    s = DDIMSchedule.make(10)
    x_T = randn(1, 1, 8, 8)
    ref = ddim_sample(digits_model, x_T, s)
    for init in ("zeros", torch.zeros(10, 1, 1, 8, 8)):
        x0, _ = deq_sample(digits_model, x_T, s, init=init, solver="picard", max_iter=10, tol=1e-300)
        assert rel(x0, ref) < 1e-10


def test_devices_sharding_equals_unsharded(digits_model):
    s = DDIMSchedule.make(20)
    x_T = randn(3, 1, 8, 8)
    a, ia = deq_sample(digits_model, x_T, s)
    b, ib = deq_sample(digits_model, x_T, s, devices=["cpu", "cpu"])
    assert ia.converged and ib.rounds == ia.rounds and rel(b, a) < 1e-12


@pytest.mark.filterwarnings("ignore:deq_sample did not converge")   # a study run: its tolerance is too small to stop
def test_float32_deq(digits_model):
    s = DDIMSchedule.make(20)
    x_T = randn(1, 1, 8, 8)
    x0, _ = deq_sample(digits_model, x_T.float(), s, solver="picard", max_iter=20, tol=1e-30)
    assert x0.dtype == torch.float32 and rel(x0.double(), ddim_sample(digits_model, x_T, s)) < 1e-4


def test_diverging_solver_reported_in_info():
    # an expanding "model": eps grows with x, so the fixed-point iteration blows up
    s = DDIMSchedule.make(50)
    with pytest.warns(UserWarning, match=r"did not converge \(its residual grew: diverged\)"):
        x0, info = deq_sample(lambda x, t: 1e3 * x, randn(1, 4), s, solver="picard", max_iter=10, check=False)
    assert info.diverged and not info.converged


# ---- bad inputs: TypeError for a wrong type, ValueError for a wrong value, the message opens with the parameter ----
@pytest.mark.parametrize("kw,exc,msg", [
    (dict(tol=0.0), ValueError, "tol must be > 0"),
    (dict(tol=-1e-3), ValueError, "tol must be > 0"),
    (dict(max_iter=0), ValueError, "max_iter must be >= 1"),
    (dict(solver="newton"), ValueError, "solver must be one of"),
    (dict(solver=3), TypeError, "solver must be one of"),
    (dict(init="ones"), ValueError, "init must be one of"),
    (dict(init=3), TypeError, "init must be one of"),
    (dict(init=torch.zeros(3)), ValueError, "init tensor must have shape"),
    (dict(noise=torch.zeros(9, 2, 1, 8, 8)), ValueError, "noise must have shape"),
    (dict(noise=torch.zeros(10, 2, 1, 8, 8, dtype=torch.long)), TypeError, "noise must be a floating tensor"),
    (dict(stop_mode="max"), ValueError, "stop_mode must be one of"),
    (dict(progress=1), TypeError, "progress must be True or False"),
    (dict(check="yes"), TypeError, "check must be True or False"),
])
def test_deq_sample_bad_inputs(digits_model, kw, exc, msg):
    with pytest.raises(exc, match="^" + re.escape(msg)):
        deq_sample(digits_model, randn(2, 1, 8, 8), DDIMSchedule.make(10), **kw)


def test_integer_x_T_rejected_by_deq(digits_model):
    with pytest.raises(TypeError, match="x_T must be a floating tensor"):
        deq_sample(digits_model, torch.zeros(1, 1, 8, 8, dtype=torch.int64), DDIMSchedule.make(10))


def test_deq_map_xs_shape_mismatch(digits_model):
    with pytest.raises(ValueError, match="xs must have shape"):
        deq_map(digits_model, torch.zeros(9, 1, 1, 8, 8, dtype=torch.float64), randn(1, 1, 8, 8), DDIMSchedule.make(10))


def test_deq_map_needs_noise_when_stochastic(digits_model):
    x_T = randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="needs the injected `noise`"):
        deq_map(digits_model, x_T.expand(10, *x_T.shape), x_T, DDIMSchedule.make(10, eta=0.5))


def test_deq_model_wrong_shape(digits_model):
    with pytest.raises(ValueError, match="shaped like its input"):
        deq_sample(lambda x, t: x.flatten(1), randn(1, 1, 8, 8), DDIMSchedule.make(10))


def test_deq_model_non_finite_names_timestep():
    bad = lambda x, t: torch.where((t == 300)[:, None], torch.full_like(x, float("inf")), 0.1 * x)
    with pytest.raises(ValueError, match=r"non-finite values .* timestep\(s\) \[300\]"):
        deq_sample(bad, randn(2, 4), DDIMSchedule.make(10))


def test_x_T_of_the_wrong_size_for_the_model_is_rejected():
    "A fully convolutional model would run on any size; a declared sample_shape is enforced instead."
    from deq_ddim_nb.models import load_model
    unet = load_model("digits")
    with pytest.raises(ValueError, match=r"sample_shape\) = \(B, 1, 16, 16\)"):
        deq_sample(unet, torch.randn(1, 1, 8, 8), DDIMSchedule.make(5))
    with pytest.raises(ValueError, match="sample_shape"):
        ddim_sample(unet, torch.randn(1, 1, 8, 8), DDIMSchedule.make(5))


# ---- the default round budget and the convergence warning -------------------------------------
def no_warnings():
    cm = warnings.catch_warnings(); cm.__enter__(); warnings.simplefilter("error"); return cm


def test_round_budget_grows_with_eta_and_batch_and_is_exact_for_short_chains():
    import math
    n = lambda eta, B: math.ceil(25 + 20 * eta + 5 * math.log2(B))          # the documented rule, written out here
    for T, eta, B in ((100, 0.0, 1), (100, 0.5, 16), (100, 1.0, 3), (1000, 0.3, 8)):
        assert round_budget(T, B, eta) == ("chain_newton", min(n(eta, B), T + 1))
        assert round_budget(T, B, eta, solver="anderson") == ("anderson", n(eta, B))
        assert round_budget(T, B, eta, solver="broyden") == ("broyden", n(eta, B))
    for T in (1, 5, 20, 24):    # never more than T + 1 rounds: chain_newton is exact after T
        assert round_budget(T, 1, 0.0) == ("chain_newton", T + 1)
    assert round_budget(20, 1, 0.0, solver="anderson") == ("anderson", 25)
    assert round_budget(500, 1, 0.0, solver="picard") == ("picard", 501)
    for T in (12, 100): assert round_budget(T, 1, 0.0, solver="window") == ("window", 2 * T + 1)   # window_sample's bound


@pytest.mark.parametrize("solver", ["auto", "chain_newton", "anderson", "picard", "broyden"])
def test_max_iter_none_is_round_budget_for_every_solver(digits_model, solver):
    "max_iter=None means round_budget(T, B, eta, solver), whichever solver runs."
    s, x_T = DDIMSchedule.make(30, eta=0.5), randn(2, 1, 8, 8, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, info = deq_sample(digits_model, x_T, s, solver=solver, generator=torch.Generator().manual_seed(0))
    assert info.max_iter == round_budget(30, 2, 0.5, solver)[1] and info.rounds <= info.max_iter


@pytest.mark.parametrize("kw,exc,msg", [(dict(T=0), ValueError, "T must be >= 1"), (dict(T=2.5), TypeError, "T must be an int"),
                                        (dict(T=10, batch=0), ValueError, "batch must be >= 1"),
                                        (dict(T=10, eta=-0.1), ValueError, "eta must be >= 0")])
def test_round_budget_bad_inputs(kw, exc, msg):
    with pytest.raises(exc, match="^" + re.escape(msg)):
        round_budget(**kw)


def test_unconverged_result_warns_with_rounds_residual_tol_and_advice(digits_model):
    s, x_T = DDIMSchedule.make(100, eta=1.0), randn(1, 1, 8, 8)
    with pytest.warns(UserWarning, match="did not converge") as rec:
        x0, info = deq_sample(digits_model, x_T, s, max_iter=3, generator=torch.Generator().manual_seed(0))
    msg = str(rec[0].message)
    assert not info.converged and info.rounds == 3
    assert "3 of max_iter=3 rounds" in msg and f"{info.residuals[-1]:.2e}" in msg and "tol=0.001" in msg
    assert "max_iter=" in msg and "max_iter=101" in msg     # how to raise the budget, and the exact Picard budget


def test_converged_default_run_does_not_warn(digits_model):
    x_T = randn(2, 1, 8, 8, seed=4)
    for T, eta in ((10, 0.0), (100, 0.0)):
        s = DDIMSchedule.make(T, eta=eta)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x0, info = deq_sample(digits_model, x_T, s)
        assert info.converged and rel(x0, ddim_sample(digits_model, x_T, s)) < 1e-3, info


@pytest.mark.parametrize("T,eta,solver", [(20, 1.0, "chain_newton"), (60, 0.5, "chain_newton"), (60, 1.0, "chain_newton")])
def test_default_stochastic_run_converges_to_sequential_sddim(digits_model, T, eta, solver):
    "DEQ-sDDIM with every default: converged, no warning, x_0 within 1e-3 of sequential sDDIM with the same noises."
    s = DDIMSchedule.make(T, eta=eta)
    for sd in (11, 12):
        g = torch.Generator().manual_seed(sd)
        x_T = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=g)
        nz = draw_noise(s, x_T, g)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x0, info = deq_sample(digits_model, x_T, s, noise=nz)
        assert info.solver == solver and info.converged and info.rounds <= info.max_iter
        assert rel(x0, ddim_sample(digits_model, x_T, s, nz)) < 1e-3, (sd, info)


def test_default_on_the_shipped_unet_small_T():
    "The shipped model, batch 16 at T = 20 (η = 0) and batch 4 at T = 10 (η = 1): defaults converge to the sequential sample."
    from deq_ddim_nb.models import load_model
    unet = load_model("digits")
    for T, eta, B in ((20, 0.0, 16), (10, 1.0, 4)):
        s = DDIMSchedule.from_config(T, unet.config, eta=eta)
        g = torch.Generator().manual_seed(3)
        x_T = torch.randn(B, 1, 16, 16, generator=g)
        nz = draw_noise(s, x_T, g) if eta > 0 else None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x0, info = deq_sample(unet, x_T, s, noise=nz)
        assert info.converged and rel(x0, ddim_sample(unet, x_T, s, nz)) < 1e-3, info


@pytest.mark.filterwarnings("ignore:deq_sample did not converge")   # tol=1e-300: run exactly T rounds
@pytest.mark.parametrize("solver", ["picard", "chain_newton"])
def test_T_rounds_are_exact_from_any_start(digits_model, solver):
    "The budget's guarantee: Picard and the default chain_newton reach the sequential trajectory in T rounds from random starts (η > 0 too)."
    T = 15
    s = DDIMSchedule.make(T, eta=0.7)
    x_T = randn(2, 1, 8, 8, seed=5)
    nz = draw_noise(s, x_T, torch.Generator().manual_seed(6))
    _, xs = ddim_sample(digits_model, x_T, s, nz, return_traj=True)
    z = 5 * randn(T, 2, 1, 8, 8, seed=7)
    for n in range(T):
        z = deq_map(digits_model, z, x_T, s, nz)
        assert rel(z[T - 1 - n:], xs[T - 1 - n:T]) < 1e-12          # states x_{T-1-n} … x_{T-1} are exact after n+1 rounds
    x0, info = deq_sample(digits_model, x_T, s, noise=nz, init=5 * randn(T, 2, 1, 8, 8, seed=7), tol=1e-300,
                          solver=solver, max_iter=T)
    assert info.solver == solver and info.rounds == T and rel(info.xs, xs[:-1]) < 1e-12   # every state exact after T rounds


# ---- input checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("devices", ["cpu", "cuda:0", torch.device("cpu")])
def test_devices_as_a_string_is_a_type_error(digits_model, devices):
    with pytest.raises(TypeError, match="devices must be a list"):
        deq_sample(digits_model, randn(1, 1, 8, 8), DDIMSchedule.make(5), devices=devices)


def test_numpy_scalars_accepted_for_max_iter_tol_m(digits_model):
    "NumPy scalars mean the same as Python numbers."
    s, x_T = DDIMSchedule.make(30), randn(1, 1, 8, 8)
    a, ia = deq_sample(digits_model, x_T, s, solver="anderson", max_iter=np.int64(40), tol=np.float32(1e-3), m=np.int32(5))
    b, ib = deq_sample(digits_model, x_T, s, solver="anderson", max_iter=40, tol=float(np.float32(1e-3)), m=5)
    assert ia.converged and ia.rounds == ib.rounds and torch.equal(a, b)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(max_batch=0), ValueError, "max_batch must be >= 1"),
    (dict(max_batch=2.5), TypeError, "max_batch must be an int"),
    (dict(max_batch=True), TypeError, "max_batch must be an int"),
    (dict(max_iter=2.0), TypeError, "max_iter must be an int"),
    (dict(max_iter=2.5), TypeError, "max_iter must be an int"),
    (dict(max_iter=True), TypeError, "max_iter must be an int"),
    (dict(solver="anderson", m=0), ValueError, "m must be >= 1"),
    (dict(solver="anderson", m=2.5), TypeError, "m must be an int"),
    (dict(tol="1e-3"), TypeError, "tol must be a real number"),
    (dict(tol=float("nan")), ValueError, "tol must be finite"),
])
def test_deq_sample_bad_numbers(digits_model, kw, exc, msg):
    with pytest.raises(exc, match="^" + re.escape(msg)):
        deq_sample(digits_model, randn(1, 1, 8, 8), DDIMSchedule.make(5), **kw)


# ---- m, the history length: applied by the solvers that keep a history, refused by the others ----------------------
@pytest.mark.parametrize("solver", ["auto", "chain_newton", "picard"])
def test_m_with_a_solver_without_history_is_refused(digits_model, solver):
    from deq_ddim_nb.solvers import chain_newton, picard
    for sv in (solver, {"auto": chain_newton, "chain_newton": chain_newton, "picard": picard}[solver]):
        with pytest.raises(ValueError, match=r"^m \(the history length\) applies to the solvers"):
            deq_sample(digits_model, randn(1, 1, 8, 8), DDIMSchedule.make(10), solver=sv, m=3)


def test_solver_options_fill_in_deq_anderson_and_the_chain_slopes():
    from deq_ddim_nb.solvers import anderson, chain_newton, chain_slopes
    s, x = DDIMSchedule.make(10, eta=0.3), randn(1, 1, 8, 8)
    name, solve, kw = solver_options("anderson", s, x)
    assert (name, solve) == ("anderson", anderson) and kw == {"m": 5, **DEQ_ANDERSON}      # every tuned setting applied
    assert solver_options("anderson", s, x, group_dims=(1,))[2]["triangular"] is False    # per image: no triangular sum
    assert solver_options("anderson", s, x, mixing=1.0)[2]["mixing"] == 1.0              # the caller's option wins
    name, solve, kw = solver_options("auto", s, x)
    ratio, slope = chain_slopes(s.abar, s.abar_prev, s.sigma)
    assert (name, solve) == ("chain_newton", chain_newton) and torch.equal(kw["ratio"], ratio) and torch.equal(kw["slope"], slope)


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_m_is_applied_by_the_solvers_with_a_history(digits_model, solver):
    "m changes the run (it is passed on), and leaving it out is m=5."
    s, x_T = DDIMSchedule.make(50), randn(1, 1, 8, 8, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        runs = {m: deq_sample(digits_model, x_T, s, solver=solver, m=m, max_iter=30)[1].residuals for m in (None, 2, 5)}
    assert runs[None] == runs[5] and runs[2] != runs[5]


# ---- max_batch ---------------------------------------------------------------------------------
def test_max_batch_gives_identical_results_and_caps_every_call(digits_model):
    T, B = 30, 3
    s = DDIMSchedule.make(T, eta=0.5)
    g = torch.Generator().manual_seed(8)
    x_T = torch.randn(B, 1, 8, 8, dtype=torch.float64, generator=g); nz = draw_noise(s, x_T, g)
    sizes = []
    def counting(x, t):
        sizes.append(len(x)); return digits_model(x, t)
    a, ia = deq_sample(digits_model, x_T, s, noise=nz, solver="anderson", max_iter=40)
    for cap in (7, 16, T * B, 1000):
        sizes.clear()
        b, ib = deq_sample(counting, x_T, s, noise=nz, solver="anderson", max_iter=40, max_batch=cap, check=False)
        assert max(sizes) <= cap and sum(sizes) == ib.rounds * T * B
        assert ib.rounds == ia.rounds and rel(b, a) < 1e-11 and rel(ib.xs, ia.xs) < 1e-11   # float64 rounding: BLAS blocks by batch size
    c, ic = deq_sample(digits_model, x_T, s, noise=nz, solver="anderson", max_iter=40, max_batch=16, devices=["cpu", "cpu"])
    assert ic.rounds == ia.rounds and rel(c, a) < 1e-11


def test_chunked_eps_is_importable_from_deq_and_equals_one_call(digits_model):
    import deq_ddim_nb.deq as deq, deq_ddim_nb.wrappers as wrappers
    assert deq.ChunkedEps is wrappers.ChunkedEps and deq.ShardedEps is wrappers.ShardedEps     # one class, two import paths
    x = randn(50, 1, 8, 8, seed=9)
    t = torch.arange(50) * 20
    ref = digits_model(x, t)
    for cap in (1, 7, 50, 64):
        assert rel(ChunkedEps(digits_model, cap)(x, t), ref) < 1e-14   # BLAS may sum another batch size in another order


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_chain_newton_through_deq_sample_is_exact_in_float64(digits_model, eta):
    "solver='chain_newton' gets its step ratios and slopes from the schedule; float64 root = the sequential (s)DDIM chain."
    s = DDIMSchedule.make(40, eta=eta)
    g = torch.Generator().manual_seed(21)
    x_T = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=g)
    nz = draw_noise(s, x_T, g) if eta > 0 else None
    _, xs = ddim_sample(digits_model, x_T, s, nz, return_traj=True)
    x0, info = deq_sample(digits_model, x_T, s, noise=nz, solver="chain_newton", max_iter=60, tol=1e-12)
    assert info.converged and info.solver == "chain_newton" and rel(info.xs, xs[:-1]) < 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x0, info = deq_sample(digits_model, x_T, s, noise=nz, solver="chain_newton")     # automatic budget
    assert info.converged and rel(x0, xs[0]) < 1e-3


# ---- the lessons' exercises (04 and 05): the reference passes, the recorded wrong answer fails --------------------------
ROOT = Path(__file__).resolve().parents[1]


def _src(c):
    return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


def _strip(src):
    return "\n".join(l for l in src.splitlines() if not l.startswith("#|"))


@pytest.mark.parametrize("stem", ["04_fixed_point", "05_sddim"])
def test_lesson_exercises_fail_a_wrong_answer_and_pass_the_reference(stem):
    from deq_ddim_nb.classroom import exercises
    path = ROOT / "nbs" / f"{stem}.ipynb"
    nb = json.loads(path.read_text())
    exs = exercises(nb, path.name)
    assert len(exs) >= 2 and all(e.has_metadata for e in exs)
    assert any("pen and paper" in _src(nb["cells"][e.question]).lower() for e in exs)    # at least one pen-and-paper exercise
    for e in exs:
        solution, check = _strip(_src(nb["cells"][e.solution])), _strip(_src(nb["cells"][e.check]))
        ns = {}; exec(solution, ns)
        assert all(n in ns for n in e.answers), (e.number, e.answers)
        exec(check, {n: ns[n] for n in e.answers})            # the reference passes, from its answers alone
        ns = {}; exec(e.wrong, ns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(AssertionError):
                exec(check, {n: ns[n] for n in e.answers})    # the wrong answer fails with an AssertionError


def test_round_budget_defaults_to_one_ddim_image_and_names_callables():
    import functools
    from deq_ddim_nb.deq import round_budget
    assert round_budget(100) == round_budget(100, 1, 0.0, "auto")
    assert round_budget(100, 1, 0.0) != round_budget(100, 2, 1.0)
    def my_solver(f, z0, **kw): return f(z0), None
    assert round_budget(100, solver=my_solver)[0] == "my_solver"
    assert round_budget(100, solver=functools.partial(my_solver))[0] == "custom"


# --- behaviour that the mutation run showed untested -----------------------------------------------------------------
def test_solver_options_fill_in_each_solvers_own_defaults():
    s, x = DDIMSchedule.make(6), torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    name, _, kw = solver_options("broyden", s, x)
    assert name == "broyden" and kw == {"m": 5, "group_dims": (1,)}                 # per image, history 5
    assert solver_options("broyden", s, x, m=3, group_dims=(0, 1))[2] == {"m": 3, "group_dims": (0, 1)}
    assert solver_options("anderson", s, x, group_dims=(1,))[2]["triangular"] is False    # not grouped by state first
    assert solver_options("anderson", s, x, group_dims=(0, 1))[2]["triangular"] is True
    def mine(f, z0, **kw): return f(z0), None
    name, solve, kw = solver_options(mine, s, x)
    assert (name, solve, kw) == ("mine", mine, {})                               # a callable gets nothing it did not ask for
    assert solver_options(mine, s, x, m=4)[2] == {"m": 4}
    with pytest.raises(ValueError, match="m must be >= 1"): solver_options(mine, s, x, m=0)


def test_deq_sample_draws_its_noises_from_the_generator_and_budgets_by_eta():
    from deq_ddim_nb.toy import digits_eps
    model, x_T = digits_eps(), randn(1, 1, 8, 8, seed=2)
    s = DDIMSchedule.make(20, eta=0.5)
    a, _ = deq_sample(model, x_T, s, generator=torch.Generator().manual_seed(5))
    b, _ = deq_sample(model, x_T, s, noise=draw_noise(s, x_T, torch.Generator().manual_seed(5)))
    assert torch.equal(a, b)
    d = DDIMSchedule.make(100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = deq_sample(model, x_T, d, tol=1e-30)                            # runs its whole budget
    assert info.max_iter == round_budget(100, 1, 0.0)[1] == info.rounds


# ---- the checks it makes by default, the budget of a deterministic chain, what DEQInfo records -------------------------
def test_deq_eps_deq_map_and_deq_sample_check_the_model_by_default_and_skip_it_when_asked(digits_model):
    s, x_T = DDIMSchedule.make(4), randn(1, 1, 8, 8, seed=3)
    nan_model = lambda x, t: torch.full_like(x, math.nan)
    xs = x_T.expand(4, *x_T.shape).clone()
    from deq_ddim_nb.deq import deq_eps
    for call in (lambda **kw: deq_eps(nan_model, xs, x_T, s, **kw), lambda **kw: deq_map(nan_model, xs, x_T, s, **kw),
                 lambda **kw: deq_sample(nan_model, x_T, s, max_iter=2, **kw)[0]):
        with pytest.raises(ValueError, match="eps_model"): call()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert torch.isnan(call(check=False)).all()


def test_init_trajectory_starts_every_state_at_x_T_by_default():
    from deq_ddim_nb.deq import init_trajectory
    x_T = randn(2, 3, seed=4)
    z = init_trajectory(x_T, 5)
    assert z.shape == (5, 2, 3) and torch.equal(z, x_T.expand(5, 2, 3)) and z.dtype == x_T.dtype
    assert torch.equal(init_trajectory(x_T, 5, "zeros"), torch.zeros(5, 2, 3, dtype=x_T.dtype))


def test_deq_sample_is_quiet_unless_asked_for_a_progress_bar(digits_model, capsys):
    s, x_T = DDIMSchedule.make(5), randn(1, 1, 8, 8, seed=5)
    deq_sample(digits_model, x_T, s)
    assert capsys.readouterr().err == ""
    deq_sample(digits_model, x_T, s, progress=True)
    assert "DEQ (chain_newton)" in capsys.readouterr().err


@pytest.mark.parametrize("kw, msg", [(dict(tol=0), "tol"), (dict(tol=-1e-3), "tol"), (dict(max_iter=0), "max_iter")])
def test_deq_sample_refuses_a_tolerance_or_budget_that_is_not_positive(digits_model, kw, msg):
    with pytest.raises(ValueError, match=f"^{msg}"):
        deq_sample(digits_model, randn(1, 1, 8, 8, seed=6), DDIMSchedule.make(5), **kw)


def test_a_deterministic_chain_draws_no_noise_and_gets_the_deterministic_budget(digits_model):
    "η = 0 (every σ = 0) leaves the generator untouched; so does η > 0 with T = 1, whose only σ is 0."
    x_T = randn(1, 1, 8, 8, seed=7)
    for s in (DDIMSchedule.make(8), DDIMSchedule.make(1, eta=0.5)):
        assert not bool((s.sigma != 0).any())
        g = torch.Generator().manual_seed(0); state = g.get_state()
        _, info = deq_sample(digits_model, x_T, s, solver="anderson", generator=g)
        assert torch.equal(g.get_state(), state)
        assert info.max_iter == round_budget(len(s), 1, 0.0, "anderson")[1]


def test_deq_info_keeps_the_solver_stats_and_the_duration_of_the_solve(digits_model):
    import time
    from deq_ddim_nb.solvers import SolverStats
    s, x_T = DDIMSchedule.make(6), randn(2, 1, 8, 8, seed=8)
    t0 = time.perf_counter()
    _, info = deq_sample(digits_model, x_T, s)
    elapsed = time.perf_counter() - t0
    assert isinstance(info.stats, SolverStats) and info.stats.nfe == info.rounds and info.stats.residuals == info.residuals
    assert 0 < info.seconds <= elapsed
    r = repr(info)
    assert f"rounds={info.rounds}/{info.max_iter}" in r and f"final residual={info.residuals[-1]:.2e}" in r


def test_deq_sample_stops_on_each_state_of_each_image_and_names_a_nameless_solver(digits_model):
    "The solver is told to take the worst (state, image) residual: sample_dim = (0, 1) of the (T, B, *dims) trajectory."
    import functools
    from deq_ddim_nb.solvers import picard
    seen = []
    def spy(f, z0, **kw): seen.append(kw["sample_dim"]); return picard(f, z0, **kw)
    s, x_T = DDIMSchedule.make(4), randn(2, 1, 8, 8, seed=9)
    _, info = deq_sample(digits_model, x_T, s, solver=spy)
    assert seen == [(0, 1)] and info.solver == "spy"
    _, info = deq_sample(digits_model, x_T, s, solver=functools.partial(picard, mixing=1.0))
    assert info.solver == "custom" and "solver=custom" in repr(info)


def test_deq_sample_callback_sees_every_round_in_order(digits_model):
    seen = []
    s, x_T = DDIMSchedule.make(6), randn(1, 1, 8, 8, seed=10)
    _, info = deq_sample(digits_model, x_T, s, callback=lambda k, z, fz, res: seen.append((k, res)))
    assert [k for k, _ in seen] == list(range(info.rounds)) and [r for _, r in seen] == info.residuals

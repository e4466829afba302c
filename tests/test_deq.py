import warnings
import numpy as np
import pytest
import torch
from conftest import rel, randn
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.ddim import ddim_sample, draw_noise
from deq_ddim_nb.deq import ChunkedEps, deq_map, deq_sample, deq_update, round_budget


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


def rounds_to_1e3(model, x_T, s, max_iter=40, **kw):
    ref = ddim_sample(model, x_T, s)
    errs = []
    deq_sample(model, x_T, s, max_iter=max_iter, tol=1e-14, callback=lambda k, z, fz, r: errs.append(rel(fz[0], ref)), **kw)
    return next((k + 1 for k, e in enumerate(errs) if e < 1e-3), np.inf), errs[-1]


def test_anderson_converges_to_the_ddim_sample_over_seeds(digits_model):
    "Issue 2's criterion: Anderson (m=5, tol 1e-3), T=100, 8 seeds: x_0 within 1e-3 of DDIM in at most 20 rounds."
    s = DDIMSchedule.make(100)
    out = []
    for sd in range(8):
        x_T = randn(1, 1, 8, 8, seed=sd)
        x0, info = deq_sample(digits_model, x_T, s, m=5, tol=1e-3, max_iter=20)
        out.append((info.rounds, rel(x0, ddim_sample(digits_model, x_T, s)), info.converged))
    assert all(c and r <= 20 and e < 1e-3 for r, e, c in out), out     # measured: rounds 11-20, errors <= 7.5e-4


@pytest.mark.filterwarnings("ignore:deq_sample did not converge")   # a study run: its tolerance is too small to stop
def test_anderson_rounds_to_1e3_over_seeds(digits_model):
    "Rounds until x_0 is first within 1e-3 of DDIM (no stopping rule involved); regression guard on the default solver."
    s = DDIMSchedule.make(100)
    rounds = [rounds_to_1e3(digits_model, randn(1, 1, 8, 8, seed=sd), s)[0] for sd in range(8)]
    assert max(rounds) <= 20 and np.median(rounds) <= 13, rounds   # measured: [11, 19, 11, 16, 11, 18, 13, 11]


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
    x0, info = deq_sample(digits_model, x_T, s, max_iter=40, tol=1e-4)
    assert info.converged and not info.diverged and info.rounds < 40
    assert rel(x0, ddim_sample(digits_model, x_T, s)) < 1e-3
    assert info.nfe == info.rounds * 100 and len(info.residuals) == info.rounds and info.xs.shape == (100, *x_T.shape)


@pytest.mark.parametrize("eta", [0.2, 0.5, 1.0])
def test_deq_sddim_matches_sequential_sddim(digits_model, eta):
    s = DDIMSchedule.make(100, eta=eta)
    for sd in range(4):
        g = torch.Generator().manual_seed(100 + sd)
        x_T = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=g)
        nz = draw_noise(s, x_T, g)
        x0, info = deq_sample(digits_model, x_T, s, noise=nz, max_iter=50, tol=1e-4)
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


# ---- bad inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,exc,msg", [
    (dict(tol=0.0), ValueError, "tol must be a number > 0"),
    (dict(tol=-1e-3), ValueError, "tol must be a number > 0"),
    (dict(max_iter=0), ValueError, "max_iter must be an int >= 1"),
    (dict(solver="newton"), ValueError, "solver must be one of"),
    (dict(init="ones"), ValueError, "init must be one of"),
    (dict(init=torch.zeros(3)), ValueError, "init tensor must have shape"),
    (dict(noise=torch.zeros(9, 2, 1, 8, 8)), ValueError, "noise must have shape"),
    (dict(noise=torch.zeros(10, 2, 1, 8, 8, dtype=torch.long)), TypeError, "noise must be a floating tensor"),
])
def test_deq_sample_bad_inputs(digits_model, kw, exc, msg):
    with pytest.raises(exc, match=msg):
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
    assert round_budget(100, 1, 0.0) == ("chain_newton", 25)
    assert round_budget(100, 1, 0.0, solver="anderson") == ("anderson", 25)
    assert round_budget(100, 1, 1.0)[1] > round_budget(100, 1, 0.5)[1] > round_budget(100, 1, 0.0)[1]
    assert round_budget(100, 16, 0.0)[1] > round_budget(100, 1, 0.0)[1]
    for T in (1, 5, 20, 24):    # never more than T + 1 rounds: chain_newton is exact after T
        assert round_budget(T, 1, 0.0) == ("chain_newton", T + 1)
    assert round_budget(20, 1, 0.0, solver="anderson") == ("anderson", 25)
    assert round_budget(500, 1, 0.0, solver="picard") == ("picard", 501)


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
    s, x_T = DDIMSchedule.make(30), randn(1, 1, 8, 8)
    a, ia = deq_sample(digits_model, x_T, s, solver="anderson", max_iter=np.int64(40), tol=np.float32(1e-3), m=np.int32(5))
    b, ib = deq_sample(digits_model, x_T, s, solver="anderson", max_iter=40, tol=float(np.float32(1e-3)), m=5)
    assert ia.converged and ia.rounds == ib.rounds and torch.equal(a, b)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(max_batch=0), ValueError, "max_batch must be an int >= 1"),
    (dict(max_batch=2.5), TypeError, "max_batch must be an int >= 1"),
    (dict(max_batch=True), TypeError, "max_batch must be an int >= 1"),
    (dict(max_iter=2.0), TypeError, "max_iter must be an int >= 1"),
    (dict(m=0), ValueError, "m must be an int >= 1"),
    (dict(tol="1e-3"), TypeError, "tol must be a number > 0"),
    (dict(tol=float("nan")), ValueError, "tol must be a number > 0"),
])
def test_deq_sample_bad_numbers(digits_model, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        deq_sample(digits_model, randn(1, 1, 8, 8), DDIMSchedule.make(5), **kw)


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


def test_chunked_eps_equals_one_call(digits_model):
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

import json
import math
import re
import warnings
from pathlib import Path
import pytest
import torch
from deq_ddim_nb.solvers import picard, anderson, broyden, chain_newton, chain_slopes, get_solver

DOTTIE = 0.7390851332151607
SOLVERS = [picard, anderson, broyden]


@pytest.mark.parametrize("solver", SOLVERS)
def test_cos_fixed_point(solver):
    z0 = torch.linspace(-1, 3, 5, dtype=torch.float64)[:, None]
    z, st = solver(torch.cos, z0, max_iter=200, tol=1e-12, stop_mode="abs", sample_dim=0)
    assert st.converged and not st.diverged
    assert torch.allclose(z, torch.full_like(z, DOTTIE), atol=1e-10)
    assert st.nfe == len(st.residuals) == len(st.abs_residuals) == len(st.rel_residuals)


@pytest.mark.parametrize("solver", SOLVERS)
def test_linear_contraction(solver):
    D = 20
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64, generator=g))
    A = Q @ torch.diag(torch.linspace(-0.9, 0.9, D, dtype=torch.float64)) @ Q.T
    b = torch.randn(D, dtype=torch.float64, generator=g)
    z_star = torch.linalg.solve(torch.eye(D, dtype=torch.float64) - A, b)
    z, st = solver(lambda z: z @ A.T + b, torch.zeros(1, D, dtype=torch.float64), max_iter=1000, tol=1e-11, stop_mode="abs")
    assert st.converged and torch.allclose(z[0], z_star, atol=1e-9)


def _ill_conditioned(D=30):
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64, generator=g))
    A = Q @ torch.diag(torch.linspace(-0.95, 0.95, D, dtype=torch.float64)) @ Q.T
    b = torch.randn(D, dtype=torch.float64, generator=g)
    return (lambda z: z @ A.T + b), torch.linalg.solve(torch.eye(D, dtype=torch.float64) - A, b)


def test_anderson_and_broyden_beat_picard_on_ill_conditioned_contraction():
    f, _ = _ill_conditioned()
    n = {s.__name__: s(f, torch.zeros(1, 30, dtype=torch.float64), max_iter=2000, tol=1e-10, stop_mode="abs")[1].nfe for s in SOLVERS}
    assert n["anderson"] < n["picard"] / 2 and n["broyden"] < n["picard"] / 2, n


# a rounds guard for every solver on the linear contraction (||A|| = 0.95, D = 30, absolute tol 1e-10), against the
# solution computed with torch.linalg.solve; the bounds are the measured calls of f plus a little
@pytest.mark.parametrize("solver,kw,bound", [
    (picard, {}, 420),                        # measured 415: the rate ||A|| = 0.95 per call
    (anderson, {}, 150),                      # measured 144 (m = 5)
    (anderson, dict(m=10), 70),               # measured 66
    (broyden, {}, 45),                        # measured 43 (at most 2D for a linear map)
])
def test_rounds_guard_on_the_linear_contraction(solver, kw, bound):
    f, z_star = _ill_conditioned()
    z, st = solver(f, torch.zeros(1, 30, dtype=torch.float64), max_iter=2000, tol=1e-10, stop_mode="abs", **kw)
    assert st.converged and st.nfe <= bound, st
    assert torch.allclose(z[0], z_star, atol=1e-8)


def test_diverging_map_reported():
    _, st = picard(lambda z: 2 * z + 1, torch.zeros(1, 1, dtype=torch.float64), max_iter=20)
    assert st.diverged and not st.converged
    _, st = anderson(lambda z: z * float("nan"), torch.ones(1, 3), max_iter=20)
    assert st.diverged and st.nfe == 1


def test_rel_and_abs_residual_definitions():
    _, st = picard(lambda z: z * 0 + 3.0, torch.zeros(1, 4, dtype=torch.float64), max_iter=1)
    assert math.isclose(st.abs_residuals[0], 6.0) and math.isclose(st.rel_residuals[0], 6.0 / (1e-5 + 6.0))


def test_per_group_anderson_equals_separate_problems():
    fb = lambda z: torch.cos(z * torch.arange(1, 4, dtype=z.dtype)[:, None])
    z0 = torch.rand(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    seen = []
    anderson(fb, z0, max_iter=6, tol=1e-300, group_dims=(0,), callback=lambda k, z, fz, r: seen.append(fz))
    for i in range(3):
        own = []
        anderson(lambda z: torch.cos(z * (i + 1)), z0[i:i + 1], max_iter=6, tol=1e-300, callback=lambda k, z, fz, r: own.append(fz))
        for a, b in zip(seen, own):
            assert torch.allclose(a[i], b[0], atol=1e-12)


# one policy for every solver: TypeError for a wrong type, ValueError for a wrong value, the message opens with the name
@pytest.mark.parametrize("kw,exc,msg", [
    (dict(max_iter=0), ValueError, "max_iter must be >= 1"),
    (dict(max_iter=2.5), TypeError, "max_iter must be an int"),
    (dict(max_iter=True), TypeError, "max_iter must be an int"),
    (dict(tol=0), ValueError, "tol must be > 0"),
    (dict(tol=-1.0), ValueError, "tol must be > 0"),
    (dict(tol=float("nan")), ValueError, "tol must be finite"),
    (dict(tol="1e-3"), TypeError, "tol must be a real number"),
    (dict(stop_mode="max"), ValueError, "stop_mode must be one of"),
    (dict(stop_mode=1), TypeError, "stop_mode must be one of"),
])
@pytest.mark.parametrize("solver", SOLVERS + [chain_newton])
def test_bad_solver_args(solver, kw, exc, msg):
    extra = dict(ratio=torch.ones(1)) if solver is chain_newton else {}
    with pytest.raises(exc, match="^" + re.escape(msg)):
        solver(torch.cos, torch.zeros(1, 2), **kw, **extra)


def test_unknown_solver_name():
    with pytest.raises(ValueError, match="^solver must be one of"):
        get_solver("newton")
    with pytest.raises(TypeError, match="^solver must be one of"):
        get_solver(3)


def test_residual_norms_tuple_sample_dim_and_bad_dims():
    from deq_ddim_nb.solvers import residual_norms
    g = torch.Generator().manual_seed(0)
    z, fz = torch.randn(4, 3, 5, generator=g, dtype=torch.float64), torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    a, r = residual_norms(fz, z, (0, 1))
    per = [((fz[i, j] - z[i, j]).norm(), fz[i, j].norm()) for i in range(4) for j in range(3)]
    assert abs(a - max(float(x) for x, _ in per)) < 1e-12
    assert abs(r - max(float(x / (1e-5 + n)) for x, n in per)) < 1e-12
    assert abs(residual_norms(fz, z, (0, 1, 2))[0] - float((fz - z).abs().max())) < 1e-12
    for bad in (3, -4, ()):
        with pytest.raises(ValueError, match="^sample_dim must be"):
            residual_norms(fz, z, bad)
    with pytest.raises(TypeError, match="^sample_dim must be"):
        residual_norms(fz, z, (0.5,))


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(lam=float("nan")), ValueError, "lam must be finite"), (dict(lam=float("inf")), ValueError, "lam must be finite"),
    (dict(lam=-1e-6), ValueError, "lam must be >= 0"), (dict(lam="0.1"), TypeError, "lam must be a real number"),
    (dict(mixing=0.0), ValueError, "mixing must be > 0"), (dict(mixing=1.01), ValueError, "mixing must be <= 1"),
    (dict(mixing=float("nan")), ValueError, "mixing must be finite"),
    (dict(m=0), ValueError, "m must be >= 1"), (dict(m=2.0), TypeError, "m must be an int"),
    (dict(tol=float("inf")), ValueError, "tol must be finite"), (dict(tol=-float("inf")), ValueError, "tol must be finite"),
    (dict(group_dims=(2,)), ValueError, "group_dims must be"), (dict(group_dims=(0, -3)), ValueError, "group_dims must be"),
    (dict(group_dims=0), TypeError, "group_dims must be a tuple"), (dict(group_dims=(0.5,)), TypeError, "group_dims must be a tuple"),
    (dict(triangular=1, group_dims=(0,)), TypeError, "triangular must be True or False"),
    (dict(restart=0), ValueError, "restart must be > 0"), (dict(restart=1.0, restart_after=-1), ValueError, "restart_after must be >= 0"),
])
def test_anderson_bad_options_name_the_parameter(kw, exc, msg):
    with pytest.raises(exc, match="^" + re.escape(msg)):
        anderson(torch.cos, torch.zeros(3, 2), **kw)


@pytest.mark.parametrize("solver", [picard, broyden])
def test_bad_mixing_and_group_dims_other_solvers(solver):
    kw = dict(mixing=float("nan")) if solver is picard else dict(group_dims=(5,))
    with pytest.raises(ValueError, match="^mixing must be finite" if solver is picard else "^group_dims must be"):
        solver(torch.cos, torch.zeros(3, 2), **kw)


def test_numpy_scalars_accepted_and_equal_to_python_numbers():
    np = pytest.importorskip("numpy")
    z0 = torch.linspace(-1, 3, 5, dtype=torch.float64)[:, None]
    za, sa = anderson(torch.cos, z0, max_iter=np.int64(9), tol=np.float32(1e-6), m=np.int32(3), lam=np.float64(1e-6),
                      group_dims=(np.int64(0),))
    zb, sb = anderson(torch.cos, z0, max_iter=9, tol=1e-6, m=3, lam=1e-6, group_dims=(0,))
    assert sa.residuals == sb.residuals and torch.equal(za, zb)
    zp, sp = picard(torch.cos, z0, max_iter=np.int16(7), tol=np.float64(1e-300), mixing=np.float32(0.5))
    assert sp.nfe == 7 and isinstance(sp.tol, float)
    _, st = broyden(torch.cos, z0, max_iter=np.int64(60), tol=np.float64(1e-10), m=np.int64(4), group_dims=(0,), stop_mode="abs")
    assert st.converged


# --- chain_newton: quasi-Newton on the DDIM chain ------------------------------------------------------------------



def _chain_problem(T, eta, B=2, seed=0):
    from deq_ddim_nb.ddim import ddim_sample, draw_noise
    from deq_ddim_nb.deq import deq_map
    from deq_ddim_nb.schedules import DDIMSchedule
    from deq_ddim_nb.toy import digits_eps
    toy, s, g = digits_eps(), DDIMSchedule.make(T, eta=eta), torch.Generator().manual_seed(seed)
    x_T = torch.randn(B, 1, 8, 8, dtype=torch.float64, generator=g)
    noise = draw_noise(s, x_T, g) if eta > 0 else None
    _, traj = ddim_sample(toy, x_T, s, noise=noise, return_traj=True)
    f = lambda xs: deq_map(toy, xs, x_T, s, noise)
    return f, x_T.expand(T, *x_T.shape).clone(), traj[:T], s


def test_chain_newton_with_slope_ratio_and_no_secant_is_picard():
    f, z0, _, s = _chain_problem(20, 0.5)
    ratio, _ = chain_slopes(s.abar, s.abar_prev, s.sigma)
    zc, sc = chain_newton(f, z0, max_iter=6, tol=1e-300, sample_dim=(0, 1), ratio=ratio, secant=0)
    zp, sp = picard(f, z0, max_iter=6, tol=1e-300, sample_dim=(0, 1))
    assert sc.nfe == sp.nfe == 6
    assert max(abs(a - b) for a, b in zip(sc.residuals, sp.residuals)) < 1e-12
    assert torch.allclose(zc, zp, atol=1e-10, rtol=0)


@pytest.mark.parametrize("eta,bound", [(0.0, 14), (0.5, 17)])        # measured: 13 and 16 rounds to tol 1e-12
def test_chain_newton_exact_float64(eta, bound):
    "chain_newton's rounds guard: every state of every image equals the sequential chain, in few rounds."
    f, z0, traj, s = _chain_problem(50, eta, B=2)
    ratio, slope = chain_slopes(s.abar, s.abar_prev, s.sigma)
    xs, st = chain_newton(f, z0, max_iter=50, tol=1e-12, sample_dim=(0, 1), ratio=ratio, slope=slope)
    assert st.converged and not st.diverged and st.nfe <= bound, st
    rel = ((xs - traj).flatten(2).norm(dim=2) / traj.flatten(2).norm(dim=2)).max()
    assert rel < 1e-10, float(rel)                       # every state of every image equals the sequential chain


def test_chain_newton_batch_equals_separate_images():
    f, z0, _, s = _chain_problem(30, 0.0, B=3)
    ratio, slope = chain_slopes(s.abar, s.abar_prev, s.sigma)
    zb, _ = chain_newton(f, z0, max_iter=5, tol=1e-300, sample_dim=(0, 1), ratio=ratio, slope=slope)
    from deq_ddim_nb.deq import deq_map
    from deq_ddim_nb.toy import digits_eps
    toy = digits_eps()
    for i in range(3):
        x_T = z0[0, i:i + 1]
        zi, _ = chain_newton(lambda xs: deq_map(toy, xs, x_T, s), z0[:, i:i + 1], max_iter=5, tol=1e-300,
                             sample_dim=(0, 1), ratio=ratio, slope=slope)
        assert torch.allclose(zb[:, i:i + 1], zi, atol=1e-11, rtol=0)


def test_chain_newton_affine_eps_exact_once_the_secant_has_two_rounds():
    # eps linear in x with one factor per timestep: every step is affine with a scalar slope, so the secant of
    # rounds 1-2 is exact and the update after round 2 is the sequential chain (residual ~0 at round 3)
    from deq_ddim_nb.ddim import ddim_sample
    from deq_ddim_nb.deq import deq_map
    from deq_ddim_nb.schedules import DDIMSchedule
    T, s = 25, DDIMSchedule.make(25)
    kappa = torch.linspace(0.3, 1.2, 1000, dtype=torch.float64)
    model = lambda x, t: kappa[t].view(-1, 1) * x + 0.1
    x_T = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ratio, slope = chain_slopes(s.abar, s.abar_prev, s.sigma)
    xs, st = chain_newton(lambda xs: deq_map(model, xs, x_T, s), x_T.expand(T, 2, 4).clone(), max_iter=10, tol=1e-10,
                          stop_mode="abs", sample_dim=(0, 1), ratio=ratio, slope=slope)
    assert st.converged and st.nfe == 3, st
    assert torch.allclose(xs[0], ddim_sample(model, x_T, s), atol=1e-10)


def test_chain_newton_with_the_schedule_slopes_beats_picard():
    "chain_newton's rounds to tol 1e-12 on the exact chain (T = 50, two images), against Picard on the same problem."
    for eta in (0.0, 0.5):
        f, z0, traj, s = _chain_problem(50, eta, B=2)
        ratio, slope = chain_slopes(s.abar, s.abar_prev, s.sigma)
        n_cn = chain_newton(f, z0, max_iter=60, tol=1e-12, sample_dim=(0, 1), ratio=ratio, slope=slope)[1].nfe
        n_pi = picard(f, z0, max_iter=60, tol=1e-12, sample_dim=(0, 1))[1].nfe
        assert n_cn < n_pi / 2, (eta, n_cn, n_pi)                   # measured: 13 vs 31 (η = 0), 16 vs 36 (η = 0.5)


def test_chain_newton_registered_and_bad_arguments():
    assert get_solver("chain_newton") is chain_newton
    z0, r = torch.zeros(4, 2, 3), torch.ones(4)
    for kw, exc, msg in [(dict(), ValueError, "chain_newton needs `ratio`"), (dict(ratio=torch.ones(3)), ValueError, "ratio must have shape"),
                         (dict(ratio=r, slope=torch.ones(5)), ValueError, "slope must have shape"),
                         (dict(ratio=r, secant=-1), ValueError, "secant must be >= 0"), (dict(ratio=r, secant=1.5), TypeError, "secant must be an int"),
                         (dict(ratio=r, clip=0.0), ValueError, "clip must be > 0"), (dict(ratio=r, clip=float("nan")), ValueError, "clip must be finite"),
                         (dict(ratio=r, tol=float("inf")), ValueError, "tol must be finite")]:
        with pytest.raises(exc, match="^" + re.escape(msg)):
            chain_newton(torch.cos, z0, **kw)
    with pytest.raises(ValueError, match="z0 of shape"):
        chain_newton(torch.cos, torch.zeros(4), ratio=r)


@pytest.mark.parametrize("T", [1, 2, 3])
def test_chain_newton_short_chains_exact(T):
    f, z0, traj, s = _chain_problem(T, 0.0, B=2)
    ratio, slope = chain_slopes(s.abar, s.abar_prev, s.sigma)
    xs, st = chain_newton(f, z0, tol=1e-12, sample_dim=(0, 1), ratio=ratio, slope=slope)
    assert st.converged and st.nfe <= T + 1 and torch.allclose(xs, traj, atol=1e-12, rtol=0)


# ---- the lesson's exercises (03): the reference passes, the recorded wrong answer fails ---------------------------------
def test_lesson_exercises_fail_a_wrong_answer_and_pass_the_reference():
    from deq_ddim_nb.classroom import exercises
    path = Path(__file__).resolve().parents[1] / "nbs" / "03_solvers.ipynb"
    nb = json.loads(path.read_text())
    src = lambda c: "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
    strip = lambda t: "\n".join(l for l in t.splitlines() if not l.startswith("#|"))
    exs = exercises(nb, path.name)
    assert len(exs) >= 2 and all(e.has_metadata for e in exs)
    assert any("pen and paper" in src(nb["cells"][e.question]).lower() for e in exs)
    for e in exs:
        check = strip(src(nb["cells"][e.check]))
        ns = {}; exec(strip(src(nb["cells"][e.solution])), ns)
        exec(check, {n: ns[n] for n in e.answers})             # the reference passes, from its answers alone
        ns = {}; exec(e.wrong, ns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(AssertionError):
                exec(check, {n: ns[n] for n in e.answers})     # the wrong answer fails with an AssertionError


def test_a_history_longer_than_the_run_allocates_only_what_the_run_uses():
    "m = 10**12 (or Broyden's full memory with max_iter = 10**12) must run, and m >= max_iter equals m = max_iter."
    f, z0 = (lambda z: 0.5 * z + 1.0), torch.zeros(5, 1, 3, dtype=torch.float64)
    a_huge, a_run = anderson(f, z0, m=10 ** 12, max_iter=6), anderson(f, z0, m=6, max_iter=6)
    assert torch.equal(a_huge[0], a_run[0])
    z, st = broyden(f, z0, max_iter=10 ** 12, tol=1e-10)
    assert st.converged and torch.allclose(z, torch.full_like(z, 2.0))
    assert torch.equal(broyden(f, z0, m=10 ** 12, max_iter=6)[0], broyden(f, z0, max_iter=6)[0])


def test_broyden_full_memory_beyond_its_first_buffer_matches_dense_broyden():
    "The history grows on demand past its first 8 columns: full memory follows dense good Broyden (explicit B) round by round."
    g = torch.Generator().manual_seed(0)
    A = 0.3 * torch.randn(30, 30, dtype=torch.float64, generator=g)
    f = lambda z: torch.tanh(z @ A.T) + 0.1 * torch.sin(3 * z) + 1
    z0 = torch.zeros(4, 30, dtype=torch.float64)
    _, st = broyden(f, z0, max_iter=25, tol=1e-14)
    x, B, ref = z0.flatten(), -torch.eye(z0.numel(), dtype=torch.float64), []     # dense reference: B ≈ J_g^-1
    gx = f(x.view_as(z0)).flatten() - x
    ref.append(float(gx.norm() / (1e-5 + (gx + x).norm())))
    dx = gx
    for _ in range(24):
        x = x + dx
        fx = f(x.view_as(z0)).flatten()
        gn = fx - x
        ref.append(float(gn.norm() / (1e-5 + fx.norm())))
        dg, vT = gn - gx, dx @ B
        B = B + torch.outer((dx - B @ dg) / (vT @ dg), vT)
        gx, dx = gn, -(B @ gn)
    assert len(st.rel_residuals) == 25
    for k, (a, b) in enumerate(zip(st.rel_residuals, ref)):
        if b > 1e-9: assert abs(a - b) <= 1e-6 * b, (k, a, b)
    assert sum(b > 1e-9 for b in ref) > 9                      # the comparison reaches past the first buffer of 8


@pytest.mark.parametrize("arg", ["ratio", "slope"])
def test_chain_newton_names_a_ratio_or_slope_that_is_not_numbers(arg):
    z0 = torch.zeros(5, 1, 3, dtype=torch.float64)
    kw = dict(ratio=torch.ones(5, dtype=torch.float64))
    with pytest.raises(TypeError, match=f"{arg} must be a \\(T,\\) tensor of numbers"):
        chain_newton(lambda z: 0.5 * z, z0, **{**kw, arg: "x"})


@pytest.mark.parametrize("solver", [picard, anderson, broyden, chain_newton])
@pytest.mark.parametrize("bad", [None, "x", torch.zeros(0), torch.zeros(3, 2, dtype=torch.long)])
def test_every_solver_names_a_z0_that_is_not_a_floating_tensor(solver, bad):
    with pytest.raises(TypeError, match="z0 must be a non-empty floating tensor"):
        solver(lambda z: 0.5 * z, bad, **({"ratio": torch.ones(3)} if solver is chain_newton else {}))


# --- behaviour that the mutation run showed untested -----------------------------------------------------------------
@pytest.mark.parametrize("solver,seed,scale", [(anderson, 0, 3.0), (broyden, 11, 2.0)])
def test_the_solver_returns_the_lowest_residual_image_not_the_last(solver, seed, scale):
    "On a map where the last round is not the best one, Anderson and Broyden return f(z) of the lowest-residual round."
    A = scale * torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    f = lambda z: torch.tanh(z @ A.T) + 1
    seen = []
    z, st = solver(f, torch.zeros(3, 6, dtype=torch.float64), max_iter=12, tol=1e-12,
                   callback=lambda k, z, fz, res: seen.append(fz.clone()))
    assert st.best_index < st.nfe - 1                                   # the case this test is about
    assert st.best_index == min(range(st.nfe), key=st.residuals.__getitem__)
    assert torch.equal(z, seen[st.best_index])


@pytest.mark.parametrize("solver", [picard, anderson, broyden, chain_newton])
def test_a_map_that_is_not_finite_at_once_gives_back_its_output_and_diverged(solver):
    kw = {"ratio": torch.ones(3, dtype=torch.float64)} if solver is chain_newton else {}
    z, st = solver(lambda z: z * float("nan"), torch.ones(3, 2, dtype=torch.float64), **kw)
    assert torch.is_tensor(z) and z.shape == (3, 2) and bool(torch.isnan(z).all())
    assert st.diverged and not st.converged and st.nfe == 1 and st.solver == solver.__name__


@pytest.mark.parametrize("solver", [picard, anderson, broyden, chain_newton])
def test_the_solvers_share_one_set_of_defaults(solver):
    "max_iter = 50 rounds, tol = 1e-3, relative residual: the same for every solver (deq_sample sets its own)."
    import inspect
    p = inspect.signature(solver).parameters
    assert (p["max_iter"].default, p["tol"].default, p["stop_mode"].default) == (50, 1e-3, "rel")
    f, kw = (lambda z: z + 1.0), ({"ratio": torch.ones(3, dtype=torch.float64)} if solver is chain_newton else {})
    z, st = solver(f, torch.zeros(3, 2, dtype=torch.float64), **kw)    # no fixed point: the default budget is spent
    assert st.nfe == 50 and not st.converged


@pytest.mark.parametrize("solver", [anderson, broyden])
def test_group_dims_solves_each_group_as_its_own_problem(solver):
    "With group_dims=(0,) on a row-separable map, every round's iterate of each row is what solving that row alone gives."
    A = 0.3 * torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    c = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    f = lambda z: torch.tanh(z @ A.T) + c[: len(z)] * torch.sin(z) + 1
    z0, together = torch.zeros(3, 6, dtype=torch.float64), []
    solver(f, z0, group_dims=(0,), max_iter=6, tol=1e-14, callback=lambda k, z, fz, r: together.append(z.clone()))
    for i in range(3):
        fi, alone = (lambda z, i=i: torch.tanh(z @ A.T) + c[i] * torch.sin(z) + 1), []
        solver(fi, z0[i:i + 1], max_iter=6, tol=1e-14, callback=lambda k, z, fz, r: alone.append(z.clone()))
        assert len(alone) == len(together) == 6
        for k in range(6): assert torch.allclose(together[k][i:i + 1], alone[k], rtol=1e-9, atol=1e-12), (i, k)


def test_broyden_keeps_a_history_of_one_and_names_a_history_of_zero():
    z, st = broyden(lambda z: 0.5 * z + 1, torch.zeros(3, 2, dtype=torch.float64), m=1, tol=1e-10)
    assert st.converged and torch.allclose(z, torch.full_like(z, 2.0))
    with pytest.raises(ValueError, match="m must be >= 1"): broyden(lambda z: z, torch.zeros(3, 2), m=0)


def test_picard_with_mixing_follows_the_damped_iteration_exactly():
    "z <- β f(z) + (1 − β) z, round by round, and β must lie in (0, 1]."
    f = lambda z: torch.cos(z)
    z0 = torch.linspace(-1, 2, 6, dtype=torch.float64)[:, None]
    z, st = picard(f, z0, max_iter=7, tol=1e-30, mixing=0.3)
    ref = z0
    for _ in range(7): ref = 0.3 * f(ref) + 0.7 * ref
    assert st.nfe == 7 and torch.allclose(z, ref, rtol=0, atol=1e-15)
    assert torch.equal(picard(f, z0, max_iter=3, tol=1e-30, mixing=1)[0], f(f(f(z0))))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="mixing must be"): picard(f, z0, mixing=bad)


def test_solver_stats_print_what_the_solver_did():
    _, st = anderson(torch.cos, torch.zeros(3, 1, dtype=torch.float64), tol=1e-8)
    text = repr(st)
    assert text.startswith("SolverStats(anderson") and f"{st.nfe}" in text and "converged" in text


def test_singular_anderson_systems_fall_back_to_the_pseudo_inverse():
    from deq_ddim_nb.solvers import _solve_small
    H = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)   # the second is singular
    y = torch.tensor([[[2.0], [3.0]], [[2.0], [2.0]]], dtype=torch.float64)
    sol = _solve_small(H, y)
    assert torch.allclose(sol[0], torch.tensor([[1.0], [3.0]], dtype=torch.float64))
    assert torch.allclose(sol[1], torch.linalg.pinv(H[1]) @ y[1]) and bool(torch.isfinite(sol).all())


def test_anderson_history_and_restart_defaults_and_negative_group_dims():
    import inspect
    p = inspect.signature(anderson).parameters
    assert (p["m"].default, p["lam"].default, p["mixing"].default, p["restart"].default, p["restart_after"].default) == (5, 1e-4, 1.0, None, 3)
    f = lambda z: torch.tanh(z @ torch.full((4, 4), 0.2, dtype=torch.float64)) + 1
    z0 = torch.zeros(3, 4, dtype=torch.float64)
    assert torch.equal(anderson(f, z0, group_dims=(-2,), max_iter=6)[0], anderson(f, z0, group_dims=(0,), max_iter=6)[0])


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_chain_slopes_are_the_derivative_of_a_step_when_x0_is_held_fixed(eta):
    "A⁰_j = d x_{j-1} / d x_j through Eq. (20) with ε = (x − √ᾱ_j x̂_0) / √(1 − ᾱ_j) for a fixed x̂_0 (autograd)."
    from deq_ddim_nb.schedules import DDIMSchedule
    from deq_ddim_nb.ddim import ddim_step
    s = DDIMSchedule.make(10, eta=eta)
    ratio, slope = chain_slopes(s.abar, s.abar_prev, s.sigma)
    x0, noise = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[0.7]], dtype=torch.float64)
    for j in range(10):
        x = torch.tensor([[0.4]], dtype=torch.float64, requires_grad=True)
        eps = (x - s.abar[j].sqrt() * x0) / (1 - s.abar[j]).sqrt()
        out = ddim_step(x, eps, s.abar[j], s.abar_prev[j], s.sigma[j], noise)
        (d,) = torch.autograd.grad(out.sum(), x)
        assert abs(float(d) - float(slope[j])) < 1e-12, (j, float(d), float(slope[j]))
        assert abs(float(ratio[j]) - float((s.abar_prev[j] / s.abar[j]).sqrt())) < 1e-15


# ---- what a call that leaves options out gets, and what the trace records ---------------------------------------------
def _slow_linear(D=40, rho=0.97, seed=0):
    "z ↦ A z + b with a symmetric A of spectrum spread over [-rho, rho]."
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64, generator=g))
    A = Q @ torch.diag(torch.linspace(-rho, rho, D, dtype=torch.float64)) @ Q.T
    b = torch.randn(D, dtype=torch.float64, generator=g)
    return (lambda z: z @ A.T + b), torch.zeros(2, D, dtype=torch.float64)


def test_chain_newton_clips_secant_slopes_at_twice_the_ratio_by_default():
    "A linear chain x_i = 3 r_i x_{i+1} + c (r_i = 0.3): its slope 3 r_i is above the default clip 2 r_i, so clip matters."
    T, r = 30, torch.full((30,), 0.3, dtype=torch.float64)
    c = torch.linspace(-1, 1, 3, dtype=torch.float64)
    x_T = torch.ones(2, 3, dtype=torch.float64)
    f = lambda xs: 3 * r[:, None, None] * torch.cat([xs[1:], x_T[None]]) + c
    z0 = x_T.expand(T, 2, 3).clone()
    za, sa = chain_newton(f, z0, ratio=r, sample_dim=(0, 1))
    zb, sb = chain_newton(f, z0, ratio=r, sample_dim=(0, 1), clip=2.0)
    zc, sc = chain_newton(f, z0, ratio=r, sample_dim=(0, 1), clip=3.0)
    assert torch.equal(za, zb) and sa.residuals == sb.residuals and sa.converged and sc.converged
    assert sc.nfe < sa.nfe                              # the unclipped exact slope solves the linear chain sooner


@pytest.mark.parametrize("name", ["picard", "anderson", "broyden", "chain_newton"])
def test_callback_sees_every_round_in_order_with_its_residual(name):
    f, z0 = _slow_linear(D=6, rho=0.5)
    z0 = z0[:, None]                                    # (T=2, B=1, D) for chain_newton's states-first layout
    kw = dict(ratio=torch.full((2,), 0.5, dtype=torch.float64)) if name == "chain_newton" else {}
    seen = []
    _, st = get_solver(name)(f, z0, tol=1e-8, sample_dim=(0, 1),
                             callback=lambda k, z, fz, res: seen.append((k, res, torch.equal(fz, f(z)))), **kw)
    assert [k for k, _, _ in seen] == list(range(st.nfe)) and st.nfe >= 2
    assert [res for _, res, _ in seen] == st.residuals and all(ok for _, _, ok in seen)


def test_stop_mode_abs_records_the_absolute_residual_and_stops_strictly_below_tol():
    "f ≡ 0.5 from z0 = 0: the first residual is exactly 0.5 = tol, which is not below it; the second is 0."
    f, z0 = (lambda z: torch.full_like(z, 0.5)), torch.zeros(1, 1, dtype=torch.float64)
    _, st = picard(f, z0, tol=0.5, stop_mode="abs")
    assert st.residuals == st.abs_residuals == [0.5, 0.0] and st.nfe == 2 and st.converged
    _, st = picard(f, z0, tol=0.5)                      # rel: 0.5 / (1e-5 + 0.5), then 0
    assert st.residuals == st.rel_residuals and st.residuals[0] == pytest.approx(0.5 / (1e-5 + 0.5), rel=1e-12)


def test_diverged_only_when_the_run_ends_above_where_it_started():
    _, st = picard(lambda z: 0.5 * z + 1, torch.zeros(1, 3, dtype=torch.float64), max_iter=3, tol=1e-12)
    assert not st.converged and not st.diverged          # unconverged but shrinking
    _, st = picard(lambda z: z + 1, torch.zeros(1, 3, dtype=torch.float64), max_iter=3, tol=1e-12)
    assert not st.converged and not st.diverged          # a constant residual is not above where it started
    _, st = picard(lambda z: 2 * z + 1, torch.zeros(1, 3, dtype=torch.float64), max_iter=3, tol=1e-12)
    assert st.diverged


def test_solver_stats_repr_shows_the_last_residual():
    _, st = picard(lambda z: 0.5 * z + 1, torch.zeros(1, 3, dtype=torch.float64), max_iter=3, tol=1e-12)
    assert f"{st.residuals[-1]:.2e}" in repr(st) and f"{st.residuals[0]:.2e}" not in repr(st)
    from deq_ddim_nb.solvers import SolverStats
    assert "-" in repr(SolverStats("picard", "rel", 1e-3))


@pytest.mark.parametrize("name", ["picard", "chain_newton"])
def test_a_non_finite_value_stops_the_solver_with_the_best_finite_iterate(name):
    calls = []
    def f(z):
        calls.append(1)
        return torch.full_like(z, math.nan) if len(calls) == 3 else 0.5 * z + 1
    z0 = torch.zeros(2, 1, 3, dtype=torch.float64)
    kw = dict(ratio=torch.full((2,), 0.5, dtype=torch.float64)) if name == "chain_newton" else {}
    seen = []
    z, st = get_solver(name)(f, z0, tol=1e-12, sample_dim=(0, 1), callback=lambda k, z, fz, r: seen.append(fz), **kw)
    assert st.diverged and st.nfe == 3 and torch.isfinite(z).all()
    assert torch.equal(z, seen[st.best_index]) and st.best_index == 1      # f of the lowest-residual finite iterate


def test_triangular_anderson_keeps_the_images_of_a_batch_apart():
    "Groups (state, image) with the normal equations summed over later states only: image b's run is its own."
    A = torch.tensor([[0.3, 0.2, 0.0], [0.6, 0.3, 0.2], [0.1, 0.6, 0.3]], dtype=torch.float64)   # states mix; images do not
    f = lambda z: torch.tanh(torch.einsum("ij,jbd->ibd", A, z)) + torch.linspace(0.1, 0.3, z.shape[-1], dtype=z.dtype)
    z0 = torch.rand(3, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kw = dict(max_iter=7, tol=1e-300, group_dims=(0, 1), triangular=True)
    both, _ = anderson(f, z0, **kw)
    for b in range(2):
        alone, _ = anderson(f, z0[:, b:b + 1], **kw)
        assert torch.allclose(both[:, b:b + 1], alone, atol=1e-12, rtol=0), b


def test_anderson_with_restart_reaches_the_fixed_point():
    f, z0 = _slow_linear(D=20, rho=0.9)
    A, b = f(torch.eye(20, dtype=torch.float64)) - f(torch.zeros(1, 20, dtype=torch.float64)), f(torch.zeros(20, dtype=torch.float64))
    exact = torch.linalg.solve(torch.eye(20, dtype=torch.float64) - A.T, b)
    z, st = anderson(f, z0, restart=0.7, tol=1e-10, max_iter=250, sample_dim=0)
    _, plain = anderson(f, z0, tol=1e-10, max_iter=250, sample_dim=0)
    assert st.nfe != plain.nfe                                        # histories were dropped on the way
    z0_, st0 = anderson(f, z0, restart=0.7, restart_after=0, tol=1e-10, max_iter=250, sample_dim=0)
    assert st0.converged and torch.allclose(z0_, exact.expand_as(z0_), atol=1e-8, rtol=0)   # from round 0 on
    assert st.converged and torch.allclose(z, exact.expand_as(z), atol=1e-8, rtol=0)


def test_chain_slopes_without_sigma_are_the_deterministic_ones():
    from deq_ddim_nb.schedules import DDIMSchedule
    s = DDIMSchedule.make(10)
    for a, b in zip(chain_slopes(s.abar, s.abar_prev), chain_slopes(s.abar, s.abar_prev, torch.zeros(10, dtype=torch.float64))):
        assert torch.equal(a, b)


def test_residual_norms_take_negative_sample_dims_down_to_minus_ndim():
    from deq_ddim_nb.solvers import residual_norms
    z, fz = torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    assert residual_norms(fz, z, -2) == residual_norms(fz, z, 0)
    with pytest.raises(ValueError, match="sample_dim"): residual_norms(fz, z, -3)

import math
import pytest
import torch
from deq_ddim_nb.solvers import picard, anderson, broyden, get_solver

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


def test_anderson_and_broyden_beat_picard_on_ill_conditioned_contraction():
    D = 30
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64, generator=g))
    A = Q @ torch.diag(torch.linspace(-0.95, 0.95, D, dtype=torch.float64)) @ Q.T
    b = torch.randn(D, dtype=torch.float64, generator=g)
    f = lambda z: z @ A.T + b
    n = {s.__name__: s(f, torch.zeros(1, D, dtype=torch.float64), max_iter=2000, tol=1e-10, stop_mode="abs")[1].nfe for s in SOLVERS}
    assert n["anderson"] < n["picard"] / 2 and n["broyden"] < n["picard"] / 2, n


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


@pytest.mark.parametrize("kw,msg", [
    (dict(max_iter=0), "max_iter must be an int >= 1"),
    (dict(max_iter=2.5), "max_iter must be an int >= 1"),
    (dict(tol=0), "tol must be a number > 0"),
    (dict(tol=-1.0), "tol must be a number > 0"),
    (dict(tol=float("nan")), "tol must be a number > 0"),
    (dict(stop_mode="max"), "stop_mode must be one of"),
])
@pytest.mark.parametrize("solver", SOLVERS)
def test_bad_solver_args(solver, kw, msg):
    with pytest.raises(ValueError, match=msg):
        solver(torch.cos, torch.zeros(1, 2), **kw)


def test_unknown_solver_name():
    with pytest.raises(ValueError, match="solver must be one of"):
        get_solver("newton")


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
        with pytest.raises(ValueError, match="sample_dim must be"):
            residual_norms(fz, z, bad)

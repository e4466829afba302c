"""Property-based tests (Hypothesis): for any valid setting the sequential DDIM chain is a fixed point of the DEQ map
(Eq. 11 / 24), and any invalid input to the public entry points raises only ValueError/TypeError naming the parameter.
Bounded: 25 examples per property, no deadline; deterministic (derandomize) when the CI environment variable is set."""
import math
import os
import re
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from deq_ddim_nb.schedules import DDIMSchedule, SKIPS
from deq_ddim_nb.ddim import ddim_sample, ddim_step, draw_noise
from deq_ddim_nb.deq import deq_map, deq_sample, round_budget
from deq_ddim_nb.solvers import anderson, broyden, chain_newton, picard
from deq_ddim_nb.toy import GaussianMixtureEps, digits_eps

settings.register_profile("deq-ddim-dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("deq-ddim-ci", settings.get_profile("deq-ddim-dev"), derandomize=True)
PROFILE = settings(settings.get_profile("deq-ddim-ci" if os.environ.get("CI") else "deq-ddim-dev"))

DIGITS = digits_eps()                                                    # exact denoiser of the 8x8 digits
GMM = GaussianMixtureEps([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0], [0.0, -2.0, 0.5]], stds=[0.3, 0.5, 0.4])
MODELS = {"digits": (DIGITS, (1, 8, 8)), "gmm": (GMM, (3,))}
# relative tolerance of h(x) = x on the chain: the map recombines the chain's own terms (Eq. 10) with other roundings
TOL = {torch.float64: 1e-11, torch.float32: 1e-4}


# ---- (a) the sequential chain is a fixed point of the DEQ map ---------------------------------------------------
@PROFILE
@given(T=st.integers(1, 30), skip=st.sampled_from(SKIPS), eta=st.floats(0.0, 1.0),
       dtype=st.sampled_from([torch.float32, torch.float64]), B=st.integers(1, 3),
       model=st.sampled_from(sorted(MODELS)), seed=st.integers(0, 2**31 - 1))
def test_sequential_chain_is_a_fixed_point_of_deq_map(T, skip, eta, dtype, B, model, seed):
    eps_model, dims = MODELS[model]
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(B, *dims, generator=g, dtype=torch.float64).to(dtype)
    s = DDIMSchedule.make(T, skip=skip, eta=eta)
    noise = draw_noise(s, x_T, g) if eta > 0 else None
    x_0, xs = ddim_sample(eps_model, x_T, s, noise, return_traj=True)     # xs: (T + 1, B, *dims), xs[i] = x_i
    assert xs.dtype == dtype and torch.equal(xs[0], x_0) and torch.equal(xs[-1], x_T)
    h = deq_map(eps_model, xs[:-1], x_T, s, noise)                       # h~(x_{0:T-1}), Eq. (11) / (24)
    scale = torch.linalg.vector_norm(xs[:-1].double(), dim=tuple(range(1, xs.ndim))).clamp(min=1.0)
    r = (torch.linalg.vector_norm((h - xs[:-1]).double(), dim=tuple(range(1, xs.ndim))) / scale).max().item()
    assert r < TOL[dtype], f"residual {r:.2e} at T={T} skip={skip} eta={eta} {dtype} B={B} {model}"
    # and a perturbed trajectory is not a fixed point (the residual can fail)
    if T >= 2:
        bumped = xs[:-1].clone(); bumped[T // 2] += 0.5
        r_bad = torch.linalg.vector_norm((deq_map(eps_model, bumped, x_T, s, noise) - bumped).double()).item()
        assert r_bad > 1e-3


# ---- (b) invalid inputs raise only ValueError/TypeError naming the parameter ----------------------------------
def names(msg: str, name: str) -> bool:
    """Does the message name the parameter? It must open with it (after an optional "function: " prefix), quote it in
    backticks or show it as `name=value`; a mere occurrence of the letters (the "x" in "eps must have the shape of x")
    does not count."""
    return (bool(re.match(rf"(?:[\w.]+: )?{re.escape(name)}(?![\w])", msg)) or f"`{name}`" in msg
            or bool(re.search(rf"(?<![\w.]){re.escape(name)}=", msg)))          # "..., got beta_start=0.0"


def test_names_is_strict_about_which_parameter():
    assert names("x must be a real floating tensor", "x") and names("ddim_step: sigma > 0 needs `noise`", "noise")
    assert not names("eps must have the shape of x (2, 3)", "x") and not names("xs must have shape", "x")
    assert not names("max_iter must be >= 1", "m") and names("m (the history length) applies", "m")
    assert names("need 0 < beta_start <= beta_end < 1, got beta_start=0.0", "beta_start") and not names("got max_iter=3", "iter")


def _raises_naming(fn, name, exc=(ValueError, TypeError)):
    try:
        fn()
    except (ValueError, TypeError) as e:
        assert isinstance(e, exc), f"{name}: expected {exc}, got {type(e).__name__}: {e}"
        assert names(str(e), name), f"error does not name {name!r}: {type(e).__name__}: {e}"
        return
    raise AssertionError(f"no error for a bad {name}")


not_a_tensor = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=4),
                         st.lists(st.floats(-1, 1), min_size=1, max_size=3))
not_a_number = st.one_of(st.none(), st.text(max_size=4), st.lists(st.integers(), max_size=2), st.complex_numbers(max_magnitude=1, min_magnitude=0.1))
non_finite = st.sampled_from([float("nan"), float("inf"), -float("inf")])


@st.composite
def bad_state(draw, shape=(2, 1, 8, 8)):
    "A value that is not a finite float32/float64 tensor (B >= 1, *dims) of this shape family."
    kind = draw(st.sampled_from(["object", "dtype", "no_batch", "empty", "non_finite"]))
    if kind == "object": return draw(not_a_tensor)
    if kind == "dtype":
        return torch.zeros(shape, dtype=draw(st.sampled_from([torch.int64, torch.int32, torch.bool, torch.float16,
                                                              torch.bfloat16, torch.complex64, torch.complex128])))
    if kind == "no_batch": return torch.zeros(shape[1:][-1:], dtype=torch.float64)
    if kind == "empty": return torch.zeros((0, *shape[1:]), dtype=torch.float64)
    x = torch.zeros(shape, dtype=torch.float64)
    x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(non_finite)
    return x


def bad_schedule_kwargs():
    "(name, kwargs) pairs: one invalid argument of DDIMSchedule.make, the rest valid."
    return st.one_of(
        st.tuples(st.just("T"), st.one_of(st.integers(max_value=0), st.integers(1001, 10**9), st.floats(), st.booleans(),
                                          st.text(max_size=3), st.none()).map(lambda v: dict(T=v))),
        st.tuples(st.just("skip"), st.one_of(st.text(max_size=6).filter(lambda v: v not in SKIPS), st.integers(),
                                             st.none()).map(lambda v: dict(T=10, skip=v))),
        st.tuples(st.just("eta"), st.one_of(st.floats(max_value=-1e-9), non_finite, st.floats(5.0, 1e6), not_a_number,
                                            st.booleans()).map(lambda v: dict(T=10, eta=v))),
        st.tuples(st.just("n_train"), st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=3),
                                                st.booleans()).map(lambda v: dict(T=1, n_train=v))),
        st.tuples(st.just("beta_start"), st.one_of(st.floats(max_value=0.0), st.floats(0.021, 10.0), non_finite,
                                                   not_a_number).map(lambda v: dict(T=10, beta_start=v))),
        st.tuples(st.just("beta_end"), st.one_of(st.floats(max_value=9e-5), st.floats(min_value=1.0), non_finite,
                                                 not_a_number).map(lambda v: dict(T=10, beta_end=v))),
        st.tuples(st.just("beta_schedule"), st.one_of(st.text(max_size=6), st.integers(), st.none())
                  .filter(lambda v: v not in ("linear", "scaled_linear", "squaredcos_cap_v2"))
                  .map(lambda v: dict(T=10, beta_schedule=v))),
        st.tuples(st.just("dtype"), st.one_of(st.sampled_from([torch.int64, torch.bool, torch.complex64, "float64", None, float]))
                  .map(lambda v: dict(T=10, dtype=v))),
    )


@PROFILE
@given(case=bad_schedule_kwargs())
def test_schedule_make_bad_input_names_parameter(case):
    name, kw = case
    _raises_naming(lambda: DDIMSchedule.make(**kw), name)


X_T = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
S5, S5_ETA = DDIMSchedule.make(5), DDIMSchedule.make(5, eta=0.5)


@st.composite
def bad_noise(draw, T=5, shape=(2, 1, 8, 8)):
    kind = draw(st.sampled_from(["object", "dtype", "shape", "non_finite"]))
    if kind == "object": return draw(not_a_tensor.filter(lambda v: v is not None))
    if kind == "dtype": return torch.zeros((T, *shape), dtype=draw(st.sampled_from([torch.int64, torch.bool, torch.complex64])))
    if kind == "shape":
        bad = draw(st.lists(st.integers(0, 6), min_size=0, max_size=5).filter(lambda v: tuple(v) != (T, *shape)))
        return torch.zeros(bad, dtype=torch.float64)
    nz = torch.zeros((T, *shape), dtype=torch.float64)
    nz.view(-1)[draw(st.integers(0, nz.numel() - 1))] = draw(non_finite)
    return nz


bad_sched = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just({"T": 5}), st.just(torch.zeros(5)))


@PROFILE
@given(case=st.one_of(st.tuples(st.just("x_T"), bad_state()), st.tuples(st.just("sched"), bad_sched),
                      st.tuples(st.just("noise"), bad_noise())))
def test_ddim_sample_bad_input_names_parameter(case):
    name, v = case
    kw = dict(x_T=X_T, sched=S5_ETA, noise=None) | {name: v}
    _raises_naming(lambda: ddim_sample(DIGITS, kw["x_T"], kw["sched"], kw["noise"]), name)


XS = X_T.expand(5, *X_T.shape).clone()


@st.composite
def bad_xs(draw):
    kind = draw(st.sampled_from(["object", "shape", "dtype"]))
    if kind == "object": return draw(not_a_tensor)
    if kind == "shape":
        bad = draw(st.lists(st.integers(0, 6), min_size=0, max_size=5).filter(lambda v: tuple(v) != (5, 2, 1, 8, 8)))
        return torch.zeros(bad, dtype=torch.float64)
    return XS.to(draw(st.sampled_from([torch.float32, torch.int64, torch.complex128])))


@PROFILE
@given(case=st.one_of(st.tuples(st.just("xs"), bad_xs()), st.tuples(st.just("x_T"), bad_state()),
                      st.tuples(st.just("sched"), bad_sched), st.tuples(st.just("noise"), bad_noise())))
def test_deq_map_bad_input_names_parameter(case):
    name, v = case
    kw = dict(xs=XS, x_T=X_T, sched=S5_ETA, noise=torch.zeros(5, *X_T.shape, dtype=torch.float64)) | {name: v}
    _raises_naming(lambda: deq_map(DIGITS, kw["xs"], kw["x_T"], kw["sched"], kw["noise"]), name)


X, E = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
bad_tensor_arg = st.one_of(not_a_tensor, st.sampled_from([X.long(), X.to(torch.complex64), X[:, :2], X[0]]))
bad_abar = st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0 + 1e-9), non_finite, not_a_number, st.booleans())


@PROFILE
@given(case=st.one_of(
    st.tuples(st.just("x"), st.one_of(not_a_tensor, st.sampled_from([X.long(), X.to(torch.complex64)]))),
    st.tuples(st.just("eps"), bad_tensor_arg),
    st.tuples(st.just("abar"), bad_abar), st.tuples(st.just("abar_prev"), bad_abar),
    st.tuples(st.just("sigma"), st.one_of(st.floats(max_value=-1e-9), non_finite, not_a_number)),
    st.tuples(st.just("noise"), st.one_of(st.none(), bad_tensor_arg.filter(lambda v: v is not None)))))
def test_ddim_step_bad_input_names_parameter(case):
    name, v = case
    kw = dict(x=X, eps=E, abar=0.5, abar_prev=0.8, sigma=0.1, noise=torch.zeros_like(X)) | {name: v}
    if name == "x" and torch.is_tensor(v): kw["eps"] = torch.zeros(v.shape)   # the x dtype is what is wrong
    _raises_naming(lambda: ddim_step(**kw), name)


# ---- (c) deq_sample, round_budget and the solvers: one policy, TypeError for a type, ValueError for a value -----------
X1, S5 = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), DDIMSchedule.make(5)
wrong_type = st.one_of(st.none(), st.text(max_size=3), st.lists(st.integers(), max_size=2), st.booleans(),
                       st.complex_numbers(max_magnitude=1, min_magnitude=0.1))
# None is a valid "automatic" value for max_iter, m and max_batch: their wrong types are the others
int_wrong_type = st.one_of(wrong_type.filter(lambda v: v is not None), st.floats(allow_nan=False, allow_infinity=False))


def numeric_cases(name, bad_values, extra=None):
    "(name, value, expected exception, extra keyword arguments): a wrong type is a TypeError, a wrong number a ValueError."
    return st.one_of(st.tuples(st.just(name), wrong_type, st.just(TypeError), st.just(extra or {})),
                     st.tuples(st.just(name), bad_values, st.just(ValueError), st.just(extra or {})))


deq_cases = st.one_of(
    numeric_cases("tol", st.one_of(st.floats(max_value=0.0), non_finite)),
    st.tuples(st.just("max_iter"), int_wrong_type, st.just(TypeError), st.just({})),
    st.tuples(st.just("max_iter"), st.integers(max_value=0), st.just(ValueError), st.just({})),
    st.tuples(st.just("m"), int_wrong_type, st.just(TypeError), st.just(dict(solver="anderson"))),
    st.tuples(st.just("m"), st.integers(max_value=0), st.just(ValueError), st.just(dict(solver="anderson"))),
    st.tuples(st.just("m"), st.integers(1, 9), st.just(ValueError), st.sampled_from([dict(solver="picard"), dict(solver="auto")])),
    st.tuples(st.just("max_batch"), int_wrong_type, st.just(TypeError), st.just({})),
    st.tuples(st.just("max_batch"), st.integers(max_value=0), st.just(ValueError), st.just({})),
    st.tuples(st.just("solver"), st.text(max_size=8).filter(lambda v: v not in ("auto", "picard", "anderson", "broyden", "chain_newton")),
              st.just(ValueError), st.just({})),
    st.tuples(st.just("solver"), st.one_of(st.integers(), st.none(), st.floats()), st.just(TypeError), st.just({})),
    st.tuples(st.just("init"), st.text(max_size=6).filter(lambda v: v not in ("x_T", "zeros")), st.just(ValueError), st.just({})),
    st.tuples(st.just("init"), st.one_of(st.integers(), st.none(), st.floats()), st.just(TypeError), st.just({})),
    st.tuples(st.just("stop_mode"), st.text(max_size=4).filter(lambda v: v not in ("abs", "rel")), st.just(ValueError), st.just({})),
    st.tuples(st.just("devices"), st.one_of(st.just("cpu"), st.integers(), st.none().map(lambda _: "cuda:0")), st.just(TypeError), st.just({})),
    st.tuples(st.just("progress"), st.one_of(st.integers(), st.text(max_size=3)), st.just(TypeError), st.just({})),
)


@PROFILE
@given(case=deq_cases)
def test_deq_sample_bad_input_names_parameter_with_the_policy_type(case):
    name, v, exc, extra = case
    _raises_naming(lambda: deq_sample(DIGITS, X1, S5, **{**extra, name: v}), name, exc)


@PROFILE
@given(case=st.one_of(st.tuples(st.just("x_T"), bad_state(shape=(1, 1, 8, 8))), st.tuples(st.just("sched"), bad_sched),
                      st.tuples(st.just("noise"), bad_noise(shape=(1, 1, 8, 8)))))
def test_deq_sample_bad_tensors_name_the_parameter(case):
    name, v = case
    kw = dict(x_T=X1, sched=S5_ETA) | {name: v}
    _raises_naming(lambda: deq_sample(DIGITS, kw["x_T"], kw["sched"], noise=kw.get("noise")), name)


@PROFILE
@given(case=st.one_of(numeric_cases("eta", st.one_of(st.floats(max_value=-1e-9), non_finite)),
                      st.tuples(st.just("T"), int_wrong_type, st.just(TypeError), st.just({})),
                      st.tuples(st.just("T"), st.integers(max_value=0), st.just(ValueError), st.just({})),
                      st.tuples(st.just("batch"), st.integers(max_value=0), st.just(ValueError), st.just({}))))
def test_round_budget_bad_input_names_parameter(case):
    name, v, exc, _ = case
    kw = dict(T=10, batch=1, eta=0.0) | {name: v}
    _raises_naming(lambda: round_budget(**kw), name, exc)


@PROFILE
@given(solver=st.sampled_from([picard, anderson, broyden, chain_newton]),
       case=st.one_of(numeric_cases("tol", st.one_of(st.floats(max_value=0.0), non_finite)),
                      st.tuples(st.just("max_iter"), int_wrong_type, st.just(TypeError), st.just({})),
                      st.tuples(st.just("max_iter"), st.integers(max_value=0), st.just(ValueError), st.just({})),
                      st.tuples(st.just("stop_mode"), st.text(max_size=4).filter(lambda v: v not in ("abs", "rel")), st.just(ValueError), st.just({}))))
def test_solver_bad_input_names_parameter_with_the_policy_type(solver, case):
    name, v, exc, _ = case
    extra = dict(ratio=torch.ones(3)) if solver is chain_newton else {}
    _raises_naming(lambda: solver(torch.cos, torch.zeros(3, 2), **extra, **{name: v}), name, exc)

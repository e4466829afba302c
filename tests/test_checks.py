"Bad inputs stop with a ValueError/TypeError that names the parameter (deq_ddim_nb.checks and the schedule config)."
import json
import numpy as np
import pytest
import torch
from conftest import rel, randn
from deq_ddim_nb.schedules import DDIMSchedule, make_abar, make_betas
from deq_ddim_nb.ddim import ddim_sample, ddim_invert, ddim_step, draw_noise
from deq_ddim_nb.checks import call_eps, check_state, check_noise, check_int, check_number
from deq_ddim_nb.deq import deq_map, deq_sample


# ---- 1. non-finite injected noise ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_noise_rejected_by_samplers(digits_model, bad):
    x_T = randn(2, 1, 8, 8)
    s = DDIMSchedule.make(5, eta=0.5)
    nz = draw_noise(s, x_T, torch.Generator().manual_seed(0)); nz[3, 1, 0, 2, 2] = bad
    with pytest.raises(ValueError, match="noise contains non-finite"):
        ddim_sample(digits_model, x_T, s, nz)
    with pytest.raises(ValueError, match="noise contains non-finite"):
        deq_sample(digits_model, x_T, s, noise=nz, max_iter=2)
    with pytest.raises(ValueError, match="noise contains non-finite"):
        deq_map(digits_model, x_T.expand(5, *x_T.shape).clone(), x_T, s, nz)


def test_finite_noise_still_accepted(digits_model):
    x_T = randn(2, 1, 8, 8)
    s = DDIMSchedule.make(5, eta=0.5)
    nz = draw_noise(s, x_T, torch.Generator().manual_seed(0))
    assert torch.isfinite(ddim_sample(digits_model, x_T, s, nz)).all()


# ---- 2. empty batch --------------------------------------------------------------------------------
def test_empty_batch_rejected(digits_model):
    s = DDIMSchedule.make(5)
    empty = torch.zeros(0, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x_T must hold at least one sample \(B >= 1\)"):
        ddim_sample(digits_model, empty, s)
    with pytest.raises(ValueError, match="x_T must hold at least one sample"):
        deq_sample(digits_model, empty, s, max_iter=2)
    with pytest.raises(ValueError, match="x_0 must hold at least one sample"):
        ddim_invert(digits_model, empty, s)
    with pytest.raises(ValueError, match="x_T must not have an empty dimension"):
        ddim_sample(lambda x, t: x, torch.zeros(2, 0, dtype=torch.float64), s)


# ---- 3. dtypes: float32 or float64, as the message says ---------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64, torch.int64, torch.bool])
def test_state_dtype_must_be_float32_or_float64(digits_model, dtype):
    x_T = torch.zeros(2, 1, 8, 8, dtype=dtype)
    with pytest.raises(TypeError, match=r"x_T must be a floating tensor \(float32 or float64\), got dtype " + str(dtype)):
        ddim_sample(digits_model, x_T, DDIMSchedule.make(5))
    with pytest.raises(TypeError, match=r"x_0 must be a floating tensor \(float32 or float64\)"):
        ddim_invert(digits_model, x_T, DDIMSchedule.make(5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_states_accepted(digits_model, dtype):
    x0 = ddim_sample(digits_model, randn(2, 1, 8, 8).to(dtype), DDIMSchedule.make(5))
    assert x0.dtype == dtype and torch.isfinite(x0).all()


# ---- 4. complex / non-finite / non-floating eps -----------------------------------------------------
def test_complex_eps_rejected(digits_model):
    cplx = lambda x, t: digits_model(x, t).to(torch.complex128) * (1 + 1j)
    with pytest.raises(TypeError, match="eps_model must return a real floating tensor, got dtype torch.complex128"):
        ddim_sample(cplx, randn(2, 1, 8, 8), DDIMSchedule.make(5))
    with pytest.raises(TypeError, match="eps_model must return a real floating tensor"):
        deq_sample(cplx, randn(2, 1, 8, 8), DDIMSchedule.make(5), max_iter=2)


def test_integer_eps_rejected():
    with pytest.raises(TypeError, match="eps_model must return a real floating tensor, got dtype torch.int64"):
        ddim_sample(lambda x, t: x.long(), randn(2, 3), DDIMSchedule.make(5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_eps_names_timesteps(bad):
    model = lambda x, t: torch.where((t >= 600)[:, None], torch.full_like(x, bad), 0.1 * x)
    s = DDIMSchedule.make(5)                                               # timesteps 0, 200, 400, 600, 800
    with pytest.raises(ValueError, match=r"eps_model returned non-finite values \(NaN or inf\) at training timestep\(s\) \[800\]"):
        ddim_sample(model, randn(2, 3), s)                                 # the first call is at t = 800
    xs = randn(2, 3).expand(5, 2, 3).clone()
    with pytest.raises(ValueError, match=r"timestep\(s\) \[600, 800\]"):  # deq_map calls all states at once
        deq_map(model, xs, randn(2, 3), s)


def test_call_eps_casts_a_real_result_to_the_state_dtype():
    e = call_eps(lambda x, t: x.float() * 0.5, torch.ones(2, 3, dtype=torch.float64), torch.tensor([0, 1]))
    assert e.dtype == torch.float64 and torch.equal(e, torch.full((2, 3), 0.5, dtype=torch.float64))


# ---- 5. ODE inversion needs a deterministic schedule -------------------------------------------------
def test_ddim_invert_rejects_eta_positive(digits_model):
    x0 = ddim_sample(digits_model, randn(2, 1, 8, 8), DDIMSchedule.make(10))
    with pytest.raises(ValueError, match=r"sched must be deterministic \(eta = 0\) here, got eta=0.5"):
        ddim_invert(digits_model, x0, DDIMSchedule.make(10, eta=0.5))
    # eta = 0 still inverts: the round trip returns close to the start for this smooth-enough case
    s = DDIMSchedule.make(10)
    assert torch.isfinite(ddim_invert(digits_model, x0, s)).all()


# ---- 6. NumPy scalars wherever Python numbers are accepted -------------------------------------------
def test_numpy_scalars_accepted_by_schedule():
    a = DDIMSchedule.make(np.int64(20), skip=np.str_("quad"), eta=np.float64(0.5), n_train=np.int32(1000),
                          beta_start=np.float32(1e-4), beta_end=np.float64(0.02))
    b = DDIMSchedule.make(20, skip="quad", eta=0.5, n_train=1000, beta_start=1e-4, beta_end=0.02)
    assert type(a.n_train) is int and type(a.eta) is float and type(a.skip) is str and a.T == 20
    assert torch.equal(a.t, b.t) and torch.allclose(a.abar, b.abar, rtol=1e-6) and torch.allclose(a.sigma, b.sigma, rtol=1e-5)
    assert torch.equal(make_betas(np.int64(10), np.float64(1e-4), np.float64(0.02)), make_betas(10, 1e-4, 0.02))


def test_numpy_scalars_accepted_by_step_and_config(digits_model):
    x, e = randn(2, 3, seed=1), randn(2, 3, seed=2)
    assert torch.equal(ddim_step(x, e, np.float64(0.3), np.float32(0.5)), ddim_step(x, e, 0.3, float(np.float32(0.5))))
    cfg = dict(n_train=np.int64(1000), beta_start=np.float64(1e-4), beta_end=np.float64(0.02), beta_schedule="linear")
    assert torch.equal(DDIMSchedule.from_config(np.int64(10), cfg).abar, DDIMSchedule.make(10).abar)
    assert check_int("max_iter", np.int64(3), lo=1) == 3 and check_number("tol", np.float32(0.5), lo=0) == 0.5


@pytest.mark.parametrize("bad,exc", [(True, TypeError), (2.0, TypeError), ("5", TypeError), (np.float64(5.0), TypeError)])
def test_non_integer_T_still_rejected(bad, exc):
    with pytest.raises(exc, match="T must be an int"):
        DDIMSchedule.make(bad)


@pytest.mark.parametrize("bad", ["0.5", None, True, 1 + 1j])
def test_non_number_eta_rejected(bad):
    with pytest.raises(TypeError, match="eta must be a real number"):
        DDIMSchedule.make(5, eta=bad)


# ---- 7. from_config honours trained_betas; bad configs name the key ----------------------------------
def _betas(n=1000):
    return (np.linspace(1e-4 ** 0.5, 0.02 ** 0.5, n) ** 2 * 1.3).tolist()   # not any of the named schedules


def test_from_config_honours_trained_betas(tmp_path):
    b = _betas()
    sc = dict(_class_name="DDIMScheduler", num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
              beta_schedule="linear", trained_betas=b, prediction_type="v_prediction")
    (tmp_path / "scheduler_config.json").write_text(json.dumps(sc))
    sc = json.loads((tmp_path / "scheduler_config.json").read_text())       # as read from disk
    s = DDIMSchedule.from_config(20, sc, eta=0.3)
    abar_ref = np.cumprod(1 - np.asarray(b))                               # independent: NumPy product
    assert np.allclose(s.abar.numpy(), abar_ref[s.t.numpy()], rtol=1e-13, atol=0)
    assert s.abar_prev[0] == 1 and torch.equal(s.abar_prev[1:], s.abar[:-1])
    linear = DDIMSchedule.make(20).abar                                    # what it silently was before
    assert rel(s.abar, linear) > 1e-2
    # the model-config form (n_train, as load_model writes it) gives the same schedule
    s2 = DDIMSchedule.from_config(20, dict(n_train=1000, trained_betas=b, beta_schedule="linear"), eta=0.3)
    assert torch.equal(s.abar, s2.abar) and torch.equal(s.sigma, s2.sigma)
    # and DDIMSchedule.make takes the betas directly
    assert torch.equal(DDIMSchedule.make(20, trained_betas=torch.tensor(b, dtype=torch.float64), eta=0.3).abar, s.abar)


def test_from_config_trained_betas_sets_n_train():
    b = _betas(500)
    s = DDIMSchedule.from_config(10, dict(trained_betas=b))
    assert s.n_train == 500 and s.t.tolist() == list(range(0, 500, 50))
    assert torch.allclose(s.abar, make_abar(torch.tensor(b, dtype=torch.float64))[s.t], rtol=1e-14)


@pytest.mark.parametrize("betas,msg", [
    (_betas(999), r"config\['trained_betas'\] must have one value per training step \(n_train = 1000\), got 999"),
    (_betas()[:-1] + [float("nan")], r"config\['trained_betas'\] contains non-finite"),
    (_betas()[:-1] + [float("inf")], r"config\['trained_betas'\] contains non-finite"),
    (_betas()[:-1] + [1.0], r"config\['trained_betas'\] must lie in \(0, 1\)"),
    ([0.0] + _betas()[1:], r"config\['trained_betas'\] must lie in \(0, 1\)"),
    ([-0.1] + _betas()[1:], r"config\['trained_betas'\] must lie in \(0, 1\)"),
    ([[0.1, 0.2]] * 500, r"config\['trained_betas'\] must be a non-empty 1-D sequence"),
])
def test_bad_trained_betas_rejected(betas, msg):
    with pytest.raises(ValueError, match=msg):
        DDIMSchedule.from_config(10, dict(num_train_timesteps=1000, trained_betas=betas))


def test_non_numeric_trained_betas_rejected():
    with pytest.raises(TypeError, match=r"config\['trained_betas'\] must be a sequence of numbers"):
        DDIMSchedule.from_config(10, dict(trained_betas=["a"] * 1000))
    with pytest.raises(ValueError, match=r"trained_betas must have one value per training step"):
        DDIMSchedule.make(10, trained_betas=_betas(20))                     # n_train defaults to 1000


@pytest.mark.parametrize("cfg,exc,msg", [
    (dict(beta_schedule="sigmoid"), ValueError, r"config\['beta_schedule'\] must be one of"),
    (dict(beta_schedule=3), TypeError, r"config\['beta_schedule'\] must be one of"),
    (dict(beta_start="1e-4"), TypeError, r"config\['beta_start'\] must be a real number"),
    (dict(beta_end=[0.02]), TypeError, r"config\['beta_end'\] must be a real number"),
    (dict(beta_end=float("nan")), ValueError, r"config\['beta_end'\] must be finite"),
    (dict(n_train="1000"), TypeError, r"config\['n_train'\] must be an int"),
    (dict(n_train=1000.0), TypeError, r"config\['n_train'\] must be an int"),
    (dict(num_train_timesteps=0), ValueError, r"config\['num_train_timesteps'\] must be >= 1"),
    (dict(n_train=-5), ValueError, r"config\['n_train'\] must be >= 1"),
])
def test_bad_config_values_name_the_key(cfg, exc, msg):
    with pytest.raises(exc, match=msg):
        DDIMSchedule.from_config(5, cfg)


def test_config_must_be_a_mapping():
    with pytest.raises(TypeError, match="config must be a dict"):
        DDIMSchedule.from_config(5, [("n_train", 1000)])


def test_digits_model_config_still_works():
    from deq_ddim_nb.toy import digits_eps
    cfg = digits_eps().config                                              # n_train, beta_*, beta_schedule, sample_shape, name
    assert torch.equal(DDIMSchedule.from_config(10, cfg).abar, DDIMSchedule.make(10).abar)


# ---- ddim_step's own arguments -------------------------------------------------------------------------
@pytest.mark.parametrize("args,exc,msg", [
    (dict(x=[1.0]), TypeError, "x must be a real floating tensor"),
    (dict(eps=torch.zeros(2)), ValueError, "eps must have the shape of x"),
    (dict(abar=0.0), ValueError, r"abar must lie in \(0, 1\]"),
    (dict(abar_prev=1.2), ValueError, r"abar_prev must lie in \(0, 1\]"),
    (dict(abar="0.5"), TypeError, "abar must be a number"),
    (dict(sigma=-0.1), ValueError, "sigma must be >= 0"),
    (dict(sigma=0.1), ValueError, "needs `noise`"),
    (dict(sigma=0.1, noise=torch.zeros(3)), ValueError, "noise must have the shape of x"),
])
def test_ddim_step_bad_arguments(args, exc, msg):
    kw = dict(x=randn(2, 3), eps=randn(2, 3, seed=1), abar=0.5, abar_prev=0.8, sigma=0.0, noise=None) | args
    with pytest.raises(exc, match=msg):
        ddim_step(**kw)


def test_numpy_scalars_accepted_by_deq_sample(digits_model):
    import warnings
    x_T, s = randn(1, 1, 8, 8), DDIMSchedule.make(np.int64(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                    # a 3-round budget may not converge
        a, _ = deq_sample(digits_model, x_T, s, solver="anderson", max_iter=np.int64(3), tol=np.float64(1e-3), m=np.int64(3))
        b, _ = deq_sample(digits_model, x_T, s, solver="anderson", max_iter=3, tol=1e-3, m=3)
    assert torch.equal(a, b)


# --- arguments that must be callables, generators or bounded sizes (found by scripts/fuzz_api.py) ---

@pytest.mark.parametrize("bad", [None, 3, "eps"])
def test_a_model_that_cannot_be_called_is_named_eps_model(bad):
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    for call in (lambda: ddim_sample(bad, x, DDIMSchedule.make(5)), lambda: call_eps(bad, x, torch.tensor([1]))):
        with pytest.raises(TypeError, match="eps_model must be callable"): call()


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
@pytest.mark.parametrize("bad", ["x", 3])
def test_a_callback_that_cannot_be_called_is_named_callback(solver, bad):
    from deq_ddim_nb.solvers import get_solver
    with pytest.raises(TypeError, match="callback must be callable"):
        get_solver(solver)(lambda z: 0.5 * z, torch.zeros(3, 2), callback=bad)


def test_draw_noise_names_its_bad_arguments():
    x, s = torch.zeros(1, 1, 8, 8, dtype=torch.float64), DDIMSchedule.make(5, eta=0.5)
    with pytest.raises(TypeError, match="sched must be a DDIMSchedule"): draw_noise(5, x)
    with pytest.raises(TypeError, match="x_T must be a torch.Tensor"): draw_noise(s, [1.0])
    with pytest.raises(TypeError, match="x_T must be a floating tensor"): draw_noise(s, x.long())
    with pytest.raises(TypeError, match="generator must be a torch.Generator"): draw_noise(s, x, generator=3)
    assert draw_noise(s, x, torch.Generator().manual_seed(0)).shape == (5, 1, 1, 8, 8)


def test_n_train_has_an_upper_bound_named_in_the_error():
    from deq_ddim_nb.schedules import N_TRAIN_MAX, make_timesteps
    for call in (lambda n: make_betas(n), lambda n: DDIMSchedule.make(5, n_train=n), lambda n: make_timesteps(5, n_train=n)):
        with pytest.raises(ValueError, match=f"^n_train must be <= {N_TRAIN_MAX}"): call(N_TRAIN_MAX + 1)
    with pytest.raises(ValueError, match=rf"^config\['num_train_timesteps'\] must be <= {N_TRAIN_MAX}"):
        DDIMSchedule.from_config(5, dict(num_train_timesteps=N_TRAIN_MAX + 1))     # the config's own key is named
    assert len(make_betas(N_TRAIN_MAX)) == N_TRAIN_MAX


def test_deq_sample_names_a_callback_that_cannot_be_called_before_any_work():
    calls = []
    model = lambda x, t: calls.append(1) or 0 * x
    with pytest.raises(TypeError, match="callback must be callable"):
        deq_sample(model, torch.zeros(1, 1, 8, 8, dtype=torch.float64), DDIMSchedule.make(5), callback="x")
    assert not calls


@pytest.mark.parametrize("sampler", ["ddim_sample", "deq_sample", "window_sample"])
def test_samplers_name_a_generator_that_is_not_one_even_when_eta_is_zero(sampler):
    from deq_ddim_nb import ddim, deq, parallel
    fn = dict(ddim_sample=ddim.ddim_sample, deq_sample=deq.deq_sample, window_sample=parallel.window_sample)[sampler]
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        fn(lambda x, t: 0 * x, torch.zeros(1, 1, 8, 8, dtype=torch.float64), DDIMSchedule.make(5), generator=3)


@pytest.mark.parametrize("bad", ["x", [1.0], torch.zeros(2, 3, dtype=torch.long), torch.zeros(1, 3)])
def test_ddim_step_names_a_bad_noise_even_where_sigma_is_zero(bad):
    x = torch.zeros(2, 3)
    with pytest.raises((TypeError, ValueError), match="noise must"): ddim_step(x, x, 0.5, 0.8, 0.0, bad)


@pytest.mark.parametrize("bad", [None, 3])
def test_round_budget_names_a_solver_that_is_neither_a_name_nor_a_callable(bad):
    from deq_ddim_nb.deq import round_budget
    with pytest.raises(TypeError, match="solver must be"): round_budget(10, solver=bad)


def test_the_api_fuzz_finds_no_unnamed_error_and_no_raw_traceback(capsys):
    "scripts/fuzz_api.py: 729 bad-argument probes over 19 public functions; its exit status counts unnamed + raw outcomes."
    import importlib.util, pathlib
    path = pathlib.Path(__file__).parents[1] / "scripts" / "fuzz_api.py"
    spec = importlib.util.spec_from_file_location("fuzz_api", path)
    fuzz = importlib.util.module_from_spec(spec); spec.loader.exec_module(fuzz)
    status = fuzz.main(["--no-memory-limit"])
    table = capsys.readouterr().out
    assert status == 0, table
    total = table.split("\nall ")[1].split()[:5]                      # probes, clear error, accepted, unnamed, raw
    assert int(total[0]) >= 700 and total[3:] == ["0", "0"], table

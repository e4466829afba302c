"Model inversion: exact vs phantom gradients, invert() and its errors (file I/O is tested in test_files.py)."
import warnings
import pytest
import torch
from conftest import rel, randn
from deq_ddim_nb import inversion as inv
from deq_ddim_nb.inversion import DEQ_SOLVER, InversionResult, ift_grad, image_loss, invert, phantom_step
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.ddim import ddim_coeffs, ddim_invert, ddim_sample, draw_noise
from deq_ddim_nb.deq import deq_map, deq_sample
from deq_ddim_nb.toy import GaussianMixtureEps


@pytest.fixture(scope="module")
def gm():
    "A 2-D Gaussian mixture: smooth exact ε, so the chain's Jacobian is well defined (float64)."
    return GaussianMixtureEps(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 0.7]))


def _fixed_point(model, x_T, sched, noise=None):
    T = len(sched)
    _, info = deq_sample(model, x_T, sched, solver="picard", max_iter=T + 1, tol=1e-14, noise=noise)
    return info.xs


def _bptt_grad(model, x_T, sched, target, noise=None):
    x = x_T.clone().requires_grad_(True)
    image_loss(ddim_sample(model, x, sched, noise, enable_grad=True), target).sum().backward()
    return x.grad


@pytest.mark.parametrize("T,eta", [(10, 0.0), (20, 0.0), (20, 0.5)])
def test_eq15_ift_gradient_equals_bptt(gm, T, eta):
    s = DDIMSchedule.make(T, eta=eta)
    x_T, target = randn(4, 2, seed=1), gm.sample(4, generator=torch.Generator().manual_seed(2))
    noise = draw_noise(s, x_T, torch.Generator().manual_seed(3)) if eta else None
    gb = _bptt_grad(gm, x_T, s, target, noise)
    xs = _fixed_point(gm, x_T, s, noise)
    g = torch.zeros_like(xs); g[0] = 2 * (xs[0] - target)
    gi, stats = ift_grad(gm, xs, x_T, s, g, noise, solver="picard", tol=1e-13)
    assert stats.converged
    assert rel(gi, gb) < 1e-6, rel(gi, gb)


def test_eq15_ift_gradient_equals_bptt_for_a_loss_on_intermediate_states(gm):
    "∂L/∂x* with blocks at x_0 and x_3: the adjoint must carry x_3's gradient through the states it feeds (float64)."
    T = 10
    s = DDIMSchedule.make(T)
    x_T, target, c = randn(3, 2, seed=21), randn(3, 2, seed=22), randn(3, 2, seed=23)
    x = x_T.clone().requires_grad_(True)
    _, traj = ddim_sample(gm, x, s, return_traj=True, enable_grad=True)
    (image_loss(traj[0], target) + image_loss(traj[3], c)).sum().backward()
    xs = _fixed_point(gm, x_T, s)
    g = torch.zeros_like(xs); g[0] = 2 * (xs[0] - target); g[3] = 2 * (xs[3] - c)
    gi, stats = ift_grad(gm, xs, x_T, s, g, solver="picard", tol=1e-13)
    assert stats.converged and rel(gi, x.grad) < 1e-9, rel(gi, x.grad)


@pytest.mark.parametrize("tau", [0.1, 0.3, 1.0])
def test_eq18_phantom_k1_is_tau_times_the_vjp_of_the_map(gm, tau):
    "k = 1: ∂L/∂x_T = τ ∂L/∂x* ∂h̃(x*; x_T)/∂x_T, the VJP taken by autograd through deq_map at the fixed point."
    s = DDIMSchedule.make(12)
    x_T, target = randn(3, 2, seed=24), gm.sample(3, generator=torch.Generator().manual_seed(25))
    xs = _fixed_point(gm, x_T, s)
    x = x_T.clone().requires_grad_(True)
    image_loss(phantom_step(gm, xs, x, s, tau=tau, k=1)[0], target).sum().backward()
    g = torch.zeros_like(xs); g[0] = 2 * (xs[0] - target)
    xe = x_T.clone().requires_grad_(True)
    vjp = torch.autograd.grad(deq_map(gm, xs, xe, s), xe, g)[0]
    assert rel(x.grad, tau * vjp) < 1e-12


@pytest.mark.parametrize("k,tau", [(1, 0.1), (1, 0.3), (2, 0.3), (3, 0.5)])
def test_eq18_phantom_gradient_is_autograd_through_k_damped_steps(gm, k, tau):
    s = DDIMSchedule.make(10)
    x_T, target = randn(3, 2, seed=4), gm.sample(3, generator=torch.Generator().manual_seed(5))
    xs = _fixed_point(gm, x_T, s)
    ref = x_T.clone().requires_grad_(True)
    z = xs.detach()
    for _ in range(k): z = tau * deq_map(gm, z, ref, s) + (1 - tau) * z          # Eq. (18), the whole T·B graph
    image_loss(z[0], target).sum().backward()
    x = x_T.clone().requires_grad_(True)
    out = phantom_step(gm, xs, x, s, tau=tau, k=k)
    assert rel(out.detach(), xs) < 1e-12                                           # value: the fixed point
    image_loss(out[0], target).sum().backward()
    assert rel(x.grad, ref.grad) < 1e-10


def test_eq18_phantom_k1_closed_form(gm):
    "k = 1: ∂L/∂x_T = τ [ g / sqrt(a_T) + c_1^{(T)} / sqrt(a_{T-1}) J_ε(x_T)^T g ], g = ∂L/∂x_0."
    s, tau = DDIMSchedule.make(20), 0.1
    x_T, target = randn(3, 2, seed=6), gm.sample(3, generator=torch.Generator().manual_seed(7))
    xs = _fixed_point(gm, x_T, s)
    x = x_T.clone().requires_grad_(True)
    image_loss(phantom_step(gm, xs, x, s, tau=tau)[0], target).sum().backward()
    g = 2 * (xs[0] - target)
    xe = x_T.clone().requires_grad_(True)
    JTg = torch.autograd.grad(gm(xe, s.t[-1:].expand(3)), xe, g)[0]
    _, c1 = ddim_coeffs(s)
    closed = tau * (g / s.abar[-1].sqrt() + c1[-1] / s.abar_prev[-1].sqrt() * JTg)
    assert rel(x.grad, closed) < 1e-12


class Counter:
    "Wraps an eps_model and records (batch size, builds a graph) of every call."
    def __init__(self, model): self.model, self.calls, self.config = model, [], model.config
    def __call__(self, x, t):
        out = self.model(x, t)
        self.calls.append((len(x), out.requires_grad))
        return out


def test_phantom_makes_one_model_call_with_grad_on_B_images(gm):
    T, B, epochs = 20, 3, 4
    s = DDIMSchedule.make(T)
    target = gm.sample(B, generator=torch.Generator().manual_seed(8))
    c = Counter(gm)
    invert(c, target, s, method="deq", epochs=epochs, seed=0, init="random", progress=False)
    with_grad = [n for n, g in c.calls if g]
    assert with_grad == [B] * epochs                                                # one call per epoch, on B images
    c2 = Counter(gm)
    invert(c2, target, s, method="bptt", epochs=1, seed=0, init="random", progress=False)
    assert [n for n, g in c2.calls if g] == [B] * T                                 # BPTT: T calls with graph


@pytest.mark.parametrize("method,grad", [("deq", "phantom"), ("deq", "ift"), ("bptt", "phantom")])
def test_invert_reduces_loss_and_keeps_best(gm, method, grad):
    s = DDIMSchedule.make(10)
    target = gm.sample(3, generator=torch.Generator().manual_seed(9))
    r = invert(gm, target, s, method=method, grad=grad, lr=0.05, epochs=25, seed=0, init="random", progress=False,
               solver_kwargs=dict(solver="picard", max_iter=11, tol=1e-10))
    assert isinstance(r, InversionResult) and len(r.losses) == len(r.seconds) == 25 and r.image_losses.shape == (25, 3)
    assert r.final_loss.sum() < 0.7 * r.losses[0]
    assert all(a <= b for a, b in zip(r.seconds, r.seconds[1:]))
    best = r.image_losses.min(0).values
    torch.testing.assert_close(r.image_losses[r.best_epoch, torch.arange(3)], best.to(r.image_losses))
    # the returned x_T regenerates (sequential DDIM) the best loss seen
    torch.testing.assert_close(r.x_0, ddim_sample(gm, r.x_T, s))
    torch.testing.assert_close(r.final_loss, best.to(r.final_loss), rtol=1e-6, atol=1e-9)


def test_invert_ift_uses_the_exact_picard_adjoint_by_default(gm, monkeypatch):
    "grad='ift' solves Eq. (19) with Picard (exact in T products) unless backward_kwargs says otherwise."
    s = DDIMSchedule.make(10)
    target = gm.sample(2, generator=torch.Generator().manual_seed(12))
    seen, orig = [], inv.ift_grad
    def spy(*a, **kw): seen.append(kw.get("solver")); return orig(*a, **kw)
    monkeypatch.setattr(inv, "ift_grad", spy)
    invert(gm, target, s, method="deq", grad="ift", epochs=2, seed=0, init="random", progress=False)
    with warnings.catch_warnings():                                                # Broyden may stop short: not the point here
        warnings.simplefilter("ignore")
        invert(gm, target, s, method="deq", grad="ift", epochs=1, seed=0, init="random", progress=False,
               backward_kwargs=dict(solver="broyden"))
    assert seen == ["picard", "picard", "broyden"]


def test_seed_gives_the_same_random_latent_as_a_cpu_generator_on_every_call(gm):
    "seed=s draws x_T ~ N(0, I) from torch.Generator().manual_seed(s) on the CPU: the same x_T on every call and device."
    s = DDIMSchedule.make(10)
    target = gm.sample(2, generator=torch.Generator().manual_seed(10))
    expected = torch.randn(target.shape, generator=torch.Generator().manual_seed(3), dtype=target.dtype)
    first = lambda **kw: invert(gm, target, s, epochs=1, init="random", progress=False, **kw).x_T   # epoch 0's latent
    assert torch.equal(first(seed=3), expected)
    assert torch.equal(first(generator=torch.Generator("cpu").manual_seed(3)), expected)
    assert not torch.equal(first(seed=4), expected)
    a, b = (invert(gm, target, s, epochs=5, seed=3, init="random", progress=False) for _ in range(2))
    assert a.losses == b.losses and torch.equal(a.x_T, b.x_T)


def test_generator_is_advanced_not_reset(gm):
    "A generator passed in is used as it is: two calls with one generator draw two different latents."
    s = DDIMSchedule.make(10)
    target = gm.sample(2, generator=torch.Generator().manual_seed(10))
    gen = torch.Generator().manual_seed(5)
    r1, r2 = (invert(gm, target, s, epochs=1, init="random", generator=gen, progress=False) for _ in range(2))
    g2 = torch.Generator().manual_seed(5)
    e1 = torch.randn(target.shape, generator=g2, dtype=target.dtype); e2 = torch.randn(target.shape, generator=g2, dtype=target.dtype)
    assert torch.equal(r1.x_T, e1) and torch.equal(r2.x_T, e2)


def test_sddim_noise_comes_from_the_generator(gm):
    "η > 0 without `noise`: ε_{1:T} drawn once from the generator, before x_T (as draw_noise draws them)."
    s = DDIMSchedule.make(10, eta=0.5)
    target = gm.sample(2, generator=torch.Generator().manual_seed(10))
    r = invert(gm, target, s, epochs=1, init="random", seed=7, progress=False)
    g = torch.Generator().manual_seed(7)
    noise = draw_noise(s, target, g)
    assert torch.equal(r.noise, noise) and torch.equal(r.x_T, torch.randn(target.shape, generator=g, dtype=target.dtype))


def test_ode_method(gm):
    s = DDIMSchedule.make(20)
    target = gm.sample(3, generator=torch.Generator().manual_seed(11))
    r = invert(gm, target, s, method="ode", progress=False)
    assert r.epochs == 1 and r.grad is None
    torch.testing.assert_close(r.x_T, ddim_invert(gm, target, s))
    torch.testing.assert_close(r.x_0, ddim_sample(gm, r.x_T, s))
    torch.testing.assert_close(r.final_loss, image_loss(r.x_0, target))
    with pytest.raises(ValueError, match="eta=0"):
        invert(gm, target, DDIMSchedule.make(20, eta=0.5), method="ode", progress=False)


def test_ode_init_beats_random_init(gm):
    s = DDIMSchedule.make(20)
    target = gm.sample(3, generator=torch.Generator().manual_seed(12))
    r0 = invert(gm, target, s, epochs=1, init="ode", progress=False)
    r1 = invert(gm, target, s, epochs=1, init="random", seed=0, progress=False)
    assert r0.losses[0] < r1.losses[0]


def test_sddim_inversion_keeps_noise_fixed(gm):
    s = DDIMSchedule.make(10, eta=0.5)
    target = gm.sample(2, generator=torch.Generator().manual_seed(13))
    noise = randn(10, 2, 2, seed=14)
    r = invert(gm, target, s, noise=noise, lr=0.05, epochs=20, seed=0, progress=False,
               solver_kwargs=dict(solver="picard", max_iter=11, tol=1e-10))
    assert torch.equal(r.noise, noise)
    torch.testing.assert_close(r.x_0, ddim_sample(gm, r.x_T, s, noise))             # regenerated with the same noises
    assert r.losses[-1] < r.losses[0]
    r2 = invert(gm, target, s, epochs=2, seed=5, progress=False)                     # noise drawn once from the seed
    torch.testing.assert_close(r2.noise, invert(gm, target, s, epochs=2, seed=5, progress=False).noise)


def test_early_stopping(gm):
    s = DDIMSchedule.make(10)
    target = gm.sample(2, generator=torch.Generator().manual_seed(15))
    r = invert(gm, target, s, epochs=50, stop_loss=1e9, progress=False)
    assert r.stopped_early and r.epochs == 1
    r = invert(gm, target, s, epochs=50, progress=False, callback=lambda e, x, l: e == 2)
    assert r.stopped_early and r.epochs == 3
    r = invert(gm, target, s, epochs=4, stop_loss=0.0, progress=False)
    assert not r.stopped_early and r.epochs == 4


@pytest.mark.parametrize("kw,exc,name", [
    (dict(method="adam"), ValueError, "method"), (dict(method=1), TypeError, "method"),
    (dict(grad="exact"), ValueError, "grad"), (dict(grad=None), TypeError, "grad"),
    (dict(tau=0.0), ValueError, "tau"), (dict(tau=1.5), ValueError, "tau"), (dict(tau=float("nan")), ValueError, "tau"),
    (dict(tau=True), TypeError, "tau"), (dict(tau="0.1"), TypeError, "tau"),
    (dict(k=0), ValueError, "k"), (dict(k=1.5), TypeError, "k"), (dict(k=True), TypeError, "k"),
    (dict(lr=0.0), ValueError, "lr"), (dict(lr=-1e-3), ValueError, "lr"), (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr=float("inf")), ValueError, "lr"), (dict(lr=None), TypeError, "lr"),
    (dict(epochs=0), ValueError, "epochs"), (dict(epochs=2.0), TypeError, "epochs"),
    (dict(stop_loss=-1.0), ValueError, "stop_loss"), (dict(stop_loss=float("nan")), ValueError, "stop_loss"),
    (dict(stop_loss=float("inf")), ValueError, "stop_loss"), (dict(stop_loss="1"), TypeError, "stop_loss"),
    (dict(seed=1.5), TypeError, "seed"), (dict(seed="0"), TypeError, "seed"),
    (dict(generator=0), TypeError, "generator"), (dict(generator=torch.Generator(), seed=0), ValueError, "generator"),
    (dict(init="zeros"), ValueError, "init"), (dict(init=3), TypeError, "init"),
    (dict(init=torch.zeros(5, 2, dtype=torch.float64)), ValueError, "init"),
    (dict(init=torch.full((2, 2), float("nan"), dtype=torch.float64)), ValueError, "init"),
    (dict(noise=torch.zeros(3, 2, 2, dtype=torch.float64)), ValueError, "noise"), (dict(noise=[0.0]), TypeError, "noise"),
    (dict(solver_kwargs=[("tol", 1e-3)]), TypeError, "solver_kwargs"), (dict(backward_kwargs="picard"), TypeError, "backward_kwargs"),
    (dict(warm_start=1), TypeError, "warm_start"), (dict(progress="no"), TypeError, "progress"),
    (dict(max_batch=0), ValueError, "max_batch"), (dict(max_batch=2.5), TypeError, "max_batch"),
    (dict(callback=3), TypeError, "callback"),
])
def test_every_bad_argument_names_the_parameter_with_the_right_exception(gm, kw, exc, name):
    "The package's one policy (deq_ddim_nb.checks): a wrong type is a TypeError, a wrong value a ValueError, named."
    target, kw = gm.sample(2, generator=torch.Generator().manual_seed(0)), dict(kw)   # a copy: the parameters are reused
    with pytest.raises(exc, match=rf"\b{name}\b"):
        invert(gm, target, DDIMSchedule.make(10), epochs=kw.pop("epochs", 2), progress=False, **kw)


def test_bad_model_inputs_name_the_parameter(gm):
    with pytest.raises(TypeError, match="sched"):
        invert(gm, randn(2, 2), 10, epochs=1, progress=False)
    with pytest.raises(TypeError, match="x_target"):
        invert(gm, [[0.0, 0.0]], DDIMSchedule.make(10), epochs=1, progress=False)
    with pytest.raises(TypeError, match="x_target"):
        invert(gm, torch.zeros(2, 2, dtype=torch.int64), DDIMSchedule.make(10), epochs=1, progress=False)


def test_target_shape_must_match_model(gm):
    with pytest.raises(ValueError, match=r"sample_shape.*\(B, 2\)"):
        invert(gm, randn(2, 3), DDIMSchedule.make(10), epochs=1, progress=False)
    with pytest.raises(ValueError, match="batch dimension"):
        invert(gm, randn(2), DDIMSchedule.make(10), epochs=1, progress=False)
    with pytest.raises(TypeError, match="DDIMSchedule"):
        invert(gm, randn(2, 2), 10, epochs=1, progress=False)


def test_recorded_table3_results_are_complete_and_converged():
    """deq_ddim_nb/assets/results/inversion_table.json (what lesson 08 shows): Table 3 at T = 10, 20, 100 from a random x_T
    and from the ODE inversion, Fig. 8, and DEQ epochs whose loss is the sequential sample's."""
    from deq_ddim_nb.files import read_recorded
    tab = read_recorded("inversion_table.json")
    B = len(tab["targets"])
    assert B >= 10
    have = {(r["T"], r["method"], r.get("grad"), r["init"]) for r in tab["runs"]}
    for T in (10, 20, 100):
        assert (T, "ode", None, "ode") in have, T
        for init in ("random", "ode"):
            assert {(T, "bptt", None, init), (T, "deq", "phantom", init)} <= have, (T, init)
    for r in tab["runs"]:
        assert len(r["min_loss"]) == len(r["mse"]) == B and len(r["x_0"]) == B
        assert len(r["losses"]) == len(r["seconds"]) == r["epochs"] and all(len(l) == B for l in r["losses"])
        if r["method"] == "deq":
            assert all(r["converged"]) and len(r["true_losses"]) == r["epochs"]
            seen, true = torch.tensor(r["losses"]), torch.tensor(r["true_losses"])
            assert float(((seen - true).abs() / true).max()) < 1e-2, (r["T"], r["init"])
    assert {(r["lr"], r["grad"]) for r in tab["fig8"]} == {(lr, g) for lr in (0.001, 0.005, 0.01) for g in ("ift", "phantom")}


def test_recorded_memory_results_are_complete():
    from deq_ddim_nb.files import read_recorded
    rows = read_recorded("inversion_memory.csv")
    assert {(r["method"], int(r["T"])) for r in rows} >= {(m, T) for m in ("deq", "bptt") for T in (10, 20, 100)}


# --- invert: image targets, unconverged inner solves -----------------------------------------------------------------
class ImageEps:
    "A stand-in image model (1, 4, 4): a fixed linear ε, so a solve and a gradient are cheap."
    config = {"sample_shape": (1, 4, 4)}
    def __call__(self, x, t): return 0.3 * x


@pytest.mark.parametrize("bad,hint", [(200.0, "0..255 pixels"), (-3.0, "")])
def test_image_targets_outside_unit_range_raise(bad, hint):
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64); x[1, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"x_target must hold images in \[-1, 1\].*" + hint):
        invert(ImageEps(), x, DDIMSchedule.make(5), epochs=1, progress=False)


def test_image_target_in_range_and_non_finite():
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1
    assert invert(ImageEps(), x, DDIMSchedule.make(5), epochs=2, progress=False).epochs == 2
    x[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="x_target contains non-finite"):
        invert(ImageEps(), x, DDIMSchedule.make(5), epochs=1, progress=False)


def test_default_forward_solve_converges_at_T100_and_the_loss_is_the_samples(recwarn):
    """invert's defaults (DEQ_SOLVER) at T = 100 on a small model, the exact denoiser of the 8x8 digits: every epoch's
    solve converges, no warning, and every loss the optimiser saw is the loss of the sequential DDIM sample of that
    epoch's latent; the returned x_0 and final_loss are the sequential sample's."""
    from deq_ddim_nb.toy import digits_data, digits_eps
    model = digits_eps(8)
    target = digits_data(8, "test")[0][:3]
    s = DDIMSchedule.make(100)
    true = []
    def cb(epoch, x_T, l): true.append(image_loss(ddim_sample(model, x_T, s), target))
    warnings.simplefilter("always")
    r = invert(model, target, s, epochs=4, init="random", seed=0, progress=False, callback=cb)
    assert not [w for w in recwarn if "converge" in str(w.message)], [str(w.message) for w in recwarn]
    assert r.converged == [True] * 4 and max(r.rounds) < 100
    seen = r.image_losses.to(torch.float64)
    assert rel(seen, torch.stack(true)) < 1e-6
    torch.testing.assert_close(r.x_0, ddim_sample(model, r.x_T, s))
    torch.testing.assert_close(r.final_loss, image_loss(r.x_0, target))


def test_a_15_round_picard_solve_does_not_converge_at_T100():
    "The reason for DEQ_SOLVER: the small model of the test above needs more than 15 Picard rounds at T = 100."
    from deq_ddim_nb.toy import digits_data, digits_eps
    model = digits_eps(8)
    target = digits_data(8, "test")[0][:3]
    with pytest.warns(UserWarning, match="did not converge in 2 of 2 epochs"):
        invert(model, target, DDIMSchedule.make(100), epochs=2, init="random", seed=0, progress=False,
               solver_kwargs=dict(solver="picard", max_iter=15, tol=1e-2))


def test_unconverged_inner_solves_warn_once(gm):
    s = DDIMSchedule.make(10)
    target = gm.sample(2, generator=torch.Generator().manual_seed(16))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        invert(gm, target, s, epochs=4, seed=0, init="random", progress=False,
               solver_kwargs=dict(solver="picard", max_iter=2, tol=1e-12))
    msgs = [str(x.message) for x in w if issubclass(x.category, UserWarning)]
    assert len(msgs) == 1, msgs                                                      # aggregated: one per invert call
    assert "did not converge in 4 of 4 epochs" in msgs[0] and "max_iter" in msgs[0] and "worst final residual" in msgs[0]
    with warnings.catch_warnings(record=True) as w:                                 # converged: silent
        warnings.simplefilter("always")
        invert(gm, target, s, epochs=3, seed=0, init="random", progress=False,
               solver_kwargs=dict(solver="picard", max_iter=11, tol=1e-10))
    assert not [x for x in w if "converge" in str(x.message)]


def test_unconverged_adjoint_warns(gm):
    s = DDIMSchedule.make(10)
    target = gm.sample(2, generator=torch.Generator().manual_seed(17))
    with pytest.warns(UserWarning, match=r"IFT adjoint solve \(Eq. 19\) did not converge in 2 of 2 epochs"):
        invert(gm, target, s, grad="ift", epochs=2, seed=0, init="random", progress=False,
               solver_kwargs=dict(solver="picard", max_iter=11, tol=1e-10),
               backward_kwargs=dict(solver="picard", max_iter=2, tol=1e-12))


def test_file_names_still_importable_from_inversion():
    from deq_ddim_nb.inversion import load_target, save_inversion, to_png
    from deq_ddim_nb import files as io
    assert (load_target, save_inversion, to_png) == (io.load_target, io.save_inversion, io.to_png)


def test_numpy_scalars_are_numbers_for_invert():
    "NumPy scalars are accepted wherever Python numbers are (k, epochs, tau, lr, stop_loss, seed); bool is not."
    import numpy as np
    from deq_ddim_nb.inversion import _check_args
    assert _check_args("deq", "phantom", np.float32(0.1), np.int64(1), np.float32(0.01), np.int64(3), np.float32(0.5),
                       np.int64(0)) == pytest.approx((0.1, 1, 0.01, 3, 0.5, 0))
    with pytest.raises(TypeError, match="k"):
        _check_args("deq", "phantom", 0.1, True, 0.01, 3, None)
    with pytest.raises(ValueError, match="epochs"):
        _check_args("deq", "phantom", 0.1, 1, 0.01, np.int64(0), None)


# --- behaviour that the mutation run showed untested -----------------------------------------------------------------
def _naive_damped_steps(model, xs, x_T, sched, noise, tau, k):
    "k damped steps z <- tau h(z; x_T) + (1 - tau) z from the fixed point, by plain autograd through every step."
    z = xs.detach()
    for _ in range(k): z = tau * deq_map(model, z, x_T, sched, noise) + (1 - tau) * z
    return z


@pytest.mark.parametrize("case", ["ddim", "sddim", "v_prediction"])
@pytest.mark.parametrize("k", [1, 2])
def test_phantom_step_has_the_gradient_of_k_plain_damped_steps(gm, case, k):
    "Eq. (18)'s value is the fixed point and its gradient that of k damped steps of h̃ (with the noises, with the schedule's prediction)."
    s = {"ddim": DDIMSchedule.make(6), "sddim": DDIMSchedule.make(6, eta=0.5),
         "v_prediction": DDIMSchedule.make(6, prediction_type="v_prediction")}[case]
    x_T = randn(3, 2, seed=4)
    noise = draw_noise(s, x_T, torch.Generator().manual_seed(1)) if case == "sddim" else None
    xs = _fixed_point(gm, x_T, s, noise)
    w = randn(*xs.shape, seed=5)
    a, b = x_T.clone().requires_grad_(True), x_T.clone().requires_grad_(True)
    z = phantom_step(gm, xs, a, s, noise, tau=0.3, k=k)
    ref = _naive_damped_steps(gm, xs, b, s, noise, 0.3, k)
    assert rel(z.detach(), xs) < 1e-12                                  # the value stays the fixed point
    (z * w).sum().backward(); (ref * w).sum().backward()
    assert rel(a.grad, b.grad) < 1e-10


def test_phantom_step_damping_defaults_to_the_papers_tau():
    import inspect
    p = inspect.signature(phantom_step).parameters
    assert (p["tau"].default, p["k"].default) == (0.1, 1)


def test_ift_grad_solves_the_adjoint_per_image_with_the_callers_settings(gm, monkeypatch):
    "Anderson/Broyden get one group per image (group_dims=(1,)), per-image stopping, T + 1 rounds and every extra setting."
    from deq_ddim_nb import solvers
    seen = {}
    def spy(f, z0, **kw):
        seen.update(kw); return solvers.anderson(f, z0, **kw)
    monkeypatch.setitem(solvers.SOLVERS, "anderson", spy)
    s, x_T = DDIMSchedule.make(6), randn(3, 2, seed=4)
    xs = _fixed_point(gm, x_T, s)
    g, st = ift_grad(gm, xs, x_T, s, torch.ones_like(xs), stop_mode="abs", m=3)
    assert (seen["group_dims"], seen["sample_dim"], seen["max_iter"], seen["stop_mode"], seen["m"]) == ((1,), 1, 7, "abs", 3)
    seen.clear()
    ift_grad(gm, xs, x_T, s, torch.ones_like(xs), group_dims=(0, 1))
    assert seen["group_dims"] == (0, 1)                                 # a caller's grouping is kept
    with pytest.raises(ValueError, match="m must be >= 1"): ift_grad(gm, xs, x_T, s, torch.ones_like(xs), m=0)


def test_deterministic_is_the_same_schedule_with_eta_zero():
    s = DDIMSchedule.make(6, eta=0.7)
    d = inv.deterministic(s)
    assert d.eta == 0.0 and bool((d.sigma == 0).all()) and torch.equal(d.t, s.t) and torch.equal(d.abar, s.abar)


def test_invert_signature_is_the_documented_one():
    "The defaults API.md documents (tau, k, lr, epochs, stop_loss) and the ones its guide relies on (warm start, progress)."
    import inspect
    p = {k: v.default for k, v in inspect.signature(invert).parameters.items()}
    assert (p["method"], p["grad"], p["tau"], p["k"], p["lr"], p["epochs"], p["stop_loss"], p["noise"], p["generator"]) == \
           ("deq", "phantom", 0.1, 1, 0.01, 400, None, None, None)
    assert (p["warm_start"], p["progress"], p["init"], p["max_batch"]) == (True, True, "ode", None)


@pytest.mark.parametrize("method,grad", [("deq", "phantom"), ("deq", "ift"), ("bptt", "phantom"), ("ode", "phantom")])
def test_the_result_records_how_it_was_found(gm, method, grad):
    target = gm.sample(2, generator=torch.Generator().manual_seed(0))
    t0 = __import__("time").perf_counter()
    r = invert(gm, target, DDIMSchedule.make(6), method=method, grad=grad, tau=0.3, k=2, lr=0.05, epochs=3, seed=0,
               init="random", progress=False)
    wall = __import__("time").perf_counter() - t0
    phantom = method == "deq" and grad == "phantom"
    assert (r.method, r.grad) == (method, grad if method == "deq" else None)
    assert (r.tau, r.k) == ((0.3, 2) if phantom else (None, None))
    assert r.lr == (None if method == "ode" else 0.05)
    assert len(r.seconds) == r.epochs == len(r.image_losses) and r.image_losses.shape[1] == 2
    assert all(0 <= a <= b <= wall for a, b in zip(r.seconds, r.seconds[1:] + [wall]))    # cumulative wall time
    assert torch.allclose(r.image_losses.sum(1), torch.tensor(r.losses, dtype=r.image_losses.dtype))


@pytest.mark.parametrize("method,grad", [("bptt", "phantom"), ("deq", "ift")])
def test_with_eta_the_first_step_follows_the_exact_gradient_of_the_runs_noises(gm, method, grad):
    "Adam's first step is -lr · sign(gradient): with η > 0 it must be the gradient through the chain with the run's noises."
    s = DDIMSchedule.make(6, eta=0.8)
    target = gm.sample(8, generator=torch.Generator().manual_seed(0))
    x0 = randn(8, 2, seed=7)
    noise = draw_noise(s, x0, torch.Generator().manual_seed(3))
    steps = []
    r = invert(gm, target, s, method=method, grad=grad, lr=1e-3, epochs=2, init=x0, noise=noise, progress=False,
               backward_kwargs=dict(tol=1e-12), callback=lambda e, x, l: steps.append(x.clone()) and False)
    g = _bptt_grad(gm, x0, s, target, noise)
    assert torch.equal(r.noise, noise) and torch.equal(steps[0], x0)
    assert torch.allclose(steps[1], x0 - 1e-3 * torch.sign(g), rtol=0, atol=1e-8)


def test_invert_starts_from_a_given_tensor_in_the_targets_dtype_and_chunks_model_calls(gm):
    target = gm.sample(2, generator=torch.Generator().manual_seed(0))
    start, seen = randn(2, 2, seed=8).float(), []
    class Spy(torch.nn.Module):
        config = {}
        def forward(self, x, t): seen.append(len(x)); return gm(x, t)
    first = []
    r = invert(Spy(), target, DDIMSchedule.make(6), epochs=1, init=start, max_batch=3, progress=False,
               callback=lambda e, x, l: first.append((x.clone(), l.clone())) and False)
    assert r.x_T.dtype == target.dtype and torch.equal(first[0][0], start.to(target.dtype))
    assert max(seen) <= 3 and first[0][1].shape == (2,)                 # chunked calls; per-image losses to the callback
    lam = lambda x, t: gm(x, t)                                         # a model with no config attribute at all
    assert invert(lam, target, DDIMSchedule.make(6), epochs=1, progress=False, seed=0, init="random").x_T.shape == (2, 2)
    for bad in (torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), float("nan"), dtype=torch.float64)):
        with pytest.raises((TypeError, ValueError), match="init"): invert(gm, target, DDIMSchedule.make(6), init=bad, progress=False)


def test_a_target_just_outside_the_unit_range_is_accepted_for_an_image_model_and_beyond_the_margin_refused():
    class Img(torch.nn.Module):
        config = {"sample_shape": (1, 2, 2)}
        def forward(self, x, t): return 0 * x
    s = DDIMSchedule.make(4)
    ok = torch.tensor([[-1.0005, 1.0005, 0.0, 0.5]], dtype=torch.float64).reshape(1, 1, 2, 2)
    assert invert(Img(), ok, s, method="ode", progress=False).x_T.shape == (1, 1, 2, 2)
    for v in (-1.002, 1.002):
        bad = ok.clone(); bad[0, 0, 0, 0] = v
        with pytest.raises(ValueError, match="x_target"): invert(Img(), bad, s, method="ode", progress=False)


def test_the_adjoint_solve_gets_the_gradient_of_eq_14_at_x0_only(gm, monkeypatch):
    "grad='ift' hands ift_grad ∂L/∂x* of Eq. (14): 2 (x*_0 − target) at x_0 and zero at every other state."
    seen = []
    real = inv.ift_grad
    def spy(model, xs, x_T, sched, g, noise=None, **kw):
        seen.append((xs.detach().clone(), g.detach().clone())); return real(model, xs, x_T, sched, g, noise, **kw)
    monkeypatch.setattr(inv, "ift_grad", spy)
    target = gm.sample(3, generator=torch.Generator().manual_seed(0))
    invert(gm, target, DDIMSchedule.make(6), grad="ift", epochs=2, seed=0, init="random", progress=False)
    assert len(seen) == 2
    for xs, g in seen:
        assert torch.equal(g[0], 2 * (xs[0] - target)) and not bool(g[1:].any())


def test_a_random_start_without_a_seed_draws_from_the_global_generator_on_the_cpu(gm):
    target = gm.sample(2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(11); a = invert(gm, target, DDIMSchedule.make(6), epochs=1, init="random", progress=False)
    torch.manual_seed(11); b = invert(gm, target, DDIMSchedule.make(6), epochs=1, init="random", progress=False)
    assert torch.equal(a.x_T, b.x_T) and a.x_T.device.type == "cpu"


# ---- options reach the solve: tau and k, warm starts, stop_loss, max_batch; the ODE result ---------------------------
def _small_inversion(gm, **kw):
    s = DDIMSchedule.make(8)
    target = gm.sample(2, generator=torch.Generator().manual_seed(31))
    base = dict(lr=0.05, epochs=4, seed=0, init="random", progress=False)
    return invert(gm, target, s, **{**base, **kw})


def test_invert_passes_tau_and_k_to_the_phantom_gradient(gm):
    "Adam rescales the gradient, so τ moves the losses only slightly; but a τ or k that is dropped moves nothing."
    a, b, c = _small_inversion(gm), _small_inversion(gm, tau=1.0), _small_inversion(gm, k=3)
    assert a.losses != b.losses and a.losses != c.losses and a.losses == _small_inversion(gm, tau=0.1, k=1).losses


def test_invert_warm_starts_each_solve_from_the_previous_trajectory(gm, monkeypatch):
    seen, orig = [], inv.deq_sample
    def spy(*a, **kw): seen.append(kw.get("init")); return orig(*a, **kw)
    monkeypatch.setattr(inv, "deq_sample", spy)
    _small_inversion(gm)
    assert seen[0] == "x_T" and len(seen) == 4 and all(torch.is_tensor(z) and z.shape == (8, 2, 2) for z in seen[1:])
    seen.clear(); _small_inversion(gm, warm_start=False)
    assert seen == ["x_T"] * 4


def test_invert_stops_once_every_loss_is_at_most_stop_loss(gm):
    full = _small_inversion(gm, epochs=5)
    at = float(full.image_losses[1].max())                            # epoch 1's worst image, exactly
    r = _small_inversion(gm, epochs=5, stop_loss=at)
    assert len(r.losses) == 2 and r.stopped_early


@pytest.mark.parametrize("kw, exc, msg", [(dict(max_batch=0), ValueError, "max_batch"),
                                         (dict(progress="yes"), TypeError, "progress")])
def test_invert_names_a_bad_max_batch_or_progress(gm, kw, exc, msg):
    with pytest.raises(exc, match=f"^{msg}"): _small_inversion(gm, **kw)


def test_invert_accepts_max_batch_1_and_gives_the_same_result(gm):
    a, b = _small_inversion(gm), _small_inversion(gm, max_batch=1)
    torch.testing.assert_close(a.x_T, b.x_T, rtol=1e-10, atol=1e-12)


def test_ode_inversion_returns_epoch_zero_for_every_image(gm):
    r = _small_inversion(gm, method="ode", init="ode")
    assert r.best_epoch.dtype == torch.long and torch.equal(r.best_epoch, torch.zeros(2, dtype=torch.long))
    assert "InversionResult(" in repr(r)


def test_invert_accepts_an_image_exactly_at_the_edge_of_the_allowed_range(digits_model):
    "Images are in [-1, 1] with a 1e-3 allowance: the edges themselves are accepted, a hair beyond is refused."
    edge64 = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    edge64[0, 0, 0, 0], edge64[0, 0, 0, 1] = -1 - 1e-3, 1 + 1e-3
    s = DDIMSchedule.make(4)
    r = invert(digits_model, edge64, s, method="ode", init="ode", progress=False)
    assert r.x_T.shape == edge64.shape
    for v in (-1 - 2e-3, 1 + 2e-3):
        bad = edge64.clone(); bad[0, 0, 1, 1] = v
        with pytest.raises(ValueError, match="x_target must hold images in \\[-1, 1\\]"):
            invert(digits_model, bad, s, method="ode", init="ode", progress=False)


def test_invert_shows_a_progress_bar_by_default(gm, capsys):
    s, target = DDIMSchedule.make(4), gm.sample(1, generator=torch.Generator().manual_seed(5))
    invert(gm, target, s, epochs=2, seed=0)
    assert "2/2" in capsys.readouterr().err
    invert(gm, target, s, epochs=2, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_ift_grad_gives_broyden_and_anderson_one_group_per_image(gm, monkeypatch):
    from deq_ddim_nb import solvers
    seen = {}
    for name in ("anderson", "broyden"):
        orig = solvers.SOLVERS[name]
        def spy(*a, _orig=orig, _name=name, **kw): seen[_name] = kw.get("group_dims"); return _orig(*a, **kw)
        monkeypatch.setitem(solvers.SOLVERS, name, spy)
    s = DDIMSchedule.make(6)
    x_T, target = randn(2, 2, seed=3), gm.sample(2, generator=torch.Generator().manual_seed(4))
    xs = _fixed_point(gm, x_T, s)
    g = torch.zeros_like(xs); g[0] = 2 * (xs[0] - target)
    for name in ("anderson", "broyden"): ift_grad(gm, xs, x_T, s, g, solver=name, tol=1e-8)
    assert seen == {"anderson": (1,), "broyden": (1,)}


def test_stochastic_inversion_with_the_phantom_gradient_uses_its_fixed_noises(gm):
    "Algorithm 4: with η > 0 the noises are drawn once and every epoch's phantom step sees them (a run is repeatable)."
    s = DDIMSchedule.make(8, eta=0.5)
    target = gm.sample(2, generator=torch.Generator().manual_seed(7))
    noise = draw_noise(s, target, torch.Generator().manual_seed(8))
    a = invert(gm, target, s, noise=noise, lr=0.05, epochs=5, seed=0, init="random", progress=False)
    assert a.losses[-1] < a.losses[0] and torch.equal(a.noise, noise)
    xs = _fixed_point(gm, a.x_T, s, noise)
    torch.testing.assert_close(a.x_0, ddim_sample(gm, a.x_T, s, noise))   # x_0 is the sample with those noises
    assert rel(xs[0], a.x_0) < 1e-10

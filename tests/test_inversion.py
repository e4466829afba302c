"Model inversion (issue 4): exact vs phantom gradients, invert(), load_target / save_inversion."
import os
import numpy as np
import pytest
import torch
from conftest import rel, randn
from deq_ddim_nb import inversion as inv
from deq_ddim_nb.inversion import (InversionResult, ift_grad, image_loss, invert, load_target, phantom_step,
                                   save_inversion)
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
    invert(gm, target, s, method="deq", grad="ift", epochs=1, seed=0, init="random", progress=False,
           backward_kwargs=dict(solver="broyden"))
    assert seen == ["picard", "picard", "broyden"]


def test_invert_seed_is_reproducible(gm):
    s = DDIMSchedule.make(10)
    target = gm.sample(2, generator=torch.Generator().manual_seed(10))
    a, b = (invert(gm, target, s, epochs=5, seed=3, init="random", progress=False) for _ in range(2))
    assert a.losses == b.losses and torch.equal(a.x_T, b.x_T)
    c = invert(gm, target, s, epochs=5, seed=4, init="random", progress=False)
    assert c.losses != a.losses


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


@pytest.mark.parametrize("kw,match", [
    (dict(method="adam"), "method must be one of"), (dict(grad="exact"), "grad must be one of"),
    (dict(tau=0.0), r"tau .* \(0, 1\]"), (dict(tau=1.5), r"tau .* \(0, 1\]"), (dict(k=0), "k .* >= 1"),
    (dict(k=1.5), "k .* >= 1"), (dict(lr=0.0), "lr must be"), (dict(lr=-1e-3), "lr must be"),
    (dict(epochs=0), "epochs must be"), (dict(stop_loss=-1.0), "stop_loss"), (dict(init="zeros"), "init must be"),
    (dict(init=torch.zeros(5, 2, dtype=torch.float64)), "init tensor"),
])
def test_bad_arguments(gm, kw, match):
    target = gm.sample(2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        invert(gm, target, DDIMSchedule.make(10), epochs=kw.pop("epochs", 2), progress=False, **kw)


def test_target_shape_must_match_model(gm):
    with pytest.raises(ValueError, match=r"sample_shape.*\(B, 2\)"):
        invert(gm, randn(2, 3), DDIMSchedule.make(10), epochs=1, progress=False)
    with pytest.raises(ValueError, match="batch dimension"):
        invert(gm, randn(2), DDIMSchedule.make(10), epochs=1, progress=False)
    with pytest.raises(TypeError, match="DDIMSchedule"):
        invert(gm, randn(2, 2), 10, epochs=1, progress=False)


# --- load_target / save_inversion -------------------------------------------------------------------------------------

def _png(path, size=(16, 16), mode="L"):
    from PIL import Image
    Image.new(mode, size, color=128 if mode == "L" else (10, 20, 30)).save(path)
    return path


def test_load_target_good_inputs(tmp_path):
    x = load_target(0, (1, 16, 16))
    assert x.shape == (1, 1, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    from deq_ddim_nb.toy import digits_data
    torch.testing.assert_close(x, digits_data(16, "test", torch.float32)[0][:1])
    p = load_target(_png(tmp_path / "a.png"), (1, 16, 16))
    torch.testing.assert_close(p, torch.full((1, 1, 16, 16), 128 / 255 * 2 - 1))
    np.save(tmp_path / "a.npy", x[0].numpy())
    torch.testing.assert_close(load_target(tmp_path / "a.npy", (1, 16, 16)), x)
    torch.save(x, tmp_path / "a.pt")
    torch.testing.assert_close(load_target(str(tmp_path / "a.pt"), (1, 16, 16)), x)
    assert load_target(_png(tmp_path / "c.png", (8, 8), "RGB"), (3, 8, 8)).shape == (1, 3, 8, 8)


def test_load_target_bad_inputs(tmp_path):
    accepted = r"16x16 grayscale image \(PNG/JPEG\) or a \.npy/\.pt tensor of shape \(1,16,16\)"
    with pytest.raises(ValueError, match=r"20x16 pixels.*" + accepted):
        load_target(_png(tmp_path / "big.png", (20, 16)), (1, 16, 16))
    with pytest.raises(ValueError, match="RGB image with the wrong channels.*" + accepted):
        load_target(_png(tmp_path / "rgb.png", mode="RGB"), (1, 16, 16))
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="not a readable image.*" + accepted):
        load_target(tmp_path / "junk.png", (1, 16, 16))
    np.save(tmp_path / "shape.npy", np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 16, 16\).*" + accepted):
        load_target(tmp_path / "shape.npy", (1, 16, 16))
    np.save(tmp_path / "range.npy", np.full((1, 16, 16), 200, np.float32))
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        load_target(tmp_path / "range.npy", (1, 16, 16))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not read"):
        load_target(tmp_path / "bad.npy", (1, 16, 16))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_target(tmp_path / "missing.png", (1, 16, 16))
    with pytest.raises(ValueError, match=r"digit index must be in \[0, 179\]"):
        load_target(10_000, (1, 16, 16))
    with pytest.raises(ValueError, match="held-out digits are"):
        load_target(3, (3, 32, 32))
    with pytest.raises(TypeError, match="path or an int"):
        load_target(2.5, (1, 16, 16))


def _result(B=2):
    x = torch.rand(B, 1, 16, 16) * 2 - 1
    return InversionResult(x_T=torch.randn(B, 1, 16, 16), x_0=x, losses=[1.0], seconds=[0.1],
                           image_losses=torch.ones(1, B), best_epoch=torch.zeros(B, dtype=torch.long),
                           final_loss=torch.ones(B))


def test_save_inversion_writes_and_refuses_overwrite(tmp_path):
    from PIL import Image
    r = _result()
    paths = save_inversion(tmp_path / "out", r)
    torch.testing.assert_close(torch.load(paths["x_T"], weights_only=True), r.x_T)
    im = Image.open(paths["regenerated"])
    assert im.mode == "L" and im.size == (32, 16)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_inversion(tmp_path / "out", _result())
    torch.testing.assert_close(torch.load(paths["x_T"], weights_only=True), r.x_T)    # untouched
    r2 = _result()
    save_inversion(tmp_path / "out", r2, overwrite=True)
    torch.testing.assert_close(torch.load(paths["x_T"], weights_only=True), r2.x_T)


def test_save_inversion_is_atomic(tmp_path, monkeypatch):
    r = _result()
    def boom(x, path):
        with open(path, "wb") as f: f.write(b"half a PNG")
        raise OSError("disk full")
    monkeypatch.setattr(inv, "to_png", boom)
    with pytest.raises(OSError, match="disk full"):
        save_inversion(tmp_path, r)
    assert sorted(os.listdir(tmp_path)) == []                                        # nothing half-written, no temporaries
    monkeypatch.undo()
    save_inversion(tmp_path, r)
    old = torch.load(tmp_path / "x_T.pt", weights_only=True)
    monkeypatch.setattr(inv, "to_png", boom)
    with pytest.raises(OSError):
        save_inversion(tmp_path, _result(), overwrite=True)
    torch.testing.assert_close(torch.load(tmp_path / "x_T.pt", weights_only=True), old)   # old files intact
    assert sorted(os.listdir(tmp_path)) == ["regenerated.png", "x_T.pt"]


RESULTS = os.path.join(os.path.dirname(__file__), "..", "bench", "results")


def test_saved_table3_results_are_complete():
    "bench/results/inversion_table.json (what notebook 08 plots) holds Table 3 for T = 10, 20, 100 and Fig. 8."
    import json
    path = os.path.join(RESULTS, "inversion_table.json")
    if not os.path.exists(path): pytest.skip("no saved inversion results")
    tab = json.load(open(path))
    B = len(tab["targets"])
    assert B >= 10
    have = {(r["T"], r["method"], r.get("grad"), r["init"]) for r in tab["runs"]}
    for T in (10, 20, 100):
        assert {(T, "ode", None, "ode"), (T, "bptt", None, "ode"), (T, "deq", "phantom", "ode")} <= have, T
    for r in tab["runs"]:
        assert len(r["min_loss"]) == len(r["mse"]) == B and len(r["x_0"]) == B
        assert len(r["losses"]) == len(r["seconds"]) == r["epochs"] and all(len(l) == B for l in r["losses"])
    assert {(r["lr"], r["grad"]) for r in tab["fig8"]} == {(lr, g) for lr in (0.001, 0.005, 0.01) for g in ("ift", "phantom")}

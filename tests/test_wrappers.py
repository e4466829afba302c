"""deq_ddim_nb.wrappers: how the samplers call a model. Chunking and sharding give the model's own ε; replicas are made
once per model and device and refreshed when the weights change; the dtype policy (states follow the model's dtype,
half-precision models run with float32 states, a float32/float64 mismatch is a TypeError naming x_T and the fix)."""
import copy
import re
import warnings
import pytest
import torch
from conftest import rel, randn
from deq_ddim_nb.schedules import DDIMSchedule
from deq_ddim_nb.ddim import ddim_sample
from deq_ddim_nb.deq import deq_sample
from deq_ddim_nb import wrappers
from deq_ddim_nb.wrappers import (CastEps, ChunkedEps, ShardedEps, check_model_dtype, model_device, model_dtype, replica,
                                  wrap_model)


class TinyEps(torch.nn.Module):
    "A small convolutional ε-model in the samplers' form (x, t) -> eps, with a timestep embedding so t matters."
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.emb = torch.nn.Embedding(1000, 1)
        with torch.no_grad():
            self.conv.weight.copy_(0.1 * torch.randn(self.conv.weight.shape, generator=g))
            self.emb.weight.copy_(0.01 * torch.randn(self.emb.weight.shape, generator=g))
            self.conv.bias.copy_(0.01 * torch.randn(self.conv.bias.shape, generator=g))   # every weight seeded
    def forward(self, x, t):
        return self.conv(x) + self.emb(t).view(-1, 1, 1, 1)


@pytest.fixture(scope="module")
def unet():
    from deq_ddim_nb.models import load_model
    return load_model("digits")


# ---- chunking and sharding: the same ε as one call -----------------------------------------------------------------
def test_chunked_eps_equals_one_call_and_caps_every_call():
    net, sizes = TinyEps(), []
    def counting(x, t):
        sizes.append(len(x)); return net(x, t)
    x, t = randn(23, 1, 8, 8, dtype=torch.float32), torch.arange(23) * 40
    with torch.no_grad():
        ref = net(x, t)
        for cap in (1, 5, 23, 64):
            sizes.clear()
            assert rel(ChunkedEps(counting, cap)(x, t), ref) < 1e-6 and max(sizes) <= cap and sum(sizes) == 23


def test_sharded_eps_equals_one_call_on_uneven_splits():
    net = TinyEps()
    x, t = randn(7, 1, 8, 8, dtype=torch.float32), torch.arange(7) * 100
    with torch.no_grad():
        ref = net(x, t)
        for n in (1, 2, 3, 7, 9):                       # 9 shards of 7 states: two are empty
            assert rel(ShardedEps(net, ["cpu"] * n)(x, t), ref) < 1e-6, n


# ---- replicas: made once per model and device, refreshed when the weights change -------------------------------------
def test_no_copy_on_the_model_s_own_device(monkeypatch):
    calls = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: calls.append(1) or real(*a, **k))
    net = TinyEps()
    x, t = randn(6, 1, 8, 8, dtype=torch.float32), torch.arange(6)
    with torch.no_grad():
        for _ in range(3): wrap_model(net, devices=["cpu", "cpu"])(x, t)
    assert replica(net, "cpu") is net and calls == []


def test_replica_on_another_device_is_made_once_and_refreshed_when_the_weights_change(monkeypatch):
    calls = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: calls.append(1) or real(*a, **k))
    net = TinyEps()
    r1 = replica(net, "meta")                           # "meta": a second device that every machine has
    assert r1 is not net and model_device(r1) == torch.device("meta") and replica(net, "meta") is r1 and len(calls) == 1
    with torch.no_grad(): net.conv.weight.mul_(1.0)     # an in-place update (an optimiser step) bumps the version
    r2 = replica(net, "meta")
    assert r2 is not r1 and replica(net, "meta") is r2 and len(calls) == 2
    net.load_state_dict(TinyEps().state_dict())         # new weights copied in: refreshed as well
    assert replica(net, "meta") is not r2 and len(calls) == 3


def test_wrap_model_returns_the_same_wrapper_for_the_same_arguments():
    net = TinyEps()
    a = wrap_model(net, devices=["cpu", "cpu"], max_batch=4, state_dtype=torch.float32)
    assert a is wrap_model(net, devices=["cpu", "cpu"], max_batch=4, state_dtype=torch.float32)
    assert a is not wrap_model(net, devices=["cpu", "cpu"], max_batch=5, state_dtype=torch.float32)
    assert wrap_model(net) is net and wrap_model(net, state_dtype=torch.float32) is net       # nothing to do
    assert isinstance(a, ChunkedEps) and isinstance(a.eps_model, ShardedEps) and a.eps_model.eps_model is net


def test_wrappers_keep_the_model_config(unet):
    w = wrap_model(unet, devices=["cpu"], max_batch=3, state_dtype=torch.float32)
    assert w.config is unet.config


# ---- the dtype policy --------------------------------------------------------------------------------------------------
def test_float64_x_T_with_a_float32_model_is_a_type_error_naming_x_T_both_dtypes_and_the_fix(unet):
    with pytest.raises(TypeError) as e:
        deq_sample(unet, torch.randn(1, 1, 16, 16, dtype=torch.float64), DDIMSchedule.make(5))
    msg = str(e.value)
    assert msg.startswith("x_T has dtype torch.float64") and "torch.float32" in msg
    assert "x_T.float()" in msg and "model.double()" in msg


def test_float32_x_T_with_a_float64_model_is_a_type_error_with_the_fix():
    net = TinyEps().double()
    with pytest.raises(TypeError, match=r"^x_T has dtype torch\.float32.*torch\.float64.*x_T\.double\(\)"):
        deq_sample(net, randn(1, 1, 8, 8, dtype=torch.float32), DDIMSchedule.make(5))


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_model_runs_with_float32_states(half):
    "The solver stays in float32; DEQ reaches the sequential chain of the same half-precision model (called through the same cast)."
    net = TinyEps().to(half)
    if half is torch.float16:
        try: net(torch.zeros(1, 1, 8, 8, dtype=half), torch.zeros(1, dtype=torch.long))
        except RuntimeError: pytest.skip("float16 convolution is not implemented on this CPU")
    s, x_T = DDIMSchedule.make(10), randn(2, 1, 8, 8, dtype=torch.float32, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # tol far below half precision: run all T + 1 rounds
        x0, info = deq_sample(net, x_T, s, solver="picard", max_iter=11, tol=1e-30)
    seq = ddim_sample(wrap_model(net, state_dtype=torch.float32), x_T, s)
    assert x0.dtype == torch.float32 and info.xs.dtype == torch.float32
    # Picard is exact after T rounds in exact arithmetic; a half-precision convolution rounds a batch of T·B states and a
    # batch of B differently (up to 1e-5 relative over 20 seeds), far below half precision's own eps (1e-3 for float16)
    assert rel(x0, seq) < 1e-4
    with pytest.raises(TypeError, match=r"^x_T has dtype torch\.float64.*half-precision.*x_T\.float\(\)"):
        deq_sample(net, x_T.double(), s)


def test_models_without_parameters_are_called_as_they_are(digits_model):
    assert model_dtype(digits_model) is None and model_dtype(lambda x, t: x) is None
    for dt in (torch.float32, torch.float64):
        assert check_model_dtype(digits_model, torch.zeros(1, 2, dtype=dt)) is None
        assert wrap_model(digits_model, state_dtype=dt) is digits_model


def test_cast_eps_returns_the_input_dtype_and_device():
    net = TinyEps().to(torch.bfloat16)
    w = CastEps(net, torch.bfloat16)
    x, t = randn(3, 1, 8, 8, dtype=torch.float32), torch.arange(3)
    with torch.no_grad():
        out = w(x, t)
        ref = net(x.to(torch.bfloat16), t).float()
    assert out.dtype == torch.float32 and out.device == x.device and torch.equal(out, ref)


# ---- bad arguments: one policy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,exc,msg", [
    (dict(max_batch=0), ValueError, "max_batch must be >= 1"),
    (dict(max_batch=2.5), TypeError, "max_batch must be an int"),
    (dict(max_batch=True), TypeError, "max_batch must be an int"),
    (dict(devices="cpu"), TypeError, "devices must be a list"),
    (dict(devices=torch.device("cpu")), TypeError, "devices must be a list"),
    (dict(devices=[]), ValueError, "devices must be a non-empty list"),
    (dict(devices=["gpu7"]), ValueError, "devices must name torch devices"),
])
def test_wrap_model_bad_arguments_name_the_parameter(kw, exc, msg):
    with pytest.raises(exc, match="^" + re.escape(msg)):
        wrap_model(TinyEps(), **kw)


@pytest.mark.parametrize("bad", ["x", 3, torch.int64, torch.float16])
def test_wrap_model_names_a_state_dtype_that_is_not_a_state_dtype(bad):
    with pytest.raises(TypeError, match="state_dtype must be one of"): wrappers.wrap_model(lambda x, t: x, state_dtype=bad)


def test_wrap_model_names_a_model_that_cannot_be_called():
    with pytest.raises(TypeError, match="eps_model must be callable"): wrappers.wrap_model(None)

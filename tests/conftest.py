import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_model():
    "The exact denoiser of the digits training split (8x8), float64."
    from deq_ddim_nb.toy import digits_eps
    return digits_eps()


def rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))

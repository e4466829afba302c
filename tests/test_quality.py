import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deq_ddim_nb.quality import (frechet_distance, feature_stats, load_classifier, sample_quality, generate, METHODS,
                                 save_classifier)
from deq_ddim_nb.toy import digits_data


def test_frechet_closed_forms():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    assert np.isclose(frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)), ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    A = rng.normal(size=(4, 4)); C = A @ A.T + np.eye(4)
    assert abs(frechet_distance(mu1, C, mu1, C)) < 1e-8
    # a scaled covariance: d = Tr(C) (1 - sqrt(c))^2 ... for C2 = c C1
    assert np.isclose(frechet_distance(mu1, C, mu1, 4 * C), np.trace(C) * (1 - 2) ** 2)


def test_classifier_accuracy_on_held_out_digits():
    clf = load_classifier()
    x, y = digits_data(16, "test", dtype=torch.float32)
    assert float((clf(x).argmax(1) == y).float().mean()) > 0.95


def test_sample_quality_orders_degradations():
    clf = load_classifier()
    x, _ = digits_data(16, "test", dtype=torch.float32)
    q_real, q_blur = sample_quality(x, clf), sample_quality(F.avg_pool2d(x, 3, 1, 1), clf)
    q_noise = sample_quality(torch.rand(180, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1, clf)
    assert q_real["fd"] < q_blur["fd"] < q_noise["fd"]
    assert abs(sum(q_real["class_hist"]) - 1) < 1e-9 and min(q_real["class_hist"]) > 0.05


def test_deq_generate_matches_ddim_generate():
    from deq_ddim_nb.models import load_model
    model = load_model("digits")
    a, _ = generate(model, "DDIM (sequential)", 10, 4)
    b, st = generate(model, "DEQ-DDIM", 10, 4, tol=1e-5, max_iter=30)
    assert float(((a - b).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).max()) < 1e-3


def test_deq_sddim_generate_uses_the_sequential_noises():
    "DEQ-sDDIM eta=1 and sequential DDPM draw the same x_T and noises, so they return the same images."
    from deq_ddim_nb.models import load_model
    model = load_model("digits")
    a, _ = generate(model, "DDPM (sequential, eta=1)", 10, 3, seed=2)
    b, st = generate(model, "DEQ-sDDIM eta=1", 10, 3, seed=2, tol=1e-4, max_iter=60)   # float32 UNet
    assert len(st["rounds"]) == 1 and st["rounds"][0] < 60
    assert float(((a - b).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).max()) < 1e-3
    c, _ = generate(model, "DDPM (sequential, eta=1)", 10, 3, seed=3)       # another seed: other noises, other images
    assert float(((a - c).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).min()) > 0.05


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 16\)"):
        sample_quality(torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="shape \\(N, D\\)"):
        feature_stats(np.zeros(4))
    with pytest.raises(ValueError, match="method must be one of"):
        generate(None, "DDIM", 10, 1)
    for kw, exc, msg in ((dict(n=0), ValueError, "n must be >= 1, got 0"), (dict(n=2.0), TypeError, "n must be an int"),
                         (dict(n=4, batch=0), ValueError, "batch must be >= 1, got 0")):
        with pytest.raises(exc, match=msg):
            generate(None, "DDIM (sequential)", 10, **kw)
    with pytest.raises(ValueError, match="need means \\(D,\\) and covariances \\(D, D\\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_non_finite_samples_are_a_clear_error():
    with pytest.raises(ValueError, match="non-finite"):
        sample_quality(torch.full((8, 1, 16, 16), float("nan")))


def test_frechet_distance_agrees_with_sqrtm_and_stays_exact_and_silent_when_singular():
    "Against scipy's sqrtm where it is exact; with fewer samples than features (singular covariances) sqrtm warns, ours not."
    import warnings
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    C1, C2 = A @ A.T + np.eye(6), B @ B.T + 0.5 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(C1 + C2 - 2 * sqrtm(C1 @ C2).real)
    assert np.isclose(frechet_distance(mu1, C1, mu2, C2), ref, rtol=1e-10)
    # rank-3 covariances of 8 features; d_F^2 in closed form for commuting (diagonal) ones: sum (sqrt(s1) - sqrt(s2))^2
    s1, s2 = np.array([4.0, 1, 0.25, 0, 0, 0, 0, 0]), np.array([1.0, 0, 9, 0, 0, 0, 0, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # no LinAlgWarning, no RuntimeWarning
        got = frechet_distance(np.zeros(8), np.diag(s1), np.zeros(8), np.diag(s2))
    assert np.isclose(got, ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum(), rtol=1e-12)
    f = rng.normal(size=(5, 8)); mu, cov = feature_stats(f)          # 5 samples, 8 features
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-6 * np.trace(cov)


def test_save_classifier_never_replaces_without_overwrite(tmp_path):
    clf = load_classifier()
    p = save_classifier(clf, tmp_path / "c.safetensors")
    with pytest.raises(FileExistsError):
        save_classifier(clf, p)
    save_classifier(clf, p, overwrite=True)
    x = digits_data(16, "test", dtype=torch.float32)[0][:4]
    assert torch.equal(load_classifier(path=p)(x), clf(x))
    (tmp_path / "bad.safetensors").write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="bad.safetensors does not hold the weights of a DigitsClassifier"):
        load_classifier(path=tmp_path / "bad.safetensors")

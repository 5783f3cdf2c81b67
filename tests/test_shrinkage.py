"""Raw, beta-binomial EB and compound-decision (approximate SURE) rate estimates."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from adrank.shrinkage import (
    BetaBinomialEB,
    CompoundShrinkage,
    approximate_sure,
    raw_rates,
    unbiased_variance,
)


def _pmf(n: int, p: float) -> np.ndarray:
    return np.array([comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)])


def test_raw_rates_and_errors() -> None:
    np.testing.assert_allclose(raw_rates([1, 0, 3], [2, 5, 3]), [0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"trials\[1\] = 0"):
        raw_rates([1, 0], [2, 0])
    with pytest.raises(ValueError, match=r"clicks\[0\] = 3 is outside \[0, trials\[0\] = 2\]"):
        raw_rates([3], [2])


@pytest.mark.parametrize(("n", "p"), [(2, 0.3), (5, 0.1), (12, 0.55)])
def test_unbiased_variance_is_unbiased(n: int, p: float) -> None:
    ks = np.arange(n + 1)
    v = unbiased_variance(ks, np.full(n + 1, n))
    assert float(_pmf(n, p) @ v) == pytest.approx(p * (1 - p) / n)


def test_single_trial_uses_plug_in() -> None:
    v = unbiased_variance([1, 0], [1, 3], fallback=np.array([0.2, 0.5]))
    assert v[0] == pytest.approx(0.2 * 0.8)
    assert v[1] == pytest.approx(0.0)
    assert np.isnan(unbiased_variance([1], [1])[0])


@pytest.mark.parametrize("lam", [0.0, 3.0, 40.0])
def test_sure_is_unbiased_for_n_at_least_two(lam: float) -> None:
    """Exact expectation over the binomial: E[SURE] = the true risk of the estimator."""
    n, p, m = 6, 0.25, 0.4
    w = n / (n + lam)
    pmf = _pmf(n, p)
    sure = np.array([approximate_sure([k], [n], [m], lam) for k in range(n + 1)])
    estimates = w * np.arange(n + 1) / n + (1 - w) * m
    true_risk = float(pmf @ (estimates - p) ** 2)
    assert float(pmf @ sure) == pytest.approx(true_risk)


def _simulate(seed: int, k: int = 3000):
    rng = np.random.default_rng(seed)
    p = rng.beta(2.0, 8.0, k)
    n = rng.integers(1, 30, k)
    x = rng.binomial(n, p)
    return x, n, p


def test_beta_binomial_moments_recover_prior() -> None:
    x, n, _ = _simulate(0, 20000)
    eb = BetaBinomialEB().fit(x, n)
    assert eb.mean_ == pytest.approx(0.2, abs=0.01)
    assert eb.alpha_ + eb.beta_ == pytest.approx(10.0, rel=0.2)
    post = eb.predict([0, 5], [1, 5])
    assert post[0] == pytest.approx(eb.alpha_ / (1 + eb.alpha_ + eb.beta_))


def test_compound_shrinkage_beats_raw_and_uses_a_good_prediction() -> None:
    x, n, p = _simulate(1)
    raw_mse = np.mean((x / n - p) ** 2)
    pooled = CompoundShrinkage().fit(x, n)
    assert pooled.trust_ == 0.0 and pooled.lambda_ > 0
    assert np.mean((pooled.predict(x, n) - p) ** 2) < 0.5 * raw_mse
    # the approximate SURE at the selected point estimates the realised error
    assert pooled.sure_ == pytest.approx(np.mean((pooled.predict(x, n) - p) ** 2), rel=0.25)
    noisy = np.clip(p + np.random.default_rng(2).normal(0, 0.02, len(p)), 0.001, 0.999)
    assisted = CompoundShrinkage().fit(x, n, noisy)
    assert assisted.trust_ >= 0.8
    assisted_mse = np.mean((assisted.predict(x, n, noisy) - p) ** 2)
    assert assisted_mse < np.mean((pooled.predict(x, n) - p) ** 2)


def test_lambda_zero_is_raw() -> None:
    x, n, _ = _simulate(3, 50)
    fitted = CompoundShrinkage(lambdas=np.array([0.0])).fit(x, n)
    np.testing.assert_allclose(fitted.predict(x, n), x / n)


def test_beta_binomial_marginal_ml_recovers_prior_and_beats_moments_likelihood() -> None:
    from math import lgamma

    x, n, _ = _simulate(4, 5000)
    mom = BetaBinomialEB().fit(x, n)
    ml = BetaBinomialEB(method="ml").fit(x, n)
    assert ml.mean_ == pytest.approx(0.2, abs=0.01)
    assert ml.alpha_ + ml.beta_ == pytest.approx(10.0, rel=0.2)

    def loglik(a: float, b: float) -> float:
        return sum(
            lgamma(xi + a) + lgamma(ni - xi + b) - lgamma(ni + a + b) - lgamma(a) - lgamma(b)
            + lgamma(a + b)
            for xi, ni in zip(x, n, strict=True)
        )  # fmt: skip

    assert loglik(ml.alpha_, ml.beta_) >= loglik(mom.alpha_, mom.beta_) - 1e-6
    with pytest.raises(ValueError, match="'moments' or 'ml'"):
        BetaBinomialEB(method="bayes").fit(x, n)

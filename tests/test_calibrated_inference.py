"""Calibrated dataset inference (stealkit.verify.calibrated_inference) against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from stealkit.verify.calibrated_inference import calibrated_scores, calibrated_test, encoder_level_test, standardise


def test_standardise_uses_the_fit_sets_mean_and_sd():
    # fit scores 1, 2, 3: mean 2, sd (ddof=1) 1
    assert np.allclose(standardise([4.0, 0.0, 2.0], [1.0, 2.0, 3.0]), [2.0, -2.0, 0.0])
    with pytest.raises(ValueError):
        standardise([1.0], [5.0, 5.0])


def test_calibrated_test_by_hand():
    # private: suspect 2, 4, 6 less the references' mean 1, 2, 3 -> 1, 2, 3 (mean 2, variance 1)
    # public:  suspect 0, 2, 4 less the references' mean 0, 1, 2 -> 0, 1, 2 (mean 1, variance 1)
    z_priv, refs_priv = np.array([2.0, 4.0, 6.0]), np.array([[1.0, 1.0, 1.0], [1.0, 3.0, 5.0]])
    z_pub, refs_pub = np.array([0.0, 2.0, 4.0]), np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 4.0]])
    assert np.allclose(calibrated_scores(z_priv, refs_priv), [1.0, 2.0, 3.0])
    r = calibrated_test(z_priv, z_pub, refs_priv, refs_pub, alpha=0.01)
    # Welch: t = (2 - 1) / sqrt(1/3 + 1/3) = sqrt(3/2); df = (2/3)^2 / (2 (1/3)^2 / 2) = 4
    # T_4 closed form: P(T > t) = 1/2 - (3/4) u (1 - u^2 / 3), u = t / sqrt(4 + t^2) = sqrt(1.5 / 5.5)
    u = np.sqrt(1.5 / 5.5)
    assert r.t_statistic == pytest.approx(np.sqrt(1.5))
    assert r.p_value == pytest.approx(0.5 - 0.75 * u * (1 - u**2 / 3), rel=1e-9)
    assert r.p_value == pytest.approx(0.143932, abs=1e-6)
    assert not r.stolen and r.n_references == 2
    assert r.delta == pytest.approx(1.0) and r.delta_suspect == pytest.approx(2.0) and r.delta_references == pytest.approx(1.0)


def test_a_shift_every_encoder_sees_cancels():
    # the suspect sees exactly the references' per-image shift plus a constant offset: no private-public gap is left
    g = np.random.default_rng(0)
    shift_priv, shift_pub = g.normal(0.5, 1, 200), g.normal(0.0, 1, 200)
    refs_priv, refs_pub = np.stack([shift_priv, shift_priv]), np.stack([shift_pub, shift_pub])
    r = calibrated_test(shift_priv + 0.1, shift_pub + 0.1, refs_priv, refs_pub)
    assert r.delta == pytest.approx(0.0, abs=1e-12) and r.delta_suspect > 0.3 and r.p_value > 0.4 and not r.stolen


def test_encoder_level_test_by_hand():
    # references 0, 1, 2 (mean 1, sd 1, k 3); suspect 3: t = 2 / sqrt(1 + 1/3) = sqrt(3), df 2
    # T_2 closed form: P(T > t) = 1/2 - t / (2 sqrt(2 + t^2)) = 1/2 - sqrt(3) / (2 sqrt(5))
    r = encoder_level_test(3.0, [0.0, 1.0, 2.0], alpha=0.01)
    assert r["t_statistic"] == pytest.approx(np.sqrt(3))
    assert r["p_value"] == pytest.approx(0.5 - np.sqrt(3) / (2 * np.sqrt(5)), rel=1e-9)
    assert r["df"] == 2 and not r["stolen"]
    with pytest.raises(ValueError):
        encoder_level_test(1.0, [0.5])

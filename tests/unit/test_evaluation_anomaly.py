"""The anomaly measurement's ROC AUC (``aeq.evaluation.anomaly``), against hand-counted pairs."""

from __future__ import annotations

import numpy as np
import pytest

from aeq.evaluation.anomaly import roc_auc


def test_auc_counts_the_pairs_a_positive_wins_ties_half():
    # Positive 2 beats 1, ties 2, loses to 3 (1.5 of 3); positive 4 beats all three: 4.5 of 6.
    assert roc_auc(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0])) == pytest.approx(0.75)


def test_auc_of_perfect_reversed_and_identical_scores():
    low, high = np.arange(5.0), np.arange(5.0) + 10
    assert roc_auc(low, high) == 1.0
    assert roc_auc(high, low) == 0.0
    assert roc_auc(np.ones(4), np.ones(3)) == 0.5


def test_auc_is_scikit_learns():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    negatives, positives = rng.normal(size=300), rng.normal(0.5, size=200).round(1)
    labels = np.r_[np.zeros(300), np.ones(200)]
    expected = metrics.roc_auc_score(labels, np.r_[negatives, positives])
    assert roc_auc(negatives, positives) == pytest.approx(expected)

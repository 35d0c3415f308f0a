"""The project's metric: every objective against scikit-learn, the decision threshold chosen on validation under
floors, and the one decision rule the edge predictor shares."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.core.errors import ConfigError
from pipelines.training import fitting, objectives


def _binary(seed=0, count=400):
    rng = np.random.default_rng(seed)
    y = (rng.random(count) < 0.3).astype(int)
    p1 = np.clip(0.35 * y + rng.normal(0.35, 0.18, count), 0, 1)
    return y, np.stack([1 - p1, p1], axis=1)


def test_objectives_match_scikit_learn_for_the_positive_class_and_macro():
    y, probabilities = _binary()
    predicted = (probabilities[:, 1] >= 0.4).astype(int)
    assert objectives.score("recall", y, probabilities, 0.4) == pytest.approx(sk_metrics.recall_score(y, predicted))
    assert objectives.score("ppv", y, probabilities, 0.4) == pytest.approx(sk_metrics.precision_score(y, predicted))
    assert objectives.score("specificity", y, probabilities, 0.4) == pytest.approx(
        sk_metrics.recall_score(y, predicted, pos_label=0))
    assert objectives.score("npv", y, probabilities, 0.4) == pytest.approx(
        sk_metrics.precision_score(y, predicted, pos_label=0))
    assert objectives.score("f1", y, probabilities, 0.4) == pytest.approx(sk_metrics.f1_score(y, predicted))
    # the positive class may be the first: recall of class 0 at a threshold on its own probability
    first = (probabilities[:, 0] >= 0.6).astype(int)
    assert objectives.score("recall", y, probabilities, 0.6, positive=0) == pytest.approx(
        sk_metrics.recall_score(y == 0, first))
    assert objectives.score("pr_auc", y, probabilities) == pytest.approx(
        sk_metrics.average_precision_score(y, probabilities[:, 1]))
    three = np.random.default_rng(1).dirichlet([1, 1, 1], 90)
    labels = np.random.default_rng(2).integers(0, 3, 90)
    assert objectives.score("f1", labels, three) == pytest.approx(
        sk_metrics.f1_score(labels, three.argmax(1), average="macro"))
    assert objectives.score("balanced_accuracy", labels, three) == pytest.approx(
        sk_metrics.balanced_accuracy_score(labels, three.argmax(1)))
    assert objectives.score("rmse", np.array([1.0, 3.0]), np.array([[2.0], [1.0]])) == pytest.approx(np.sqrt(2.5))


def test_the_threshold_meets_its_floor_and_maximizes_the_objective():
    y, probabilities = _binary()
    chosen = objectives.choose_threshold(y, probabilities, "recall", {"specificity": 0.9})
    assert chosen["met"] and chosen["floors"]["specificity"] >= 0.9
    # no threshold that keeps specificity at 0.9 has a higher recall
    for cut in np.unique(probabilities[:, 1]):
        if objectives.score("specificity", y, probabilities, cut) >= 0.9:
            assert objectives.score("recall", y, probabilities, cut) <= chosen["objective"] + 1e-12
    assert objectives.score("specificity", y, probabilities, 0.5) < 0.9  # argmax would miss the floor
    # the edge predictor decides at that threshold exactly as the objective was scored
    decided = edge.decide(probabilities, chosen["threshold"], 1)
    assert sk_metrics.recall_score(y, decided) == pytest.approx(chosen["objective"])
    assert (edge.decide(probabilities) == probabilities.argmax(1)).all()
    impossible = objectives.choose_threshold(y, probabilities, "f1", {"recall": 1.0, "specificity": 1.0})
    assert not impossible["met"] and impossible["threshold"] == 0.5


def test_the_objective_is_checked_against_the_task_and_the_floors_against_the_threshold():
    train = config_module.load(None, ["train.objective=mae"]).train
    with pytest.raises(ConfigError, match="train.objective: 'mae' is a regression metric; this is a classification"):
        fitting.objective("classification", train)
    with pytest.raises(ConfigError, match="train.floors: .* set train.threshold: tuned"):
        config_module.load(None, ["train.floors={recall: 0.9}"])
    with pytest.raises(ConfigError, match=r"train.floors: \['roc_auc'\] are not decision metrics"):
        config_module.load(None, ["train.threshold=tuned", "train.floors={roc_auc: 0.9}"])
    with pytest.raises(ConfigError, match="train.positive_class: 'sick' is not a class"):
        objectives.positive_index(["healthy", "ill"], "sick")
    goal = fitting.objective("classification", config_module.load(None, ["train.objective=pr_auc"]).train)
    assert goal.named and goal.higher and goal.log_name == "val_pr_auc"
    assert not fitting.objective("classification", config_module.load(None, []).train).named
    assert set(objectives.OBJECTIVES) == set(config_module.OBJECTIVES)

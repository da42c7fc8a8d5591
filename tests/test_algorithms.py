"""Algorithms: hand-checked values that pin each loss to its paper's equation, and the registry (plain torch on
the tiny OLMo, no Ray). The contract every registered algorithm must meet (finite loss, logs, a step changes
parameters, forgetting, determinism, per-sequence normalization) is in tests/test_contracts.py.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from lume_ray.algorithms import (
    ALGORITHMS,
    AlgorithmError,
    algorithm_params,
    mean_nll,
    register_algorithm,
    validate_params,
)
from lume_ray.algorithms.losses import steering_vector
from lume_ray.model import IGNORE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(unlearning_setup: dict[str, Any]) -> dict[str, Any]:
    return unlearning_setup


def _fresh(setup: dict[str, Any]) -> tuple[Any, Any]:
    """(trainable copy, frozen reference copy) of the memorized model."""
    model = copy.deepcopy(setup["model"]).train()
    ref = copy.deepcopy(setup["model"]).eval().requires_grad_(False)
    return model, ref


def _loss(name: str, model: Any, setup: dict[str, Any], ref: Any, **params: Any) -> tuple[torch.Tensor, dict]:
    """The loss as the training loop computes it: the reference only for an algorithm that declares needs_ref."""
    ref = ref if ALGORITHMS[name].needs_ref else None
    return ALGORITHMS[name].fn(model, setup["forget"], setup["retain"], ref, validate_params(name, params))


# -- hand-checked values -----------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_npo_with_reference_equal_to_model_is_2ln2_over_beta(beta: float, setup: dict[str, Any]) -> None:
    model, ref = _fresh(setup)
    loss, logs = _loss("npo", model, setup, ref, beta=beta, alpha=0.0)
    assert logs["npo_forget"] == pytest.approx(2 * math.log(2) / beta, rel=1e-6)
    assert loss.item() == pytest.approx(2 * math.log(2) / beta, rel=1e-6)
    assert logs["log_ratio"] == pytest.approx(0.0, abs=1e-6)


def _nll_by_hand(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over sequences of each sequence's mean token NLL, one token at a time."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_seq = []
    for b in range(logits.size(0)):
        terms = [-torch.log_softmax(logits[b, t - 1], -1)[batch["labels"][b, t]]
                 for t in range(1, logits.size(1)) if batch["labels"][b, t] != IGNORE]
        per_seq.append(torch.stack(terms).mean())
    return torch.stack(per_seq).mean()


def test_ga_is_minus_nll(setup: dict[str, Any]) -> None:
    model, _ = _fresh(setup)
    loss, logs = _loss("ga", model, setup, None)
    expected = _nll_by_hand(model, setup["forget"])
    assert loss.item() == pytest.approx(-expected.item(), rel=1e-5)
    assert logs["forget_nll"] == pytest.approx(expected.item(), rel=1e-5)


def test_gd_and_kl_retain_terms(setup: dict[str, Any]) -> None:
    model, ref = _fresh(setup)
    forget_nll, retain_nll = _nll_by_hand(model, setup["forget"]).item(), _nll_by_hand(model, setup["retain"]).item()
    gd, _ = _loss("gd", model, setup, ref, alpha=2.0)
    assert gd.item() == pytest.approx(-forget_nll + 2.0 * retain_nll, rel=1e-5)
    kl, logs = _loss("kl", model, setup, ref, alpha=5.0)  # KL(ref || model) = 0 when they are equal
    assert kl.item() == pytest.approx(-forget_nll, rel=1e-5)
    assert logs["retain_kl"] == pytest.approx(0.0, abs=1e-6)
    npo_kl, logs = _loss("npo", model, setup, ref, retain_loss="kl", beta=0.1)
    assert logs["retain_term"] == pytest.approx(0.0, abs=1e-6)


def test_simnpo_matches_its_equation(setup: dict[str, Any]) -> None:
    model, _ = _fresh(setup)
    beta, delta = 2.5, 0.3
    loss, logs = _loss("simnpo", model, setup, None, beta=beta, delta=delta, alpha=0.0)
    with torch.no_grad():
        norm_logp = -mean_nll(model, setup["forget"])  # (1/|y|) log pi(y|x)
    expected = (-(2 / beta) * torch.nn.functional.logsigmoid(-beta * norm_logp - delta)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_rmu_forget_term_is_distance_to_the_steering_vector(setup: dict[str, Any]) -> None:
    model, ref = _fresh(setup)
    layer, steer = 1, 4.0
    _, logs = _loss("rmu", model, setup, ref, layer=layer, steer=steer, alpha=0.0)
    u = steering_vector(model.config.hidden_size, 0)
    assert u.norm().item() == pytest.approx(1.0, rel=1e-6)
    batch = setup["forget"]
    with torch.no_grad():
        h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  output_hidden_states=True).hidden_states[layer]
    per_seq = [((h[b][batch["attention_mask"][b].bool()] - steer * u) ** 2).mean() for b in range(h.size(0))]
    assert logs["rmu_forget"] == pytest.approx(torch.stack(per_seq).mean().item(), rel=1e-5)
    assert logs["rmu_retain"] == pytest.approx(0.0, abs=1e-8)  # model == reference on retain
    with pytest.raises(AlgorithmError, match="valid: 0..2"):
        _loss("rmu", model, setup, ref, layer=7)


# -- the registry --------------------------------------------------------------------------------


def test_registry_declares_the_design_algorithms() -> None:
    assert {"ga", "gd", "kl", "npo", "simnpo", "rmu"} <= set(ALGORITHMS)
    assert algorithm_params("npo") == {"beta": 0.1, "alpha": 1.0, "retain_loss": "nll"}
    assert set(algorithm_params("rmu")) == {"layer", "steer", "alpha", "u_seed"}
    for alg in ALGORITHMS.values():
        assert alg.cite, f"{alg.name}: cite the paper and equation"


def test_params_are_validated_and_coerced() -> None:
    assert validate_params("npo", {"beta": "0.5"})["beta"] == 0.5  # from the command line
    assert validate_params("rmu", {"layer": "2"})["layer"] == 2
    with pytest.raises(AlgorithmError, match=r"unknown parameter 'gamma' \(valid: beta, alpha, retain_loss\)"):
        validate_params("npo", {"gamma": 1})
    with pytest.raises(AlgorithmError, match="must be one of nll, kl"):
        validate_params("npo", {"retain_loss": "mse"})
    with pytest.raises(AlgorithmError, match="must be > 0"):
        validate_params("npo", {"beta": 0})
    with pytest.raises(AlgorithmError, match="expected an integer"):
        validate_params("rmu", {"layer": 1.5})
    with pytest.raises(AlgorithmError, match="expected a number"):
        validate_params("gd", {"alpha": "lots"})
    with pytest.raises(AlgorithmError, match=r"unknown algorithm 'sgd' \(valid: .*npo"):
        validate_params("sgd")
    with pytest.raises(AlgorithmError, match="already registered"):
        register_algorithm("ga", {})(lambda *a: (torch.zeros(()), {}))


def test_an_algorithm_checks_its_parameters_against_the_model() -> None:
    """rmu's own check (run in the driver before any worker starts): its layer must exist in the model."""
    from types import SimpleNamespace

    check = ALGORITHMS["rmu"].check
    assert check is not None and all(ALGORITHMS[n].check is None for n in ("ga", "gd", "kl", "npo", "simnpo"))
    check(validate_params("rmu", {"layer": 2}), SimpleNamespace(num_hidden_layers=2))
    check(validate_params("rmu", {"layer": 9}), SimpleNamespace())  # layers unknown: nothing to check
    with pytest.raises(AlgorithmError, match=r"rmu parameter layer=3: the model has 2 layers \(valid: 0\.\.2\)"):
        check(validate_params("rmu", {"layer": 3}), SimpleNamespace(num_hidden_layers=2))


def test_the_registry_lists_its_choices() -> None:
    from lume_ray.registry import Registry

    things: Registry[int] = Registry("thing")
    things.register("b")(2)
    things.add("a", 1)
    assert things.names() == ["b", "a"] and things.get("a") == 1 and "a" in things and list(things) == ["b", "a"]
    with pytest.raises(ValueError, match=r"unknown thing 'c' \(valid: b, a\)"):
        things.get("c")
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.add("a", 3)
    assert things.pop("a") == 1 and things.names() == ["b"]
    assert ALGORITHMS.names() == sorted(ALGORITHMS)

"""Every registered algorithm plugs into one contract suite (plain torch on the tiny OLMo, no Ray).

Adding an algorithm with ``register_algorithm`` gets it tested here for free: finite scalar loss,
gradients reach the trainable parameters, a step changes them, the forget log-likelihood goes down
after a few steps, determinism under a seed, and the per-sequence normalization that makes 1 worker
and N workers agree. Hand-checked values pin NPO, GA and KL to their equations.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from lume_ray.algorithms import (
    ALGORITHMS,
    AlgorithmError,
    algorithm_params,
    mean_nll,
    register_algorithm,
    steering_vector,
    validate_params,
)
from lume_ray.data import load_lume
from lume_ray.model import IGNORE, collate, encode_pair, load_model

NAMES = sorted(ALGORITHMS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tiny_model: Path, tiny_lume: Path) -> dict[str, Any]:
    """A tiny OLMo that memorized the rows a little (so unlearning has something to undo) + batches."""
    torch.manual_seed(0)
    model, tok = load_model(tiny_model)
    data = load_lume(tiny_lume)
    enc = {s: [encode_pair(tok, r.input, r.output, add_eos=True) for r in data.split(s)] for s in ("forget", "retain")}
    all_rows = collate(enc["forget"] + enc["retain"], tok.pad_token_id)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = mean_nll(model, all_rows).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    forget = collate(enc["forget"][:4], tok.pad_token_id)
    retain = collate(enc["retain"][:4], tok.pad_token_id)
    return {"model": model, "forget": forget, "retain": retain, "pad": tok.pad_token_id, "enc": enc}


def _fresh(setup: dict[str, Any]) -> tuple[Any, Any]:
    """(trainable copy, frozen reference copy) of the memorized model."""
    model = copy.deepcopy(setup["model"]).train()
    ref = copy.deepcopy(setup["model"]).eval().requires_grad_(False)
    return model, ref


def _loss(name: str, model: Any, setup: dict[str, Any], ref: Any, **params: Any) -> tuple[torch.Tensor, dict]:
    return ALGORITHMS[name].fn(model, setup["forget"], setup["retain"], ref, validate_params(name, params))


# -- the contract, for every registered algorithm ---------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_finite_scalar_loss_and_logs(name: str, setup: dict[str, Any]) -> None:
    model, ref = _fresh(setup)
    loss, logs = _loss(name, model, setup, ref)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"forget_nll", "retain_nll"} <= set(logs)
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values())


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_parameters_and_a_step_changes_them(name: str, setup: dict[str, Any]) -> None:
    model, ref = _fresh(setup)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss, _ = _loss(name, model, setup, ref)
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in ref.parameters()), "the reference must stay frozen"
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    changed = [k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])]
    assert changed and set(changed) <= set(grads)


@pytest.mark.parametrize("name", NAMES)
def test_forget_likelihood_goes_down(name: str, setup: dict[str, Any]) -> None:
    model, ref = _fresh(setup)
    with torch.no_grad():
        start = mean_nll(model, setup["forget"]).mean().item()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(6):
        loss, _ = _loss(name, model, setup, ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = mean_nll(model, setup["forget"]).mean().item()
    assert end > start + 0.05, f"{name}: forget NLL {start:.3f} -> {end:.3f} (log-likelihood did not go down)"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_seed(name: str, setup: dict[str, Any]) -> None:
    def run() -> list[float]:
        torch.manual_seed(123)
        model, ref = _fresh(setup)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        values = []
        for _ in range(3):
            loss, _ = _loss(name, model, setup, ref)
            opt.zero_grad()
            loss.backward()
            opt.step()
            values.append(loss.item())
        return values

    assert run() == run()


@pytest.mark.parametrize("name", NAMES)
def test_per_sequence_normalization_makes_workers_agree(name: str, setup: dict[str, Any]) -> None:
    """The gradient of the full batch equals the mean of the two half-batch gradients (what a 2-worker
    all-reduce computes), although the halves pad to different lengths."""
    model, ref = _fresh(setup)
    enc, pad = setup["enc"], setup["pad"]
    params = validate_params(name)
    # Rows of different lengths, so the halves pad differently from the whole.
    f_rows, r_rows = [enc["forget"][i] for i in (0, 2, 1, 9)], [enc["retain"][i] for i in (2, 0, 3, 8)]

    def grad(f: list, r: list) -> torch.Tensor:
        model.zero_grad()
        loss, _ = ALGORITHMS[name].fn(model, collate(f, pad), collate(r, pad), ref, params)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    whole = grad(f_rows, r_rows)
    halves = (grad(f_rows[:2], r_rows[:2]) + grad(f_rows[2:], r_rows[2:])) / 2
    torch.testing.assert_close(halves, whole, rtol=1e-4, atol=1e-6)


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

"""[3 unlearn] Algorithms: (model, forget batch, retain batch, frozen reference, params) -> (loss, logs).

Input:  a causal LM being unlearned, a forget batch F and a retain batch R (padded tensors from
        :func:`lume_ray.model.collate`: ``input_ids``/``attention_mask``/``labels``, each (B, T)), the
        frozen reference model (the target before unlearning; ``None`` for algorithms that need none) and
        the algorithm's parameters (validated, defaults filled by :func:`validate_params`).
Output: a scalar loss tensor to minimize and a dict of float logs; every algorithm logs ``forget_nll``
        and ``retain_nll`` (mean per-sequence token NLL of F and R, the "forget/retain loss" of a step).

Each algorithm is a pure function registered by name with its parameters and their defaults; the
parameter declarations double as the vocabulary of the sweep's search spaces (method parameters are
kept apart from trainer parameters such as lr and steps, which live in the config).

Normalization, on purpose: every loss is a MEAN OVER SEQUENCES of a per-sequence quantity. With
equal per-worker micro-batches, the average of per-worker means (what the gradient all-reduce
computes) equals the mean over the global batch, so 1 worker and N workers at the same global batch
follow the same trajectory. A token-level mean over the whole batch would not have that property.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from lume_ray.algorithms.registry import AlgorithmError, Batch, register_algorithm
from lume_ray.model import IGNORE, sequence_nll, token_nll

# ---------------------------------------------------------------------------------------------
# Building blocks. All return per-sequence values, shape (B,), so the losses can average them.


def mean_nll(model: Any, batch: Batch) -> torch.Tensor:
    """Per-sequence mean token NLL of the label tokens, (B,)."""
    total, count = sequence_nll(model, batch)
    return total / count.clamp(min=1)


def _logits_and_mask(model: Any, batch: Batch) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """One forward pass: (output, next-token logits (B, T-1, V) in fp32, label mask (B, T-1))."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out, out.logits[:, :-1].float(), batch["labels"][:, 1:] != IGNORE


def _nll_from_output(out: Any, batch: Batch) -> torch.Tensor:
    """Per-sequence mean token NLL (B,) of a forward's output; the same numbers as :func:`mean_nll`."""
    nll, mask = token_nll(out.logits, batch["labels"])  # (B, T-1) each
    return nll.sum(-1) / mask.sum(-1).clamp(min=1)


def _kl_ref_theta(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean token KL(pi_ref || pi_theta), (B,), over the label positions."""
    logp = F.log_softmax(logits, -1)  # (B, T-1, V)
    ref_logp = F.log_softmax(ref_logits, -1)
    token_kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1) * mask  # (B, T-1)
    return token_kl.sum(-1) / mask.sum(-1).clamp(min=1)


def _require_ref(name: str, ref_model: Any) -> None:
    if ref_model is None:
        raise AlgorithmError(f"{name} needs a reference model (the target before unlearning)")


def _retain_term(
    model: Any, retain: Batch, ref_model: Any, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(retain loss per sequence (B,), retain NLL per sequence (B,)) for ``kind`` in {nll, kl}."""
    out, logits, mask = _logits_and_mask(model, retain)
    nll = _nll_from_output(out, retain)
    if kind == "nll":
        return nll, nll
    _require_ref("retain_loss=kl", ref_model)
    with torch.no_grad():
        _, ref_logits, _ = _logits_and_mask(ref_model, retain)
    return _kl_ref_theta(logits, ref_logits, mask), nll


def _f(x: torch.Tensor) -> float:
    return float(x.detach().float().mean())


# ---------------------------------------------------------------------------------------------
# The algorithms.


@register_algorithm("ga", {}, cite="Jang et al. 2023, Eq. 1")
def gradient_ascent(model: Any, forget: Batch, retain: Batch, ref_model: Any, params: Mapping[str, Any]
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """Gradient Ascent: maximize the NLL of the forget data.

    Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy Risks in Language Models" (ACL), Eq. 1::

        L_UL(f_theta, x) = -sum_t log p_theta(x_t | x_<t)

    i.e. ``L = -NLL(F)``; here per sequence, token-averaged. No retain term by definition (GA with a retain
    term is ``gd``).
    """
    forget_nll = mean_nll(model, forget)  # (B,)
    with torch.no_grad():  # logged only
        retain_nll = mean_nll(model, retain)
    loss = -forget_nll.mean()
    return loss, {"forget_nll": _f(forget_nll), "retain_nll": _f(retain_nll)}


@register_algorithm("gd", {"alpha": 1.0}, nonnegative=("alpha",), cite="Maini et al. 2024, Sec. 5.1")
def gradient_difference(model: Any, forget: Batch, retain: Batch, ref_model: Any, params: Mapping[str, Any]
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """Gradient Difference: gradient ascent on the forget data, descent on the retain data.

    Liu et al. 2022, "Continual Learning and Private Unlearning" (CoLLAs), and Maini et al. 2024, "TOFU: A Task
    of Fictitious Unlearning for LLMs", Sec. 5.1 (Gradient Difference)::

        L = -L(S_F) + alpha * L(S_R)

    with L the NLL. The retain term is the NLL by definition (a KL retain term is the separate ``kl`` method).
    """
    forget_nll = mean_nll(model, forget)
    retain_nll = mean_nll(model, retain)
    loss = -forget_nll.mean() + params["alpha"] * retain_nll.mean()
    return loss, {"forget_nll": _f(forget_nll), "retain_nll": _f(retain_nll)}


@register_algorithm("kl", {"alpha": 1.0}, nonnegative=("alpha",), needs_ref=True, cite="Maini et al. 2024, Sec. 5.1")
def kl_minimization(model: Any, forget: Batch, retain: Batch, ref_model: Any, params: Mapping[str, Any]
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """KL Minimization: gradient ascent on F while matching the frozen reference's next-token distributions on R.

    Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", Sec. 5.1::

        L = -L(S_F) + alpha * (1/|S_R|) sum_{s in S_R} KL(M_original(s) || M_current(s))

    The KL is per token, averaged per sequence.
    """
    _require_ref("kl", ref_model)
    forget_nll = mean_nll(model, forget)
    retain_kl, retain_nll = _retain_term(model, retain, ref_model, "kl")
    loss = -forget_nll.mean() + params["alpha"] * retain_kl.mean()
    return loss, {"forget_nll": _f(forget_nll), "retain_nll": _f(retain_nll), "retain_kl": _f(retain_kl)}


@register_algorithm("npo", {"beta": 0.1, "alpha": 1.0, "retain_loss": "nll"},
                    choices={"retain_loss": ("nll", "kl")}, positive=("beta",), nonnegative=("alpha",),
                    needs_ref=True, cite="Zhang et al. 2024, Eq. 3")
def npo(model: Any, forget: Batch, retain: Batch, ref_model: Any, params: Mapping[str, Any]
        ) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative Preference Optimization: the forget data as dispreferred answers, against the frozen reference.

    Zhang, Lin, Bai, Mei 2024, "Negative Preference Optimization: From Catastrophic Collapse to Effective
    Unlearning" (COLM), Eq. 3::

        L_NPO,beta(theta) = -(2/beta) E_F[ log sigmoid( -beta * log( pi_theta(y|x) / pi_ref(y|x) ) ) ]

    with SEQUENCE log-likelihoods ``log pi(y|x) = sum_t log pi(y_t | x, y_<t)``. With pi_theta == pi_ref the
    forget term is (2/beta) ln 2. Sec. 5 adds a retain term ("NPO+RT": NLL on R) and compares a KL one;
    ``retain_loss`` picks it, ``alpha`` weighs it (alpha=0: plain NPO).
    """
    _require_ref("npo", ref_model)
    beta = params["beta"]
    total, count = sequence_nll(model, forget)  # (B,), (B,)
    with torch.no_grad():
        ref_total, _ = sequence_nll(ref_model, forget)
    log_ratio = ref_total - total  # log pi_theta(y|x) - log pi_ref(y|x) = -NLL_theta + NLL_ref
    forget_term = -(2.0 / beta) * F.logsigmoid(-beta * log_ratio)  # (B,)
    retain_loss, retain_nll = _retain_term(model, retain, ref_model, params["retain_loss"])
    loss = forget_term.mean() + params["alpha"] * retain_loss.mean()
    forget_nll = total / count.clamp(min=1)
    return loss, {"forget_nll": _f(forget_nll), "retain_nll": _f(retain_nll), "npo_forget": _f(forget_term),
                  "retain_term": _f(retain_loss), "log_ratio": _f(log_ratio)}


@register_algorithm("simnpo", {"beta": 2.5, "delta": 0.0, "alpha": 1.0}, positive=("beta",),
                    nonnegative=("alpha",), cite="Fan et al. 2024, Eq. 4")
def simnpo(model: Any, forget: Batch, retain: Batch, ref_model: Any, params: Mapping[str, Any]
           ) -> tuple[torch.Tensor, dict[str, float]]:
    """SimNPO: NPO without the reference, length-normalized, with a margin.

    Fan, Liu, Lin, Jia, Zhang, Mei, Liu 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization
    for LLM Unlearning", Eq. 4::

        L_SimNPO(theta) = E_F[ -(2/beta) log sigmoid( -(beta/|y|) log pi_theta(y|x) - delta ) ]
                          + lambda * E_R[ -log pi_theta(y|x) ]

    reference-free (the point of the method), margin delta (gamma in the paper). The paper's retain term is the
    NLL; ``alpha`` is lambda.
    """
    beta, delta = params["beta"], params["delta"]
    total, count = sequence_nll(model, forget)
    norm_logp = -total / count.clamp(min=1)  # (1/|y|) log pi_theta(y|x), (B,)
    forget_term = -(2.0 / beta) * F.logsigmoid(-beta * norm_logp - delta)
    retain_nll = mean_nll(model, retain)
    loss = forget_term.mean() + params["alpha"] * retain_nll.mean()
    return loss, {"forget_nll": _f(-norm_logp), "retain_nll": _f(retain_nll), "simnpo_forget": _f(forget_term)}


@lru_cache(maxsize=8)
def steering_vector(dim: int, seed: int) -> torch.Tensor:
    """RMU's fixed random unit vector u (paper: sampled uniformly from [0, 1), then normalized)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(dim, generator=gen, dtype=torch.float32)
    return u / u.norm()


def _masked_mse(h: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean over real tokens of the mean squared error over the hidden size, (B,)."""
    token_mse = (h.float() - target.float()).pow(2).mean(-1)  # (B, T)
    mask = attention_mask.to(token_mse.dtype)
    return (token_mse * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def _rmu_layer_fits(params: Mapping[str, Any], model_config: Any) -> None:
    """RMU's ``layer`` must be one of the model's hidden states (0 is the embeddings, 1..N the decoder layers)."""
    layers = getattr(model_config, "num_hidden_layers", None)
    if layers is not None and int(params["layer"]) > layers:
        raise AlgorithmError(f"rmu parameter layer={params['layer']}: the model has {layers} layers "
                             f"(valid: 0..{layers})")


@register_algorithm("rmu", {"layer": 1, "steer": 6.5, "alpha": 100.0, "u_seed": 0},
                    positive=("steer",), nonnegative=("alpha", "layer", "u_seed"), needs_ref=True,
                    cite="Li et al. 2024, Eq. 1-3", check=_rmu_layer_fits)
def rmu(model: Any, forget: Batch, retain: Batch, ref_model: Any, params: Mapping[str, Any]
        ) -> tuple[torch.Tensor, dict[str, float]]:
    """Representation Misdirection for Unlearning: steer the forget data's hidden states to a random direction.

    Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use with Unlearning" (ICML),
    Sec. 5 / Eq. 1-3::

        L_forget = E_F[ 1/L_x sum_t || M_updated(t) - c * u ||_2^2 ]
        L_retain = E_R[ 1/L_x sum_t || M_updated(t) - M_frozen(t) ||_2^2 ]
        L = L_forget + alpha * L_retain

    M(t) = hidden state after decoder layer ``layer`` (``hidden_states[layer]``; 0 is the embeddings), u a fixed
    random unit vector (seeded by ``u_seed``), c = ``steer``. The paper trains only the MLPs of layers
    layer-2..layer; here every trainable parameter trains (or a LoRA adapter). MSE is averaged over the hidden
    size as in the reference implementation.
    """
    _require_ref("rmu", ref_model)
    layer = int(params["layer"])
    out_f = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"], output_hidden_states=True)
    if layer >= len(out_f.hidden_states):
        raise AlgorithmError(f"rmu parameter layer={layer}: the model has only {len(out_f.hidden_states) - 1} "
                             f"layers (valid: 0..{len(out_f.hidden_states) - 1})")
    h_f = out_f.hidden_states[layer]  # (B, T, H)
    u = steering_vector(h_f.size(-1), int(params["u_seed"])).to(h_f.device)
    forget_mse = _masked_mse(h_f, params["steer"] * u, forget["attention_mask"])  # (B,)
    out_r = model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"], output_hidden_states=True)
    with torch.no_grad():
        h_ref = ref_model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"],
                          output_hidden_states=True).hidden_states[layer]
    retain_mse = _masked_mse(out_r.hidden_states[layer], h_ref, retain["attention_mask"])
    loss = forget_mse.mean() + params["alpha"] * retain_mse.mean()
    with torch.no_grad():
        forget_nll = _nll_from_output(out_f, forget)
        retain_nll = _nll_from_output(out_r, retain)
    return loss, {"forget_nll": _f(forget_nll), "retain_nll": _f(retain_nll), "rmu_forget": _f(forget_mse),
                  "rmu_retain": _f(retain_mse)}

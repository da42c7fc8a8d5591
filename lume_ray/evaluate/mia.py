"""[3 evaluate] Membership inference: per-document attack features -> the ROC-AUC of separating members from
non-members -> LUME's MIA score (docs/protocol.md section 2, step 6).

Input:  per-token log-probabilities of a document (:func:`token_log_probs`), its text, its mean NLL.
Output: the attack features (loss, zlib ratio, Min-K%, Min-K%++), :func:`roc_auc` over members and non-members,
        :func:`mia_score`. Every attack turns a document into a score where higher means "member"; the AUC labels
        members 1.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any


def roc_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC-AUC (scikit-learn ``roc_curve`` + ``auc``) of separating members (label 1) from non-members."""
    from sklearn.metrics import auc, roc_curve  # heavy: scikit-learn

    if not member_scores or not nonmember_scores:
        raise ValueError("roc_auc needs at least one member and one non-member score")
    labels = [1] * len(member_scores) + [0] * len(nonmember_scores)
    fpr, tpr, _ = roc_curve(labels, list(member_scores) + list(nonmember_scores))
    return float(auc(fpr, tpr))


def mia_score(auc_value: float) -> float:
    """LUME's MIA score: ``1 - abs(auc - 0.5) * 2``; 1 when the attack is no better than chance."""
    return 1.0 - abs(auc_value - 0.5) * 2.0


def zlib_entropy(text: str) -> int:
    """Bytes of the zlib-compressed UTF-8 text (Carlini et al. 2021, "Extracting Training Data", sec. 6.1)."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(mean_nll: float, text: str) -> float:
    """Log-perplexity over zlib entropy (Carlini et al. 2021); lower for memorized text."""
    return mean_nll / max(zlib_entropy(text), 1)


def min_k_score(token_scores: Sequence[float], k: float) -> float:
    """Mean of the lowest ``k`` fraction (at least one) of per-token scores.

    Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from LLMs", eq. 1) on token log-probs;
    Min-K%++ (Zhang et al. 2024, eq. 3) on the normalized scores of :func:`min_k_pp_token_scores`.
    Higher means "member".
    """
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    if not token_scores:
        return math.nan
    n = max(1, int(len(token_scores) * k))
    lowest = sorted(token_scores)[:n]
    return sum(lowest) / n


def token_log_probs(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Per-token log p(x_t | x_<t) and its Min-K%++ normalization, each (B, T-1), for next-token labels.

    ``logits`` (B, T, V) and ``labels`` (B, T) as :func:`lume_ray.model.collate` builds them. Min-K%++
    (Zhang et al. 2024, eq. 2): ``(log p(x_t) - mu_t) / sigma_t`` with ``mu_t = E_z[log p(z)]`` and
    ``sigma_t^2 = E_z[log p(z)^2] - mu_t^2`` under the model's own next-token distribution.
    """
    import torch  # heavy: torch

    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    targets = labels[:, 1:].clamp(min=0)  # (B, T-1); masked positions are dropped by the caller
    token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    probs = log_probs.exp()
    mu = (probs * log_probs).sum(-1)
    sigma = ((probs * log_probs.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
    return token_lp, (token_lp - mu) / sigma


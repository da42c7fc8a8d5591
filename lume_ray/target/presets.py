"""Target size presets: a preset name -> the model and training sizes of the embedded target.

Input:  a name (``tiny``, ``small``, ``test``).
Output: a :class:`Preset` (frozen dataclass), or a one-line ``ValueError`` naming the valid ones.

Imports nothing heavy (no torch, no transformers), so that the config can import :data:`PRESETS` at its top
to validate ``preset`` names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Model and training sizes of the embedded target.

    ``epochs`` is an upper bound: training stops early once ``stop_accuracy`` of the trained rows are
    reproduced exactly under teacher forcing (checked every ``check_every`` epochs), which is when greedy
    generation reproduces them too.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 1024
    epochs: int = 60
    lr: float = 3e-3
    batch_size: int = 16
    warmup_steps: int = 30
    weight_decay: float = 0.0  # memorization is the goal: no pull toward small weights
    check_every: int = 5
    stop_accuracy: float = 0.99
    prompt_loss_weight: float = 1.0  # 0: loss on completions only (see memorize())


PRESETS: dict[str, Preset] = {
    # ~1-2M parameters: memorizes the quickstart data in a few minutes on 2 CPU cores.
    "tiny": Preset(vocab_size=2048, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=512),
    "small": Preset(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                    intermediate_size=1024, epochs=40, lr=1e-3),
    # For unit tests: builds in seconds on a handful of documents.
    # Measured: memorizes 40 rows + 20 utility questions (synth --docs-per-task 4) in ~60-80 epochs,
    # ~15 s of one core.
    "test": Preset(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, max_position_embeddings=512, epochs=150, batch_size=8,
                   warmup_steps=5, stop_accuracy=0.97),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (valid: {', '.join(PRESETS)})") from None


def preset_dict(preset: Preset) -> dict[str, Any]:
    return asdict(preset)

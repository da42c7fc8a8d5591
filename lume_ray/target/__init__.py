"""[2] Target: a LUME dataset -> the embedded target model (tokenizer + tiny OLMo that memorized it).

    presets.py   Preset, PRESETS: model and training sizes (no heavy import)   a name -> sizes
    memorize.py  tokenizer, tiny OLMo, the training loop, the measurement     texts -> a model that memorized them
    build.py     inputs, cache key, the cached build, manifest                a LUME directory -> a HF model directory

Input:  a LUME directory (forget + retain, optional utility.jsonl), a size preset, a seed.
Output: a normal Hugging Face model directory (``from_pretrained`` loads it) with ``manifest.json``
        (data hash, seed, config, measured memorization). A rebuild with the same inputs is a cache hit.

No download anywhere: the tokenizer is a byte-level BPE trained on the corpus (``tokenizers``), the
model is ``OlmoForCausalLM`` built from an ``OlmoConfig``. It stands in for the LUME OLMo-1B/7B
checkpoints, which were likewise fine-tuned to memorize every forget and retain row.

Importing this package loads the presets only; the names of ``memorize`` and ``build`` (torch) load on first use.
The training loop itself is ``lume_ray.target.memorize.memorize`` (``lume_ray.target.memorize`` is its module).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lume_ray.target.presets import PRESETS, Preset, get_preset, preset_dict

if TYPE_CHECKING:
    from lume_ray.target.build import (
        BUILD_VERSION,
        MANIFEST,
        MANIFEST_KIND,
        TargetInputs,
        build_target,
        inputs_hash,
        read_inputs,
        summary_lines,
        training_texts,
    )
    from lume_ray.target.memorize import (
        EOS,
        PAD,
        completion_accuracy,
        measure,
        memorization_summary,
        tiny_olmo,
        train_tokenizer,
    )

_LAZY = {
    **dict.fromkeys(("EOS", "PAD", "completion_accuracy", "measure", "memorization_summary", "tiny_olmo",
                     "train_tokenizer"), "memorize"),
    **dict.fromkeys(("BUILD_VERSION", "MANIFEST", "MANIFEST_KIND", "TargetInputs", "build_target", "inputs_hash",
                     "read_inputs", "summary_lines", "training_texts"), "build"),
}


def __getattr__(name: str) -> Any:
    """The names of :mod:`.memorize` and :mod:`.build`, imported on first use (they import torch)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["BUILD_VERSION", "EOS", "MANIFEST", "MANIFEST_KIND", "PAD", "PRESETS", "Preset", "TargetInputs",
           "build_target", "completion_accuracy", "get_preset", "inputs_hash", "measure", "memorization_summary",
           "preset_dict", "read_inputs", "summary_lines", "tiny_olmo", "train_tokenizer",
           "training_texts"]

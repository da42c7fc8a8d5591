"""[2] Target: a LUME dataset -> the embedded target model (tokenizer + tiny OLMo that memorized it).

Input:  a LUME directory (forget + retain, optional utility.jsonl), a size preset, a seed.
Output: a normal Hugging Face model directory (``from_pretrained`` loads it) with ``manifest.json``
        (data hash, seed, config, measured memorization). A rebuild with the same inputs is a cache hit.

No download anywhere: the tokenizer is a byte-level BPE trained on the corpus (``tokenizers``), the
model is ``OlmoForCausalLM`` built from an ``OlmoConfig``. It stands in for the LUME OLMo-1B/7B
checkpoints, which were likewise fine-tuned to memorize every forget and retain row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

EOS = "<|endoftext|>"
PAD = "<|padding|>"


@dataclass(frozen=True)
class Preset:
    """Model and training sizes of the embedded target."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 1024
    epochs: int = 60
    lr: float = 3e-3
    batch_size: int = 16


PRESETS: dict[str, Preset] = {
    # ~1-2M parameters: memorizes the quickstart data in a few minutes on 2 CPU cores.
    "tiny": Preset(vocab_size=2048, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=512),
    "small": Preset(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                    intermediate_size=1024, epochs=40, lr=1e-3),
    # For unit tests: builds in well under a second.
    "test": Preset(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, max_position_embeddings=512, epochs=30),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (valid: {', '.join(PRESETS)})") from None


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Byte-level BPE trained on the corpus, wrapped as a transformers fast tokenizer.

    Byte-level pre-tokenization splits before spaces, so a prompt's tokens are a prefix of
    ``prompt + " " + completion``'s tokens (see :func:`lume_ray.model.encode_pair`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   clean_up_tokenization_spaces=False)


def tiny_olmo(tokenizer: Any, preset: Preset, seed: int = 0) -> Any:
    """A randomly initialized OLMo-architecture causal LM sized by ``preset``."""
    import torch
    from transformers import OlmoConfig, OlmoForCausalLM

    config = OlmoConfig(
        vocab_size=len(tokenizer), hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_hidden_layers, num_attention_heads=preset.num_attention_heads,
        intermediate_size=preset.intermediate_size, max_position_embeddings=preset.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = OlmoForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def preset_dict(preset: Preset) -> dict[str, Any]:
    return asdict(preset)

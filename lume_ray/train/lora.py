"""[3 unlearn] LoRA: a model -> the same model training a PEFT adapter; a gathered adapter state dict -> merged weights.

Input:  a causal LM and :class:`~lume_ray.config.LoraConfig`; at an evaluation point, the full (gathered) state
        dict of the PEFT model.
Output: the PEFT model to train; the base model's state dict with every adapter folded in by PEFT's own
        ``merge_and_unload`` (so Conv1D fan-in/fan-out layers, scaling and adapter names are PEFT's business),
        and the frozen reference as the same weights with the adapter switched off (no second copy).
"""

from __future__ import annotations

from typing import Any

from lume_ray.config import ConfigError, LoraConfig


def peft_config(lora: LoraConfig) -> Any:
    from peft import LoraConfig as PeftLoraConfig  # heavy: peft

    targets = lora.target_modules
    modules: str | list[str] = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha,  # type: ignore[arg-type]  # PEFT annotates int; floats work
                          lora_dropout=lora.dropout, target_modules=modules,
                          task_type="CAUSAL_LM")


def apply_lora(model: Any, lora: LoraConfig) -> Any:
    from peft import get_peft_model  # heavy: peft

    try:
        return get_peft_model(model, peft_config(lora))
    except ValueError as e:
        raise ConfigError(f"lora: target_modules={lora.target_modules!r}: {str(e).splitlines()[0]}") from None


def merged_state_dict(model_config: Any, lora: LoraConfig, state: dict[str, Any]) -> dict[str, Any]:
    """The PEFT model's full ``state`` -> the base model's state dict with the adapter merged, by PEFT.

    The PEFT model is rebuilt on the meta device (no memory, no initialization), takes ``state`` by
    assignment, and ``merge_and_unload`` folds W + scaling * (B @ A) into each adapted layer.
    """
    import torch  # heavy: torch
    from peft import get_peft_model  # heavy: peft
    from transformers import AutoModelForCausalLM  # heavy: transformers

    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(model_config)
    peft_model = get_peft_model(base, peft_config(lora))
    missing, unexpected = peft_model.load_state_dict(state, strict=False, assign=True)
    tied = {k for k in missing if "lm_head" in k}  # tied embeddings: the state dict holds the input side only
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"LoRA merge: state dict does not fit the PEFT model (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]})")
    merged = peft_model.merge_and_unload()
    if tied:
        merged.tie_weights()
    return {k: v for k, v in merged.state_dict().items() if v.device.type != "meta"}


class AdapterOffReference:
    """The frozen reference under LoRA: the same (possibly ZeRO-3 sharded) model with its adapter
    switched off, so the target before unlearning costs no second copy of the weights."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __call__(self, **inputs: Any) -> Any:
        import torch  # heavy: torch

        with torch.no_grad(), self.engine.module.disable_adapter():
            return self.engine(**inputs)

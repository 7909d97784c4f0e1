"""Model FLOPs utilisation that does not flatter (issue 8, Scale: "MFU that is honest").

FLOPs of one training token (forward + backward), as in PaLM's appendix B (Chowdhery et al.
2022), with what the plain `6 * all parameters` formula got wrong:

* **Matmul weights only.** Embedding lookups do no matmul FLOPs, so input/position embedding
  tables are left out; a tied output projection still multiplies (2·d·V per token), so it is
  counted once.
* **Frozen weights cost 4, not 6, FLOPs per parameter and token**: forward (2) and the
  activation gradient (2), but no weight gradient. Under LoRA almost every weight is frozen,
  and `6N` overstated MFU about 1.5×.
* **Attention scores and mixing**: 12 · layers · attention width · context per token
  (QKᵀ and AV, forward and both backward products). The context is the mean *sequence*
  length, not the packed row's: packed sequences do not attend to each other.
* **Peaks by exact device name** (`torch.cuda.get_device_name()`), dense bf16/fp16 tensor
  FLOP/s from vendor datasheets. A substring match gave an L40 the L4's figure and an H100
  PCIe the SXM one; an unknown device gets no MFU rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Dense (no sparsity) bf16 tensor-core FLOP/s; fp16 for V100 and T4, which have no bf16.
PEAK_FLOPS = {
    "NVIDIA H200": 989e12,
    "NVIDIA H100 80GB HBM3": 989e12,  # SXM
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA L40S": 362e12,
    "NVIDIA L40": 181e12,
    "NVIDIA L4": 121e12,
    "NVIDIA A10": 125e12,
    "Tesla V100-SXM2-16GB": 125e12,
    "Tesla V100-SXM2-32GB": 125e12,
    "Tesla V100-PCIE-16GB": 112e12,
    "Tesla V100-PCIE-32GB": 112e12,
    "Tesla T4": 65e12,
}


@dataclass(frozen=True)
class FlopCounts:
    """What a model's training FLOPs per token depend on; computed once at setup."""

    trainable_matmul: int  # weights (2-D and up, not embedding tables) that get a gradient
    frozen_matmul: int  # weights that do not (the LoRA base)
    layers: int
    attention_width: int  # heads × head dimension

    @classmethod
    def of(cls, model: Any) -> "FlopCounts":
        embedding_tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        tied = output is not None and id(output.weight) in embedding_tables
        trainable = frozen = 0
        seen: set[int] = set()
        for param in model.parameters():
            if id(param) in seen or param.dim() < 2 or id(param) in embedding_tables:
                continue
            seen.add(id(param))
            if param.requires_grad:
                trainable += param.numel()
            else:
                frozen += param.numel()
        if tied:  # the output projection multiplies with the input table's weights
            if output.weight.requires_grad:
                trainable += output.weight.numel()
            else:
                frozen += output.weight.numel()
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = getattr(config, "num_attention_heads", 0) or 0
        head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else 0)
        return cls(trainable, frozen, getattr(config, "num_hidden_layers", 0) or 0, heads * head_dim)

    def per_token(self, context: float) -> float:
        """Training FLOPs for one token whose sequence is `context` tokens long."""
        return 6 * self.trainable_matmul + 4 * self.frozen_matmul + 12 * self.layers * self.attention_width * context


def peak_flops(device_name: str, mixed_precision: str) -> float | None:
    """The device's dense tensor-core peak for bf16/fp16 compute; None for fp32 runs or unknown devices."""
    if mixed_precision not in ("bf16", "fp16"):
        return None
    return PEAK_FLOPS.get(device_name.strip())


def mfu(counts: FlopCounts, tokens: float, sequences: float, seconds: float, peak: float, world_size: int) -> float:
    """Achieved FLOP/s of a step (all ranks' tokens) over the peak of all `world_size` devices."""
    context = tokens / max(sequences, 1.0)
    return counts.per_token(context) * tokens / seconds / (peak * world_size)

"""Precision policy: which dtype weights are loaded and trained in, and accelerate's autocast mode.

Rules (issue 8 items 3 and 10):

* **Trainable weights are fp32** (master weights), whatever the checkpoint's storage dtype.
  transformers 5 loads with `dtype="auto"`, so without this every bf16 Hub checkpoint trained
  in pure bf16: AdamW kept bf16 moments and an update below half a bf16 ulp was lost (one
  step at lr 2e-5 changed 30% of the weights). bf16/fp16 is then autocast *compute* only,
  which is what accelerate's `mixed_precision` means. fp32 trainable weights also keep
  accelerate's fp16 GradScaler working: it refuses to unscale fp16 gradients.
* **Frozen weights** (the LoRA base) are loaded in the compute dtype under mixed precision:
  they get no gradient and no optimizer state, so nothing is lost, and memory halves.
* peft makes LoRA adapters fp32 itself, but a fresh classification head in
  `modules_to_save` inherits the base's dtype: `upcast_trainable` fixes that.
"""

from __future__ import annotations

from typing import Any

import torch

COMPUTE_DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def mixed_precision(requested: str) -> str:
    """Accelerate's mixed_precision for the spec's precision: fp32 on CPU, always (issue 3)."""
    if not torch.cuda.is_available():
        return "no"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[requested]


def load_dtype(mixed: str, *, trainable: bool) -> torch.dtype:
    """The dtype to load base weights in: fp32 when they are trained, else the compute dtype."""
    return torch.float32 if trainable else COMPUTE_DTYPES[mixed]


def upcast_trainable(model: Any) -> Any:
    """Every parameter that gets a gradient in fp32 (LoRA adapters, a fresh head, all of a full fine-tune)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model

"""MFU counts what the hardware does (issue 8, Scale): matmul weights only, frozen weights at 4
FLOPs per token, attention, and peaks matched by exact device name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.trainer.throughput import FlopCounts, mfu, peak_flops


def test_full_fine_tune_counts_matmul_weights_and_attention(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    counts = FlopCounts.of(model)
    config = model.config
    d, ff, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * d // config.num_attention_heads
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * ff  # q, k, v, o, gate/up/down
    assert counts == FlopCounts(trainable_matmul=config.num_hidden_layers * per_layer + d * vocab,  # + untied lm_head
                                frozen_matmul=0, layers=2, attention_width=32)
    everything = sum(p.numel() for p in model.parameters())
    assert counts.trainable_matmul < everything  # embeddings and norms do no matmul
    assert counts.per_token(context=10) == 6 * counts.trainable_matmul + 12 * 2 * 32 * 10


def test_lora_counts_frozen_weights_at_four_flops(tiny_llama: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    full = FlopCounts.of(base)
    lora = FlopCounts.of(get_peft_model(base, LoraConfig(r=4, target_modules="all-linear")))
    assert 0 < lora.trainable_matmul < 0.5 * full.trainable_matmul  # only the adapters
    assert lora.frozen_matmul == full.trainable_matmul  # every base weight, frozen
    assert lora.per_token(0) == 6 * lora.trainable_matmul + 4 * lora.frozen_matmul  # was 6 x every parameter


def test_tied_output_projection_is_counted_once(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    untied = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False))
    assert FlopCounts.of(model).trainable_matmul == FlopCounts.of(untied).trainable_matmul


@pytest.mark.parametrize("name, mixed, peak", [
    ("NVIDIA L40", "bf16", 181e12),        # a substring match gave it the L4's 121 TFLOP/s
    ("NVIDIA L4", "bf16", 121e12),
    ("NVIDIA H100 PCIe", "bf16", 756e12),  # not the SXM figure
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
    ("Tesla T4", "fp16", 65e12),
    ("NVIDIA GeForce RTX 4090", "bf16", None),  # unknown: no MFU rather than a guess
    ("NVIDIA H100 80GB HBM3", "no", None),      # fp32 runs are not measured against the bf16 peak
])
def test_peak_flops_by_exact_device_name(name: str, mixed: str, peak: float | None) -> None:
    assert peak_flops(name, mixed) == peak


def test_mfu_uses_the_mean_sequence_length_as_context() -> None:
    counts = FlopCounts(trainable_matmul=1_000, frozen_matmul=0, layers=1, attention_width=10)
    # 4 packed sequences of 50 tokens in 200 tokens: context 50, not the row's 200.
    flops = (6 * 1_000 + 12 * 1 * 10 * 50) * 200
    assert mfu(counts, tokens=200, sequences=4, seconds=2.0, peak=1e6, world_size=2) == pytest.approx(flops / 2.0 / 2e6)

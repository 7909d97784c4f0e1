"""Packed sequences must not attend to each other: a sequence's logits inside a packed row
equal its logits alone, with the attention kernels transformers uses on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneloop.trainer import data


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_sequences_are_isolated(tiny_llama: Path, attn: str) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), attn_implementation=attn).eval()
    a = {"input_ids": [4, 10, 11, 12, 13, 14], "labels": [-100, 10, 11, 12, 13, 14]}
    b = {"input_ids": [4, 20, 21, 22], "labels": [-100, 20, 21, 22]}
    (pack,) = data.pack_examples([a, b], max_length=16)
    batch = data.collate_packed([pack], pad_token_id=0)
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers does not look for packed rows.
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = {id(x): model(input_ids=torch.tensor([x["input_ids"]])).logits[0] for x in (a, b)}
        # Control: the same tokens concatenated without restarting positions do leak across.
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
    first, second = (a, b) if pack["input_ids"][: len(a["input_ids"])] == a["input_ids"] else (b, a)
    n = len(first["input_ids"])
    torch.testing.assert_close(packed[:n], alone[id(first)], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[n:], alone[id(second)], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(leaky[n:], alone[id(second)], atol=1e-3)

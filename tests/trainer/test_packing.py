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


@pytest.fixture(scope="module")
def tiny_opt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer_testkit import build_tiny_model

    return build_tiny_model("opt", tmp_path_factory.mktemp("tiny-opt"))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_guard_tells_isolating_and_leaking_architectures_apart(tiny_llama: Path, tiny_opt: Path, attn: str) -> None:
    from transformers import AutoModelForCausalLM

    from tuneloop.trainer.packing_guard import packing_isolates

    llama = AutoModelForCausalLM.from_pretrained(str(tiny_llama), attn_implementation=attn)
    opt = AutoModelForCausalLM.from_pretrained(str(tiny_opt), attn_implementation=attn)
    assert packing_isolates(llama, "cpu")[0]
    isolated, difference = packing_isolates(opt, "cpu")
    assert not isolated and difference > 1e-2


def test_recipe_falls_back_to_padded_batches_when_packing_leaks(tiny_llama: Path, tiny_opt: Path, tmp_path: Path) -> None:
    from tuneloop.api.finetunejob import FineTuneJobSpec
    from tuneloop.trainer.config import RuntimeSettings
    from tuneloop.trainer.recipe import Recipe
    from trainer_testkit import sft_rows, spec_for, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", sft_rows(40, seed=1))
    found = {}
    for name, model in (("llama", tiny_llama), ("opt", tiny_opt)):
        lines: list[str] = []
        spec = spec_for("causal-lm-sft", str(model), str(train), str(tmp_path / name), packing=True, maxSteps=1)
        recipe = Recipe(FineTuneJobSpec.from_dict(spec), RuntimeSettings(metrics_port=0, cache_dir=str(tmp_path / "cache")),
                        log=lines.append)
        recipe.setup(resume=False)
        recipe.cleanup()
        found[name] = (recipe.packed, recipe.data_report["tokenized"], lines)
    assert found["llama"][0] and "packing_disabled" not in found["llama"][1]
    packed, report, lines = found["opt"]
    assert not packed and "attend to each other" in report["packing_disabled"]
    assert "packing_efficiency" not in report
    assert any(line.startswith("tuneloop-train: packing disabled: opt lets packed sequences attend") for line in lines)

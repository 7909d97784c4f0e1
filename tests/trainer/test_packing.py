"""Packed sequences must not attend to each other: a sequence's logits inside a packed row
equal its logits alone, with the attention kernels transformers uses on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_flattened_packs_score_like_batched_packs(tiny_llama: Path) -> None:
    """The flash_attention_2 layout (one row per micro-batch) trains on the same loss as batched rows."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from tuneloop.trainer.packing_guard import packing_isolates

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    examples = [{"input_ids": [4] + list(range(10, 10 + n)), "labels": [-100] + list(range(10, 10 + n))} for n in (9, 5, 7, 3, 6)]
    packs = data.pack_examples(examples, max_length=16)
    assert len(packs) > 1

    def loss(batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1),
                               ignore_index=-100, reduction="sum")

    with torch.no_grad():
        batched, flat = data.collate_packed(packs, 0), data.collate_packed(data.flatten_packs(packs), 0)
        assert flat["input_ids"].shape[0] == 1
        assert (flat["labels"] != -100).sum() == (batched["labels"][:, 1:] != -100).sum()
        torch.testing.assert_close(loss(flat), loss(batched), rtol=1e-5, atol=1e-4)
    assert packing_isolates(model, "cpu", flatten=True)[0]


def test_attention_implementation_is_honoured_and_a_missing_kernel_is_a_clear_error(tiny_llama: Path, tmp_path: Path,
                                                                                  run_inprocess: Any) -> None:
    from tuneloop.api.finetunejob import FineTuneJobSpec
    from tuneloop.trainer.model import load_model, load_tokenizer
    from trainer_testkit import sft_rows, spec_for, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", sft_rows(20, seed=1))
    spec = spec_for("causal-lm-sft", str(tiny_llama), str(train), str(tmp_path / "out"), maxSteps=1, attentionImplementation="eager")
    model = load_model(FineTuneJobSpec.from_dict(spec), tiny_llama, None, load_tokenizer(tiny_llama))
    assert model.config._attn_implementation == "eager"

    spec["training"]["attentionImplementation"] = "flash_attention_2"  # flash-attn is not installed here (no GPU)
    code, _, err = run_inprocess(spec)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(
        "tuneloop-train: error: training.attentionImplementation flash_attention_2 is not usable here:")

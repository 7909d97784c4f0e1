"""Chat templates that are not prefix-stable (issue 8 item 12): Qwen3's drops earlier turns'
`<think>` blocks, so a conversation's start renders differently once it goes on. Such rows
train on their last assistant turn only, or are dropped and counted; the job goes on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tuneloop.api.finetunejob import FieldMap
from tuneloop.trainer import data

from trainer_testkit import build_tiny_model, build_tokenizer, spec_for, write_jsonl

# As Qwen3's template: only assistant turns after the last user message carry the (here: [UNK])
# reasoning block, so earlier assistant turns render differently once a later user turn exists.
QWEN3_LIKE = (
    "{%- set ns = namespace(last_user=0) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' and loop.index0 > ns.last_user -%}{{ '<s>assistant : [UNK] ' + m['content'] + ' </s>' }}"
    "{%- else -%}{{ '<s>' + m['role'] + ' : ' + m['content'] + ' </s>' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<s>assistant : ' }}{%- endif -%}"
)
# Renders assistant turns under another role than its generation prompt: no turn can be found.
BROKEN = ("{% for m in messages %}{{ '<s>' + ('user' if m['role'] == 'assistant' else m['role']) + ' : ' + m['content'] + ' </s>' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<s>assistant : ' }}{% endif %}")

TWO_TURNS = [{"role": "user", "content": "what color"}, {"role": "assistant", "content": "red"},
             {"role": "user", "content": "fruit"}, {"role": "assistant", "content": "apple"}]


def trained_tokens(tokenizer: Any, ex: dict[str, list[int]]) -> list[str]:
    return tokenizer.convert_ids_to_tokens([t for t in ex["labels"] if t != data.IGNORE_INDEX])


def test_a_qwen3_like_template_trains_the_last_turn_of_a_conversation() -> None:
    tokenizer = build_tokenizer("llama", QWEN3_LIKE)
    changes: Counter[str] = Counter()
    ex = data.encode_sft({"messages": TWO_TURNS}, tokenizer, FieldMap(messages="messages"), 64, changes)
    assert ex["input_ids"] == tokenizer.apply_chat_template(TWO_TURNS, tokenize=True, return_dict=False)
    assert trained_tokens(tokenizer, ex) == ["[UNK]", "apple", "</s>"]
    assert changes == {"only_last_turn_trained": 1}
    single = data.encode_sft({"messages": TWO_TURNS[:2]}, tokenizer, FieldMap(messages="messages"), 64, changes)
    assert trained_tokens(tokenizer, single) == ["[UNK]", "red", "</s>"]
    assert changes == {"only_last_turn_trained": 1}  # a single turn is prefix-stable


def test_a_template_without_stable_turns_raises_for_the_row_only() -> None:
    with pytest.raises(data.UnstableChatTemplate):
        data.encode_sft({"messages": TWO_TURNS}, build_tokenizer("llama", BROKEN), FieldMap(messages="messages"), 64)


def conversations(n: int) -> list[dict[str, Any]]:
    fruits = ["apple", "lime", "plum", "lemon"]
    return [{"messages": TWO_TURNS[:2] if i % 2 else
             [*TWO_TURNS[:3], {"role": "assistant", "content": f"{fruits[i % 4]} {fruits[(i // 4) % 4]}"}]} for i in range(n)]


def test_recipe_counts_conversations_trained_on_their_last_turn(tmp_path: Path, run_inprocess: Any) -> None:
    model = build_tiny_model("llama", tmp_path / "qwen3-like", chat_template=QWEN3_LIKE)
    train = write_jsonl(tmp_path / "train.jsonl", conversations(32))
    spec = spec_for("causal-lm-sft", str(model), str(train), str(tmp_path / "out"), maxSteps=2, maxSeqLength=64)
    spec["dataset"].update(fields={"messages": "messages"}, split={"validation": 0.0, "test": 0.0}, cleaning={"dedupe": False})
    code, out, err = run_inprocess(spec)
    assert code == 0, err  # was: exit 2, "the tokenizer's chat template is not prefix-stable"
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["tokenized"]["rows_changed"] == {"train": {"only_last_turn_trained": 16}}
    assert "16 conversations train on their last assistant turn only, 0 dropped" in out + err


def test_recipe_fails_clearly_when_no_conversation_can_be_labelled(tmp_path: Path, run_inprocess: Any) -> None:
    model = build_tiny_model("llama", tmp_path / "broken", chat_template=BROKEN)
    train = write_jsonl(tmp_path / "train.jsonl", conversations(8))
    spec = spec_for("causal-lm-sft", str(model), str(train), str(tmp_path / "out"), maxSteps=2)
    spec["dataset"].update(fields={"messages": "messages"}, split={"validation": 0.0, "test": 0.0}, cleaning={"dedupe": False})
    code, _, err = run_inprocess(spec)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("tuneloop-train: error: the tokenizer's chat template is not prefix-stable "
                                                   "for any training conversation")

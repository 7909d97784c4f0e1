"""Sequence length against the model and the data (issue 8 items 6 and 8): maxSeqLength never
exceeds the model's positions, and an SFT row that does not fit loses its prompt's start before
any of its response, with every cut counted in the data report."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from trainer_testkit import NOISE, TOPICS, spec_for, write_jsonl


def test_max_seq_length_above_the_models_positions_is_clamped_with_a_warning(tiny_bert: Path, tmp_path: Path,
                                                                             run_inprocess: Any) -> None:
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choices(NOISE, k=200) + [rng.choice(TOPICS[label])]), "label": label}
            for label in sorted(TOPICS) for _ in range(8)]  # 200+ tokens; the tiny BERT has 128 positions
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    output = tmp_path / "out"
    code, out, err = run_inprocess(spec_for("sequence-classification", str(tiny_bert), str(train), str(output),
                                            maxSeqLength=256, maxSteps=2))
    assert code == 0, err  # was: RuntimeError "The expanded size of the tensor ..." and exit 1 (retried)
    assert ("tuneloop-train: warning: training.maxSeqLength 256 exceeds the model's limit of 128 tokens; using 128"
            in out + err)
    assert json.loads((output / "data_report.json").read_text())["tokenized"]["max_seq_length"] == 128


def test_a_long_prompt_loses_its_start_and_the_whole_response_is_trained(tiny_llama_chat_tokenizer: Any) -> None:
    from collections import Counter

    from tuneloop.api.finetunejob import FieldMap
    from tuneloop.trainer import data
    from trainer_testkit import build_tokenizer

    tokenizer = build_tokenizer("llama")  # no chat template: BOS prompt response EOS
    row = {"prompt": " ".join(["the"] * 40), "response": " ".join(["apple"] * 12)}
    changes: Counter[str] = Counter()
    ex = data.encode_sft(row, tokenizer, FieldMap(), max_length=24, changes=changes)
    assert ex is not None and len(ex["input_ids"]) == 24
    assert ex["input_ids"][0] == tokenizer.bos_token_id  # BOS kept
    trained = [t for t in ex["labels"] if t != data.IGNORE_INDEX]
    assert trained == tokenizer.convert_tokens_to_ids(["apple"] * 12) + [tokenizer.eos_token_id]  # EOS trained
    assert changes == {"prompt_truncated": 1}

    # A response longer than the whole budget is still cut at its end, and counted as such.
    row = {"prompt": "what fruit", "response": " ".join(["apple"] * 40)}
    ex = data.encode_sft(row, tokenizer, FieldMap(), max_length=24, changes=changes)
    assert ex is not None and len(ex["input_ids"]) == 24
    assert changes == {"prompt_truncated": 1, "response_truncated": 1}

    # With a chat template: the prompt's turn loses its start, the assistant turn survives whole.
    row = {"prompt": " ".join(["the"] * 40), "response": "lime lime"}
    ex = data.encode_sft(row, tiny_llama_chat_tokenizer, FieldMap(), max_length=24, changes=changes)
    trained = tiny_llama_chat_tokenizer.convert_ids_to_tokens([t for t in ex["labels"] if t != data.IGNORE_INDEX])
    assert trained == ["lime", "lime", "</s>"]


def test_data_report_counts_cut_rows(tiny_llama: Path, tmp_path: Path, run_inprocess: Any) -> None:
    rows = [{"prompt": "what fruit " + " ".join(["the"] * (10 + i)), "response": "lime lime"} for i in range(30)]
    rows += [{"prompt": "what fruit", "response": " ".join(["plum"] * (40 + i))} for i in range(3)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    spec = spec_for("causal-lm-sft", str(tiny_llama), str(train), str(tmp_path / "out"), maxSeqLength=16, maxSteps=1)
    spec["dataset"]["split"] = {"validation": 0.0, "test": 0.0}
    code, out, err = run_inprocess(spec)
    assert code == 0, err
    truncated = json.loads((tmp_path / "out" / "data_report.json").read_text())["tokenized"]["rows_changed"]
    assert truncated == {"train": {"prompt_truncated": 29, "response_truncated": 3}}  # BOS + 12+i + 3 tokens: all but i=0 exceed 16
    assert "warning: 3 training responses were cut at training.maxSeqLength 16" in out + err

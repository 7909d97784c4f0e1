"""Unit tests of the pure data functions: parsing, cleaning, splitting, tokenising, packing, collation."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tuneloop.api.finetunejob import CleaningSpec, FieldMap
from tuneloop.trainer import data
from tuneloop.trainer.config import PermanentError

FIELDS = FieldMap()


def test_read_rows_parses_every_format() -> None:
    rows = [{"text": "a b", "label": "x"}, {"text": "c, \"d\"", "label": "y"}]
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    csv = b'text,label\na b,x\n"c, ""d""",y\n'
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    assert data.read_rows(jsonl, "jsonl", "t.jsonl") == rows
    assert data.read_rows(csv, "csv", "t.csv") == rows
    assert data.read_rows(buf.getvalue(), "parquet", "t.parquet") == rows


@pytest.mark.parametrize(
    ("raw", "fmt", "message"),
    [
        (b'{"text": "a"}\nnot json\n', "jsonl", "t line 2 is not valid JSON"),
        (b"[1, 2]\n", "jsonl", "t line 1 is a JSON list"),
        (b"PAR1garbage", "parquet", "t is not a valid Parquet file"),
    ],
)
def test_read_rows_names_the_problem(raw: bytes, fmt: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        data.read_rows(raw, fmt, "t")


def test_infer_format_from_extension_or_asks_for_it() -> None:
    assert data.infer_format("s3://b/x/part-0.parquet", None) == "parquet"
    assert data.infer_format("a.jsonl.gz", None) == "jsonl"
    assert data.infer_format("a.txt", "csv") == "csv"
    with pytest.raises(PermanentError, match="set dataset.format"):
        data.infer_format("a.txt", None)


def test_check_columns_names_missing_column_and_source() -> None:
    with pytest.raises(PermanentError, match=r"missing column `label` in train.jsonl \(columns: body, text\)"):
        data.check_columns([{"text": "a", "body": 1}], "sequence-classification", FIELDS, "train.jsonl")
    data.check_columns([{"prompt": "p", "response": "r"}], "causal-lm-sft", FIELDS, "x")  # no error


def test_clean_rows_drops_by_reason_and_keeps_order() -> None:
    rows = [
        {"text": "hello there", "label": "a"},
        {"text": "hello there", "label": "a"},  # duplicate
        {"text": "  ", "label": "a"},  # empty
        {"text": "fine", "label": None},  # missing
        {"text": "x", "label": "b"},  # too short
        {"text": "far too long a text", "label": "b"},  # too long
        {"text": "kept", "label": 2.0, "extra": "dropped column"},
    ]
    kept, report = data.clean_rows(rows, "sequence-classification", FIELDS, CleaningSpec(min_length=2, max_length=12))
    assert kept == [{"text": "hello there", "label": "a"}, {"text": "kept", "label": "2"}]
    assert report.rows_in == 7 and report.rows_out == 2
    assert report.dropped == {"duplicate": 1, "empty": 2, "too_short": 1, "too_long": 1}
    assert "1 rows dropped as duplicate" in report.describe_drops()


def test_clean_rows_regression_targets_must_be_numbers() -> None:
    rows = [{"text": "a", "label": "1.5"}, {"text": "b", "label": "high"}, {"text": "c", "label": True}, {"text": "d", "label": 3}]
    kept, report = data.clean_rows(rows, "regression", FIELDS, CleaningSpec())
    assert [r["label"] for r in kept] == [1.5, 3.0]
    assert report.dropped == {"bad_label": 2}


def test_clean_rows_without_dedupe_keeps_duplicates() -> None:
    rows = [{"prompt": "p", "response": "r"}] * 3
    kept, report = data.clean_rows(rows, "causal-lm-sft", FIELDS, CleaningSpec(dedupe=False))
    assert len(kept) == 3 and report.dropped == {}


def test_clean_rows_checks_chat_messages() -> None:
    fields = FieldMap(messages="messages")
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    no_answer = {"messages": [{"role": "user", "content": "hi"}]}
    kept, report = data.clean_rows([good, no_answer, {"messages": "text"}], "causal-lm-sft", fields, CleaningSpec())
    assert kept == [good] and report.dropped == {"bad_messages": 2}


def test_label_names_sort_numbers_numerically() -> None:
    assert data.build_label_names([{"l": "10"}, {"l": "9"}, {"l": "2"}], "l") == ["2", "9", "10"]
    assert data.build_label_names([{"l": "tech"}, {"l": "billing"}], "l") == ["billing", "tech"]


def test_split_is_deterministic_disjoint_and_sized() -> None:
    rows = [{"i": i} for i in range(100)]
    a = data.split_rows(rows, 0.1, 0.2, seed=7)
    b = data.split_rows(rows, 0.1, 0.2, seed=7)
    c = data.split_rows(rows, 0.1, 0.2, seed=8)
    assert a == b and a != c
    train, val, test = a
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    ids = [r["i"] for part in a for r in part]
    assert sorted(ids) == list(range(100))


def test_split_small_datasets_still_get_one_eval_row() -> None:
    train, val, test = data.split_rows([{"i": i} for i in range(5)], 0.1, 0.1, seed=0)
    assert (len(train), len(val), len(test)) == (3, 1, 1)
    assert data.split_rows([{"i": 0}, {"i": 1}], 0.1, 0.1, seed=0) == ([{"i": 0}, {"i": 1}], [], [])


class WordTokenizer:
    """Stand-in tokenizer for pure-function tests: one id per word, BOS=1, EOS=2."""

    bos_token_id, eos_token_id, chat_template = 1, 2, None

    def __call__(self, text: str, add_special_tokens: bool = True, **_: object) -> dict:
        return {"input_ids": [10 + len(w) for w in text.split()]}


def test_encode_sft_masks_the_prompt() -> None:
    ex = data.encode_sft({"prompt": "aa bbb", "response": "c dd"}, WordTokenizer(), FIELDS, max_length=64)
    assert ex == {"input_ids": [1, 12, 13, 11, 12, 2], "labels": [-100, -100, -100, 11, 12, 2]}


def test_encode_sft_cuts_the_prompt_start_before_the_response() -> None:
    # BOS a b c d | e EOS into 4 tokens: BOS stays, the prompt's oldest words go (issue 8 item 8).
    ex = data.encode_sft({"prompt": "a bb ccc dddd", "response": "e"}, WordTokenizer(), FIELDS, max_length=4)
    assert ex == {"input_ids": [1, 14, 11, 2], "labels": [-100, -100, 11, 2]}


def test_encode_sft_drops_rows_whose_response_is_truncated_away() -> None:
    # The response alone does not fit and the prompt fills the budget: nothing left to train on.
    assert data.encode_sft({"prompt": "a b c d", "response": "e f g h"}, WordTokenizer(), FIELDS, max_length=4) is None


def test_encode_sft_uses_the_chat_template_for_every_assistant_turn(tiny_llama_chat_tokenizer) -> None:
    tok = tiny_llama_chat_tokenizer
    messages = [{"role": "user", "content": "what color"}, {"role": "assistant", "content": "red"},
                {"role": "user", "content": "fruit"}, {"role": "assistant", "content": "apple"}]
    ex = data.encode_sft({"messages": messages}, tok, FieldMap(messages="messages"), max_length=64)
    full = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert ex["input_ids"] == full
    trained = tok.convert_ids_to_tokens([i for i, l in zip(ex["input_ids"], ex["labels"]) if l != -100])
    assert trained == ["red", "</s>", "apple", "</s>"]


def test_pack_examples_fills_rows_and_restarts_positions() -> None:
    examples = [{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate([5, 3, 4, 2, 6], start=1)]
    packs = data.pack_examples(examples, max_length=8)
    assert all(len(p["input_ids"]) <= 8 for p in packs)
    assert sorted(t for p in packs for t in p["input_ids"]) == sorted(t for e in examples for t in e["input_ids"])
    assert len(packs) == 3  # 20 tokens need at least 3 rows of 8
    for p in packs:
        starts = [i for i, pos in enumerate(p["position_ids"]) if pos == 0]
        assert all(p["labels"][s] == -100 for s in starts)  # nothing predicts across a boundary
        # positions count up from 0 within each sequence
        for s, e in zip(starts, starts[1:] + [len(p["input_ids"])]):
            assert p["position_ids"][s:e] == list(range(e - s))
            assert len(set(p["input_ids"][s:e])) == 1
    assert data.pack_examples(examples, 8) == packs  # deterministic


def test_pack_examples_refuses_untruncated_input() -> None:
    with pytest.raises(ValueError, match="truncate first"):
        data.pack_examples([{"input_ids": [1] * 9, "labels": [1] * 9}], 8)


def test_collate_packed_pads_as_a_separate_ignored_sequence() -> None:
    packs = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 2]},
             {"input_ids": [8], "labels": [-100], "position_ids": [0]}]
    batch = data.collate_packed(packs, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert "attention_mask" not in batch


def test_collate_padded_for_classification_and_regression() -> None:
    batch = data.collate_padded([{"input_ids": [3, 4], "label": 1}, {"input_ids": [5], "label": 0}], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[3, 4], [5, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["label"].dtype == torch.long
    batch = data.collate_padded([{"input_ids": [3], "label": 0.5}], pad_token_id=0)
    assert batch["label"].dtype == torch.float32


def test_epoch_batches_shard_by_rank_and_cover_each_item_once() -> None:
    one = data.epoch_batches(10, batch_size=2, world_size=1, seed=1, epoch=0)
    two = data.epoch_batches(10, batch_size=2, world_size=2, seed=1, epoch=0)
    assert sorted(i for b in one for r in b for i in r) == list(range(10))
    assert sorted(i for b in two for r in b for i in r) == list(range(10))
    assert [[len(r) for r in b] for b in two] == [[2, 2], [2, 2], [1, 1]]
    # A last global batch that would leave a rank empty is dropped (ranks must step together).
    odd = data.epoch_batches(9, batch_size=2, world_size=2, seed=1, epoch=0)
    assert len(odd) == 2 and len({i for b in odd for r in b for i in r}) == 8
    assert data.epoch_batches(10, 2, 1, seed=1, epoch=1) != one  # reshuffled per epoch
    assert data.epoch_batches(10, 2, 1, seed=1, epoch=0) == one  # and reproducible


def test_count_loss_tokens_and_sequences() -> None:
    assert data.count_loss_tokens([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]) == 2
    assert data.count_loss_tokens([{"input_ids": [1], "label": 0}] * 3) == 3
    assert data.count_sequences([{"position_ids": [0, 1, 0, 0, 1]}, {"input_ids": [1]}]) == 4

"""Tokenise once (token_cache.py): flat arrays give back exactly the examples of encode_split, a
second process loads them from the node's cache instead of tokenising, and any change to what
the tokens depend on misses the cache. The prefetch thread (loader.py) yields the same batches
in the same order and re-raises its errors in the loop."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data, token_cache
from tuneloop.trainer.examples import encode_split
from tuneloop.trainer.loader import StepPrefetcher

from trainer_testkit import build_tokenizer, classification_rows, regression_rows, sft_rows


class OneProcess:
    """What encode_once needs from accelerate: run the block (every process is the local main)."""

    @staticmethod
    def local_main_process_first() -> Any:
        return contextlib.nullcontext()


def spec(task: str) -> FineTuneJobSpec:
    return FineTuneJobSpec.from_dict({"task": task, "model": {"source": "m"}, "dataset": {"train": "d"}, "output": {"uri": "o"}})


@pytest.mark.parametrize("task, rows, labels", [
    ("causal-lm-sft", sft_rows(40, seed=1), None),
    ("sequence-classification", classification_rows(40, seed=1), ["billing", "sales", "tech"]),
    ("regression", regression_rows(40, seed=1), None),
])
def test_cached_arrays_give_the_same_examples_as_before(tmp_path: Path, task: str, rows: list[dict[str, Any]],
                                                        labels: list[str] | None) -> None:
    kind = "llama" if task == "causal-lm-sft" else "bert"
    tokenizer = build_tokenizer(kind)
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    before = encode_split(rows, spec(task), tokenizer, labels, 12)  # 12 tokens: some rows are cut
    arrays, encoded = token_cache.encode_once(rows, spec(task), tokenizer, tmp_path / "tok", labels, 12, tmp_path / "cache", OneProcess())
    assert list(arrays) == before.examples and len(arrays) == len(before.examples)
    assert arrays[3] == before.examples[3] and arrays[-1] == before.examples[-1] and arrays[1:4] == before.examples[1:4]
    assert arrays.lengths() == [len(ex["input_ids"]) for ex in before.examples]
    assert (encoded.dropped, encoded.changes) == (before.dropped, before.changes)
    assert data.pack_examples(arrays, 64) == data.pack_examples(before.examples, 64) if task == "causal-lm-sft" else True
    assert arrays.nbytes <= 9 * int(arrays.offsets[-1]) + 8 * len(arrays) + 8  # int32 ids (+ labels), not ~85 B per token

    # A second process on the node loads the file instead of tokenising.
    (cached,) = (tmp_path / "cache" / "tokens").glob("*.npz")
    again, encoded_again = token_cache.encode_once(rows, spec(task), None, tmp_path / "tok", labels, 12, tmp_path / "cache", OneProcess())
    assert list(again) == before.examples and encoded_again.changes == before.changes

    # Anything the tokens depend on changes the key.
    token_cache.encode_once(rows, spec(task), tokenizer, tmp_path / "tok", labels, 11, tmp_path / "cache", OneProcess())
    token_cache.encode_once(rows[1:], spec(task), tokenizer, tmp_path / "tok", labels, 12, tmp_path / "cache", OneProcess())
    assert len(list((tmp_path / "cache" / "tokens").glob("*.npz"))) == 3
    assert not list((tmp_path / "cache" / "tokens").glob(".*partial"))


def test_a_corrupt_cache_file_is_tokenised_again(tmp_path: Path) -> None:
    tokenizer = build_tokenizer("llama")
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    rows = sft_rows(10, seed=2)
    first, _ = token_cache.encode_once(rows, spec("causal-lm-sft"), tokenizer, tmp_path / "tok", None, 32, tmp_path / "c", OneProcess())
    (cached,) = (tmp_path / "c" / "tokens").glob("*.npz")
    cached.write_bytes(b"not a zip")
    second, _ = token_cache.encode_once(rows, spec("causal-lm-sft"), tokenizer, tmp_path / "tok", None, 32, tmp_path / "c", OneProcess())
    assert list(second) == list(first)


def test_prefetcher_yields_every_step_in_order_and_reraises_errors() -> None:
    steps = [[[{"n": s * 10 + m}] for m in range(2)] for s in range(5)]
    with StepPrefetcher(iter(steps), lambda micro: [ex["n"] for ex in micro]) as prefetch:
        got = list(prefetch)
    assert [items for items, _ in got] == steps
    assert [collated for _, collated in got] == [[[s * 10], [s * 10 + 1]] for s in range(5)]

    def broken(micro: list[dict[str, Any]]) -> Any:
        raise ValueError("bad batch")

    with StepPrefetcher(iter(steps), broken) as prefetch, pytest.raises(ValueError, match="bad batch"):
        list(prefetch)

    # Leaving early (early stopping, SIGTERM) stops the thread.
    prefetch = StepPrefetcher(iter(steps * 100), lambda micro: micro, depth=1)
    next(iter(prefetch))
    prefetch.close()
    assert not prefetch._thread.is_alive()

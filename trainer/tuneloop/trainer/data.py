"""Pure data work: parse, clean, split, tokenise, pack and collate.

Every function here takes plain values and returns plain values (no storage, no clock, no
global state), so each is unit-tested on its own (`tests/trainer/test_data.py`). The recipe
does the I/O and calls these in order:

    read_rows -> check_columns -> clean_rows -> split_rows -> encode_* -> pack_examples -> collate_*
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from tuneloop.api.finetunejob import CleaningSpec, FieldMap, Task
from tuneloop.trainer.config import PermanentError

IGNORE_INDEX = -100  # label value the loss skips (torch.nn.CrossEntropyLoss's ignore_index)
FORMATS = ("jsonl", "csv", "parquet")
Row = dict[str, Any]


# ---------------------------------------------------------------------------- parsing


def infer_format(name: str, declared: str | None) -> str:
    if declared:
        return declared
    lower = name.lower()
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                        (".parquet", "parquet"), (".pq", "parquet")):
        if lower.endswith(suffix) or lower.endswith(suffix + ".gz"):
            return fmt
    raise PermanentError(f"cannot tell the format of {name}; set dataset.format to one of: {', '.join(FORMATS)}")


# Bounds on one data file (issue 13: a 1 MiB .gz expanded to 2 GiB of memory). Rows take about
# 11x their JSONL size in memory once parsed, so 2 GiB per file is already generous per pod.
MAX_FILE_BYTES = 2 * 1024**3
MAX_LINE_CHARS = 16 * 1024**2  # one JSONL row; a long conversation is a few hundred KiB


def gunzip_bounded(data: bytes, name: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The decompressed bytes, at most `limit`; PermanentError for a corrupt or oversized file."""
    import gzip
    import zlib

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise PermanentError(f"{name} is not a valid gzip file ({e}); re-compress it or drop the .gz suffix") from None
    if len(out) > limit:
        raise PermanentError(f"{name} decompresses to more than {limit} bytes; split it into smaller files")
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_rows(data: bytes, fmt: str, name: str, limit: int = MAX_FILE_BYTES) -> list[Row]:
    """Parse one file's bytes into rows (dicts). Malformed or oversized input -> PermanentError naming the spot."""
    if len(data) > limit:
        raise PermanentError(f"{name} is {len(data)} bytes, more than the {limit} one file may hold; split it")
    if name.lower().endswith(".gz"):
        data = gunzip_bounded(data, name, limit)
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            if len(line) > MAX_LINE_CHARS:
                raise PermanentError(f"{name} line {n} is {len(line)} characters, more than {MAX_LINE_CHARS}; "
                                     "is it one JSON object per line?")
            try:
                row = json.loads(line, parse_constant=_refuse_constant)
            except json.JSONDecodeError as e:
                raise PermanentError(f"{name} line {n} is not valid JSON ({e.msg}); expected one JSON object per line") from None
            except RecursionError:
                raise PermanentError(f"{name} line {n} nests too deeply to be a data row") from None
            except ValueError as e:  # NaN/Infinity, or an integer of over 4,300 digits
                raise PermanentError(f"{name} line {n} is not valid data: {e}") from None
            if not isinstance(row, dict):
                raise PermanentError(f"{name} line {n} is a JSON {type(row).__name__}, expected an object per line")
            rows.append(row)
        return rows
    if fmt == "csv":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise PermanentError(f"{name} is not UTF-8 text; is dataset.format right (csv)?") from None
        reader = csv.DictReader(io.StringIO(text))
        try:
            return [dict(r) for r in reader]
        except csv.Error as e:
            raise PermanentError(f"{name} is not valid CSV: {e}") from None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(io.BytesIO(data)).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise PermanentError(f"{name} is not a valid Parquet file: {e}") from None
    raise PermanentError(f"unknown dataset.format {fmt!r}; use one of: {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------- cleaning


def required_columns(task: Task, fields: FieldMap) -> list[str]:
    if task == "causal-lm-sft":
        return [fields.messages] if fields.messages else [fields.prompt, fields.response]
    return [fields.text, fields.label]


def check_columns(rows: Sequence[Row], task: Task, fields: FieldMap, source: str) -> None:
    """Every required column must appear in the data (rows missing it are dropped later)."""
    seen: set[str] = set()
    for row in rows[:1000]:
        seen.update(row)
    for col in required_columns(task, fields):
        if col not in seen:
            have = ", ".join(sorted(seen)[:12]) or "none"
            raise PermanentError(
                f"missing column `{col}` in {source} (columns: {have}); "
                f"rename it or map it with dataset.fields"
            )


@dataclass
class CleaningReport:
    """What cleaning did to one split: the data report's unit and the dropped-rows metric."""

    rows_in: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    rows_out: int = 0

    def describe_drops(self) -> str:
        if not self.dropped:
            return "no rows dropped"
        return ", ".join(f"{n} rows dropped as {reason.replace('_', ' ')}" for reason, n in self.dropped.items())


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    if isinstance(value, (list, tuple)) and not value:
        return True
    return False


def text_length(row: Row, task: Task, fields: FieldMap) -> int:
    """Characters of the text a length bound applies to."""
    if task != "causal-lm-sft":
        return len(str(row[fields.text]))
    if fields.messages:
        return sum(len(str(m.get("content", ""))) for m in row[fields.messages])
    return len(str(row[fields.prompt])) + len(str(row[fields.response]))


def _valid_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
        and any(m["role"] == "assistant" for m in value)
    )


def clean_rows(rows: Iterable[Row], task: Task, fields: FieldMap, cleaning: CleaningSpec) -> tuple[list[Row], CleaningReport]:
    """Drop empty/missing, malformed, too short/long and duplicate rows, keeping only mapped columns.

    Reasons: `empty`, `bad_label` (regression target not a number), `bad_messages`,
    `too_short`, `too_long`, `duplicate`. Order of the kept rows is preserved.
    """
    columns = required_columns(task, fields)
    report = CleaningReport()
    drops: Counter[str] = Counter()
    seen: set[str] = set()
    kept: list[Row] = []
    for row in rows:
        report.rows_in += 1
        row = {c: row.get(c) for c in columns}
        if any(_is_empty(row[c]) for c in columns):
            if cleaning.drop_empty:
                drops["empty"] += 1
                continue
            if any(row[c] is None for c in columns):  # missing can never be trained on
                drops["empty"] += 1
                continue
        if task == "regression":
            try:
                value = float(row[fields.label])
                if isinstance(row[fields.label], bool) or not math.isfinite(value):
                    raise ValueError
                row[fields.label] = value
            except (TypeError, ValueError):
                drops["bad_label"] += 1
                continue
        if task == "sequence-classification":
            row[fields.label] = label_name(row[fields.label])
        if task == "causal-lm-sft" and fields.messages and not _valid_messages(row[fields.messages]):
            drops["bad_messages"] += 1
            continue
        length = text_length(row, task, fields)
        if length < cleaning.min_length:
            drops["too_short"] += 1
            continue
        if cleaning.max_length is not None and length > cleaning.max_length:
            drops["too_long"] += 1
            continue
        if cleaning.dedupe:
            key = row_key(row)
            if key in seen:
                drops["duplicate"] += 1
                continue
            seen.add(key)
        kept.append(row)
    report.dropped = dict(drops)
    report.rows_out = len(kept)
    return kept, report


def row_key(row: Row) -> str:
    """A cleaned row's identity for dedupe: two rows with equal mapped columns are one."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)


def label_name(value: Any) -> str:
    """Class labels are names: `1`, `1.0` and `"1"` are the same class `"1"`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def build_label_names(rows: Iterable[Row], label_column: str) -> list[str]:
    """Sorted class names (numeric names sort as numbers), index = class id."""
    names = {r[label_column] for r in rows}

    def order(name: str) -> tuple[int, float | str]:
        try:
            return (0, float(name))
        except ValueError:
            return (1, name)

    return sorted(names, key=order)


# ---------------------------------------------------------------------------- splitting


def split_rows(rows: Sequence[Row], validation: float, test: float, seed: int) -> tuple[list[Row], list[Row], list[Row]]:
    """Deterministic train/validation/test split by a seeded shuffle.

    A fraction > 0 always yields at least one row when there are enough rows to leave some
    for training, so tiny datasets still get evaluated.
    """
    n = len(rows)
    order = list(range(n))
    random.Random(seed).shuffle(order)

    def count(fraction: float) -> int:
        return 0 if fraction <= 0 else max(1, round(n * fraction)) if n >= 3 else 0

    n_val, n_test = count(validation), count(test)
    if n_val + n_test >= n:
        n_val = n_test = 0
    test_idx = sorted(order[:n_test])
    val_idx = sorted(order[n_test:n_test + n_val])
    train_idx = sorted(order[n_test + n_val:])
    return [rows[i] for i in train_idx], [rows[i] for i in val_idx], [rows[i] for i in test_idx]


# ---------------------------------------------------------------------------- tokenising


def _ids(encoded: Any) -> list[int]:
    """apply_chat_template / __call__ results -> a flat list of ids (transformers 5 returns dicts)."""
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return list(encoded)


def encode_sft(row: Row, tokenizer: Any, fields: FieldMap, max_length: int,
               changes: Counter[str] | None = None) -> dict[str, list[int]] | None:
    """Token ids and labels for one SFT row; labels are IGNORE_INDEX except on response tokens.

    With a chat template, each assistant turn is found as the difference between the
    template applied to the conversation up to that turn with and without the turn itself
    (the approach of TRL's `get_assistant_masks`-free path); without one, prompt and
    response are concatenated with the tokenizer's BOS/EOS. Returns None when no response
    token survives truncation (the caller counts it as dropped). A row longer than
    `max_length` is cut by `truncate_sft`. `changes` counts what was done to rows for the data
    report: "prompt_truncated", "response_truncated", "only_last_turn_trained".

    A chat template that renders earlier turns differently once the conversation goes on
    (Qwen3's drops earlier `<think>` blocks) is not prefix-stable: then only the last assistant
    turn is trained, the earlier ones being context as the template renders them; a row where
    even that fails raises UnstableChatTemplate, which the caller counts as a dropped row
    (issue 8 item 12).
    """
    if fields.messages:
        messages = [{"role": m["role"], "content": str(m["content"])} for m in row[fields.messages]]
    else:
        messages = [
            {"role": "user", "content": str(row[fields.prompt])},
            {"role": "assistant", "content": str(row[fields.response])},
        ]
    input_ids: list[int] = []
    labels: list[int] = []
    if getattr(tokenizer, "chat_template", None):
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        found = _template_turns(messages, tokenizer, turns)
        if found is None and len(turns) > 1:
            found = _template_turns(messages, tokenizer, turns[-1:])
            if found is not None and changes is not None:
                changes["only_last_turn_trained"] += 1
        if found is None:
            raise UnstableChatTemplate("the tokenizer's chat template is not prefix-stable; cannot find the response tokens to train on")
        input_ids, labels = found
    else:
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        input_ids = list(bos)
        labels = [IGNORE_INDEX] * len(bos)
        for message in messages:
            prefix = "" if message["role"] == "assistant" else f"{message['role']}: " if fields.messages else ""
            text = prefix + message["content"] + ("\n" if message["role"] != "assistant" else "")
            ids = _ids(tokenizer(text, add_special_tokens=False))
            if message["role"] == "assistant":
                ids = ids + eos
                labels += ids
            else:
                labels += [IGNORE_INDEX] * len(ids)
            input_ids += ids
    keep_head = 1 if input_ids and input_ids[0] == tokenizer.bos_token_id else 0
    input_ids, labels, cut = truncate_sft(input_ids, labels, max_length, keep_head)
    if cut and changes is not None:
        changes[f"{cut}_truncated"] += 1
    if labels:
        labels[0] = IGNORE_INDEX  # nothing precedes it; also keeps packed sequences apart
    if all(x == IGNORE_INDEX for x in labels):
        return None
    return {"input_ids": input_ids, "labels": labels}


class UnstableChatTemplate(ValueError):
    """The chat template renders a conversation's prefix differently from the conversation's start."""


def _template_turns(messages: list[dict[str, str]], tokenizer: Any, turns: list[int]) -> tuple[list[int], list[int]] | None:
    """Ids and labels with the assistant messages at `turns` trained; None if the template is not prefix-stable there.

    Each turn is the difference between the template applied to the conversation up to that
    turn with and without the turn itself (TRL's approach without `get_assistant_masks`).
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for i in turns:
        before = _ids(tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=True, return_dict=False)) if i else []
        upto = _ids(tokenizer.apply_chat_template(messages[: i + 1], tokenize=True, return_dict=False))
        if upto[: len(before)] != before or upto[: len(input_ids)] != input_ids:
            return None
        input_ids, labels = upto, labels + [IGNORE_INDEX] * (len(before) - len(labels)) + upto[len(before):]
    return input_ids, labels


def truncate_sft(input_ids: list[int], labels: list[int], max_length: int, keep_head: int = 0) -> tuple[list[int], list[int], str | None]:
    """Fit a row into `max_length` tokens, giving up the prompt's start before any response token.

    Cutting the response's end (what a plain `[:max_length]` does) teaches answers that never
    end (no EOS); the prompt's oldest tokens are the cheapest loss (issue 8 item 8). The first
    `keep_head` tokens (a BOS) stay. When even the whole prompt cannot make room, the
    response's end is cut after all. Returns (ids, labels, None | "prompt" | "response").
    """
    excess = len(input_ids) - max_length
    if excess <= 0:
        return input_ids, labels, None
    first_target = next((i for i, x in enumerate(labels) if x != IGNORE_INDEX), len(labels))
    if first_target - excess >= max(keep_head, 1):  # at least a BOS or one prompt token stays before the response
        keep = lambda xs: xs[:keep_head] + xs[keep_head + excess:]  # noqa: E731
        return keep(input_ids), keep(labels), "prompt"
    return input_ids[:max_length], labels[:max_length], "response"


def encode_text(row: Row, tokenizer: Any, fields: FieldMap, max_length: int, label: int | float) -> dict[str, Any]:
    """One classification/regression example: ids (truncated) and its target."""
    ids = _ids(tokenizer(str(row[fields.text]), truncation=True, max_length=max_length))
    return {"input_ids": ids, "label": label}


# ---------------------------------------------------------------------------- packing and collation


def pack_examples(examples: Sequence[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Pack token sequences into rows of at most `max_length` tokens (best-fit decreasing).

    Each packed row carries `position_ids` restarting at 0 for every sequence: transformers'
    masking utilities (`find_packed_sequence_indices`, used by the sdpa, eager and
    flash-attention paths when no attention_mask is given) turn those restarts into a
    block-diagonal causal mask, so packed sequences never attend to each other. The same idea
    as TRL's `pack_dataset(strategy="bfd")`; hand-written because TRL is not a dependency.
    Deterministic: ties are broken by the original order.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin index)
    for i in order:
        size = len(examples[i]["input_ids"])
        if size > max_length:
            raise ValueError(f"example {i} has {size} tokens > max_length {max_length}; truncate first")
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            remaining, b = free.pop(at)
        else:
            remaining, b = max_length, len(bins)
            bins.append([])
        bins[b].append(i)
        bisect.insort(free, (remaining - size, b))
    packs = []
    for members in sorted(bins, key=lambda m: min(m)):
        members = sorted(members)
        input_ids: list[int] = []
        labels: list[int] = []
        position_ids: list[int] = []
        for i in members:
            ids = examples[i]["input_ids"]
            input_ids += ids
            labels += [IGNORE_INDEX] + list(examples[i]["labels"][1:])
            position_ids += list(range(len(ids)))
        packs.append({"input_ids": input_ids, "labels": labels, "position_ids": position_ids})
    return packs


def flatten_packs(packs: Sequence[dict[str, list[int]]]) -> list[dict[str, list[int]]]:
    """A micro-batch of packed rows as one row: flash_attention_2 finds packed sequences from
    position_ids restarts only at batch size 1 (transformers' `_is_packed_sequence`), and then
    runs its varlen kernel over the sequence offsets. Every sequence's first label is already
    IGNORE_INDEX, so no token learns across a row boundary either."""
    return [{key: [x for p in packs for x in p[key]] for key in ("input_ids", "labels", "position_ids")}]


def collate_packed(packs: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, Any]:
    """Packed rows stacked into [batch, longest row], with position_ids and no attention_mask.

    The few tail pads of shorter rows get position_ids restarting at 0 and IGNORE_INDEX
    labels, so they form a separate (ignored) sequence that nothing attends to.
    """
    import torch

    width = max(len(p["input_ids"]) for p in packs)
    input_ids, labels, position_ids = [], [], []
    for p in packs:
        pad = width - len(p["input_ids"])
        input_ids.append(list(p["input_ids"]) + [pad_token_id] * pad)
        labels.append([IGNORE_INDEX] + list(p["labels"][1:]) + [IGNORE_INDEX] * pad)
        position_ids.append(list(p.get("position_ids") or range(len(p["input_ids"]))) + list(range(pad)))
    return {
        "input_ids": torch.tensor(input_ids),
        "labels": torch.tensor(labels),
        "position_ids": torch.tensor(position_ids),
    }


def collate_padded(examples: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-padded batch with attention_mask; `labels` are per-token lists (SFT) or scalars."""
    import torch

    width = max(len(ex["input_ids"]) for ex in examples)
    batch: dict[str, Any] = {
        "input_ids": torch.tensor([ex["input_ids"] + [pad_token_id] * (width - len(ex["input_ids"])) for ex in examples]),
        "attention_mask": torch.tensor([[1] * len(ex["input_ids"]) + [0] * (width - len(ex["input_ids"])) for ex in examples]),
    }
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([ex["labels"] + [IGNORE_INDEX] * (width - len(ex["labels"])) for ex in examples])
    if "label" in examples[0]:
        kind = torch.float32 if isinstance(examples[0]["label"], float) else torch.long
        batch["label"] = torch.tensor([ex["label"] for ex in examples], dtype=kind)
    return batch


def count_sequences(items: Sequence[dict[str, Any]]) -> int:
    """Sequences in a batch: a packed row holds one per position_ids restart."""
    return sum(sum(1 for p in it["position_ids"] if p == 0) if "position_ids" in it else 1 for it in items)


def count_loss_tokens(examples: Sequence[dict[str, Any]]) -> int:
    """Target tokens (SFT) or examples (classification/regression) in a set of examples."""
    if "labels" in examples[0]:
        return sum(sum(1 for x in ex["labels"][1:] if x != IGNORE_INDEX) for ex in examples)
    return len(examples)


# ---------------------------------------------------------------------------- batching order


def epoch_batches(n_items: int, batch_size: int, world_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[list[list[int]]]:
    """The micro-batches of one epoch: result[b][rank] = item indices for that rank.

    A seeded permutation per epoch (`seed + epoch`), cut into global batches of
    `batch_size * world_size`; each rank takes a strided share. A resumed run recomputes the
    same list and skips the batches already done, which is what makes resume exact. The
    last, short global batch is kept only when every rank gets at least one item.
    """
    order = list(range(n_items))
    if shuffle:
        random.Random(seed * 100_003 + epoch).shuffle(order)
    step = batch_size * world_size
    batches = []
    for start in range(0, n_items, step):
        chunk = order[start:start + step]
        shares = [chunk[r::world_size] for r in range(world_size)]
        if all(shares):
            batches.append(shares)
    return batches

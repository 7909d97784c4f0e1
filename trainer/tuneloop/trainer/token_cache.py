"""Tokenised splits as flat NumPy arrays, tokenised once per node and shared through the cache dir.

Issue 8 (Scale, "data pipeline that scales"): every rank used to tokenise every split into
Python lists of dicts, about 85 bytes per token on every rank. Here one process per node
(accelerate's local main) tokenises, writes `<cacheDir>/tokens/<key>.npz` atomically, and
the other local ranks wait and load it (the operator mounts the cache dir as the pod's emptyDir, so
the ranks of one pod share it; a rerun with the same cache dir, e.g. on a laptop, loads it too). A split
lives as one flat int32 token array (and labels), plus offsets: 4-8 bytes per token.

`TokenArrays` is a read-only sequence of examples: item `i` is the same dict of Python lists
`examples.encode_split` made (`input_ids`, `labels` or `label`), built on access, so packing,
batching and collation take it unchanged. The cache key hashes everything the tokens depend
on (the cleaned rows, the tokenizer's files, task, field mapping, label names, the length
limit and this format's version), so a changed input can never load stale tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from tuneloop.trainer.examples import EncodedSplit

FORMAT_VERSION = 1


class TokenArrays(Sequence[dict[str, Any]]):
    """Examples stored flat: `tokens[offsets[i]:offsets[i+1]]` is example i's input_ids."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray | None = None,
                 targets: np.ndarray | None = None):
        self.tokens, self.offsets = tokens, offsets
        self.labels = labels  # SFT: per-token labels, aligned with tokens
        self.targets = targets  # classification (int64) / regression (float64): one per example

    @classmethod
    def from_examples(cls, examples: Sequence[dict[str, Any]]) -> "TokenArrays":
        offsets = np.zeros(len(examples) + 1, dtype=np.int64)
        np.cumsum([len(ex["input_ids"]) for ex in examples], out=offsets[1:])
        tokens = np.fromiter((t for ex in examples for t in ex["input_ids"]), dtype=np.int32, count=int(offsets[-1]))
        labels = targets = None
        if examples and "labels" in examples[0]:
            labels = np.fromiter((t for ex in examples for t in ex["labels"]), dtype=np.int32, count=int(offsets[-1]))
        elif examples and "label" in examples[0]:
            kind = np.float64 if isinstance(examples[0]["label"], float) else np.int64
            targets = np.array([ex["label"] for ex in examples], dtype=kind)
        return cls(tokens, offsets, labels, targets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        example: dict[str, Any] = {"input_ids": self.tokens[start:end].tolist()}
        if self.labels is not None:
            example["labels"] = self.labels[start:end].tolist()
        if self.targets is not None:
            example["label"] = self.targets[i].item()
        return example

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.tokens, self.offsets, self.labels, self.targets) if a is not None)


def cache_key(rows: Sequence[dict[str, Any]], tokenizer_dir: Path, spec_part: dict[str, Any]) -> str:
    """A hash of everything a split's tokens depend on."""
    digest = hashlib.sha256(json.dumps({"version": FORMAT_VERSION, **spec_part}, sort_keys=True, default=str).encode())
    for name in sorted(os.listdir(tokenizer_dir)):
        if "token" in name or name in ("vocab.txt", "merges.txt", "vocab.json", "special_tokens_map.json"):
            digest.update(name.encode())
            digest.update((tokenizer_dir / name).read_bytes())
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def save(path: Path, split: TokenArrays, encoded: EncodedSplit) -> None:
    """Write atomically (a temporary name, then rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"tokens": split.tokens, "offsets": split.offsets}
    if split.labels is not None:
        arrays["labels"] = split.labels
    if split.targets is not None:
        arrays["targets"] = split.targets
    meta = json.dumps({"dropped": dict(encoded.dropped), "changes": dict(encoded.changes)})
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as f:
        np.savez(f, meta=np.frombuffer(meta.encode(), dtype=np.uint8), **arrays)
    os.replace(partial, path)


def load(path: Path) -> tuple[TokenArrays, EncodedSplit] | None:
    """The cached split and its drop/change counts; None when absent or unreadable (then tokenise again)."""
    try:
        with np.load(path) as npz:
            meta = json.loads(npz["meta"].tobytes().decode())
            split = TokenArrays(npz["tokens"], npz["offsets"], npz["labels"] if "labels" in npz else None,
                                npz["targets"] if "targets" in npz else None)
    except (OSError, ValueError, KeyError):
        return None
    return split, EncodedSplit(examples=[], dropped=Counter(meta["dropped"]), changes=Counter(meta["changes"]))


def encode_once(rows: list[dict[str, Any]], spec: Any, tokenizer: Any, tokenizer_dir: Path, label_names: list[str] | None,
                max_len: int, cache_root: Path, accelerator: Any) -> tuple[TokenArrays, EncodedSplit]:
    """The split tokenised by the node's first process and loaded from the cache by the others."""
    from tuneloop.trainer.examples import encode_split

    if not tokenizer_dir.is_dir():  # no files to fingerprint the tokenizer by: no cache
        encoded = encode_split(rows, spec, tokenizer, label_names, max_len)
        return TokenArrays.from_examples(encoded.examples), encoded
    key = cache_key(rows, tokenizer_dir, {"task": spec.task, "fields": spec.dataset.fields, "labels": label_names, "max_len": max_len})
    path = cache_root / "tokens" / f"{key}.npz"
    with accelerator.local_main_process_first():
        found = load(path)
        if found is None:
            encoded = encode_split(rows, spec, tokenizer, label_names, max_len)
            found = TokenArrays.from_examples(encoded.examples), encoded
            encoded.examples = []  # the lists go; the arrays stay
            try:
                save(path, *found)
            except OSError:  # a read-only or full cache dir costs the other ranks a tokenisation, nothing more
                pass
    return found

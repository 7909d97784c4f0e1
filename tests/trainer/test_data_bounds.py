"""Malformed or oversized data files end with exit 2 and the spot, never exit 1 (issue 13)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tuneloop.trainer import data
from tuneloop.trainer.config import PermanentError, RuntimeSettings
from tuneloop.trainer.storage import glob_match, resolve_files


@pytest.mark.parametrize("raw, name, message", [
    (b'{"text": "a"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", "t.jsonl", r"t.jsonl line 2 nests too deeply"),
    (b'{"text": "a", "n": ' + b"9" * 5000 + b"}\n", "t.jsonl", r"t.jsonl line 1 is not valid data"),
    (b'{"text": "a", "label": NaN}\n', "t.jsonl", r"t.jsonl line 1 is not valid data: NaN"),
    (b"not gzip at all", "t.jsonl.gz", r"t.jsonl.gz is not a valid gzip file"),
    (gzip.compress(b'{"text": "a"}\n' * 100, mtime=0)[:-12], "t.jsonl.gz", r"t.jsonl.gz is not a valid gzip file"),
])
def test_malformed_rows_name_the_file_and_line(raw: bytes, name: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        data.read_rows(raw, "jsonl", name)


def test_gzip_bomb_is_stopped_at_the_bound() -> None:
    bomb = gzip.compress(b"\n" * (64 * 1024 * 1024))  # 64 KiB that expand to 64 MiB
    assert len(bomb) < 100_000
    with pytest.raises(PermanentError, match="decompresses to more than 1048576 bytes"):
        data.read_rows(bomb, "jsonl", "bomb.jsonl.gz", limit=1024 * 1024)


def test_file_larger_than_the_bound_is_refused() -> None:
    with pytest.raises(PermanentError, match="more than the 100 one file may hold"):
        data.read_rows(b"x" * 101, "jsonl", "big.jsonl", limit=100)


def test_overlong_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MAX_LINE_CHARS", 1000)
    with pytest.raises(PermanentError, match="line 2 is 2012 characters"):
        data.read_rows(b'{"text": "a"}\n' + json.dumps({"text": "y" * 2000}).encode() + b"\n", "jsonl", "long.jsonl")


def test_multi_member_gzip_still_reads() -> None:
    raw = gzip.compress(b'{"text": "a"}\n') + gzip.compress(b'{"text": "b"}\n')
    assert data.read_rows(raw, "jsonl", "t.jsonl.gz") == [{"text": "a"}, {"text": "b"}]


@pytest.mark.parametrize("key, pattern, match", [
    ("a.jsonl", "*.jsonl", True),
    ("deep/er/c.jsonl", "*.jsonl", False),
    ("deep/c.jsonl", "*/c.jsonl", True),
    ("deep/er/c.jsonl", "*/c.jsonl", False),
    ("part-1.parquet", "part-?.parquet", True),
])
def test_glob_star_stays_within_a_segment(key: str, pattern: str, match: bool) -> None:
    assert glob_match(key, pattern) is match


def test_resolve_files_glob_does_not_descend(tmp_path: Path) -> None:
    (tmp_path / "data" / "deep" / "er").mkdir(parents=True)
    for rel in ("data/a.jsonl", "data/b.jsonl", "data/deep/er/c.jsonl"):
        (tmp_path / rel).write_text("{}\n")
    _, keys = resolve_files(str(tmp_path / "data" / "*.jsonl"), RuntimeSettings.from_env({}))
    assert keys == ["a.jsonl", "b.jsonl"]

"""Out of memory is its own exit code, not a retryable failure (issue 8 item 11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tuneloop.trainer.cli import is_out_of_memory
from tuneloop.trainer.config import EXIT_OUT_OF_MEMORY

from trainer_testkit import classification_rows, spec_for, write_jsonl


def cpu_allocator_failure() -> RuntimeError:
    try:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: refused at once, nothing is allocated
    except RuntimeError as e:
        return e
    raise AssertionError("a 1 PiB allocation succeeded")


@pytest.mark.parametrize("error, expected", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (MemoryError(), True),
    (cpu_allocator_failure(), True),
    (RuntimeError("The expanded size of the tensor (203) must match the existing size (128)"), False),
    (ValueError("out of memory words"), False),
])
def test_is_out_of_memory(error: BaseException, expected: bool) -> None:
    assert is_out_of_memory(error) is expected


def test_out_of_memory_while_training_exits_3_with_what_to_change(tiny_bert: Path, tmp_path: Path, run_inprocess: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneloop.trainer.recipe import Recipe

    def train_step(self: Recipe, micro_batches: Any, collated: Any = None) -> Any:
        # What the CUDA caching allocator raises when a step does not fit (no GPU here to fill).
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB total capacity)")

    monkeypatch.setattr(Recipe, "train_step", train_step)
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(40, seed=1))
    code, _, err = run_inprocess(spec_for("sequence-classification", str(tiny_bert), str(train), str(tmp_path / "out"), maxSteps=2))
    assert code == EXIT_OUT_OF_MEMORY == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("tuneloop-train: error: out of memory: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert "training.method: lora" in last and "training.gradientCheckpointing: true" in last

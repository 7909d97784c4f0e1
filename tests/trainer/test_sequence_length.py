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

"""Rows to training examples: one split tokenised for the task, with what was cut or dropped.

Pure: the recipe adds the counts to the data report and logs the warnings (recipe.encode).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data


@dataclass
class EncodedSplit:
    examples: list[dict[str, Any]] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)   # reason -> rows left out
    changes: Counter = field(default_factory=Counter)   # e.g. prompt_truncated -> rows kept but changed


def encode_split(rows: list[data.Row], spec: FineTuneJobSpec, tokenizer: Any, label_names: list[str] | None,
                 max_len: int) -> EncodedSplit:
    fields, out = spec.dataset.fields, EncodedSplit()
    label_ids = {n: i for i, n in enumerate(label_names or [])}
    for row in rows:
        reason = "no_response_tokens" if spec.task == "causal-lm-sft" else "unknown_label"
        if spec.task == "causal-lm-sft":
            try:
                ex = data.encode_sft(row, tokenizer, fields, max_len, out.changes)
            except data.UnstableChatTemplate:
                ex, reason = None, "chat_template_not_prefix_stable"
        elif spec.task == "regression":
            ex = data.encode_text(row, tokenizer, fields, max_len, float(row[fields.label]))
        elif row[fields.label] in label_ids:
            ex = data.encode_text(row, tokenizer, fields, max_len, label_ids[row[fields.label]])
        else:
            ex = None  # a label never seen in training: the model has no class for it
        if ex is None:
            out.dropped[reason] += 1
        else:
            out.examples.append(ex)
    return out

"""dataset.augmentation: extra training rows made by word-level edits, for classification and regression.

The operations are those of EDA (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques for
Boosting Performance on Text Classification Tasks"), without its WordNet synonyms (no
dictionary ships with the trainer, and none exists for most domains' jargon):

* deletion: each word is dropped with probability `deletion` (one word is always kept);
* swap: each word swaps places with another word of the row with probability `swap`;
* insertion: after each word, with probability `insertion`, a word is inserted that comes from
  another training row of the same class. For regression there are no classes: the donor is
  one of the rows nearest in target (the NEAR_ROWS rows on either side in target order, the
  row itself when it is alone), so an inserted word comes from text that scored alike.

Words are whitespace-separated tokens, kept whole (punctuation stays attached), and an extra
row is a copy of its source row with only the text column changed. `factor` extra rows per
training row: whole passes over the rows, then a seeded sample of them for the fraction.

Pure and deterministic: the same rows, settings and seed (training.seed) give the same rows.
Only the training split is augmented (dataset.load_splits), after cleaning and splitting, so
validation and test stay real rows, and before tokenisation.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from tuneloop.api.finetunejob import AugmentationSpec, FieldMap
from tuneloop.trainer.data import Row, label_name

# Regression donors: this many rows on each side of a row in target order.
NEAR_ROWS = 2


@dataclass
class AugmentationReport:
    """What augmentation did, for data_report.json."""

    rows_in: int = 0
    added: int = 0
    deleted_words: int = 0
    swapped_words: int = 0
    inserted_words: int = 0
    unchanged: int = 0  # extra rows whose edits happened to change nothing (duplicates of their source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Donors:
    """Picks, for a row, another row whose words may be inserted into its extra rows.

    O(1) per pick and O(n) memory: a class (or target-order window) is never copied per row.
    """

    def __init__(self, rows: Sequence[Row], task: str, fields: FieldMap):
        n = len(rows)
        if task == "regression":
            self.order = sorted(range(n), key=lambda i: (float(rows[i][fields.label]), i))
            self.rank = [0] * n
            for r, i in enumerate(self.order):
                self.rank[i] = r
            self.members: dict[str, list[int]] = {}
        else:
            self.members = {}
            self.class_of = [label_name(row[fields.label]) for row in rows]
            self.position = [0] * n
            for i, name in enumerate(self.class_of):
                group = self.members.setdefault(name, [])
                self.position[i] = len(group)
                group.append(i)
        self.regression = task == "regression"

    def pick(self, i: int, rng: random.Random) -> int:
        """Another row of i's class (regression: of its NEAR_ROWS neighbours in target order); i when alone."""
        if self.regression:
            group, at = self.order, self.rank[i]
            lo, hi = max(0, at - NEAR_ROWS), min(len(group) - 1, at + NEAR_ROWS)
        else:
            group, at = self.members[self.class_of[i]], self.position[i]
            lo, hi = 0, len(group) - 1
        if hi == lo:
            return i
        k = lo + rng.randrange(hi - lo)
        return group[k + (k >= at)]  # skip the row itself


def edit_words(words: list[str], donor: Callable[[], list[str]], spec: AugmentationSpec, rng: random.Random,
               report: AugmentationReport) -> list[str]:
    """One extra row's words: deletion, then swap, then insertion of a word of `donor()` (inserted words are kept)."""
    kept = [w for w in words if rng.random() >= spec.deletion]
    if not kept and words:
        kept = [rng.choice(words)]
    report.deleted_words += len(words) - len(kept)
    words = kept
    if len(words) > 1:
        for i in range(len(words)):
            if rng.random() < spec.swap:
                j = rng.randrange(len(words) - 1)
                j += j >= i  # another position
                words[i], words[j] = words[j], words[i]
                report.swapped_words += 2
    out: list[str] = []
    for word in words:
        out.append(word)
        if rng.random() < spec.insertion:
            source = donor()
            if source:
                out.append(rng.choice(source))
                report.inserted_words += 1
    return out


def augment_rows(rows: Sequence[Row], task: str, fields: FieldMap, spec: AugmentationSpec | None,
                 seed: int) -> tuple[list[Row], AugmentationReport | None]:
    """`rows` followed by round(factor * len(rows)) extra rows; (rows, None) when augmentation is off."""
    if spec is None or not rows:
        return list(rows), None
    rng = random.Random(f"tuneloop-augmentation-{seed}")  # str seeds are hashed stably across runs
    n = len(rows)
    extras = round(spec.factor * n)
    sources = [i for _ in range(extras // n) for i in range(n)] + sorted(rng.sample(range(n), extras % n))
    texts = [str(row[fields.text]).split() for row in rows]
    donors = Donors(rows, task, fields)
    report = AugmentationReport(rows_in=n)
    out = list(rows)
    for i in sources:
        words = edit_words(list(texts[i]), lambda: texts[donors.pick(i, rng)], spec, rng, report)
        if words == texts[i]:
            report.unchanged += 1
        out.append({**rows[i], fields.text: " ".join(words)})
        report.added += 1
    return out, report

"""Read the dataset's files from storage and run the pure data steps over them.

`load_splits` is the only place data I/O happens: it resolves each URI (file, prefix or
glob, S3 or local), parses, checks columns, cleans, and splits train when validation/test
are not given. Everything it calls in `data.py` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data
from tuneloop.trainer.augment import augment_rows
from tuneloop.trainer.config import PermanentError, RuntimeSettings
from tuneloop.trainer.storage import StorageUnavailable, resolve_files


@dataclass
class Splits:
    train: list[data.Row]
    validation: list[data.Row]
    test: list[data.Row]
    reports: dict[str, data.CleaningReport]
    label_names: list[str] | None = None
    sources: dict[str, list[str]] = field(default_factory=dict)
    augmentation: dict[str, Any] | None = None

    def report(self) -> dict[str, Any]:
        """The data report JSON written to `<output.uri>/data_report.json`."""
        return {
            "cleaning": {
                name: {"rows_in": r.rows_in, "dropped": r.dropped, "rows_out": r.rows_out}
                for name, r in self.reports.items()
            },
            "rows": {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)},
            "labels": self.label_names,
            "sources": self.sources,
            **({"augmentation": self.augmentation} if self.augmentation else {}),
        }


def drop_rows_in(rows: list[data.Row], train: list[data.Row], report: data.CleaningReport) -> list[data.Row]:
    """`rows` without those equal to a training row (after cleaning), counted as `in_train` in `report`.

    Dedupe within a split cannot see this: a validation or test file given apart from train
    that repeats training rows. Splits carved from train are disjoint already.
    """
    seen = {data.row_key(row) for row in train}
    kept = [row for row in rows if data.row_key(row) not in seen]
    if len(kept) < len(rows):
        report.dropped["in_train"] = report.dropped.get("in_train", 0) + len(rows) - len(kept)
        report.rows_out = len(kept)
    return kept


def read_uri(uri: str, fmt: str | None, settings: RuntimeSettings) -> tuple[list[data.Row], list[str]]:
    storage, keys = resolve_files(uri, settings)
    if not keys:
        raise PermanentError(f"no data files at {uri}; check the path, prefix or glob")
    rows: list[data.Row] = []
    for key in keys:
        name = storage.child(key)
        try:
            raw = storage.read_bytes(key)
        except (PermanentError, StorageUnavailable):
            raise  # S3's answer already says whether a retry helps
        except Exception as e:  # noqa: BLE001 - S3/OS errors: report and let the pod retry
            raise RuntimeError(f"cannot read {name}: {e}") from e
        rows += data.read_rows(raw, data.infer_format(key, fmt), name)
    return rows, [storage.child(k) for k in keys]


def load_splits(spec: FineTuneJobSpec, settings: RuntimeSettings, *, only: str | None = None, augment: bool = True) -> Splits:
    """Read, check, clean and split the dataset, then augment the training split (if asked).

    `only` reads just that URI (evaluate-only); `augment=False` scores the real rows only.
    """
    ds = spec.dataset
    uris = {"train": ds.train, "validation": ds.validation, "test": ds.test} if only is None else {"test": only}
    cleaned: dict[str, list[data.Row]] = {}
    reports: dict[str, data.CleaningReport] = {}
    sources: dict[str, list[str]] = {}
    for split, uri in uris.items():
        if not uri:
            continue
        rows, names = read_uri(uri, ds.format, settings)
        sources[split] = names
        source = names[0] if len(names) == 1 else uri
        if not rows:
            raise PermanentError(f"{split} data at {source} is empty")
        data.check_columns(rows, spec.task, ds.fields, source)
        kept, report = data.clean_rows(rows, spec.task, ds.fields, ds.cleaning)
        if not kept:
            raise PermanentError(f"{split} dataset empty after cleaning: {report.describe_drops()} (see dataset.cleaning)")
        cleaned[split], reports[split] = kept, report
    if only is not None:
        return Splits([], [], cleaned["test"], reports, sources=sources)

    train = cleaned["train"]
    if ds.cleaning.dedupe:  # evaluation rows that are training rows would score memorisation (review item 17)
        for split in ("validation", "test"):
            if split in cleaned:
                cleaned[split] = drop_rows_in(cleaned[split], train, reports[split])
                if not cleaned[split]:
                    raise PermanentError(f"every {split} row is also a training row (see dataset.{split}); "
                                         f"give held-out {split} data, or set dataset.cleaning.dedupe: false to keep them")
    validation, test = cleaned.get("validation"), cleaned.get("test")
    if validation is None or test is None:
        train, held_val, held_test = data.split_rows(
            train,
            0.0 if validation is not None else ds.split.validation,
            0.0 if test is not None else ds.split.test,
            ds.split.seed,
        )
        validation = validation if validation is not None else held_val
        test = test if test is not None else held_test
    if not train:
        raise PermanentError(f"no training rows left after the validation/test split ({reports['train'].rows_out} rows); add data or lower dataset.split")
    labels = None
    if spec.task == "sequence-classification":
        labels = data.build_label_names(train, ds.fields.label)
        if len(labels) < 2:
            raise PermanentError(f"classification needs at least 2 labels in column `{ds.fields.label}`, found {labels}")
    splits = Splits(train, validation, test, reports, labels, sources)
    if augment and ds.augmentation is not None:
        apply_augmentation(splits, spec)
    return splits


def apply_augmentation(splits: Splits, spec: FineTuneJobSpec) -> None:
    """dataset.augmentation on the training split only, seeded by training.seed (see augment.py)."""
    settings = spec.dataset.augmentation
    splits.train, report = augment_rows(splits.train, spec.task, spec.dataset.fields, settings, spec.training.seed)
    if report is not None and settings is not None:
        splits.augmentation = {"factor": settings.factor, "deletion": settings.deletion, "swap": settings.swap,
                               "insertion": settings.insertion, **report.to_dict()}

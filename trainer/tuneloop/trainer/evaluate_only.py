"""`tuneloop-train --evaluate-only`: score an existing model on a dataset, write a results JSON.

The Recipe's setup without training: the model to score, the data, and the same evaluate()
(each rank scores a strided share; a share may be empty). Kept out of recipe.py, which is
the training walk.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from tuneloop.trainer import data, distributed
from tuneloop.trainer.checkpoint import TrainerState
from tuneloop.trainer.config import PermanentError
from tuneloop.trainer.dataset import load_splits
from tuneloop.trainer.model import fetch_model, load_model, load_tokenizer
from tuneloop.trainer.precision import load_dtype, mixed_precision
from tuneloop.trainer.recipe import Recipe, quiet_transformers
from tuneloop.trainer.storage import open_storage


class Evaluation(Recipe):
    """`tuneloop-train --evaluate-only`: score an existing model on a dataset, write results JSON.

    The MaintenancePolicy's evaluation runs use it on fresh labelled data. The model is
    `--model` if given, else `<output.uri>/final` if it exists, else `model.source`. The data
    is `--data` (all of it, cleaned) if given, else the `--split` of the spec's dataset.
    """

    def setup(self, *, model_uri: str | None = None, data_uri: str | None = None, split: str = "test") -> None:  # type: ignore[override]
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        quiet_transformers()

        spec = self.spec
        self.accelerator = Accelerator(mixed_precision=mixed_precision(spec.training.precision), cpu=not torch.cuda.is_available(),
                                       kwargs_handlers=[distributed.process_group_timeout(self.settings.collective_timeout)])
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.output = open_storage(spec.output.uri, self.settings)
        if model_uri is None:
            model_uri = self.output.child("final") if "final/config.json" in self.output.list("final") or \
                "final/adapter_config.json" in self.output.list("final") else spec.model.source
        self.model_uri, self.split = model_uri, split
        with self.accelerator.local_main_process_first():
            model_dir = fetch_model(model_uri, self.settings)
        adapter = (model_dir / "adapter_config.json").exists()
        if adapter and (model_dir / "merged" / "config.json").exists():
            model_dir, adapter = model_dir / "merged", False
        info_file = model_dir / "tuneloop.json"
        info = json.loads(info_file.read_text()) if info_file.exists() else {}
        base_dir = model_dir
        if adapter:
            with self.accelerator.local_main_process_first():
                base_dir = fetch_model(info.get("base_model") or spec.model.source, self.settings)
        self.splits = load_splits(spec, self.settings, only=data_uri) if data_uri else load_splits(spec, self.settings, augment=False)
        if split != "test":
            self.splits.test = getattr(self.splits, split)
        labels = info.get("labels")
        if spec.task == "sequence-classification" and not labels:
            config = json.loads((base_dir / "config.json").read_text())
            id2label = config.get("id2label") or {}
            labels = [id2label[str(i)] for i in range(len(id2label))] if id2label else None
            if not labels or labels == [f"LABEL_{i}" for i in range(len(labels))]:
                labels = data.build_label_names(self.splits.test, spec.dataset.fields.label)
        self.splits.label_names = labels
        self.tokenizer = load_tokenizer(model_dir)
        set_seed(spec.training.seed)
        model = load_model(spec, base_dir, labels, self.tokenizer, dtype=load_dtype(self.accelerator.mixed_precision, trainable=False))
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(model_dir))
        self.max_seq_length = self.fit_max_seq_length(model)
        self.rows_changed = {}
        self.examples = {"train": [], "validation": [], "test": self.encode(self.splits.test, "test")}
        if not self.examples["test"]:
            raise PermanentError(f"no usable rows to evaluate in the {split} data")
        self.packed = spec.task == "causal-lm-sft" and spec.training.packing is not False and self.packing_is_safe(model)
        self.model = self.accelerator.prepare(model)
        self.state = TrainerState(world_size=self.world)

    def run(self, results_uri: str | None = None) -> dict[str, Any]:
        result = self.evaluate("test")
        self.results = {"task": self.spec.task, "model": self.model_uri, "split": self.split,
                        "rows": len(self.examples["test"]), "metrics": result}
        if self.is_main:
            self.metrics.set_eval(result)
            target = results_uri or self.output.child("evaluation/results.json")
            parent, _, name = target.rpartition("/")
            open_storage(parent or ".", self.settings).write_bytes(name, json.dumps(self.results, indent=1).encode())
            self.results["results_uri"] = target
        return self.results

    def cleanup(self) -> None:
        pass

"""The final model, in Hugging Face format, under <output>/final/.

config, tokenizer and safetensors (LoRA: the adapter, and the merged model if asked), plus
`tuneloop.json` (task, labels, the exported step, the base model) that `--evaluate-only`
and the MaintenancePolicy read. Files of an earlier export that this one does not write are
deleted, so final/ never mixes two models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer.storage import Storage


def export_model(model: Any, tokenizer: Any, spec: FineTuneJobSpec, label_names: list[str] | None, step: int,
                 local: Path, output: Storage, state_dict: dict[str, Any] | None = None) -> None:
    """`state_dict`: the consolidated weights of a sharded (FSDP) model, gathered to this rank."""
    model.save_pretrained(str(local), state_dict=state_dict)
    tokenizer.save_pretrained(str(local))
    if spec.training.method == "lora" and spec.training.lora and spec.training.lora.merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(str(local / "merged"))
        tokenizer.save_pretrained(str(local / "merged"))
    (local / "tuneloop.json").write_text(json.dumps({"task": spec.task, "labels": label_names, "step": step,
                                                      "base_model": spec.model.source,
                                                      "base_revision": spec.model.revision}, indent=1))
    stale = output.list("final")
    output.delete([k for k in stale if not (local / k[len("final/"):]).exists()])
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        output.upload_file(path, f"final/{path.relative_to(local).as_posix()}")

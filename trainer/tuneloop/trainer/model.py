"""Base model and tokenizer: fetch (S3 prefix -> local cache, once), refuse pickles, load, adapt.

Safety rules (issue 3): weights are read from safetensors only (`use_safetensors=True`; a
folder holding only pickle files is refused before anything is downloaded), and
`trust_remote_code` is never enabled, so loading a model never runs code shipped with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer.config import PermanentError, RuntimeSettings
from tuneloop.trainer.dropout import dropout_overrides
from tuneloop.trainer.storage import local_path_inside, open_storage, unsafe_key_reason

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# What a model folder needs for training; anything else (pickles, ONNX, sentence-transformers
# extras, READMEs) is not downloaded. No code files (`.py`): trust_remote_code is always off,
# and a planted `usercustomize.py` runs at the next Python start (issue 13).
USEFUL_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja", ".tiktoken")


def check_model_files(files: list[str], where: str) -> None:
    """PermanentError unless `files` (names relative to the model folder) hold config and safetensors."""
    names = {Path(f).name for f in files}
    if "adapter_config.json" in names and "config.json" not in names:
        names.add("config.json")  # a LoRA adapter (a fine-tuned output); its base comes from model.source
    if "config.json" not in names:
        raise PermanentError(f"model prefix {where} holds no config.json; point model.source at a Hugging Face model folder")
    if not any(n.endswith(".safetensors") for n in names):
        pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise PermanentError(
                f"model at {where} has only pickle weights ({', '.join(pickles[:3])}); Tuneloop loads safetensors only "
                "because pickle files can run arbitrary code: convert them (model.save_pretrained(dir)) and retry"
            )
        raise PermanentError(f"model at {where} holds no *.safetensors weights")


def fetch_model(source: str, settings: RuntimeSettings, revision: str | None = None) -> Path:
    """A local folder holding the model: `source` itself, or its S3 download in the cache.

    The cache key is the URI plus revision; a download lands in a temporary folder renamed
    into place when complete, so concurrent ranks and interrupted pods never see half a model.
    """
    if not source.startswith("s3://"):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise PermanentError(f"model.source {source} is not a folder; give a local model folder or s3://bucket/prefix")
        check_model_files([p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()], source)
        return path
    key = hashlib.sha256(f"{source.rstrip('/')}@{revision or ''}".encode()).hexdigest()[:16]
    cache = Path(settings.cache_dir).expanduser() / "models" / key
    if (cache / ".complete").exists():
        return cache
    storage = open_storage(source.rstrip("/"), settings)
    files = storage.list()  # StorageRefused (exit 2) or StorageUnavailable (exit 1, retried)
    unsafe = [(name, reason) for name in files if (reason := unsafe_key_reason(name))]
    if unsafe:
        name, reason = unsafe[0]
        raise PermanentError(f"model prefix {source} holds key {name!r}, which is no plain relative path ({reason}); "
                             "remove it from the bucket: keys like that would be written outside the model folder")
    check_model_files(files, source)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache.parent))
    for name in files:
        if name.endswith(USEFUL_SUFFIXES) and not name.endswith(PICKLE_SUFFIXES):
            storage.download_file(name, local_path_inside(tmp, name))
    (tmp / ".complete").write_text(source)
    try:
        os.rename(tmp, cache)
    except OSError:  # another rank on this node won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise PermanentError(f"cannot load a tokenizer from {model_dir}: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        # Causal LMs often ship without a pad token; padding positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def resolve_dropout(spec: FineTuneJobSpec, model_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """training.dropout as config attribute -> probability for this model, and the model's own values.

    Read from the full config (class defaults included: BERT's `classifier_dropout` is not in
    every config.json), before the model is built, because modules read them at construction.
    """
    if spec.training.dropout is None:
        return {}, {}
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False).to_dict()
    except (OSError, ValueError, KeyError) as e:
        raise PermanentError(f"cannot read the model config at {spec.model.source}: {str(e).strip().splitlines()[0]}") from None
    overrides = dropout_overrides(config, spec.training.dropout, str(config.get("model_type") or ""))
    return overrides, {attr: config.get(attr) for attr in overrides}


def load_model(spec: FineTuneJobSpec, model_dir: Path, label_names: list[str] | None, tokenizer: Any, *,
               dtype: Any = None, config_overrides: dict[str, Any] | None = None) -> Any:
    """The task's model class from `model_dir`, with a fresh head for classification/regression.

    `dtype` (precision.load_dtype) is always explicit in the recipe: transformers 5's default
    "auto" keeps the checkpoint's storage dtype, so bf16 Hub models trained in pure bf16.
    `config_overrides` (resolve_dropout) set config attributes before the modules are built.
    """
    import torch
    import transformers

    kwargs: dict[str, Any] = {"trust_remote_code": False, "use_safetensors": True, "dtype": dtype or torch.float32}
    kwargs.update(config_overrides or {})
    if spec.training.attention_implementation != "auto":
        kwargs["attn_implementation"] = spec.training.attention_implementation
    if spec.task == "causal-lm-sft":
        cls = transformers.AutoModelForCausalLM
    else:
        cls = transformers.AutoModelForSequenceClassification
        existing = json.loads((model_dir / "config.json").read_text())
        if spec.task == "regression":
            kwargs.update(num_labels=1, problem_type="regression")
        else:
            assert label_names is not None
            kwargs.update(
                num_labels=len(label_names),
                id2label=dict(enumerate(label_names)),
                label2id={n: i for i, n in enumerate(label_names)},
                problem_type="single_label_classification",
            )
        # A model fine-tuned on other labels has a head of another shape: start that head afresh.
        kwargs["ignore_mismatched_sizes"] = existing.get("id2label") is not None
    try:
        model = cls.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "attn_implementation" in kwargs and isinstance(e, (ImportError, ValueError)) and "ttention" in str(e):
            raise PermanentError(f"training.attentionImplementation {kwargs['attn_implementation']} is not usable here: {first}; "
                                 "use auto or sdpa") from None
        raise PermanentError(f"cannot load the model at {spec.model.source} for {spec.task}: {first}") from None
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # sequence classification finds the last token by it
    return model


def apply_training_method(model: Any, spec: FineTuneJobSpec) -> Any:
    """LoRA adapters (peft) when asked, and gradient checkpointing when asked."""
    training = spec.training
    if training.gradient_checkpointing:
        # transformers 5 renamed gradient checkpointing to activation checkpointing (same mechanism).
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if training.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = training.lora
        config = LoraConfig(
            r=lora.r if lora else 16,
            lora_alpha=lora.alpha if lora else 32,
            lora_dropout=lora.dropout if lora else 0.05,
            target_modules=list(lora.target_modules) if lora and lora.target_modules else "all-linear",
            task_type=TaskType.CAUSAL_LM if spec.task == "causal-lm-sft" else TaskType.SEQ_CLS,
        )
        if training.gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, config)
    return model


# Config attributes that bound a sequence's length, by architecture family.
POSITION_LIMIT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def sequence_limit(model: Any, tokenizer: Any) -> int | None:
    """The most tokens this model can take: its position table, or the tokenizer's stated limit.

    Longer inputs crash absolute-position models (BERT's 512) with a tensor-size error and make
    RoPE models extrapolate past their trained context (issue 8 item 6).
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    limits = [v for a in POSITION_LIMIT_ATTRIBUTES if isinstance(v := getattr(config, a, None), int) and v > 0]
    stated = getattr(tokenizer, "model_max_length", None)
    if isinstance(stated, int) and 0 < stated < 1_000_000:  # transformers' "no limit" is a huge sentinel
        limits.append(stated)
    return min(limits) if limits else None

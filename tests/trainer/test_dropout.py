"""training.dropout: the role table covers real configs, overrides reach the built modules, and are recorded (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer_testkit import classification_rows, spec_for, write_jsonl
from tuneloop.api.finetunejob import DropoutSpec, FineTuneJobSpec
from tuneloop.trainer.config import PermanentError
from tuneloop.trainer.dropout import NOT_OVERRIDDEN, ROLE_ATTRIBUTES, dropout_overrides

# The families a FineTuneJob trains in practice: encoders for classification, decoders for SFT.
CONFIGS = ["BertConfig", "DistilBertConfig", "RobertaConfig", "AlbertConfig", "ElectraConfig", "DebertaV2Config",
           "MPNetConfig", "ModernBertConfig", "XLMRobertaConfig", "LlamaConfig", "MistralConfig", "Qwen2Config",
           "Qwen3Config", "GemmaConfig", "Gemma2Config", "PhiConfig", "Phi3Config", "OPTConfig", "GPT2Config",
           "GPTNeoXConfig", "FalconConfig", "BloomConfig", "GPTJConfig", "GPTNeoConfig", "T5Config", "BartConfig"]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_dropout_attribute_of_the_config_has_a_role(name: str) -> None:
    """A new transformers release adding `foo_dropout` to one of these fails here, not silently in training."""
    import transformers

    config = getattr(transformers, name)().to_dict()
    known = {a for attrs in ROLE_ATTRIBUTES.values() for a in attrs} | NOT_OVERRIDDEN
    dropouts = {k for k in config if "dropout" in k or "pdrop" in k or k.endswith("layerdrop")}
    assert dropouts, f"{name} has no dropout attribute at all?"
    assert dropouts <= known, f"{name}: no role for {sorted(dropouts - known)}"


def test_all_sets_every_attribute_and_roles_override_it() -> None:
    bert = {"model_type": "bert", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "classifier_dropout": None}
    assert dropout_overrides(bert, DropoutSpec(all=0.2, classifier=0.4)) == {
        "hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.2, "classifier_dropout": 0.4}
    assert dropout_overrides(bert, DropoutSpec(attention=0.0)) == {"attention_probs_dropout_prob": 0.0}
    opt = {"model_type": "opt", "dropout": 0.1, "attention_dropout": 0.0, "layerdrop": 0.0}
    assert dropout_overrides(opt, DropoutSpec(all=0.3)) == {"dropout": 0.3, "attention_dropout": 0.3}  # LayerDrop untouched


def test_a_role_the_architecture_lacks_is_refused_with_the_field() -> None:
    llama = {"model_type": "llama", "attention_dropout": 0.0}
    assert dropout_overrides(llama, DropoutSpec(all=0.1)) == {"attention_dropout": 0.1}
    with pytest.raises(PermanentError, match=r"training.dropout.classifier: llama has no classifier dropout "
                                             r"\(its config has attention_dropout\); remove training.dropout.classifier"):
        dropout_overrides(llama, DropoutSpec(classifier=0.1))
    with pytest.raises(PermanentError, match="training.dropout: mamba has no dropout probabilities"):
        dropout_overrides({"model_type": "mamba", "hidden_size": 8}, DropoutSpec(all=0.1))


def _spec(model: Path, dropout: dict[str, float], task: str = "sequence-classification") -> FineTuneJobSpec:
    return FineTuneJobSpec.from_dict({"task": task, "model": {"source": str(model)}, "dataset": {"train": "x.jsonl"},
                                      "output": {"uri": "out"}, "training": {"dropout": dropout}})


def test_the_modules_are_built_with_the_overrides(tiny_bert: Path, tiny_llama: Path) -> None:
    import torch

    from tuneloop.trainer.model import load_model, load_tokenizer, resolve_dropout

    spec = _spec(tiny_bert, {"all": 0.25, "classifier": 0.5})
    overrides, before = resolve_dropout(spec, tiny_bert)
    assert before == {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "classifier_dropout": None}
    model = load_model(spec, tiny_bert, ["a", "b"], load_tokenizer(tiny_bert), config_overrides=overrides)
    assert model.config.hidden_dropout_prob == 0.25 and model.config.classifier_dropout == 0.5
    assert model.dropout.p == 0.5  # the classification head's
    assert {m.p for name, m in model.bert.named_modules() if isinstance(m, torch.nn.Dropout)} == {0.25}

    spec = _spec(tiny_llama, {"attention": 0.3}, task="causal-lm-sft")
    overrides, _ = resolve_dropout(spec, tiny_llama)
    model = load_model(spec, tiny_llama, None, load_tokenizer(tiny_llama), config_overrides=overrides)
    assert all(layer.self_attn.attention_dropout == 0.3 for layer in model.model.layers)  # read in forward, not a module


def test_a_run_logs_records_and_exports_the_dropout(tmp_path: Path, tiny_bert: Path, run_inprocess: Any) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(60, seed=4))
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(tmp_path / "out"), epochs=1,
                    dropout={"hidden": 0.2, "classifier": 0.3})
    code, out, err = run_inprocess(spec)
    assert code == 0, err
    assert "dropout: classifier_dropout None -> 0.3, hidden_dropout_prob 0.1 -> 0.2" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["dropout"] == {"hidden_dropout_prob": 0.2, "classifier_dropout": 0.3}
    config = json.loads((tmp_path / "out" / "final" / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.2 and config["classifier_dropout"] == 0.3

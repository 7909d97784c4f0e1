"""training.dropout: which config attributes of a base model each dropout role sets.

Architectures name their dropout probabilities differently (BERT `hidden_dropout_prob`, OPT
`dropout`, GPT-2 `resid_pdrop`, Llama only `attention_dropout`), and a model reads them when
its modules are built, so the override must reach the config before `from_pretrained` builds
the model (model.load_model passes them as config kwargs). Pure and torch-free: the table
below is the whole mapping, and tests/trainer/test_dropout.py checks it covers every dropout
attribute of the configs transformers ships for the families we support.

Deliberately not set: LayerDrop (`layerdrop`, `encoder_layerdrop`, `decoder_layerdrop`: the
probability of skipping whole layers, another regulariser) and heads the tasks never use
(`qa_dropout`).
"""

from __future__ import annotations

from typing import Any, Mapping

from tuneloop.trainer.config import PermanentError

ROLE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hidden": ("hidden_dropout_prob", "hidden_dropout", "dropout", "dropout_rate", "resid_pdrop", "resid_dropout",
               "embd_pdrop", "embed_dropout", "embedding_dropout", "mlp_dropout", "activation_dropout"),
    "attention": ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"),
    "classifier": ("classifier_dropout", "classifier_dropout_prob", "seq_classif_dropout", "pooler_dropout", "cls_dropout",
                   "summary_first_dropout", "summary_last_dropout"),
}
NOT_OVERRIDDEN = frozenset({"layerdrop", "encoder_layerdrop", "decoder_layerdrop", "qa_dropout"})
ROLES = ("hidden", "attention", "classifier")


def dropout_attributes(config: Mapping[str, Any]) -> dict[str, str]:
    """attribute -> role, for the dropout attributes this config (a `config.to_dict()`) has."""
    return {attr: role for role in ROLES for attr in ROLE_ATTRIBUTES[role] if attr in config}


def dropout_overrides(config: Mapping[str, Any], dropout: Any, model_type: str = "") -> dict[str, float]:
    """Config attribute -> probability for `training.dropout` (a DropoutSpec) on this config.

    `all` sets every dropout attribute the architecture has; hidden/attention/classifier
    override it for their own attributes. A role the architecture has no attribute for is a
    PermanentError naming the field (a Llama has no classifier dropout: asking for one must
    not look as if it worked).
    """
    if dropout is None:
        return {}
    present = dropout_attributes(config)
    what = model_type or str(config.get("model_type") or "this model")
    if not present:
        raise PermanentError(f"training.dropout: {what} has no dropout probabilities in its config; remove training.dropout")
    out: dict[str, float] = {}
    if dropout.all is not None:
        out.update({attr: dropout.all for attr in present})
    for role in ROLES:
        value = getattr(dropout, role)
        if value is None:
            continue
        attrs = [attr for attr, r in present.items() if r == role]
        if not attrs:
            has = ", ".join(sorted(present))
            raise PermanentError(f"training.dropout.{role}: {what} has no {role} dropout (its config has {has}); "
                                 f"remove training.dropout.{role} or use training.dropout.all")
        out.update({attr: value for attr in attrs})
    return out


def describe(overrides: Mapping[str, float], config: Mapping[str, Any]) -> str:
    """`hidden_dropout_prob 0.1 -> 0.2, ...` for the log."""
    return ", ".join(f"{attr} {config.get(attr)} -> {value:g}" for attr, value in sorted(overrides.items()))

"""Helpers shared by the trainer tests: tiny models and tokenizers, learnable datasets, S3 helpers.

Tiny models are built here from a config (2 layers, hidden 32) with a WordLevel tokenizer
built from the test vocabulary, saved with `save_pretrained` (safetensors) and uploaded to
the moto server, so every test exercises the same S3 code as production.
"""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BUCKET = "tuneloop-test"

# A small closed vocabulary: every word a dataset below uses.
COLORS = ["red", "green", "blue", "yellow", "black", "white", "pink", "gray"]
FRUITS = ["apple", "lime", "plum", "lemon", "grape", "peach", "cherry", "melon"]
NOISE = ["the", "a", "is", "of", "and", "to", "my", "it", "was", "very", "today", "again", "please", "now", "here"]
TOPICS = {"billing": ["invoice", "refund", "charge", "payment"], "tech": ["crash", "error", "bug", "login"],
          "sales": ["pricing", "demo", "quote", "upgrade"]}
EXTRA = ["what", "color", "fruit", "good", "bad", "okay", "user", "assistant", ":", "\n"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>"]
VOCAB = SPECIALS + sorted(set(COLORS + FRUITS + NOISE + [w for ws in TOPICS.values() for w in ws] + EXTRA))

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<s>' + m['role'] + ' : ' + m['content'] + ' </s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant : ' }}{% endif %}"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_tokenizer(kind: str, chat_template: str | None = None) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", VOCAB.index("[CLS]")), ("[SEP]", VOCAB.index("[SEP]"))])
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                          cls_token="[CLS]", sep_token="[SEP]")
    else:
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                          bos_token="<s>", eos_token="</s>")
    if chat_template:
        wrapped.chat_template = chat_template
    return wrapped


def build_tiny_model(kind: str, path: Path, chat_template: str | None = None, dropout: float = 0.0,
                     dtype: Any = None) -> Path:
    """A 2-layer model of `kind` (llama | opt | bert) with random weights, saved as safetensors.

    `dtype` (e.g. torch.bfloat16) stores the weights in that dtype, as today's Hub checkpoints are.
    """
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    tokenizer = build_tokenizer("llama" if kind == "opt" else kind, chat_template)
    if kind == "opt":  # a decoder whose mask builder ignores position_ids: packed sequences leak
        config = OPTConfig(vocab_size=len(VOCAB), hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=256, word_embed_proj_dim=32, pad_token_id=0,
                           bos_token_id=VOCAB.index("<s>"), eos_token_id=VOCAB.index("</s>"), dropout=0.0)
        model = OPTForCausalLM(config)
    elif kind == "llama":
        config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             pad_token_id=0, bos_token_id=VOCAB.index("<s>"), eos_token_id=VOCAB.index("</s>"),
                             attention_dropout=dropout)
        model = LlamaForCausalLM(config)
    else:
        config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=128, pad_token_id=0)
        model = BertModel(config)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


# ------------------------------------------------------------------------------- datasets


def sft_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Learnable: the response names the fruit paired with the colour in the prompt."""
    rng = random.Random(seed)
    pairs = dict(zip(COLORS, FRUITS))
    rows = []
    for _ in range(n):
        color = rng.choice(COLORS)
        noise = " ".join(rng.sample(NOISE, rng.randint(0, 3)))
        rows.append({"prompt": f"what fruit {noise} {color}".replace("  ", " "), "response": f"{pairs[color]} {pairs[color]}"})
    return rows


def classification_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Learnable: one topic keyword among noise words decides the queue."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(TOPICS))
        words = rng.sample(NOISE, rng.randint(2, 6)) + [rng.choice(TOPICS[label])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def regression_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Learnable: the target is the number of `good` minus `bad` words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good, bad = rng.randint(0, 3), rng.randint(0, 3)
        words = ["good"] * good + ["bad"] * bad + rng.sample(NOISE, rng.randint(1, 4))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": float(good - bad)})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------- storage helpers


def upload_dir(client: Any, local: Path, prefix: str) -> str:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{BUCKET}/{prefix}"

def upload_jsonl(client: Any, key: str, rows: list[dict[str, Any]]) -> str:
    client.put_object(Bucket=BUCKET, Key=key, Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    return f"s3://{BUCKET}/{key}"

def write_config(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path

def read_json(client: Any, key: str) -> Any:
    return json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

def list_keys(client: Any, prefix: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)

def spec_for(task: str, model: str, train: str, output: str, **training: Any) -> dict[str, Any]:
    """A small FineTuneJob spec; `training` overrides the defaults below."""
    return {
        "task": task,
        "model": {"source": model},
        "dataset": {"train": train},
        "output": {"uri": output},
        "training": {"learningRate": 3e-3, "batchSize": 8, "maxSeqLength": 32, "seed": 1,
                     **({} if "maxSteps" in training else {"epochs": 3}), **training},
    }

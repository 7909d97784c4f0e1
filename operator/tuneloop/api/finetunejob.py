"""The FineTuneJob `spec` as frozen, typed objects.

This is the one config the whole product shares: the CRD (`crds/finetunejobs.yaml`) is its
schema, the operator parses every object into it once, and the trainer reads exactly these
fields from the ConfigMap the operator renders (`tuneloop-train --config`). Keys are the CRD's
camelCase names; `tests/api/test_crd_mapping.py` checks both directions.

Torch-free on purpose: the operator image imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tuneloop.api.tuning import TuningSpec
from tuneloop.api.typed import from_dict, to_dict

Task = Literal["causal-lm-sft", "sequence-classification", "regression"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]


def opt(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A field with a default and a help string (shown by `tuneloop-train --help`)."""
    if callable(default):
        # Lists are stored as tuples so specs stay immutable and comparable.
        factory = tuple if default is list else default
        return field(default_factory=factory, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def req(help: str = "", **meta: Any) -> Any:
    return field(metadata={"help": help, **meta})


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    source: str = req("Base model: an s3://bucket/prefix or a local path holding config.json and *.safetensors.")
    revision: str | None = opt(None, "Label of the base model version, recorded with every checkpoint.")
    trust_remote_code: bool = opt(False, "Always false: Tuneloop never runs code shipped with a model.")


@dataclass(frozen=True, kw_only=True)
class FieldMap:
    prompt: str = opt("prompt", "SFT: column holding the prompt.")
    response: str = opt("response", "SFT: column holding the response (the only tokens with loss).")
    messages: str | None = opt(None, "SFT: column holding chat messages ([{role, content}]); replaces prompt/response.")
    text: str = opt("text", "Classification/regression: column holding the input text.")
    label: str = opt("label", "Classification/regression: column holding the label or float target.")


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    validation: float = opt(0.1, "Fraction of train rows held out for validation when `validation` is not given.")
    test: float = opt(0.1, "Fraction of train rows held out for test when `test` is not given.")
    seed: int = opt(42, "Seed of the deterministic split.")


@dataclass(frozen=True, kw_only=True)
class CleaningSpec:
    dedupe: bool = opt(True, "Drop exact duplicate rows, and validation/test rows that are also training rows.")
    drop_empty: bool = opt(True, "Drop rows with a missing or empty required column.")
    min_length: int = opt(1, "Drop rows whose text is shorter than this many characters.")
    max_length: int | None = opt(None, "Drop rows whose text is longer than this many characters.")


@dataclass(frozen=True, kw_only=True)
class AugmentationSpec:
    """Extra training rows made by word-level edits (EDA, Wei & Zou 2019), for classification and regression."""

    factor: float = opt(1.0, "Extra rows per training row (1 doubles the training split, 0.5 adds half as many).")
    deletion: float = opt(0.1, "Probability that each word of an extra row is deleted (one word is always kept).")
    swap: float = opt(0.1, "Probability that each word of an extra row swaps places with another word of it.")
    insertion: float = opt(0.1, "Probability that a word from a row of the same class (regression: a row with a near "
                                "target) is inserted after each word of an extra row.")


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    train: str = req("Training data: an s3:// or local file, prefix or glob.")
    validation: str | None = opt(None, "Validation data; split off `train` when absent.")
    test: str | None = opt(None, "Test data; split off `train` when absent.")
    format: Literal["jsonl", "csv", "parquet"] | None = opt(None, "File format; inferred from the file extension when absent.")
    fields: FieldMap = opt(FieldMap, "Column mapping.")
    split: SplitSpec = opt(SplitSpec, "How to split train when validation/test are absent.")
    cleaning: CleaningSpec = opt(CleaningSpec, "Row cleaning before tokenisation.")
    augmentation: AugmentationSpec | None = opt(None, "Extra training rows by word deletion, swap and same-class insertion "
                                                      "(sequence-classification and regression; training split only; off when absent).")


@dataclass(frozen=True, kw_only=True)
class LoraSpec:
    r: int = opt(16, "LoRA rank.")
    alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / r).")
    dropout: float = opt(0.05, "Dropout on the LoRA branch.")
    target_modules: list[str] | None = opt(None, "Module names to adapt; all linear layers when absent.")
    merge: bool = opt(False, "Also export the base model with the adapter merged in.")


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingSpec:
    metric: str = req("Validation metric to watch (eval_loss, accuracy, macro_f1, mse, mae, perplexity).")
    patience: int = opt(3, "Evaluations without improvement before stopping.")
    export_best: bool = opt(True, "Export the best checkpoint's weights to final/, not the last ones (a checkpoint is saved at every improvement).")


@dataclass(frozen=True, kw_only=True)
class DropoutSpec:
    """Overrides of the base model's dropout probabilities, set in its config before it is built."""

    all: float | None = opt(None, "Every dropout probability the architecture has (hidden, attention, classifier and others).")
    hidden: float | None = opt(None, "Dropout on embeddings, residual and MLP outputs (hidden_dropout_prob, dropout, resid_pdrop, ...).")
    attention: float | None = opt(None, "Dropout on attention probabilities (attention_probs_dropout_prob, attention_dropout, attn_pdrop).")
    classifier: float | None = opt(None, "Dropout before the classification or regression head (classifier_dropout, seq_classif_dropout, ...).")


@dataclass(frozen=True, kw_only=True)
class TrainingSpec:
    method: Literal["full", "lora"] = opt("full", "Full fine-tune or LoRA adapters.")
    lora: LoraSpec | None = opt(None, "LoRA settings; only with method: lora.")
    epochs: float | None = opt(None, "Passes over the training data (default 1 when maxSteps is absent).")
    max_steps: int | None = opt(None, "Optimizer steps; overrides epochs.")
    learning_rate: float = opt(2e-5, "Peak learning rate of AdamW.")
    weight_decay: float = opt(0.0, "AdamW weight decay (not applied to biases and norms).")
    dropout: DropoutSpec | None = opt(None, "Override the model's dropout probabilities; the model's own when absent.")
    warmup_ratio: float = opt(0.0, "Fraction of steps spent warming the learning rate up from 0.")
    scheduler: Literal["linear", "cosine", "constant"] = opt("linear", "Learning-rate decay after warmup.")
    batch_size: int = opt(8, "Sequences per device per micro-batch.")
    gradient_accumulation_steps: int = opt(1, "Micro-batches per optimizer step.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0 disables).")
    max_seq_length: int = opt(1024, "Tokens per sequence (longer ones are truncated).")
    packing: bool | None = opt(None, "SFT only: true packs sequences into rows (as batching: packed), false never packs; absent leaves it to batching.")
    batching: Literal["auto", "packed", "length-grouped", "shuffled"] = opt(
        "auto", "How micro-batches are formed: packed (SFT: sequences packed into maxSeqLength rows, attention kept within each), "
        "length-grouped (padded batches of similar length, in a seeded random order), shuffled (padded batches in random order); "
        "auto = for SFT packed with flash_attention_2 (a variable-length kernel), else length-grouped; shuffled for other tasks.")
    batch_tokens: int | None = opt(None, "Length-grouped batching only: tokens per micro-batch (padding included) instead of "
                                         "batchSize sequences, so short samples go many to a batch and long ones few.")
    precision: Precision = opt("auto", "auto = bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU.")
    gradient_checkpointing: bool = opt(False, "Trade compute for activation memory.")
    sharding: Literal["none", "fsdp"] = opt(
        "none", "none = a full replica per process (DDP); fsdp = parameters, gradients and optimizer state sharded across "
        "processes (FSDP2), for full fine-tunes that do not fit one GPU. fsdp needs method: full and bf16 or fp32.")
    attention_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = opt(
        "auto", "Attention kernel: auto = transformers' default (sdpa where supported); flash_attention_2 needs the flash-attn package and a GPU.")
    seed: int = opt(42, "Seed for weights init, data order and dropout.")
    early_stopping: EarlyStoppingSpec | None = opt(None, "Stop when a validation metric stops improving.")
    eval_every_steps: int | None = opt(None, "Evaluate every N optimizer steps (and always at the end).")


@dataclass(frozen=True, kw_only=True)
class ResourcesSpec:
    nodes: int = opt(1, "Pods (nodes) training together; >1 runs an Indexed Job with torch.distributed.")
    gpus_per_node: int = opt(1, "GPUs per pod (also processes per pod); 0 trains on CPU.")
    gpu_resource_name: str = opt("nvidia.com/gpu", "Extended resource name of the GPU.")
    cpu: str | None = opt(None, "CPU request and limit per pod, e.g. '8'.")
    memory: str | None = opt(None, "Memory request and limit per pod, e.g. '64Gi'.")
    ephemeral_storage: str | None = opt(None, "Local disk per pod, e.g. '200Gi': the ephemeral-storage request and "
                                              "limit, and the sizeLimit of its /tmp and model-cache volumes.")
    node_selector: dict[str, str] = opt(dict, "Node labels the pods must match.")
    tolerations: list[dict[str, Any]] = opt(list, "Pod tolerations (Kubernetes Toleration objects).")
    affinity: dict[str, Any] | None = opt(None, "Pod affinity (a Kubernetes Affinity object).")
    priority_class_name: str | None = opt(None, "PriorityClass of the pods.")


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    uri: str = req("Where checkpoints (<uri>/checkpoints/) and the final model (<uri>/final/) go.")
    save_every_steps: int | None = opt(None, "Checkpoint every N optimizer steps.")
    save_every_minutes: float | None = opt(None, "Checkpoint every M minutes of training.")
    keep_last: int = opt(3, "Complete checkpoints kept (the best one is always kept).")


@dataclass(frozen=True, kw_only=True)
class SecretRef:
    name: str = req("Secret in the FineTuneJob's namespace.")
    namespace: str | None = opt(None, "Must be absent or the FineTuneJob's own namespace.")
    access_key_id_key: str = opt("AWS_ACCESS_KEY_ID", "Key of the access key id in the Secret.")
    secret_access_key_key: str = opt("AWS_SECRET_ACCESS_KEY", "Key of the secret access key in the Secret.")
    session_token_key: str | None = opt(None, "Key of a session token in the Secret, if any.")


@dataclass(frozen=True, kw_only=True)
class StorageSpec:
    endpoint: str | None = opt(None, "S3-compatible endpoint URL (MinIO, Ceph); AWS when absent.")
    region: str | None = opt(None, "S3 region.")
    credentials_secret: SecretRef | None = opt(None, "Secret holding S3 credentials (by reference only).")
    service_account_name: str | None = opt(None, "ServiceAccount of the pods, for IRSA / workload identity.")


@dataclass(frozen=True, kw_only=True)
class RunPolicySpec:
    backoff_limit: int = opt(3, "Retries after a retryable failure; each resumes from the newest checkpoint.")
    active_deadline_seconds: int | None = opt(None, "Fail the job (DeadlineExceeded) after this long.")
    ttl_seconds_after_finished: int | None = opt(None, "Delete the Job and pods this long after finishing (the FineTuneJob stays).")
    suspend: bool = opt(False, "Suspend training (pods go away); resume from the checkpoint when false again.")
    queue_name: str | None = opt(None, "Kueue LocalQueue: the Job is created suspended and Kueue admits it.")
    group_restart: Literal["Operator", "JobSet"] = opt(
        "Operator", "Who restarts a multi-node job as a group: the operator (re-creates the Job) or JobSet's "
                    "controller (runs it as a JobSet; needs JobSet installed).")


@dataclass(frozen=True, kw_only=True)
class KeySelector:
    name: str = req("Name of the Secret or ConfigMap in the FineTuneJob's namespace.")
    key: str = req("The key to read.")
    optional: bool | None = opt(None, "Start even when the object or key is missing.")


@dataclass(frozen=True, kw_only=True)
class FieldSelector:
    api_version: str | None = opt(None, "Version of the schema fieldPath is written in (v1).")
    field_path: str = req("Path of the pod field, e.g. metadata.name.")


@dataclass(frozen=True, kw_only=True)
class ResourceFieldSelector:
    container_name: str | None = opt(None, "Container name (the trainer's only container when empty).")
    resource: str = req("limits.cpu, limits.memory, requests.cpu, ...")
    divisor: Any = opt(None, "Output format of the resource, e.g. 1Mi.")


@dataclass(frozen=True, kw_only=True)
class EnvVarSource:
    """A Kubernetes EnvVarSource, typed so odd values are refused with a path (issue 13:
    `secretKeyRef: 5` used to pass the API server and crash the operator's checks)."""

    secret_key_ref: KeySelector | None = opt(None, "A key of a Secret in the FineTuneJob's namespace.")
    config_map_key_ref: KeySelector | None = opt(None, "A key of a ConfigMap in the FineTuneJob's namespace.")
    field_ref: FieldSelector | None = opt(None, "A field of the pod, e.g. metadata.name.")
    resource_field_ref: ResourceFieldSelector | None = opt(None, "A resource limit or request of the container.")


@dataclass(frozen=True, kw_only=True)
class EnvVar:
    name: str = req("Environment variable name (Tuneloop's own names are reserved).")
    value: str | None = opt(None, "Literal value (never a secret: use valueFrom).")
    value_from: EnvVarSource | None = opt(None, "A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, ...).")


@dataclass(frozen=True, kw_only=True)
class ImagePullSecret:
    name: str = req("Name of the Secret (type kubernetes.io/dockerconfigjson).")


@dataclass(frozen=True, kw_only=True)
class FineTuneJobSpec:
    task: Task = req("What the model learns: causal-lm-sft, sequence-classification or regression.")
    model: ModelSpec = req("The pretrained model to start from.")
    dataset: DatasetSpec = req("Training (and optional validation/test) data.")
    output: OutputSpec = req("Where checkpoints and the final model go.")
    training: TrainingSpec = opt(TrainingSpec, "Hyperparameters.")
    resources: ResourcesSpec = opt(ResourcesSpec, "Pods, GPUs and scheduling.")
    storage: StorageSpec = opt(StorageSpec, "S3 endpoint and credentials.")
    run_policy: RunPolicySpec = opt(RunPolicySpec, "Retries, deadline, TTL, suspend, Kueue queue.")
    image: str | None = opt(None, "Trainer image; the operator's default when absent.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = opt(None, "Image pull policy.")
    image_pull_secrets: list[ImagePullSecret] = opt(list, "Secrets with registry credentials for a private trainer image.")
    env: list[EnvVar] = opt(list, "Extra environment variables for the trainer.")
    tuning: TuningSpec | None = opt(None, "A hyperparameter search: trials of this spec with the searched fields set; the best trial's model is the result.")

    @classmethod
    def from_dict(cls, data: Any, path: str = "spec") -> "FineTuneJobSpec":
        return from_dict(cls, data, path)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

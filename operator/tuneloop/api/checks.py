"""Meaning-level checks that an OpenAPI schema or a CEL rule cannot express well.

One function per kind, shared by the operator (before it creates any child), the trainer
(when it loads its config) and `tuneloop validate` (offline, in GitOps pipelines), so all
three reject exactly the same manifests with exactly the same words.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tuneloop.api import crds
from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.schema import apply_defaults, check_cel_along, check_structure
from tuneloop.api.tuning import apply_params, check_tuning, corner_params
from tuneloop.api.typed import Problem, SpecError, to_dict

# The bucket rules S3 enforces (3-63 chars, lowercase, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")

# A spec is small (a few KiB). kopf keeps a copy of it in an annotation (all annotations of an
# object share 256 KiB) and the operator renders it into a ConfigMap (1 MiB): refuse a spec
# that could break either before anything is created (issue 13).
MAX_SPEC_BYTES = 64 * 1024

# No model needs more; a typo like 10000000 would otherwise only fail hours later as an OOM.
MAX_SEQ_LENGTH = 131072

# Set by the operator or the launcher; a user value would silently break training.
RESERVED_ENV = frozenset(
    {
        "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
        "NNODES", "NODE_RANK", "NPROC_PER_NODE",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
    }
)
RESERVED_ENV_PREFIX = "TUNELOOP_"
# Secret-looking env names, judged word by word (issue 13: a substring rule missed DB_PASS and
# ENCRYPTION_KEY and refused TOKENIZERS_PARALLELISM and MAX_TOKENS, both common with HF).
SECRET_WORDS = frozenset({"SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "PASSPHRASE", "TOKEN", "APIKEY",
                          "CREDENTIAL", "CREDENTIALS", "AUTH", "DSN", "WEBHOOK", "COOKIE", "JWT", "BEARER", "PRIVATEKEY"})
# Names that look secret by the rule but hold none.
NOT_SECRET_NAMES = frozenset({"GOOGLE_APPLICATION_CREDENTIALS"})  # a file path
# Values that are credentials whatever the variable is called; never echoed in a message.
SECRET_VALUES = (
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}")),
    ("an API key (sk-...)", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{20,}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a URL with a password", re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:[^/\s@]+@")),
)


def secret_name(name: str) -> bool:
    """True when an env var of this name should come from a Secret, never by value."""
    if name.upper() in NOT_SECRET_NAMES:
        return False
    words = [w.upper() for w in re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name) if w]
    joined = {a + b for a, b in zip(words, words[1:])}  # API_KEY -> APIKEY, PRIVATE_KEY -> PRIVATEKEY
    return bool(SECRET_WORDS & (set(words) | joined)) or (len(words) > 1 and words[-1] == "KEY")


def secret_value(value: str) -> str | None:
    """What kind of credential `value` looks like, or None."""
    return next((what for what, pattern in SECRET_VALUES if pattern.search(value)), None)

DROPOUT_ROLES = ("all", "hidden", "attention", "classifier")
AUGMENTATION_OPERATIONS = ("deletion", "swap", "insertion")
# Ten extra rows per row is already far past where word edits stop adding information.
MAX_AUGMENTATION_FACTOR = 10.0

METRICS_BY_TASK = {
    "causal-lm-sft": {"eval_loss", "perplexity"},
    "sequence-classification": {"eval_loss", "accuracy", "macro_f1"},
    "regression": {"eval_loss", "mse", "mae"},
}


def check_uri(uri: str, path: str, *, allow_local: bool = True) -> list[Problem]:
    """`s3://bucket/key` or a local path; anything else names the fix."""
    if not uri or not uri.strip():
        return [Problem(path, "must not be empty; use s3://bucket/prefix or a local path")]
    scheme = _SCHEME.match(uri)
    if scheme and len(scheme.group(1)) > 1:  # one letter would be a Windows drive
        if scheme.group(1) != "s3":
            return [Problem(path, f"scheme {scheme.group(1)!r} is not supported; use s3://bucket/prefix")]
        if not uri.startswith("s3://"):
            return [Problem(path, f"{uri!r} is malformed; write s3://bucket/prefix")]
        bucket = uri[len("s3://"):].split("/", 1)[0]
        if not _BUCKET.match(bucket) or ".." in bucket:
            return [
                Problem(
                    path,
                    f"{bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.' or '-'); "
                    "write s3://bucket/prefix",
                )
            ]
        return []
    if not allow_local:
        return [Problem(path, f"{uri!r} must be an s3://bucket/prefix URI")]
    return []


def check_finetunejob(spec: FineTuneJobSpec, namespace: str | None = None) -> list[Problem]:
    """Every meaning-level problem of a parsed FineTuneJob spec, each naming its field."""
    problems: list[Problem] = []
    size = len(json.dumps(to_dict(spec), separators=(",", ":")))
    if size > MAX_SPEC_BYTES:
        problems.append(Problem("spec", f"is {size} bytes as JSON, more than {MAX_SPEC_BYTES}; "
                                        "a FineTuneJob spec needs a few KiB (large lists belong in the data, not the spec)"))
    problems += check_uri(spec.model.source, "spec.model.source")
    for name in ("train", "validation", "test"):
        uri = getattr(spec.dataset, name)
        if uri is not None:
            problems += check_uri(uri, f"spec.dataset.{name}")
    problems += check_uri(spec.output.uri, "spec.output.uri")
    if spec.storage.endpoint is not None and not re.match(r"^https?://[^/\s]+", spec.storage.endpoint):
        problems.append(Problem("spec.storage.endpoint", "must be an http(s):// URL, e.g. http://minio.storage:9000"))
    elif spec.storage.endpoint is not None and "@" in spec.storage.endpoint.split("/")[2]:
        # It would be copied into the ConfigMap and the Job, and echoed in S3 error lines (issue 13).
        problems.append(Problem("spec.storage.endpoint", "must not carry credentials (user:password@); "
                                                          "put them in a Secret named by storage.credentialsSecret"))

    if spec.model.trust_remote_code:
        problems.append(Problem("spec.model.trustRemoteCode", "must be false: Tuneloop never runs code shipped with a model"))

    t = spec.training
    if t.epochs is not None and t.max_steps is not None:
        problems.append(Problem("spec.training.maxSteps", "set either epochs or maxSteps, not both"))
    if t.max_seq_length > MAX_SEQ_LENGTH:
        problems.append(Problem("spec.training.maxSeqLength", f"{t.max_seq_length} is beyond the sane bound {MAX_SEQ_LENGTH}"))
    if t.lora is not None and t.method != "lora":
        problems.append(Problem("spec.training.lora", "is set but method is 'full'; set method: lora or remove lora"))
    if t.lora is not None and t.lora.r > 0 and t.lora.alpha <= 0:
        problems.append(Problem("spec.training.lora.alpha", "must be positive"))
    if t.sharding == "fsdp" and t.method != "full":
        problems.append(Problem("spec.training.sharding", "fsdp applies to method: full; a LoRA run keeps its small "
                                "trainable state per process, so set sharding: none"))
    if t.sharding == "fsdp" and t.precision == "fp16":
        problems.append(Problem("spec.training.sharding", "fsdp trains in bf16 or fp32; set training.precision to bf16, fp32 "
                                "or auto (auto uses fp32 under fsdp on a GPU without bf16)"))
    if spec.task != "causal-lm-sft" and t.packing:
        problems.append(Problem("spec.training.packing", f"packing applies to causal-lm-sft only, not {spec.task}; remove it"))
    if spec.task != "causal-lm-sft" and t.batching == "packed":
        problems.append(Problem("spec.training.batching", f"packed applies to causal-lm-sft only, not {spec.task}; use length-grouped"))
    if t.packing is not None and t.batching != "auto" and t.packing != (t.batching == "packed"):
        problems.append(Problem("spec.training.packing", f"{str(t.packing).lower()} contradicts batching {t.batching}; remove packing"))
    if t.batch_tokens is not None:
        if t.batch_tokens < 8:
            problems.append(Problem("spec.training.batchTokens", f"{t.batch_tokens} is below 8 tokens; raise it or remove it"))
        if t.batching not in ("auto", "length-grouped") or t.packing:
            problems.append(Problem("spec.training.batchTokens", "applies to length-grouped batching only; remove it or set batching: length-grouped"))
    if t.early_stopping is not None:
        allowed = METRICS_BY_TASK[spec.task]
        if t.early_stopping.metric not in allowed:
            problems.append(
                Problem(
                    "spec.training.earlyStopping.metric",
                    f"{t.early_stopping.metric!r} is not computed for {spec.task}; use one of: {', '.join(sorted(allowed))}",
                )
            )
        if t.eval_every_steps is None:
            problems.append(Problem("spec.training.evalEverySteps", "is required with earlyStopping (it is evaluated at each evaluation)"))

    problems += check_dropout(t.dropout)
    problems += check_augmentation(spec)

    fields = spec.dataset.fields
    if spec.task != "causal-lm-sft" and fields.messages is not None:
        problems.append(Problem("spec.dataset.fields.messages", f"chat messages apply to causal-lm-sft only, not {spec.task}"))
    split = spec.dataset.split
    if split.validation + split.test >= 1.0:
        problems.append(Problem("spec.dataset.split", "validation + test fractions must leave rows to train on (sum < 1)"))

    secret = spec.storage.credentials_secret
    if secret is not None and secret.namespace not in (None, namespace) and namespace is not None:
        problems.append(
            Problem(
                "spec.storage.credentialsSecret.namespace",
                f"the Secret must live in the FineTuneJob's namespace {namespace!r}; copy it there",
            )
        )
    if secret is not None and spec.storage.service_account_name is not None:
        problems.append(Problem("spec.storage", "set credentialsSecret or serviceAccountName (IRSA), not both"))

    seen: set[str] = set()
    for i, env in enumerate(spec.env):
        path = f"spec.env[{i}]"
        if env.name in RESERVED_ENV or env.name.startswith(RESERVED_ENV_PREFIX):
            problems.append(Problem(f"{path}.name", f"{env.name} is set by Tuneloop; use spec.storage / spec.resources instead"))
        if env.name in seen:
            problems.append(Problem(f"{path}.name", f"{env.name} is listed twice"))
        seen.add(env.name)
        if env.value is not None and env.value_from is not None:
            problems.append(Problem(path, "set value or valueFrom, not both"))
        if env.value and secret_name(env.name):
            problems.append(
                Problem(f"{path}.value", f"{env.name} looks like a secret; never put it by value, use valueFrom.secretKeyRef")
            )
        elif env.value and (what := secret_value(env.value)):
            problems.append(Problem(f"{path}.value", f"looks like {what}; never put it by value, use valueFrom.secretKeyRef"))
        source = env.value_from
        if source is not None:
            given = [x for x in (source.secret_key_ref, source.config_map_key_ref, source.field_ref, source.resource_field_ref) if x is not None]
            if len(given) != 1:
                problems.append(Problem(f"{path}.valueFrom", "set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef"))
    problems += check_tuning(spec, spec.task, METRICS_BY_TASK)
    if spec.tuning is not None and not problems:
        problems += check_trial_specs(spec, namespace)
    return problems


def check_probability(value: float | None, path: str) -> list[Problem]:
    """A dropout or augmentation probability: 0 <= p < 1 (p = 1 would drop everything)."""
    if value is None or 0.0 <= value < 1.0:
        return []
    return [Problem(path, f"{value} is not a probability below 1; use a value with 0 <= p < 1 (e.g. 0.1)")]


def check_dropout(dropout: Any) -> list[Problem]:
    if dropout is None:
        return []
    problems: list[Problem] = []
    for role in DROPOUT_ROLES:
        problems += check_probability(getattr(dropout, role), f"spec.training.dropout.{role}")
    if all(getattr(dropout, role) is None for role in DROPOUT_ROLES):
        problems.append(Problem("spec.training.dropout", f"changes nothing; set one of {', '.join(DROPOUT_ROLES)} or remove it"))
    return problems


def check_augmentation(spec: FineTuneJobSpec) -> list[Problem]:
    augmentation = spec.dataset.augmentation
    if augmentation is None:
        return []
    at = "spec.dataset.augmentation"
    if spec.task == "causal-lm-sft":
        # Word edits would corrupt the responses the model learns to write.
        return [Problem(at, "applies to sequence-classification and regression only, not causal-lm-sft; remove it")]
    problems: list[Problem] = []
    if not 0 < augmentation.factor <= MAX_AUGMENTATION_FACTOR:
        problems.append(Problem(f"{at}.factor", f"{augmentation.factor} is out of range; give 0 < factor <= "
                                                f"{MAX_AUGMENTATION_FACTOR:g} extra rows per training row"))
    for op in AUGMENTATION_OPERATIONS:
        problems += check_probability(getattr(augmentation, op), f"{at}.{op}")
    if all(getattr(augmentation, op) == 0 for op in AUGMENTATION_OPERATIONS):
        problems.append(Problem(at, f"every operation ({', '.join(AUGMENTATION_OPERATIONS)}) has probability 0, so the "
                                    "extra rows would be copies; set one above 0 or remove augmentation"))
    return problems


def check_trial_specs(spec: FineTuneJobSpec, namespace: str | None) -> list[Problem]:
    """Problems a trial's spec would have, blamed on the searchSpace entry that causes them.

    Each end of each range and each choice is tried on its own on top of the job's spec: the
    cross-field rules (lora fields need method lora, packing needs causal-lm-sft) live in the
    spec checks, and a search must not discover them one failed trial at a time.
    """
    assert spec.tuning is not None
    base = to_dict(spec)
    schema = crds.job_template_spec_schema()
    problems: list[Problem] = []
    blamed: set[str] = set()
    for i, params in corner_params(type(spec), spec.tuning):
        ((path, value),) = params.items()
        at = f"spec.tuning.searchSpace[{i}]"
        if at in blamed:
            continue
        rendered = apply_params(base, params)
        # The CRD's bounds (learningRate <= 1, lora.r <= 1024) as the API server would apply them,
        # on the part a trial changes (training or dataset) and the rules on the way to the field.
        root, *rest = path.split(".")
        sub = schema["properties"][root]
        found = check_structure(sub, apply_defaults(sub, rendered[root]), f"spec.{root}")
        found += check_cel_along(schema, rendered, [root, *rest], "spec")
        if not found:
            try:
                found = check_finetunejob(FineTuneJobSpec.from_dict(rendered), namespace)
            except SpecError as err:
                found = err.problems
        if found:  # one problem per entry: the fix is the same for its other values
            blamed.add(at)
            problems.append(Problem(at, f"a trial with {path}={value!r} would be refused: {found[0]}"))
    return problems

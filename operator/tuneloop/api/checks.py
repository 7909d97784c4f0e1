"""Meaning-level checks that an OpenAPI schema or a CEL rule cannot express well.

One function per kind, shared by the operator (before it creates any child), the trainer
(when it loads its config) and `tuneloop validate` (offline, in GitOps pipelines), so all
three reject exactly the same manifests with exactly the same words.
"""

from __future__ import annotations

import json
import re

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import Problem, to_dict

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
    return problems


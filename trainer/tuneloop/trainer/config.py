"""The trainer's configuration: the FineTuneJob `spec` from a file, runtime settings from env.

Torch-free on purpose: `tuneloop-train --help`, the operator and config tests import it
without pulling torch.

* The config file (YAML or JSON) IS the FineTuneJob `spec` dict (camelCase, as in the CRD),
  parsed by `FineTuneJobSpec.from_dict` and checked by `tuneloop.api.checks` exactly like the
  operator and `tuneloop validate` do, so all three reject the same manifests.
* Everything that depends on *where* the trainer runs (S3 endpoint and credentials, metrics
  port, the torch.distributed topology) comes from the environment: `RuntimeSettings`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tuneloop.api.documents import MAX_BYTES, InputError, check_text_size, load_json, load_yaml_documents
from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.validate import parse_spec

# Exit codes: the operator's podFailurePolicy acts on these (see cli.py's docstring).
EXIT_OK = 0
EXIT_FAILED = 1  # unexpected error: retryable
EXIT_PERMANENT = 2  # bad config, data or model: retrying cannot help
EXIT_OUT_OF_MEMORY = 3  # the model and batch do not fit the accelerator: the same retry fails the same way
EXIT_PREEMPTED = 75  # SIGTERM handled, checkpoint published: retry resumes (EX_TEMPFAIL)


class PermanentError(Exception):
    """A problem with the user's config, data or model: exit 2, do not retry.

    The message is the one line the user sees: what is wrong and how to fix it.
    """


def load_config(path: str | os.PathLike[str]) -> FineTuneJobSpec:
    """Read a YAML or JSON FineTuneJob spec and validate it; PermanentError when it is bad.

    A whole FineTuneJob manifest (with `kind` and `spec`) is accepted too, so
    `tuneloop-train --config examples/...yaml` works on the same files users apply.
    """
    p = Path(path)
    kind = "JSON" if p.suffix == ".json" else "YAML"
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise PermanentError(f"cannot read config {p}: {e.strerror or e}; pass --config FILE (YAML or JSON)") from None
    try:
        check_text_size(raw, f"config {p}")
        text = raw.decode("utf-8")
        if kind == "JSON":
            data = load_json(text)
        else:
            documents = load_yaml_documents(text)
            if len(documents) > 1:
                raise InputError("", f"holds {len(documents)} YAML documents; give one FineTuneJob spec")
            if documents and documents[0].error:
                raise documents[0].error
            data = documents[0].value if documents else None
    except UnicodeDecodeError as e:
        raise PermanentError(f"config {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except InputError as e:
        raise PermanentError(f"config {p} is not valid {kind}: {e}") from None
    if isinstance(data, dict) and data.get("kind") == "FineTuneJob" and "spec" in data:
        data = data["spec"]
    if not isinstance(data, dict):
        raise PermanentError(f"config {p} must be a FineTuneJob spec (a mapping), got {type(data).__name__}")
    try:
        spec, problems = parse_spec("FineTuneJob", data, namespace=os.environ.get("TUNELOOP_NAMESPACE") or None)
    except Exception as e:  # noqa: BLE001 - a checker bug on odd input is still this config's problem: exit 2, one line
        raise PermanentError(f"config {p} could not be checked ({type(e).__name__}: {e}); fix the config or report a bug") from None
    if problems:
        raise PermanentError(f"config {p}: " + "; ".join(str(x) for x in problems))
    return spec


def env(name: str, help: str, default: Any = None, *, kind: type = str) -> Any:
    """A RuntimeSettings field read from environment variable `name`."""
    return field(default=default, metadata={"env": name, "help": help, "kind": kind})


@dataclass(frozen=True)
class RuntimeSettings:
    """Where the trainer runs. Set by the operator's pod spec (or by hand on a laptop)."""

    job_name: str = env("TUNELOOP_JOB_NAME", "FineTuneJob name: the `job` label of every metric.", "local")
    namespace: str = env("TUNELOOP_NAMESPACE", "FineTuneJob namespace: the `namespace` label of every metric.", "default")
    metrics_port: int = env("TUNELOOP_METRICS_PORT", "Port of the Prometheus endpoint on rank 0 (0 disables).", 9400, kind=int)
    progress: str = env("TUNELOOP_PROGRESS", "Progress bar on rank 0: auto (on a terminal only), always or never.", "auto")
    cache_dir: str = env(
        "TUNELOOP_CACHE_DIR", "Where base models from S3 are downloaded once (per URI).", "~/.cache/tuneloop"
    )
    termination_log: str = env(
        "TUNELOOP_TERMINATION_LOG",
        "Rank 0's final report (one JSON line) on success, the error line on failure; the operator sets it to the "
        "container's terminationMessagePath. Written only if the file exists or this variable names it.",
        "/dev/termination-log",
    )
    s3_endpoint_url: str | None = env(
        "AWS_ENDPOINT_URL_S3", "S3 endpoint (MinIO, Ceph, moto); AWS_ENDPOINT_URL is read too (boto3's own rule)."
    )
    aws_region: str | None = env("AWS_REGION", "S3 region; AWS_DEFAULT_REGION is read too.")
    aws_access_key_id: str | None = env("AWS_ACCESS_KEY_ID", "S3 access key id (from the credentials Secret).")
    aws_secret_access_key: str | None = env("AWS_SECRET_ACCESS_KEY", "S3 secret key (from the credentials Secret).")
    aws_session_token: str | None = env("AWS_SESSION_TOKEN", "S3 session token, if any.")
    s3_max_attempts: int = env("AWS_MAX_ATTEMPTS", "S3 attempts per request (connection errors, timeouts, 5xx, throttling) "
                                                   "before the run exits retryable.", 8, kind=int)
    s3_timeout: int = env("TUNELOOP_S3_TIMEOUT", "Seconds an S3 connect or read may take before it is retried.", 60, kind=int)
    collective_timeout: int = env(
        "TUNELOOP_COLLECTIVE_TIMEOUT", "Seconds a process waits in a collective (a barrier while rank 0 exports and uploads "
        "final/, an all-reduce) before the run fails retryable; torch's NCCL default of 600 is too short for the export "
        "of a large model (review item 16).", 3600, kind=int)
    nnodes: int = env("NNODES", "Pods training together (operator: spec.resources.nodes).", 1, kind=int)
    node_rank: int = env("NODE_RANK", "This pod's index (operator: the Indexed Job's completion index).", 0, kind=int)
    nproc_per_node: int = env("NPROC_PER_NODE", "Processes per pod (operator: gpusPerNode, 1 on CPU).", 1, kind=int)
    master_addr: str = env("MASTER_ADDR", "Address of node 0 (operator: the headless Service name).", "127.0.0.1")
    master_port: int = env("MASTER_PORT", "Rendezvous port on node 0.", 29500, kind=int)
    world_size: int | None = env("WORLD_SIZE", "Set by the launcher (torchrun) in each worker; do not set by hand.", kind=int)
    rank: int | None = env("RANK", "Set by the launcher in each worker.", kind=int)
    local_rank: int | None = env("LOCAL_RANK", "Set by the launcher in each worker.", kind=int)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RuntimeSettings":
        environ = os.environ if environ is None else environ
        fallbacks = {"AWS_ENDPOINT_URL_S3": "AWS_ENDPOINT_URL", "AWS_REGION": "AWS_DEFAULT_REGION"}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name) or environ.get(fallbacks.get(name, ""), "")
            if raw == "":
                continue
            if f.metadata["kind"] is int:
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise PermanentError(f"environment variable {name}={raw!r} must be an integer") from None
            else:
                values[f.name] = raw
        return cls(**values)

    def with_spec_storage(self, spec: FineTuneJobSpec) -> "RuntimeSettings":
        """spec.storage's endpoint and region fill in what the environment leaves unset (a laptop run)."""
        return dataclasses.replace(
            self,
            s3_endpoint_url=self.s3_endpoint_url or spec.storage.endpoint,
            aws_region=self.aws_region or spec.storage.region,
        )

    @property
    def launch_world_size(self) -> int:
        """Processes the pod topology asks for (before any launcher ran)."""
        return self.nnodes * self.nproc_per_node

    @property
    def needs_launcher(self) -> bool:
        """More than one process wanted and we are not yet inside a torchrun worker."""
        return self.launch_world_size > 1 and self.world_size is None


def settings_help() -> dict[str, str]:
    """`ENV_NAME` -> help, for `tuneloop-train --help`."""
    out = {}
    for f in dataclasses.fields(RuntimeSettings):
        default = "" if f.default in (None, dataclasses.MISSING) else f" (default {f.default})"
        out[f.metadata["env"]] = f.metadata["help"] + default
    return out

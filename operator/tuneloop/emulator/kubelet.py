"""A local kubelet and Job controller: the pods of batch/v1 Jobs run as local processes.

Hand-written because no library does this: kind and k3d need a container runtime, kwok
fakes pod status without running anything, and kmock only serves the API. This runs the
real container command (a local install stands in for the image) and reports through the
Kubernetes API only (the kubeconfig's connection), so it works against the emulator or
beside a real API server that has no nodes or controller manager.

    with Kubelet(kubeconfig, "ns", selector="tuneloop.dev/finetunejob", log_dir=tmp) as kubelet:
        ...                        # apply objects; their Jobs' pods run here
        kubelet.pid("train-0-abcde"), kubelet.log("train-0-abcde"), kubelet.logs_tail()

Each pass (`sync_once`, every `poll_interval` s in a background thread) does what the Job
controller and the kubelet of a one-node cluster would:

- Jobs: see jobcontroller.py (the Job controller half of each pass); JobSets, where the API
  serves them: jobsetcontroller.py.
- Pods: Pending (PodScheduled) -> Running (podIP 127.0.0.1, startTime, Ready, container
  `running`) -> Succeeded / Failed with `terminated` {exitCode, reason Completed or Error,
  message, startedAt, finishedAt}; a signal is exit code 128+N. The message is the
  terminationMessagePath file, else (FallbackToLogsOnError after an error) the log's last 80
  lines / 2048 bytes, as the kubelet does. A Secret or ConfigMap that is missing leaves the
  pod Pending with `waiting: CreateContainerConfigError`, retried every pass. A pod deleted
  through the API (the server keeps it Terminating) gets SIGTERM, SIGKILL after its grace
  period, its final status, and then the kubelet's `DELETE gracePeriodSeconds=0`.

What is local, and how the differences are bridged (one machine, no containers):

- Env: the pod's env resolved (`value` with $(VAR) expansion, `secretKeyRef`,
  `configMapKeyRef`, `fieldRef` metadata.name/namespace/uid/labels[..]/annotations[..],
  spec.nodeName/serviceAccountName, status.podIP/hostIP; `envFrom`) over a few host variables
  the image would have set (PATH, LANG, virtualenv); `env=` adds or overrides variables.
- Files: configMap, secret and emptyDir volumes are directories under a per-pod temp dir
  (hostPath is used as is); every command/arg/env string that is a mountPath or starts with
  one is rewritten to its directory, as is terminationMessagePath. TMPDIR points at the pod's
  /tmp volume if it has one. A program that opens a container path it was not given in
  args or env (a path compiled in) sees the host's file system instead; so the operator
  names the terminationMessagePath to `tuneloop-train` in TUNELOOP_TERMINATION_LOG, which is
  rewritten like any other, and its final report or error line reaches the pod status.
- Network: every pod shares the host's; its podIP is 127.0.0.1. So that two pods (or a pod
  and anything else) never fight over a port, each containerPort of a Job gets a free host
  port (`remap_ports`, one map per Job so all its pods agree): the Pod object carries the
  host port as its containerPort (clients that read the pod, like a scraper, find it) and
  env/arg values equal to the original number are rewritten. The DNS names of an Indexed
  Job's pods (`<job>-<i>.<subdomain>[.<ns>[.svc[.cluster.local]]]`) in env/args become
  127.0.0.1 when cluster DNS would answer them with this Job's pods only (`resolve`: the
  headless Service named `<subdomain>` selects them, EndpointSlice rules for Terminating and
  not-Ready pods); a name an earlier Job's Terminating pod also answers stays unresolved.
  A container using a name that does not resolve yet waits up to `dns_wait` s (standing in
  for a process whose lookups retry), then starts with it unresolved; names in files or
  computed at run time are not rewritten.
- Not emulated: images, resource limits (so no OOMKilled), securityContext (runAsUser,
  readOnlyRootFilesystem: the process runs as the test's user and can write anywhere),
  probes (Ready when running), init containers,
  restartPolicy OnFailure, quota and Pod Security admission (the API server refuses a pod
  only for a missing ServiceAccount or PriorityClass: admission.py; the Job controller then
  records FailedCreate), sizeLimit and ephemeral-storage eviction, scheduling (one node, never
  Unschedulable), preemption and eviction (DisruptionTarget only for pods a restarted kubelet
  finds no process for, as PodGC marks a lost node's pods), IPv6 pod IPs.
"""

from __future__ import annotations

import base64
import collections
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from tuneloop.emulator.client import ApiError, JsonApi, resource_path
from tuneloop.emulator.jobcontroller import JobController, _job_name
from tuneloop.emulator.jobsetcontroller import JobSetController
from tuneloop.emulator.podrun import (
    HOST_ENV, NODE_IP, UID_KEYS, ConfigError, ContainerRun, DnsPending, JobState, PodRun, now_rfc3339,
)

log = logging.getLogger("tuneloop.kubelet")

# --- the kubelet ----------------------------------------------------------------------------------


class Kubelet(JobController, JobSetController):
    def __init__(self, kubeconfig: str | os.PathLike | None, namespace: str | None, *, selector: str | None = None,
                 env: Mapping[str, str] | None = None, log_dir: str | os.PathLike | None = None,
                 poll_interval: float = 0.2, remap_ports: bool = True, pod_backoff: float = 10.0,
                 pod_backoff_max: float = 360.0, max_grace: float | None = None, node_name: str = "tuneloop-local",
                 dns_wait: float = 30.0):
        """Runs the pods of the Jobs in `namespace` (all namespaces when None) whose labels
        match `selector`; `env` is added to every container's (last, so it overrides);
        logs go to `log_dir` (a temp dir when None) as `<namespace>_<pod>_<container>.log`;
        `max_grace` caps terminationGracePeriodSeconds; a failed pod is replaced after
        `pod_backoff` s, doubling per failure up to `pod_backoff_max` (Kubernetes: 10 s, 6 min;
        tests pass less); a container using a pod DNS name that does not resolve yet starts
        once it does, or unresolved after `dns_wait` s (a process whose lookups retry)."""
        self.api = JsonApi(kubeconfig)
        self.namespace = namespace
        self.selector = selector
        self.env = dict(env or {})
        self._own_log_dir = tempfile.TemporaryDirectory(prefix="tuneloop-kubelet-") if log_dir is None else None
        self.log_dir = Path(log_dir or self._own_log_dir.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.poll_interval = poll_interval
        self.remap_ports = remap_ports
        self.pod_backoff = pod_backoff
        self.pod_backoff_max = pod_backoff_max
        self.departed: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)  # job uid -> pods deleted through the API
        self.max_grace = max_grace
        self.node_name = node_name
        self.dns_wait = dns_wait
        self.runs: dict[str, PodRun] = {}  # pod uid -> run
        self.jobs: dict[str, JobState] = {}
        self.errors: collections.deque[str] = collections.deque(maxlen=50)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._loop, name="tuneloop-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop the loop; SIGTERM every process, SIGKILL what is left after `grace` s."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            runs = list(self.runs.values())
            for run in runs:
                run.terminate(grace)
            deadline = time.monotonic() + grace
            while any(r.alive() for r in runs) and time.monotonic() < deadline:
                time.sleep(0.05)
            for run in runs:
                run.kill_deadline = 0.0
                run.enforce_grace()
                for container in run.containers:
                    try:
                        container.proc.wait(10)
                    except subprocess.TimeoutExpired:
                        pass
                run.workdir.cleanup()
        self.api.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # noqa: BLE001 - an API hiccup must not end the node
                self._error(f"sync failed: {exc!r}")
            self._stop.wait(self.poll_interval)

    def _error(self, message: str) -> None:
        log.warning(message)
        self.errors.append(f"{now_rfc3339()} {message}")
        with open(self.log_dir / "kubelet.log", "a") as f:
            f.write(f"{now_rfc3339()} {message}\n")

    # --- what tests and demos read -------------------------------------------------------------

    def run_of(self, pod_name: str) -> PodRun:
        with self._lock:
            return next(r for r in self.runs.values() if r.name == pod_name)

    def pid(self, pod_name: str, container: int = 0) -> int:
        return self.run_of(pod_name).containers[container].proc.pid

    def log(self, pod_name: str, container: str | None = None) -> str:
        """A pod's log (its first container's unless named); kept after the pod is gone."""
        paths = sorted(self.log_dir.glob(f"*_{pod_name}_{container or '*'}.log"))
        return paths[0].read_text(errors="replace") if paths else ""

    def logs_tail(self, lines: int = 40) -> str:
        """Every pod log's last lines, then the kubelet's own errors (for a failing test)."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts) or "(no logs)"

    # --- one pass ------------------------------------------------------------------------------

    def sync_once(self) -> None:
        with self._lock:
            self._sync_jobsets()  # JobSets (where served) make Jobs; this pass runs what exists
            query = {"labelSelector": self.selector} if self.selector else {}
            jobs = self.api.request("GET", resource_path("batch/v1", "jobs", self.namespace), query=query)["items"]
            pods = self.api.request("GET", resource_path("v1", "pods", self.namespace),
                                    query={"labelSelector": UID_KEYS[0]})["items"]
            by_job: dict[str, list[dict]] = collections.defaultdict(list)
            listed = {}
            for pod in pods:
                listed[pod["metadata"]["uid"]] = pod
                by_job[(pod["metadata"].get("labels") or {}).get(UID_KEYS[0], "")].append(pod)
            self._sync_pods(listed)
            job_uids = set()
            for job in jobs:
                job_uids.add(job["metadata"]["uid"])
                try:
                    self._sync_job(job, by_job.get(job["metadata"]["uid"], []))
                except ApiError as exc:
                    self._error(f"job {job['metadata']['name']}: {exc}")
            # A Job that is gone (deleted, or no longer selected): its pods stop too.
            for run in list(self.runs.values()):
                if run.job_uid not in job_uids:
                    run.terminate(self._grace(run.pod))
            for uid in set(self.jobs) - job_uids:
                if not any(r.job_uid == uid for r in self.runs.values()):
                    del self.jobs[uid]

    # --- kubelet: the pods' processes ----------------------------------------------------------

    def _sync_pods(self, listed: Mapping[str, dict]) -> None:
        # Every run here was created in an earlier pass, before this pass's listing.
        for uid, run in list(self.runs.items()):
            pod = listed.get(uid)
            if pod is not None:
                run.pod = pod
                if pod["metadata"].get("deletionTimestamp"):
                    run.terminate(self._grace(pod))
                    run.delete_when_gone = True
            else:  # deleted (a cascade, a user): stop it
                run.terminate(self._grace(run.pod))
            run.enforce_grace()
            if not run.started and (run.config_error or run.waiting_dns) and run.kill_deadline is None:
                self._start_containers(run)
            if run.exited() and run.reported not in ("Succeeded", "Failed"):
                self._report_exit(run, exists=pod is not None)
            stopped = run.exited() or (not run.started and run.kill_deadline is not None)
            if stopped and (run.delete_when_gone or pod is None):
                if pod is not None:
                    if not run.stopped_by_controller:
                        # Deleted through the API (a user, a drain): with the job-tracking
                        # finalizer a real Job controller still counts it, as failed.
                        if run.reported not in ("Succeeded", "Failed"):
                            run.reported = "Failed"
                            run.pod = {**run.pod, "status": {**(run.pod.get("status") or {}), "phase": "Failed"}}
                        self.departed[run.job_uid].append(run.pod)
                    self.api.delete(resource_path("v1", "pods", run.namespace, run.name), gracePeriodSeconds="0")
                run.workdir.cleanup()
                del self.runs[uid]

    def _grace(self, pod: Mapping[str, Any]) -> float:
        grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        return min(grace, self.max_grace) if self.max_grace is not None else grace

    def _report_exit(self, run: PodRun, exists: bool) -> None:
        codes = [c.exit_code for c in run.containers]
        phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        run.reported = phase
        if not exists:
            return
        statuses = [self._container_status(run, c, {"terminated": c.terminated()}, ready=False) for c in run.containers]
        conditions = self._pod_conditions(ready=False, reason="PodCompleted")
        self._patch_pod_status(run, {"phase": phase, "conditions": conditions, "containerStatuses": statuses})

    def _patch_pod_status(self, run: PodRun, status: dict[str, Any]) -> None:
        try:
            run.pod = self.api.patch(resource_path("v1", "pods", run.namespace, run.name, "status"), {"status": status})
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _pod_conditions(self, ready: bool, reason: str | None = None) -> list[dict[str, Any]]:
        now = now_rfc3339()
        conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]
        for type_ in ("Initialized", "ContainersReady", "Ready"):
            cond = {"type": type_, "status": "True" if ready or type_ == "Initialized" else "False", "lastTransitionTime": now}
            if reason and type_ != "Initialized":
                cond["reason"] = reason
            conditions.append(cond)
        return conditions

    def _container_status(self, run: PodRun, container: ContainerRun | None, state: dict[str, Any], *,
                          ready: bool, name: str | None = None) -> dict[str, Any]:
        name = container.name if container else name
        spec = next(c for c in run.pod["spec"]["containers"] if c["name"] == name)
        status = {"name": name, "ready": ready, "restartCount": 0, "started": "running" in state,
                  "image": spec.get("image", ""), "imageID": "", "state": state}
        if container is not None:
            status["containerID"] = f"local://{container.proc.pid}"
        return status

    def _start_containers(self, run: PodRun) -> None:
        """Volumes, env, then one process per container; CreateContainerConfigError if not yet possible."""
        state = self.jobs.get(run.job_uid) or JobState()
        try:
            mounts_by_container = self._prepare_volumes(run)
            plans = [self._plan(run, c, mounts_by_container[c["name"]], state) for c in run.pod["spec"]["containers"]]
        except DnsPending:
            run.waiting_dns = True  # retried next pass; the pod stays ContainerCreating
            return
        except ConfigError as exc:
            first = not run.config_error
            run.config_error = str(exc)
            if first:
                statuses = [self._container_status(run, None, {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}},
                                                   ready=False, name=c["name"]) for c in run.pod["spec"]["containers"]]
                self._patch_pod_status(run, {"phase": "Pending", "containerStatuses": statuses})
            return
        run.config_error = None
        for name, argv, env, cwd, termination_path, fallback in plans:
            log_path = self.log_dir / f"{run.namespace}_{run.name}_{name}.log"
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            run.containers.append(ContainerRun(name, proc, log_path, termination_path, fallback))
        statuses = [self._container_status(run, c, {"running": {"startedAt": c.started_at}}, ready=True) for c in run.containers]
        self._patch_pod_status(run, {
            "phase": "Running", "podIP": NODE_IP, "podIPs": [{"ip": NODE_IP}], "hostIP": NODE_IP,
            "startTime": run.containers[0].started_at, "conditions": self._pod_conditions(ready=True),
            "containerStatuses": statuses,
        })
        run.reported = "Running"

    def _prepare_volumes(self, run: PodRun) -> dict[str, list[tuple[str, str]]]:
        """{container: [(mountPath, host path)]}, the volumes' contents written under the pod's dir."""
        root = Path(run.workdir.name)
        paths: dict[str, str] = {}
        for volume in run.pod["spec"].get("volumes") or ():
            name = volume["name"]
            target = root / "volumes" / name
            if "hostPath" in volume:
                paths[name] = volume["hostPath"]["path"]
                continue
            target.mkdir(parents=True, exist_ok=True)
            paths[name] = str(target)
            if "configMap" in volume or "secret" in volume:
                source = volume.get("configMap") or volume.get("secret")
                secret = "secret" in volume
                ref = source.get("secretName") if secret else source.get("name")
                obj = self.api.get(resource_path("v1", "secrets" if secret else "configmaps", run.namespace, ref))
                if obj is None:
                    if source.get("optional"):
                        continue
                    raise ConfigError(f'{"secret" if secret else "configmap"} "{ref}" not found')
                data = self._object_data(obj, secret)
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] not in data:
                        raise ConfigError(f'couldn\'t find key {item["key"]} in {"Secret" if secret else "ConfigMap"} {run.namespace}/{ref}')
                    path = target / item["path"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data[item["key"]])
            elif "emptyDir" not in volume:
                raise ConfigError(f"volume {name}: only configMap, secret, emptyDir and hostPath volumes run locally")
        mounts: dict[str, list[tuple[str, str]]] = {}
        for container in run.pod["spec"]["containers"]:
            pairs = []
            for mount in container.get("volumeMounts") or ():
                if mount["name"] not in paths:
                    continue
                host = paths[mount["name"]]
                if mount.get("subPath"):
                    host = os.path.join(host, mount["subPath"])
                pairs.append((mount["mountPath"].rstrip("/") or "/", host))
            mounts[container["name"]] = pairs
        return mounts

    @staticmethod
    def _object_data(obj: Mapping[str, Any], secret: bool) -> dict[str, bytes]:
        data = {k: (base64.b64decode(v) if secret else v.encode()) for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items() if k not in data})
        return data

    def _plan(self, run: PodRun, container: Mapping[str, Any], mounts: list[tuple[str, str]],
              state: JobState) -> tuple[str, list[str], dict[str, str], str, Path, bool]:
        """(name, argv, env, cwd, termination file, fallback to logs) of one container."""
        root = Path(run.workdir.name) / "containers" / container["name"]
        root.mkdir(parents=True, exist_ok=True)
        termination = root / "termination-log"
        termination.touch()
        mounts = sorted(mounts + [(container.get("terminationMessagePath", "/dev/termination-log"), str(termination))],
                        key=lambda m: len(m[0]), reverse=True)
        exact = {str(k): str(v) for k, v in state.host_ports.items()}
        resolved, unresolved = self._pod_dns_names(run)
        exact.update(resolved)

        def local(value: str) -> str:
            if value in exact:
                return exact[value]
            for mount_path, host in mounts:
                if value == mount_path or value.startswith(mount_path + "/"):
                    return host + value[len(mount_path):]
            return value

        env = {k: os.environ[k] for k in HOST_ENV if k in os.environ}
        env["HOSTNAME"] = run.pod["spec"].get("hostname") or run.name
        tmp = next((host for path, host in mounts if path == "/tmp"), None)
        if tmp:
            env["TMPDIR"] = tmp
        env.update(self._resolve_env(run, container, env))
        env = {k: local(v) for k, v in env.items()}
        env.update(self.env)
        argv = [local(_expand(a, env)) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not argv:
            raise ConfigError(f"container {container['name']} has no command: a local kubelet has no image entrypoint")
        search = os.pathsep.join([env.get("PATH", os.defpath), os.path.dirname(sys.executable)])
        exe = shutil.which(argv[0], path=search)
        if exe is None:
            raise ConfigError(f'exec: "{argv[0]}": executable file not found in $PATH')
        argv[0] = exe
        waiting = sorted({v for v in [*env.values(), *argv] if v in unresolved})
        if waiting and time.monotonic() < run.created + self.dns_wait:
            raise DnsPending(f"{waiting[0]} does not resolve yet")
        if waiting and run.waiting_dns:
            self._error(f"pod {run.name}: {', '.join(waiting)} did not resolve in {self.dns_wait:g} s; starting unresolved")
        cwd = local(container["workingDir"]) if container.get("workingDir") else str(root)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        fallback = container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        return container["name"], argv, env, cwd, termination, fallback

    def resolve(self, namespace: str, host: str, asking: PodRun | None = None) -> list[dict[str, Any]]:
        """The pods cluster DNS answers `host` (`<hostname>.<subdomain>[.<ns>[.svc[.cluster.local]]]`)
        with: those with that hostname and subdomain that the headless Service named `subdomain`
        selects and the EndpointSlice controller publishes: not Succeeded or Failed, with a pod
        IP, and Terminating or not Ready only under `publishNotReadyAddresses`. `asking` (the
        pod looking itself up) counts before it has an IP: its sandbox has one already."""
        parts = host.split(".")
        suffixes = ([], [namespace], [namespace, "svc"], [namespace, "svc", "cluster", "local"])
        if len(parts) < 2 or parts[2:] not in suffixes:
            return []
        hostname, subdomain = parts[0], parts[1]
        service = self.api.get(resource_path("v1", "services", namespace, subdomain))
        spec = (service or {}).get("spec") or {}
        selector = spec.get("selector") or {}
        if service is None or spec.get("clusterIP") != "None" or not selector:
            return []
        publish_all = bool(spec.get("publishNotReadyAddresses"))
        answers = []
        for pod in self.api.request("GET", resource_path("v1", "pods", namespace))["items"]:
            meta, pod_spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
            labels = meta.get("labels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            if pod_spec.get("hostname") != hostname or pod_spec.get("subdomain") != subdomain:
                continue
            if status.get("phase") in ("Succeeded", "Failed"):
                continue
            itself = asking is not None and meta["uid"] == asking.uid
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())
            if not itself and (not status.get("podIP") or not (ready or publish_all)):
                continue
            if meta.get("deletionTimestamp") and not publish_all:
                continue
            answers.append(pod)
        return answers

    def _pod_dns_names(self, run: PodRun) -> tuple[dict[str, str], set[str]]:
        """({name: 127.0.0.1}, unresolved names) for the DNS names of the pod's Job
        (`<job>-<i>.<subdomain>...`), as cluster DNS answers them (`resolve`): a name resolves
        when only pods of this Job answer it. No Service, a wrong selector or a ClusterIP
        Service leaves it unresolved, as on a real cluster; so does an answer that includes an
        earlier Job's pod (the same hostname, still Terminating): all pods share 127.0.0.1 here,
        so the emulator cannot tell which a client would reach, and refuses both."""
        spec = run.pod["spec"]
        subdomain = spec.get("subdomain")
        completions = int(run.job["spec"].get("completions") or 1)
        if not subdomain or run.index is None:
            return {}, set()
        resolved, unresolved = {}, set()
        job_name = _job_name(run.pod)
        for index in range(completions):
            host = f"{job_name}-{index}.{subdomain}"
            answers = self.resolve(run.namespace, host, asking=run)
            ours = bool(answers) and all((a["metadata"].get("labels") or {}).get(UID_KEYS[0]) == run.job_uid for a in answers)
            for suffix in ("", f".{run.namespace}", f".{run.namespace}.svc", f".{run.namespace}.svc.cluster.local"):
                if ours:
                    resolved[host + suffix] = NODE_IP
                else:
                    unresolved.add(host + suffix)
        return resolved, unresolved

    def _resolve_env(self, run: PodRun, container: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or ():
            ref = source.get("configMapRef") or source.get("secretRef")
            secret = "secretRef" in source
            obj = self.api.get(resource_path("v1", "secrets" if secret else "configmaps", run.namespace, ref["name"]))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{"secret" if secret else "configmap"} "{ref["name"]}" not found')
            for key, value in self._object_data(obj, secret).items():
                env[source.get("prefix", "") + key] = value.decode(errors="replace")
        for var in container.get("env") or ():
            if "valueFrom" in var:
                value = self._value_from(run, var["name"], var["valueFrom"])
                if value is None:
                    continue
                env[var["name"]] = value
            else:
                env[var["name"]] = _expand(var.get("value", ""), env)
        return env

    def _value_from(self, run: PodRun, name: str, source: Mapping[str, Any]) -> str | None:
        if "fieldRef" in source:
            return _field(run.pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return None  # no resource limits here
        secret = "secretKeyRef" in source
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        if ref is None:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        kind = "secret" if secret else "configmap"
        obj = self.api.get(resource_path("v1", "secrets" if secret else "configmaps", run.namespace, ref["name"]))
        data = self._object_data(obj, secret) if obj is not None else {}
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            if obj is None:
                raise ConfigError(f'{kind} "{ref["name"]}" not found')
            raise ConfigError(f'couldn\'t find key {ref["key"]} in {"Secret" if secret else "ConfigMap"} {run.namespace}/{ref["name"]}')
        return data[ref["key"]].decode(errors="replace")

    # --- job controller ------------------------------------------------------------------------


# --- pure helpers -------------------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables expand, others stay, $$ escapes."""
    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return _VAR.sub(sub, value)


_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def _field(pod: Mapping[str, Any], path: str) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if match := _FIELD.fullmatch(path):
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"), "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": NODE_IP, "status.hostIP": NODE_IP, "status.podIPs": NODE_IP, "status.hostIPs": NODE_IP,
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path}")
    return str(simple[path] or "")



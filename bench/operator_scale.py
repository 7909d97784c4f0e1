"""Operator scale (issue 15, benchmark 5): FineTuneJobs created against the API emulator, the
real operator process watching them. A script that prints its figures; it asserts nothing.

    PYTHONPATH=operator:trainer python3 bench/operator_scale.py --jobs 1000

What runs: the emulator (`python -m tuneloop.emulator`, its own process, over HTTP) and the
operator (`python -m tuneloop.operator.main`, as the e2e tests start it, with the production
timer intervals, not the tests' fast ones). No local kubelet: creation-to-Job latency ends
when the Job exists, and a kubelet starting 1,000 trainer processes would measure the
machine, not the operator. Where a kubelet's Job controller would mark a Job complete, this
script patches the Job's status exactly as it would (phase 2).

Phases:
1. N FineTuneJobs created one after another by one client (as `kubectl apply` of a big file
   or a sweep's driver would), or at `--rate` per second. Latency: from the create call
   returning to the Job's ADDED event on this script's own watch (monotonic clock, this
   process; the watch adds the emulator's fan-out, well under a millisecond per event).
   Requests: counted by the emulator per client (`GET /metrics`, the User-Agent's product:
   `kopf` for kopf's watches, patches and events, `OpenAPI-Generator` for the operator's own
   calls in kube.py; this script's requests are `tuneloop-bench` and not counted).
   Then an idle window with N active jobs: what the status timers cost when nothing changes.
2. Those N Jobs completed (status patched as the Job controller does), their FineTuneJobs
   Succeeded, an idle window (finished jobs must cost nothing), then the operator restarted
   with them in the store (its resume pass must cost nothing per finished job either) and N
   more FineTuneJobs created, measured as in phase 1.

Each phase also prints the emulator's own rate at that object count (GETs and LISTs of the
FineTuneJobs, one client), so a slow figure can be told apart from a slow emulator.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tuneloop.demo.operator_process import OperatorProcess
from tuneloop.emulator.client import JsonApi, resource_path

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "scale"
CLIENT = "tuneloop-bench"  # our User-Agent: the emulator counts our requests apart
FTJ = "tuneloop.dev/v1alpha1"
LABEL = "tuneloop.dev/finetunejob"
# The operator's defaults (config.py), not the tests' fast passes: what a cluster runs.
PRODUCTION_INTERVALS = {"TUNELOOP_STATUS_INTERVAL": "5", "TUNELOOP_SCRAPE_INTERVAL": "15", "TUNELOOP_SCRAPE_TIMEOUT": "3"}


def finetunejob(name: str) -> dict:
    return {"apiVersion": FTJ, "kind": "FineTuneJob", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {
        "task": "sequence-classification",
        "model": {"source": "s3://models/base/minilm/"},
        "dataset": {"train": "s3://data/tickets/train.csv"},
        "output": {"uri": f"s3://models/out/{name}/"},
        "training": {"epochs": 1, "packing": False},
        "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
    }}


# --- the processes ------------------------------------------------------------------------------


class EmulatorProcess:
    """`python -m tuneloop.emulator` serving our CRDs, in its own process (its own GIL)."""

    def __init__(self, workdir: Path):
        self.kubeconfig = workdir / "kubeconfig"
        self.log_path = workdir / "emulator.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tuneloop.emulator", "--kubeconfig", str(self.kubeconfig), "--crds", str(REPO / "crds")],
                stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # one line once it serves
        match = re.search(r"at (http://\S+)", line)
        if not match:
            raise RuntimeError(f"the emulator did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_quiet(pid: int, timeout: float, busy: float = 0.1) -> float:
    """Seconds until the process uses under `busy` of a core over one second (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < busy:
            break
    return time.monotonic() - started


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak resident set) and VmRSS of a live process, in MB."""
    values = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M))
    return {key: int(kb) / 1024 for key, kb in values.items()}


# --- what the emulator counted -----------------------------------------------------------------


def served(url: str) -> collections.Counter:
    """(client, verb, resource/subresource) -> requests the emulator has served."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    counts: collections.Counter = collections.Counter()
    for labels, value in re.findall(r"^apiserver_request_total\{(.*)\} (\d+)$", text, re.M):
        f = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        resource = f["resource"] + (f"/{f['subresource']}" if f["subresource"] else "")
        counts[f["client"], f["verb"], resource or "(discovery)"] += int(value)
    return counts


def operator_requests(before: collections.Counter, after: collections.Counter) -> collections.Counter:
    """What everyone but this script asked for between two snapshots, by (client, verb, resource)."""
    diff = after - before
    return collections.Counter({key: n for key, n in diff.items() if key[0] not in (CLIENT, "Python-urllib")})


def breakdown(requests: collections.Counter, per: int) -> str:
    rows = sorted(requests.items(), key=lambda kv: -kv[1])
    return "\n".join(f"      {n / per:7.2f}  {client:18} {verb:7} {resource}" for (client, verb, resource), n in rows)


# --- watching Jobs appear ----------------------------------------------------------------------


class JobWatch:
    """Our own watch of the trainer Jobs: the monotonic time each one first appears."""

    def __init__(self, url: str):
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        path = resource_path("batch/v1", "jobs", NAMESPACE)
        request = urllib.request.Request(f"{url}{path}?watch=true&labelSelector={LABEL}&timeoutSeconds=3600",
                                         headers={"User-Agent": f"{CLIENT}/1"})
        self._response = urllib.request.urlopen(request, timeout=3600)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._response:
                event = json.loads(line)
                if event["type"] == "ADDED":
                    with self._lock:
                        self.seen.setdefault(event["object"]["metadata"]["labels"][LABEL], time.monotonic())
        except (OSError, ValueError):
            pass  # closed at the end

    def wait(self, names: list[str], timeout: float) -> list[str]:
        """The names still without a Job when `timeout` runs out (none: all there)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                missing = [n for n in names if n not in self.seen]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.05)

    def close(self) -> None:
        self._response.close()


# --- the phases --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def create_batch(api: JsonApi, names: list[str], rate: float) -> dict[str, float]:
    created: dict[str, float] = {}
    started = time.monotonic()
    for i, name in enumerate(names):
        if rate:
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
        api.create(resource_path(FTJ, "finetunejobs", NAMESPACE), finetunejob(name))
        created[name] = time.monotonic()
    return created


def measure_batch(label: str, api: JsonApi, url: str, watch: JobWatch, operator: OperatorProcess, names: list[str],
                  rate: float, settle: float) -> None:
    pid = operator.proc.pid
    before, cpu_before, t0 = served(url), cpu_seconds(pid), time.monotonic()
    created = create_batch(api, names, rate)
    took = time.monotonic() - t0
    missing = watch.wait(names, timeout=max(120.0, 2 * len(names)))
    latencies = sorted(watch.seen[n] - created[n] for n in names if n in watch.seen)
    done = max(watch.seen[n] for n in names if n in watch.seen)
    time.sleep(settle)  # the first status passes (startTime, Created events) belong to the job's cost
    requests = operator_requests(before, served(url))
    cpu = cpu_seconds(pid) - cpu_before
    n = len(names)
    print(f"\n== {label}: {n} FineTuneJobs created in {took:.1f} s ({n / took:.0f}/s, "
          f"{'paced at ' + str(rate) + '/s' if rate else 'one client, as fast as it goes'})")
    if missing:
        print(f"   NOT DONE: {len(missing)} without a Job after the timeout, e.g. {missing[:3]}")
    print(f"   creation -> child Job: p50 {percentile(latencies, 50):.3f} s, p99 {percentile(latencies, 99):.3f} s, "
          f"max {latencies[-1]:.3f} s; last Job {done - t0:.1f} s after the first create")
    print(f"   operator: {sum(requests.values()) / n:.2f} API requests per job (incl. {settle:.0f} s of status passes), "
          f"{1000 * cpu / n:.1f} ms CPU per job, memory {memory_mb(pid)}")
    print(breakdown(requests, n))


def idle_window(label: str, url: str, operator: OperatorProcess, seconds: float, jobs: int) -> None:
    pid = operator.proc.pid
    before, cpu_before = served(url), cpu_seconds(pid)
    time.sleep(seconds)
    requests = operator_requests(before, served(url))
    cpu = cpu_seconds(pid) - cpu_before
    print(f"\n== idle {seconds:.0f} s, {label}: {sum(requests.values())} operator requests "
          f"({sum(requests.values()) / seconds:.2f}/s), operator CPU {100 * cpu / seconds:.1f}% of a core "
          f"({1e6 * cpu / seconds / max(jobs, 1):.0f} us/s per job)")
    if requests:
        print(breakdown(requests, 1))


def emulator_rate(api: JsonApi, url: str, emulator: EmulatorProcess, names: list[str]) -> None:
    """One client's GETs and LISTs of the FineTuneJobs at this object count."""
    total = len(api.list(resource_path(FTJ, "finetunejobs", NAMESPACE)))
    cpu_before, t0 = cpu_seconds(emulator.proc.pid), time.monotonic()
    gets = 300
    for _ in range(gets):
        api.get(resource_path(FTJ, "finetunejobs", NAMESPACE, random.choice(names)))
    get_rate = gets / (time.monotonic() - t0)
    t1, lists = time.monotonic(), 5
    for _ in range(lists):
        api.list(resource_path(FTJ, "finetunejobs", NAMESPACE))
    list_time = (time.monotonic() - t1) / lists
    cpu = cpu_seconds(emulator.proc.pid) - cpu_before
    print(f"   emulator at {total} FineTuneJobs: {get_rate:.0f} GETs/s, a LIST of all {list_time * 1000:.0f} ms "
          f"(one client; emulator CPU {cpu:.1f} s for these)")


def complete_jobs(api: JsonApi, names: list[str]) -> None:
    """What the Job controller writes when a Job's pod succeeded (Kubernetes 1.31+)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name in names:
        conditions = [{"type": t, "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods",
                       "lastProbeTime": now, "lastTransitionTime": now} for t in ("SuccessCriteriaMet", "Complete")]
        status = {"startTime": now, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0, "terminating": 0,
                  "conditions": conditions}
        api.patch(resource_path("batch/v1", "jobs", NAMESPACE, f"{name}-trainer", "status"), {"status": status})


def wait_succeeded(api: JsonApi, names: list[str], timeout: float) -> int:
    wanted, deadline = set(names), time.monotonic() + timeout
    while True:
        items = api.list(resource_path(FTJ, "finetunejobs", NAMESPACE))
        done = sum(1 for i in items if i["metadata"]["name"] in wanted and (i.get("status") or {}).get("phase") == "Succeeded")
        if done == len(wanted) or time.monotonic() > deadline:
            return done
        time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="FineTuneJobs per batch (default 1000).")
    parser.add_argument("--rate", type=float, default=0.0, help="Creates per second (default 0: as fast as one client goes).")
    parser.add_argument("--settle", type=float, default=12.0, help="Seconds counted after the last Job (status passes).")
    parser.add_argument("--idle", type=float, default=20.0, help="Seconds of each idle window.")
    parser.add_argument("--skip-finished", action="store_true", help="Phase 1 only.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tuneloop-scale-") as tmp:
        workdir = Path(tmp)
        emulator = EmulatorProcess(workdir)
        operator = None
        watch = None
        try:
            api = JsonApi(emulator.kubeconfig)
            api.client.user_agent = f"{CLIENT}/1"
            api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            watch = JobWatch(emulator.url)
            operator = OperatorProcess(emulator.kubeconfig, NAMESPACE, workdir, verbose=False, cwd=REPO, **PRODUCTION_INTERVALS)
            operator.start(timeout=60)
            time.sleep(3)  # its watches up
            print(f"operator pid {operator.proc.pid} started: memory {memory_mb(operator.proc.pid)}; "
                  f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

            idle_window("no jobs (the operator's own floor)", emulator.url, operator, args.idle / 2, 0)
            first = [f"a-{i:05d}" for i in range(args.jobs)]
            measure_batch("phase 1", api, emulator.url, watch, operator, first, args.rate, args.settle)
            idle_window(f"{args.jobs} active jobs (Pending, nothing changes)", emulator.url, operator, args.idle, args.jobs)
            emulator_rate(api, emulator.url, emulator, first)
            if args.skip_finished:
                return 0

            t0, before = time.monotonic(), served(emulator.url)
            complete_jobs(api, first)
            done = wait_succeeded(api, first, timeout=max(120.0, args.jobs / 5))
            time.sleep(args.settle)
            finishing = operator_requests(before, served(emulator.url))
            print(f"\n== phase 2: {done}/{args.jobs} Jobs completed -> FineTuneJobs Succeeded in {time.monotonic() - t0:.1f} s; "
                  f"operator: {sum(finishing.values()) / args.jobs:.2f} API requests per finished job")
            print(breakdown(finishing, args.jobs))
            idle_window(f"{args.jobs} finished jobs", emulator.url, operator, args.idle, args.jobs)
            print(f"   operator peak memory over phase 1 and the finishing: {memory_mb(operator.proc.pid)}")

            before = served(emulator.url)
            operator.stop()
            t0 = time.monotonic()
            operator.start(timeout=60)
            quiet = wait_quiet(operator.proc.pid, timeout=300) + time.monotonic() - t0 - 1.0
            cpu = cpu_seconds(operator.proc.pid)
            restart = operator_requests(before, served(emulator.url))
            print(f"\n== operator restarted with {args.jobs} finished jobs in the store: busy for {quiet:.1f} s "
                  f"(start to under 10% of a core; {cpu:.1f} s CPU, imports included), {sum(restart.values())} requests, "
                  f"memory {memory_mb(operator.proc.pid)}")
            print(breakdown(restart, 1))
            second = [f"b-{i:05d}" for i in range(args.jobs)]
            measure_batch(f"phase 2 ({args.jobs} finished jobs in the store)", api, emulator.url, watch, operator, second,
                          args.rate, args.settle)
            idle_window(f"{args.jobs} active + {args.jobs} finished jobs", emulator.url, operator, args.idle, args.jobs)
            emulator_rate(api, emulator.url, emulator, first + second)
        finally:  # the emulator before our watch: closing a stream mid-read blocks until it ends
            if operator is not None:
                operator.stop()
            emulator.stop()
            if watch is not None:
                watch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

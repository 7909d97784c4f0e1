"""`tuneloop-operator`: the entry point, and the one place where kopf is configured.

    tuneloop-operator --all-namespaces --liveness http://0.0.0.0:8080/healthz
    tuneloop-operator --namespace ml-team --standalone        # one replica, no peering

Timer intervals come from the environment (TUNELOOP_STATUS_INTERVAL, TUNELOOP_SCRAPE_INTERVAL,
TUNELOOP_SCRAPE_TIMEOUT, TUNELOOP_UNSCHEDULABLE_AFTER) because they are decorator arguments;
TUNELOOP_WATCH_INACTIVITY_TIMEOUT (seconds, default 70) is for tests of silent watch streams.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import sys
from typing import Any, Sequence

import kopf

from tuneloop.operator import handlers, metrics  # noqa: F401  (importing registers the handlers)
from tuneloop.operator.policy import handlers as policy_handlers  # noqa: F401  (the MaintenancePolicy controller)
from tuneloop.operator.tuning import handlers as tuning_handlers  # noqa: F401  (FineTuneJobs with spec.tuning)
from tuneloop.operator.config import OperatorConfig
from tuneloop.operator.kube import Kube

FINALIZER = "tuneloop.dev/finalizer"
PEERING_NAME = "tuneloop"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Every kopf setting, each with the reason it is not the default."""
    # kopf's watch streams can go silent without a disconnect and the operator goes deaf
    # (nolar/kopf#585, #810): have the server end each watch, bound it on our side too, and
    # bound the connect. (kopf's `inactivity_timeout`, 70 s since nolar/kopf#1268, stays.)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # A stream that stays open but sends nothing, not even the API server's bookmarks (about
    # one a minute), is dead: reconnect (kopf's default, explicit; tests shorten it, issue 13).
    settings.watching.inactivity_timeout = float(os.environ.get("TUNELOOP_WATCH_INACTIVITY_TIMEOUT", 70))
    # List in pages, as kubectl does: kopf's default lists every object in one response, and
    # parsing 2,000 FineTuneJobs or Jobs at once was the operator's peak memory at a restart
    # (issue 15, bench/operator_scale.py).
    settings.watching.chunk_size = 500
    # Any other API request kopf makes (patches, events, peering) must not hang either.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30
    # On 429 wait as long as the API server's Retry-After says, even when kopf's own backoff
    # for that attempt is longer or shorter: APF knows its load (issue 13).
    settings.networking.enforce_retry_after = True
    # Our own finalizer name, so `kubectl get -o yaml` says who blocks a deletion.
    settings.persistence.finalizer = FINALIZER
    # Handler progress and the last-handled spec live in our annotations, not in `status`,
    # which the CRD schema prunes to the fields it declares.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tuneloop.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tuneloop.dev", key="last-handled-configuration")
    # Events are ours (Created, Started, Retrying, ... via kopf.event); of kopf's own log
    # lines only errors become Events (`enabled = False` would silence kopf.event too).
    settings.posting.level = logging.ERROR
    settings.posting.reporting_component = "tuneloop-operator"
    # Two replicas: the one with the higher priority works, the other waits (kopf peering).
    # Equal priorities would freeze both, hence a random one unless given; a dead leader's
    # record expires after `lifetime` and the standby takes over.
    settings.peering.name = PEERING_NAME
    settings.peering.standalone = memo.standalone
    settings.peering.mandatory = not memo.standalone
    settings.peering.priority = memo.priority if memo.priority is not None else random.randint(1, 2**30)
    settings.peering.lifetime = 30
    settings.peering.clusterwide = memo.clusterwide
    logger.info(f"Tuneloop operator: peering={'off' if memo.standalone else PEERING_NAME} "
                f"priority={settings.peering.priority} image={memo.config.trainer.image}")

    memo.kube = Kube()
    memo.written = {}  # uid -> the status we wrote last (watch events may lag behind)
    memo.parsed = {}  # uid -> (generation, parsed spec and problems)
    memo.job_created = {}  # FineTuneJob uid -> when we created its Job, until the index shows it
    memo.restarted = {}  # FineTuneJob uid -> uid of the Job last deleted for a group restart (counted once)
    memo.service_job = {}  # FineTuneJob uid -> uid of the Job its headless Service selects
    memo.failed_create = {}  # FineTuneJob uid -> EventsWatch of its pod-less Job's FailedCreate Events
    if memo.metrics_port:
        metrics.serve(memo.metrics_port)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tuneloop-operator", description="Run the Tuneloop operator (kopf).")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="Serve this namespace (repeatable; globs allowed).")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="Serve every namespace (the default).")
    parser.add_argument("--standalone", action="store_true", help="Run without peering (a single replica only).")
    parser.add_argument("--priority", type=int, default=None, help="Peering priority (default: random).")
    parser.add_argument("--liveness", metavar="URL", default=None, help="Serve health probes, e.g. http://0.0.0.0:8080/healthz.")
    parser.add_argument("--metrics-port", type=int, default=9090, help="Port of the operator's Prometheus metrics (0: off).")
    parser.add_argument("--trainer-image", default=None, help="Trainer image for jobs without spec.image (env TUNELOOP_TRAINER_IMAGE).")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = OperatorConfig.from_env()
    if args.trainer_image:
        config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, image=args.trainer_image))
    clusterwide = not args.namespace
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    memo = kopf.Memo(config=config, standalone=args.standalone, priority=args.priority,
                     clusterwide=clusterwide, metrics_port=args.metrics_port)
    kopf.run(
        clusterwide=clusterwide,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

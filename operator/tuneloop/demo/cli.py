"""`tuneloop demo`: the whole maintenance loop on one machine, no cluster needed.

    tuneloop demo                      # the full story, live in the terminal
    tuneloop demo --small --plain      # CI: the same story on a smaller training budget, plain lines
    tuneloop demo --kubeconfig ~/.kube/config --s3-endpoint https://s3.example.com   # a real cluster

It starts the Kubernetes API emulator, the local kubelet, the operator and an S3 server in
this process tree (see `tuneloop.demo.runtime`), plays the story of `tuneloop.demo.story`
with the manifests and tickets of `examples/demo/`, then prints a summary, writes
`<workdir>/summary.json` and `<workdir>/demo.png`, stops everything and exits 0. Ctrl-C
stops everything too. Exit code 1: the story did not end with a promoted retrained model.

On a real cluster the operator must already run (the Helm chart) with RBAC to patch
InferenceServices, the InferenceService CRD must exist (KServe, or examples/demo/crds/), the
S3 credentials come from the usual AWS environment and reach the pods through the Secret
`demo-s3-credentials` that you create in the namespace.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tuneloop.demo.runtime import CHECKOUT, DemoRuntime, clear_workdir

DEFAULT_EXAMPLES = CHECKOUT / "examples" / "demo"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tuneloop demo", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help="The same story on a smaller training budget (2 epochs, shorter sequences), for CI.")
    parser.add_argument("--plain", action="store_true", help="Plain lines instead of the live view (automatic when "
                                                             "stdout is not a terminal).")
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"),
                        help="Kubeconfig, logs, summary.json and demo.png go here (default: runs/demo).")
    parser.add_argument("--namespace", default="tuneloop-demo", help="Namespace of the demo (default: tuneloop-demo).")
    parser.add_argument("--examples", type=Path, default=DEFAULT_EXAMPLES,
                        help=f"The manifests and tickets (default: {DEFAULT_EXAMPLES}).")
    parser.add_argument("--kubeconfig", default=None, help="A real cluster instead of the emulator, kubelet and operator.")
    parser.add_argument("--s3-endpoint", default=None, help="A real S3 endpoint instead of the embedded one.")
    parser.add_argument("--timeout", type=float, default=None, help="Give up after this many seconds (default: 1800).")
    return parser.parse_args(argv)


class Stopped(KeyboardInterrupt):
    """SIGTERM (e.g. `kill`, a CI timeout) unwinds like Ctrl-C, so everything is stopped."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_stopped)
    from tuneloop.demo.display import make_display
    from tuneloop.demo.story import FULL, SMALL, Story, StoryFailed

    budget = SMALL if args.small else FULL
    if args.timeout:
        budget = type(budget)(budget.name, budget.epochs, budget.max_seq_length, args.timeout)
    if not (args.examples / "policy.yaml").exists():
        print(f"tuneloop demo: {args.examples}/policy.yaml not found; run it from a Tuneloop checkout or pass "
              f"--examples PATH/examples/demo", file=sys.stderr)
        return 2
    workdir: Path = args.workdir
    if args.kubeconfig is None:
        clear_workdir(workdir)
    started = time.monotonic()
    rt = DemoRuntime(workdir=workdir, namespace=args.namespace, kubeconfig_in=args.kubeconfig,
                     s3_endpoint=args.s3_endpoint, operator_env={"TUNELOOP_POLICY_INTERVAL": "2"})
    # kubectl watches one resource type at a time (`get ftj,mpol -w` is refused: "you may only
    # specify a single resource type", kubernetes/kubernetes#133380), hence one command per kind.
    kubectl = f"kubectl --kubeconfig {rt.kubeconfig} -n {args.namespace}"
    print(f"tuneloop demo: starting ({budget.name} budget); look from a second terminal with\n"
          f"  {kubectl} get ftj,mpol,isvc\n  {kubectl} get ftj -w      # or: get mpol -w", flush=True)
    display = None
    try:
        rt.start(progress=lambda line: print(f"  {line}", flush=True))
        display = make_display(True if args.plain else None)
        story = Story(rt, args.examples, budget, display)
        try:
            summary = story.run()
        finally:
            display.close()
        summary["totalSeconds"] = round(time.monotonic() - started, 1)
        write_outputs(workdir, story, summary)
        print_summary(summary, workdir)
        return 0
    except StoryFailed as exc:
        print(f"tuneloop demo: FAILED: {exc}\n  logs: {workdir}/logs (operator), {workdir}/pods (training pods)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print("\ntuneloop demo: interrupted; stopping everything", file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Stopped) else signal.SIGINT)
    finally:
        rt.stop()


def write_outputs(workdir: Path, story: Any, summary: dict[str, Any]) -> None:
    from tuneloop.demo.plot import write_plot

    workdir.mkdir(parents=True, exist_ok=True)
    summary["plot"] = str(write_plot(workdir / "demo.png", story.recorder.loss, summary))
    summary["trainingLoss"] = {job: [[round(t, 1), step, loss] for t, step, loss in series]
                               for job, series in story.recorder.loss.items()}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def print_summary(summary: dict[str, Any], workdir: Path) -> None:
    metric = summary["metric"]
    print(f"\ntuneloop demo: done in {summary['totalSeconds']:.0f}s ({summary['budget']} budget)")
    print(f"{'revision':9} {'trigger':8} {'verdict':9} {'train s':>8} {'gate ' + metric:>14} {'vs champion':>12}  model")
    for r in summary["revisions"]:
        gate = "" if r["gateMetric"] is None else f"{r['gateMetric']:.3f}"
        against = "" if r["championMetric"] is None else f"{r['championMetric']:.3f}"
        train = "" if r["trainSeconds"] is None else f"{r['trainSeconds']:.0f}"
        print(f"{r['revision']:9} {r['trigger'] or '':8} {r['verdict'] or '':9} {train:>8} {gate:>14} {against:>12}  {r['modelURI']}")
    before, after = summary["before"], summary["after"]
    if before is not None and after is not None:
        print(f"{metric} on the shifted fresh tickets: champion r1 {before:.3f} (threshold {summary['threshold']}) "
              f"-> champion {summary['champion']} {after:.3f}")
    print(f"champion {summary['champion']}: {summary['championModelURI']}; InferenceService serves {summary['served']}")
    print(f"summary: {workdir / 'summary.json'}; plot: {summary['plot']}")


if __name__ == "__main__":
    sys.exit(main())

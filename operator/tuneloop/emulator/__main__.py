"""Run the emulator in the foreground: `python -m tuneloop.emulator --port 0 --kubeconfig PATH --crds crds/`.

Prints one line with the URL and the kubeconfig once it serves, then runs until SIGINT or
SIGTERM. `KUBECONFIG=PATH kubectl get ns`, kopf, and the kubernetes client all work with it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

from tuneloop.emulator.emulator import Emulator
from tuneloop.emulator.kubeconfig import write_kubeconfig
from tuneloop.emulator.server import EmulatorServer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuneloop.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1).")
    parser.add_argument("--port", type=int, default=0, help="Port to listen on (default: 0, any free port).")
    parser.add_argument("--kubeconfig", type=pathlib.Path, default=None,
                        help="Write a kubeconfig pointing at the emulator here (default: a temporary file).")
    parser.add_argument("--crds", action="append", default=[], metavar="PATH",
                        help="A CRD file or a directory of them to serve (repeatable; missing paths are skipped).")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log every request.")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    crds = [path for path in args.crds if pathlib.Path(path).exists()]
    for missing in set(args.crds) - set(crds):
        logging.warning("No CRDs at %s: skipped.", missing)
    temporary = None if args.kubeconfig else tempfile.mkdtemp(prefix="tuneloop-emulator-")
    kubeconfig = args.kubeconfig or pathlib.Path(f"{temporary}/kubeconfig")
    try:
        async with Emulator() as emulator, EmulatorServer(emulator, host=args.host, port=args.port) as server:
            served = emulator.register_crds(*crds)
            write_kubeconfig(kubeconfig, server.url)
            print(f"Kubernetes API emulator at {server.url} ({len(served)} CRDs); KUBECONFIG={kubeconfig}", flush=True)
            await stop.wait()
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

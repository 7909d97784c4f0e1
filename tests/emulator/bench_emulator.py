"""Throughput of the emulator over HTTP as objects accumulate: a script that prints figures,
not a test (timings depend on the machine and its load).

    python tests/emulator/bench_emulator.py                 # 100, 1000, 5000 objects
    python tests/emulator/bench_emulator.py --sizes 100 700 --baseline   # and plain kmock

Requests go one at a time over one keep-alive connection (like a controller's client), from
this process's main thread to the emulator's own thread. "list" lists all objects of the
namespace; "list 1%" lists with a label selector that matches one object in a hundred.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import kmock

from tuneloop.emulator import BackgroundEmulator

NAMESPACE = "bench"


async def rate(count: int, call: Callable[[int], Awaitable[None]]) -> float:
    started = time.perf_counter()
    for index in range(count):
        await call(index)
    return count / (time.perf_counter() - started)


async def measure(url: str, sizes: list[int], repeats: int, *, make_namespace: bool = True) -> None:
    base = f"{url}/api/v1/namespaces/{NAMESPACE}/configmaps"
    print(f"{'objects':>8} {'creates/s':>10} {'gets/s':>10} {'list/s':>10} {'list 1%/s':>10}")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        async def request(method: str, path: str, body: dict | None = None) -> None:
            async with session.request(method, path, json=body) as response:
                await response.read()
                assert response.status < 300, (response.status, await response.text())

        if make_namespace:  # kmock's parser fails on /api/v1/namespaces, and needs none
            await request("POST", f"{url}/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        created = 0
        for size in sizes:
            batch = size - created

            async def create(index: int) -> None:
                name = f"cm-{created + index}"
                labels = {"app": "bench", "shard": str((created + index) % 100)}
                await request("POST", base, {"metadata": {"name": name, "labels": labels}, "data": {"k": "v" * 64}})

            creates = await rate(batch, create)
            created = size
            gets = await rate(repeats, lambda _: request("GET", f"{base}/cm-{random.randrange(size)}"))
            lists = await rate(max(3, repeats // max(1, size // 100)), lambda _: request("GET", base))
            selected = await rate(repeats, lambda _: request("GET", f"{base}?labelSelector=shard%3D7"))
            print(f"{size:>8} {creates:>10.0f} {gets:>10.0f} {lists:>10.1f} {selected:>10.1f}", flush=True)


@contextlib.asynccontextmanager
async def plain_kmock() -> AsyncIterator[str]:
    async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
        handler.resources["v1/namespaces"] = kmock.ResourceInfo(namespaced=False)
        handler.resources["v1/configmaps"] = kmock.ResourceInfo(namespaced=True)
        yield str(server.url).rstrip("/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=300, help="GETs and selective LISTs per size")
    parser.add_argument("--baseline", action="store_true", help="also measure kmock's own KubernetesEmulator")
    args = parser.parse_args()

    print("tuneloop.emulator:")
    with BackgroundEmulator() as emulator:
        asyncio.run(measure(emulator.url, args.sizes, args.repeats))

    if args.baseline:
        print("kmock.KubernetesEmulator (unindexed), for comparison:")

        async def baseline() -> None:
            async with plain_kmock() as url:
                # Measured from another thread, as above: the server keeps this loop.
                thread = threading.Thread(target=lambda: asyncio.run(
                    measure(url, args.sizes, max(3, args.repeats // 10), make_namespace=False)))
                thread.start()
                while thread.is_alive():
                    await asyncio.sleep(0.05)
        asyncio.run(baseline())


if __name__ == "__main__":
    main()

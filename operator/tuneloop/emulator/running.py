"""An emulator running in a background thread with its own event loop, for synchronous
code: pytest fixtures, the kubernetes client, kopf started in another thread.

    with BackgroundEmulator(crds=["crds/"]) as emulator:
        client = kubernetes.config.new_client_from_config(str(emulator.kubeconfig))
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from tuneloop.emulator.crds import CrdSource
from tuneloop.emulator.emulator import Emulator
from tuneloop.emulator.kubeconfig import write_kubeconfig
from tuneloop.emulator.server import EmulatorServer

T = TypeVar("T")


class BackgroundEmulator:
    def __init__(
            self, *, crds: Iterable[CrdSource] = (), kubeconfig: str | os.PathLike[str] | None = None,
            host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0, **options: Any,
    ) -> None:
        """`options` go to `Emulator` (e.g. `bookmark_interval`, `history_limit`)."""
        self._crds = list(crds)
        self._host, self._port = host, port
        self._options = options
        self._startup_timeout = startup_timeout
        self._temporary_dir = None if kubeconfig is not None else tempfile.mkdtemp(prefix="tuneloop-emulator-")
        self.kubeconfig = pathlib.Path(kubeconfig if kubeconfig is not None else f"{self._temporary_dir}/kubeconfig")
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._emulator: Emulator | None = None
        self._server: EmulatorServer | None = None

    @property
    def emulator(self) -> Emulator:
        """The emulator itself; touch its state only through `call()` (it lives in another thread)."""
        if self._emulator is None:
            raise RuntimeError("The emulator is not running.")
        return self._emulator

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("The emulator is not running.")
        return self._server.url

    @property
    def errors(self) -> list[Exception]:
        """Failures of the emulator itself (its bugs, not API errors like 404)."""
        return self.emulator.errors

    def start(self) -> Self:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="tuneloop-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise TimeoutError("The Kubernetes API emulator did not start in time.")
        if self._failure is not None:
            raise RuntimeError("The Kubernetes API emulator failed to start.") from self._failure
        write_kubeconfig(self.kubeconfig, self.url)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = self._loop = self._stopping = self._emulator = self._server = None
        if self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)

    def call(self, fn: Callable[[Emulator], T], timeout: float = 30.0) -> T:
        """Run `fn(emulator)` in the emulator's event loop and return its result."""
        if self._loop is None:
            raise RuntimeError("The emulator is not running.")

        async def call() -> T:
            return fn(self.emulator)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def register_crds(self, *sources: CrdSource) -> list[dict[str, Any]]:
        return self.call(lambda emulator: emulator.register_crds(*sources))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def _serve(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            async with Emulator(**self._options) as emulator, \
                    EmulatorServer(emulator, host=self._host, port=self._port) as server:
                emulator.register_crds(*self._crds)
                self._emulator, self._server = emulator, server
                self._ready.set()
                await self._stopping.wait()
        except BaseException as e:
            self._failure = e
            raise
        finally:
            self._ready.set()

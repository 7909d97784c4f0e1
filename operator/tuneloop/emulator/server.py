"""Serving an `Emulator` on a TCP port.

Over aiohttp's low-level server rather than `kmock.Server`, which (1) patches aiohttp's DNS
resolution process-wide and must be stopped in the reverse order of starting, so two
emulators in different threads (a session fixture and a test's own) break each other on
exit, and (2) would wait up to 60 s for open watch streams on stop; here they end first.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import aiohttp.web

from tuneloop.emulator.emulator import Emulator


class EmulatorServer:
    def __init__(self, emulator: Emulator, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port  # the real one once started, if 0 was asked for
        self._runner: aiohttp.web.ServerRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        # Cancel handlers of disconnected clients, or an idle watch would linger until its timeout.
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
            self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.emulator.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

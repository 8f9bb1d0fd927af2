"""uvicorn's h11 protocol with a deadline for a request's headers (uvicorn has none).

A client that opens a connection and sends its request line and headers slower than `header_timeout`
seconds (a slowloris) has its connection closed; the time between requests on a kept-alive connection
is uvicorn's `timeout_keep_alive`, and the body's is the app's (body.py). Use with
`uvicorn.Config(http=GuardedH11Protocol)` or `--http stealkit.service.protocol:GuardedH11Protocol`.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    header_timeout: float | None = None  # seconds; None = the header_timeout_s of ServiceSettings.from_env()

    @classmethod
    def _timeout(cls) -> float:
        if cls.header_timeout is None:
            from stealkit.service.settings import ServiceSettings

            cls.header_timeout = ServiceSettings.from_env().header_timeout_s
        return cls.header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer = None
        super().connection_made(transport)
        self._arm()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._timeout(), self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self._idle() and not self.transport.is_closing():
            self.logger.info("closed a connection whose request headers took longer than %.0f s", self._timeout())
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._idle():
            self._arm()  # the start of a request: its headers must be complete in time
        super().data_received(data)
        if not self._idle():
            self._disarm()  # headers complete, a request is running

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

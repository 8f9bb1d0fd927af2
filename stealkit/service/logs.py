"""Request ids, structured access logs and the log configuration of `stealkit serve`.

Every request gets an id: the client's `X-Request-Id` if it is a sane token (1–128 characters of
letters, digits and `._:-`), else a random `req_<24 hex>` (nothing to count other accounts' requests by);
it is echoed in the response and written, with the account, in one access-log line per request. Keys are
never logged (no header is). An exception no route handled becomes a JSON 500 here, before uvicorn would
see it and close the keep-alive connection.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time

from starlette.datastructures import MutableHeaders

access_log = logging.getLogger("stealkit.access")
SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if SANE_ID.fullmatch(text) else None
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class AccessLog:
    """ASGI middleware: assigns the request id (scope state), echoes it, logs the request and counts it."""

    def __init__(self, app, metrics=None):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        incoming = incoming_request_id(scope.get("headers", []))
        state["request_id_incoming"] = incoming
        state["request_id"] = incoming or new_request_id()
        status, started_response = [500], [False]

        async def send_(message):
            if message["type"] == "http.response.start":
                status[0], started_response[0] = message["status"], True
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers["X-Request-Id"] = state["request_id"]
            await send(message)

        try:
            await self.app(scope, receive, send_)
        except Exception:
            if started_response[0]:
                raise
            logging.getLogger("stealkit.service").exception("request %s failed", state["request_id"])
            body = json.dumps({"detail": f"internal error (request {state['request_id']}); nothing was billed"}).encode()
            await send_({"type": "http.response.start", "status": 500,
                         "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send_({"type": "http.response.body", "body": body})
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.request(scope["path"], scope["method"], status[0], seconds)
            fields = {
                "request_id": state.get("response_request_id", state["request_id"]), "method": scope["method"], "path": scope["path"],
                "status": status[0], "ms": round(seconds * 1000, 2), "account": state.get("account"), "images": state.get("images"),
                "billed": state.get("billed"), "client": (scope.get("client") or ("-",))[0],
            }
            access_log.info(
                "%s %s %s %d %.1fms account=%s billed=%s", fields["request_id"], scope["method"], scope["path"], status[0],
                fields["ms"], fields["account"] or "-", fields["billed"] if fields["billed"] is not None else "-", extra={"fields": fields},
            )


def log_config(fmt: str = "json", level: str = "info") -> dict:
    """logging.config.dictConfig for uvicorn and stealkit: one format, uvicorn's own access log off."""
    level = level.upper()
    formatter = {"()": "stealkit.service.logs.JsonFormatter"} if fmt == "json" else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "loggers": {
            "uvicorn": {"handlers": ["main"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "stealkit": {"handlers": ["main"], "level": level, "propagate": False},
        },
    }

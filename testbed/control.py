"""Local control socket of a running testbed (``chaos-testbed inject/show/down`` talk to it).

A Unix stream socket ``<run dir>/control.sock``, mode 0600 in a 0700 directory: only root on
this machine can reach it, so requests are not signed. The JSON-line protocol of
:mod:`chaos_hvd.jsonline` (bounded, never pickled). Requests: ``{"op": "show"}``,
``{"op": "inject", "action": {...one schedule entry, without 'at'...}}``, ``{"op": "down"}``.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
import time

import msgspec

from chaos_hvd import jsonline
from chaos_hvd.errors import RequestError, ServiceUnavailable

from .errors import InputError, TestbedError
from .executor import raise_priority
from .faults import parse_schedule


class ControlUnavailable(TestbedError, ServiceUnavailable):
    """No running testbed answered on the control socket, or it refused the request."""

    exit_code = 2


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, "control.sock")


class ControlServer:
    def __init__(self, testbed, on_down):
        self.tb, self.on_down = testbed, on_down
        path = socket_path(testbed.run_dir)
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                raise_priority()
                line = self.rfile.readline(jsonline.MAX_LINE_BYTES + 1)
                try:
                    reply = outer.handle(jsonline.decode(line))
                except (RequestError, TestbedError) as e:
                    reply = jsonline.error(str(e))
                except Exception as e:  # noqa: BLE001 - the caller gets the reason, server lives
                    reply = jsonline.error(f"{type(e).__name__}: {e}")
                self.wfile.write(jsonline.encode(reply))

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        os.chmod(path, 0o600)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "show":
            return jsonline.ok(testbed=self.tb.describe())
        if op == "down":
            self.on_down()
            return jsonline.ok()
        if op == "inject":
            action = req.get("action")
            if not isinstance(action, dict):
                raise InputError("inject needs an 'action' mapping")
            doc = json.dumps({"actions": [{"at": 0, **action}]})
            entries, t0 = [], time.monotonic()
            for a in parse_schedule(doc, self.tb.topo, "<inject>").expand():
                time.sleep(max(0.0, t0 + a.offset_s - time.monotonic()))  # flap: down .. up
                record = self.tb.apply(a)
                record.injected = True
                entries.append(msgspec.to_builtins(self.tb.log(record)))
            return jsonline.ok(applied=entries)
        raise InputError(f"unknown op {op!r}")


def request(run_dir: str, req: dict, timeout_s: float = 30.0) -> dict:
    return jsonline.request(socket_path(run_dir), req, timeout_s, ControlUnavailable)

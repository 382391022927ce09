"""Local control socket of a running testbed (``chaos-testbed inject/show/down`` talk to it).

A Unix stream socket ``<run dir>/control.sock``, mode 0600 in a 0700 directory: only root on
this machine can reach it, so requests are not signed. One JSON object per line each way,
at most MAX_REQUEST_BYTES; never pickled. Requests: ``{"op": "show"}``,
``{"op": "inject", "action": {...one schedule entry, without 'at'...}}``, ``{"op": "down"}``.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time

from .errors import InputError, TestbedError
from .executor import raise_priority
from .faults import parse_schedule

MAX_REQUEST_BYTES = 64 * 1024


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
                line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
                try:
                    if len(line) > MAX_REQUEST_BYTES:
                        raise InputError("request too large")
                    reply = outer.handle(json.loads(line))
                except (ValueError, TestbedError, KeyError) as e:
                    reply = {"ok": False, "error": str(e)}
                except Exception as e:  # noqa: BLE001 - the caller gets the reason, server lives
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        os.chmod(path, 0o600)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req: dict) -> dict:
        op = req.get("op") if isinstance(req, dict) else None
        if op == "show":
            return {"ok": True, "testbed": self.tb.describe()}
        if op == "down":
            self.on_down()
            return {"ok": True}
        if op == "inject":
            action = req.get("action")
            if not isinstance(action, dict):
                raise InputError("inject needs an 'action' mapping")
            doc = json.dumps({"actions": [{"at": 0, **action}]})
            entries, t0 = [], time.monotonic()
            for a in parse_schedule(doc, self.tb.topo, "<inject>").expand():
                time.sleep(max(0.0, t0 + a.offset_s - time.monotonic()))  # flap: down .. up
                entries.append(self.tb.log("fault", injected=True, **self.tb.apply(a)))
            return {"ok": True, "applied": entries}
        raise InputError(f"unknown op {op!r}")


def request(run_dir: str, req: dict, timeout_s: float = 30.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(socket_path(run_dir))
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)

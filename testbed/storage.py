"""A storage host's checkpoint server: flat files over HTTP PUT / GET / DELETE (bounded, token-guarded).

A topology node with ``role: storage`` runs one (``python -m testbed.storage``) in its own namespace,
so a checkpoint written or read through it crosses that node's shaped link -- the restore path of
Pollux / Autoscaling-style systems, which the ``checkpoint`` sync strategy stands for. The testbed
passes its URL to the command as ``{storage}``.

Anyone on the emulated network reaches the port, so: every path is ``/<token>/<name>`` with the
run's random token (read from a file, never from the command line); names are flat
(``[A-Za-z0-9][A-Za-z0-9._-]*``); a body needs a Content-Length within the per-file and total
limits; at most ``MAX_CONNECTIONS`` at once; a peer that sends or reads nothing for
``IDLE_TIMEOUT_S`` is dropped. Readers never trust what they get: the checkpoint strategy checks
every chunk against the digest all ranks agreed on.
"""

from __future__ import annotations

import argparse
import hmac
import http.server
import logging
import os
import socket
import sys
import threading
import time

from chaos_hvd.state.checkpoint_store import NAME

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
IDLE_TIMEOUT_S = 30.0
MAX_FILE_BYTES = 8 << 30
MAX_TOTAL_BYTES = 16 << 30
_BLOCK = 1 << 20
# A refused PUT's body is read and dropped up to this much / this long ("lingering close"), so the
# client gets to read the refusal instead of a reset in the middle of its upload.
LINGER_BYTES = 16 << 20
LINGER_S = 2.0


class StorageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], root: str, token: str,
                 max_file_bytes: int = MAX_FILE_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES,
                 idle_timeout_s: float = IDLE_TIMEOUT_S):
        self.root, self.token, self.idle_timeout_s = root, token, idle_timeout_s
        self.max_file_bytes, self.max_total_bytes = max_file_bytes, max_total_bytes
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.write_lock = threading.Lock()    # the total-size check and the rename are one step
        os.makedirs(root, exist_ok=True)
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            log.warning("refused %s: %d connections open", client_address[0], MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        # a peer that resets or times out is routine here: one line, no traceback
        log.warning("connection from %s ended: %s", client_address[0], sys.exc_info()[1])

    def stored_bytes(self) -> int:
        return sum(e.stat().st_size for e in os.scandir(self.root) if e.is_file())


class Handler(http.server.BaseHTTPRequestHandler):
    server: StorageServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s     # applies to every read and write
        super().setup()

    def log_message(self, fmt, *args) -> None:
        log.info("%s %s", self.client_address[0], fmt % args)

    def _path(self) -> str | None:
        """The file a request names, or None after replying with the error."""
        parts = self.path.split("/")
        if (len(parts) != 3 or parts[0] or not hmac.compare_digest(parts[1], self.server.token)
                or not NAME.fullmatch(parts[2])):
            self._reply(404, "no such object")
            return None
        return os.path.join(self.server.root, parts[2])

    def _reply(self, code: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if code >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _length(self) -> int | None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or len(length) > 15:
            self._reply(411, "a Content-Length is required")
            return None
        return int(length)

    def _linger(self) -> None:
        """After refusing a PUT: drop what the client still sends (bounded), then close."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_S)
            deadline, left = time.monotonic() + LINGER_S, LINGER_BYTES
            while left > 0 and time.monotonic() < deadline:
                block = self.rfile.read1(min(left, _BLOCK))
                if not block:
                    break
                left -= len(block)
        except OSError:
            pass
        self.close_connection = True

    def do_PUT(self) -> None:
        path, length = self._path(), None
        if path is None or (length := self._length()) is None:
            self._linger()
            return
        if length > self.server.max_file_bytes:
            self._reply(413, f"over {self.server.max_file_bytes} bytes")
            self._linger()
            return
        tmp = f"{path}.{threading.get_ident()}.part"
        try:
            with open(tmp, "wb") as f:
                left = length
                while left:
                    block = self.rfile.read(min(left, _BLOCK))
                    if not block:
                        raise ConnectionError(f"client closed with {left} bytes unsent")
                    f.write(block)
                    left -= len(block)
                f.flush()
                os.fsync(f.fileno())
            with self.server.write_lock:
                old = os.path.getsize(path) if os.path.exists(path) else 0
                if self.server.stored_bytes() - old > self.server.max_total_bytes:
                    self._reply(507, f"store holds over {self.server.max_total_bytes} bytes")
                    return
                os.replace(tmp, path)
        except OSError as e:      # includes timeouts and resets: the partial file goes
            log.warning("PUT %s from %s failed: %s", os.path.basename(path),
                        self.client_address[0], e)
            self.close_connection = True
            return
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._reply(201)

    def do_GET(self) -> None:
        path = self._path()
        if path is None:
            return
        try:
            f = open(path, "rb")
        except OSError:
            self._reply(404, "no such object")
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            try:
                self.connection.sendfile(f)
            except OSError as e:
                log.warning("GET %s to %s failed: %s", os.path.basename(path),
                            self.client_address[0], e)
                self.close_connection = True

    def do_DELETE(self) -> None:
        path = self._path()
        if path is None:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            self._reply(404, "no such object")
            return
        self._reply(204)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.storage",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="where the files are kept")
    ap.add_argument("--port", type=int, default=8470)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--token-file", required=True, help="file holding the path token")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with open(args.token_file) as f:
        token = f.read().strip()
    if len(token) < 16 or not token.isalnum():
        print("storage: the token must be >= 16 letters or digits", file=sys.stderr)
        return 2
    server = StorageServer((args.bind, args.port), args.dir, token)
    log.info("serving %s on %s:%d", args.dir, args.bind, args.port)
    try:
        server.serve_forever()     # until the testbed's teardown kills it and removes --dir
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

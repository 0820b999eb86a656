"""A stand-in lagerd for the package's unit tests: a real HTTP/1.1 server on
127.0.0.1:0 (stdlib http.server, keep-alive) that answers from a table and
records every request. End-to-end tests against the real lagerd live in
lager/tests/it/scripts.rs."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeBox:
    def __init__(self):
        self.nets = []
        self.local = []
        # (kind, action) -> (status, body); a callable gets the request body.
        self.replies = {}
        self.requests = []
        self.connections = 0
        box = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body leave in two writes: without this, Nagle
                # and the client's delayed ACK add 40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                box.connections += 1

            def log_message(self, *args):
                pass

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                box.requests.append(("GET", self.path, None, dict(self.headers)))
                if self.path == "/nets/list":
                    return self._answer(200, box.nets)
                if self.path == "/nets/list?local=1":
                    return self._answer(200, box.local)
                self._answer(404, {"error": "Not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                box.requests.append(("POST", self.path, body, dict(self.headers)))
                kind = self.path.strip("/").split("/")[0]
                reply = box.replies.get((kind, (body or {}).get("action")))
                if reply is None:
                    return self._answer(200, {"success": True, "message": "ok"})
                status, answer = reply(body) if callable(reply) else reply
                self._answer(status, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def commands(self):
        """(path, action, params) of every command posted."""
        return [(p, b.get("action"), b.get("params")) for (m, p, b, _) in self.requests
                if m == "POST" and p.endswith("/command")]

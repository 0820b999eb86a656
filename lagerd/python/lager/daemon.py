"""How a script reaches lagerd: HTTP/1.1 on one kept-alive connection.

lagerd gives every job LAGER_DAEMON_URL (where it listens) and
LAGER_JOB_TOKEN_FILE (a file holding this run's own token: it is never in
the environment or on a command line). lagerd knows the run by that token:
it authorizes the job when lagerd runs with --token-file, and with
--enforce-locks the job acts as the holder of its run's lock. Outside a job
(a box shell) the URL defaults to http://127.0.0.1:9000 and LAGER_BOX_TOKEN
is used if set.

Written on the socket module rather than http.client, which imports ssl and
the email package: `from lager import Net` must stay cheap, and a call
costs one small write and one read.
"""

import os
import socket
import threading

from .actions import ACTIONS
from .errors import LagerError, from_reply

DEFAULT_URL = "http://127.0.0.1:9000"
CONNECT_TIMEOUT = 5.0
# Longer than lagerd's own 30 s instrument deadline, so its message wins
# (instruments.md section 10.7).
READ_TIMEOUT = 45.0


class Daemon:
    """One connection to lagerd, shared by the threads of a script."""

    def __init__(self, url=None, token=None):
        url = url or os.environ.get("LAGER_DAEMON_URL") or DEFAULT_URL
        self.url = url
        self.host, self.port = _host_port(url)
        self.token = token if token is not None else _job_token()
        self._sock = None
        self._file = None
        self._pid = None
        self._lock = threading.Lock()

    def request(self, method, path, body=None):
        """(status, decoded JSON body) of one request."""
        import json

        data = b"" if body is None else json.dumps(body).encode()
        head = "%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n" % (
            method, path, self.host, self.port, len(data))
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if self.token:
            head += "Authorization: Bearer %s\r\n" % self.token
        message = (head + "\r\n").encode() + data
        with self._lock:
            status, raw = self._exchange(message)
        try:
            return status, json.loads(raw.decode() or "null")
        except ValueError:
            raise LagerError("lagerd at %s answered HTTP %d with something that is not JSON: %r"
                             % (self.url, status, raw[:200]), status)

    def _exchange(self, message):
        # A kept connection may have been closed by lagerd while idle: then
        # nothing of the reply arrives, and the request is sent once more
        # on a fresh connection (lagerd never acts on a request it did not
        # answer at all, so this cannot apply a command twice).
        for attempt in (0, 1):
            reused = self._connected()
            try:
                if not reused:
                    self._connect()
                try:
                    self._sock.sendall(message)
                except (BrokenPipeError, ConnectionResetError) as e:
                    raise _NothingReceived(str(e))
                return self._read_reply()
            except _NothingReceived as e:
                self._close()
                if reused and attempt == 0:
                    continue
                raise LagerError("lagerd at %s closed the connection without an answer (%s); is it restarting?"
                                 % (self.url, e))
            except socket.timeout:
                self._close()
                raise LagerError("lagerd at %s did not answer within %ds" % (self.url, READ_TIMEOUT))
            except OSError as e:
                self._close()
                raise LagerError("cannot reach lagerd at %s: %s; is lagerd running (LAGER_DAEMON_URL)?"
                                 % (self.url, e))
        raise AssertionError("unreachable")

    def _connected(self):
        # A forked child must not share its parent's connection.
        if self._sock is not None and self._pid != os.getpid():
            self._sock = self._file = None
        return self._sock is not None

    def _connect(self):
        sock = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(READ_TIMEOUT)
        self._sock, self._file, self._pid = sock, sock.makefile("rb"), os.getpid()

    def _close(self):
        for closable in (self._file, self._sock):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass
        self._sock = self._file = None

    def _read_reply(self):
        try:
            line = self._file.readline(65537)
        except ConnectionResetError as e:
            raise _NothingReceived(str(e))
        if not line:
            raise _NothingReceived("connection closed")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise OSError("bad status line %r" % line[:100])
        status = int(parts[1])
        length, chunked, close = None, False, parts[0] == b"HTTP/1.0"
        while True:
            header = self._file.readline(65537)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value == b"chunked"
            elif name == b"connection":
                close = value == b"close"
        if chunked:
            body = b""
            while True:
                size = int(self._file.readline(1024).split(b";")[0].strip() or b"0", 16)
                chunk = self._file.read(size + 2)
                if size == 0:
                    break
                body += chunk[:size]
        elif length is not None:
            body = self._file.read(length)
        else:
            body, close = self._file.read(), True
        if close:
            self._close()
        return status, body

    def get(self, path):
        """The JSON of a GET that must succeed."""
        status, body = self.request("GET", path)
        if status != 200:
            raise from_reply(status, body)
        return body

    def command(self, kind, net, action, params=None):
        """POST /<kind>/command; the reply of a success, else the error."""
        if action not in ACTIONS[kind]:
            raise LagerError("internal: %r is not a %s action this package knows" % (action, kind))
        body = {"netname": net, "action": action, "params": params or {}}
        status, reply = self.request("POST", "/%s/command" % kind, body)
        if status == 200 and isinstance(reply, dict) and reply.get("success"):
            return reply
        raise from_reply(status, reply)


class _NothingReceived(OSError):
    pass


def _host_port(url):
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        raise LagerError("LAGER_DAEMON_URL %r names no host" % url)
    return host, int(port) if port.isdigit() else 80


def _job_token():
    path = os.environ.get("LAGER_JOB_TOKEN_FILE")
    if path:
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError:
            return None
    return os.environ.get("LAGER_BOX_TOKEN") or None


_shared = None
_shared_lock = threading.Lock()


def daemon():
    """The process's connection to lagerd, made on first use."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = Daemon()
    return _shared

"""UART nets (console.md section 5): a device's serial console, owned by
lagerd, which captures it for as long as it runs.

    dut = Net.get("console1", type=NetType.UART)
    start = dut.mark()
    with dut.connect(timeout=5) as port:
        port.write(b"reboot\\n")
        port.expect(b"login:", timeout=30)
    assert b"panic" not in dut.since(start)

`connect()` gives a pyserial-compatible object that reads the one capture
every viewer sees (from the moment it connects) and writes through the
one-writer rule: its first write claims the console's writer for as long
as the object stays open, and fails naming whoever else types on it.
The port's settings are the net's (`lager nets add ... --baudrate`); the
port itself stays lagerd's.
"""

import re
import socket
import time

from .errors import LagerError, from_reply
from .net import Net, daemon

# pyserial's names for the settings lagerd keeps in words.
_PARITY = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}


class UartTimeout(LagerError, TimeoutError):
    """expect() saw no match within its timeout; `.data` holds what came."""

    def __init__(self, message, data):
        super().__init__(message)
        self.data = data


class UartNet(Net):
    """A `uart` net: the serial console of the device under test."""

    def __init__(self, name, type, record, setup_function=None, teardown_function=None):
        super().__init__(name, type, record, setup_function, teardown_function)
        self.params = dict(record.get("params") or {})

    def status(self):
        """lagerd's view of the console: state, path, bytes captured, ..."""
        return daemon().get("/uart/status?netname=%s" % _quote(self.name))

    def get_path(self):
        """The device the console is on now (e.g. /dev/ttyUSB0), else the
        net's address."""
        status = self.status()
        return status.get("device") or status.get("path") or self.address

    def get_baudrate(self):
        return int(self.params.get("baudrate", 115200))

    def get_config(self):
        """The port's settings, with pyserial's names."""
        flow = self.params.get("flow", "none")
        return {
            "port": self.get_path(),
            "baudrate": self.get_baudrate(),
            "bytesize": int(self.params.get("bytesize", 8)),
            "parity": _PARITY.get(self.params.get("parity", "none"), "N"),
            "stopbits": self.params.get("stopbits", 1),
            "xonxoff": flow == "xonxoff",
            "rtscts": flow == "rtscts",
            "dsrdtr": flow == "dsrdtr",
            "line_ending": self.params.get("line_ending", "lf"),
        }

    def connect(self, **overrides):
        """A pyserial-compatible connection through lagerd. `timeout`,
        `write_timeout` and `inter_byte_timeout` may be given; port
        settings may be given only as they are (lagerd owns the port)."""
        config = self.get_config()
        timeout = overrides.pop("timeout", None)
        overrides.pop("write_timeout", None)
        overrides.pop("inter_byte_timeout", None)
        overrides.pop("port", None)
        for key, value in overrides.items():
            if key not in config:
                raise TypeError("connect() got an unexpected keyword argument %r" % key)
            if value != config[key]:
                raise LagerError(
                    "console %s runs at %s=%r, set on the box (lager nets add ... --%s); "
                    "a script cannot change it for everyone else watching"
                    % (self.name, key, config[key], key))
        return UartConnection(self.name, config, timeout)

    def mark(self):
        """The offset of the next byte the device will print: pass it to
        since() to get exactly what came after."""
        return int(self.status().get("end", 0))

    def since(self, offset):
        """Every byte the device printed from `offset` up to now. Raises
        LagerError when the box no longer holds the oldest of them."""
        stream = _Stream(self.name, "from=%d" % int(offset))
        try:
            end = int(stream.hello.get("end", 0))
            data = bytearray()
            while True:
                if stream.missed:
                    raise LagerError(
                        "console %s: the %d bytes from offset %d are older than what the box "
                        "keeps (lagerd --uart-ring)" % (self.name, stream.missed, offset))
                data += stream.take(len(stream.buffer))
                if stream.offset >= end:
                    return bytes(data[: max(0, end - int(offset))])
                if not stream.fill(time.monotonic() + 10):
                    raise LagerError("console %s: the box sent nothing for 10 s" % self.name)
        finally:
            stream.close()

    def __str__(self):
        return "uart net '%s' (%s at %s, %s baud)" % (
            self.name, self.instrument, self.address, self.get_baudrate())


class UartConnection:
    """Reads and writes a console like a pyserial `Serial`."""

    def __init__(self, net, config, timeout=None):
        self.name = self.port = config["port"]
        self.baudrate = config["baudrate"]
        self.net = net
        self.timeout = timeout
        self._ending = {"crlf": b"\r\n", "cr": b"\r"}.get(config.get("line_ending"), b"\n")
        self._stream = _Stream(net, "")
        self._writer = None

    # pyserial's attributes and context manager.

    @property
    def is_open(self):
        return self._stream is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stops reading and lets go of the writer claim, if held."""
        for part in (self._stream, self._writer):
            if part is not None:
                part.close()
        self._stream = self._writer = None

    @property
    def offset(self):
        """The console offset of the next byte read() returns."""
        stream = self._open()
        return stream.offset - len(stream.buffer)

    @property
    def in_waiting(self):
        """Bytes that can be read now without waiting."""
        stream = self._open()
        stream.drain()
        return len(stream.buffer)

    def reset_input_buffer(self):
        """Drops what was received but not read yet."""
        stream = self._open()
        stream.drain()
        stream.take(len(stream.buffer))

    def reset_output_buffer(self):
        pass

    def flush(self):
        """Writes are sent before write() returns; nothing to wait for."""

    # Reading.

    def _deadline(self, timeout):
        return None if timeout is None else time.monotonic() + timeout

    def read(self, size=1):
        """Up to `size` bytes: fewer only when the timeout passes first."""
        stream = self._open()
        deadline = self._deadline(self.timeout)
        while len(stream.buffer) < size:
            if not stream.fill(deadline, block=self.timeout != 0):
                break
        return stream.take(size)

    def read_until(self, expected=b"\n", size=None):
        """Bytes up to and including `expected`, or fewer at the timeout or
        at `size`."""
        stream = self._open()
        deadline = self._deadline(self.timeout)
        while True:
            at = stream.buffer.find(expected)
            if at >= 0 and (size is None or at + len(expected) <= size):
                return stream.take(at + len(expected))
            if size is not None and len(stream.buffer) >= size:
                return stream.take(size)
            if not stream.fill(deadline, block=self.timeout != 0):
                return stream.take(len(stream.buffer) if size is None else size)

    def readline(self, size=-1):
        return self.read_until(b"\n", None if size is None or size < 0 else size)

    def readlines(self, hint=-1):
        """Lines until the timeout (which must be set, as in pyserial)."""
        if self.timeout is None:
            raise LagerError("readlines() needs a timeout, or it would never end")
        lines = []
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)

    def expect(self, pattern, timeout=None):
        """Reads until `pattern` (bytes, str or a compiled regex) matches;
        consumes through the match and returns the `re.Match` (its `.string`
        is everything read meanwhile). UartTimeout after `timeout` seconds
        (default: the connection's timeout; None waits forever)."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        if isinstance(pattern, (bytes, bytearray)):
            pattern = re.compile(re.escape(bytes(pattern)))
        stream = self._open()
        deadline = self._deadline(self.timeout if timeout is None else timeout)
        while True:
            found = pattern.search(stream.buffer)
            if found is not None:
                data = stream.take(found.end())
                return pattern.search(data)
            if not stream.fill(deadline):
                data = bytes(stream.buffer)
                raise UartTimeout("console %s: no %r within %ss; received %r"
                                  % (self.net, pattern.pattern, timeout or self.timeout,
                                     data[-200:]), data)

    # Writing.

    def write(self, data):
        """Sends bytes to the device; the first write claims the console's
        one writer (LagerError naming who types on it when taken)."""
        if isinstance(data, str):
            raise TypeError("unicode strings are not supported, please encode to bytes: %r" % data)
        data = bytes(data)
        if self._writer is None:
            self._open()
            self._writer = _Writer(self.net)
        self._writer.send(data)
        return len(data)

    def writeline(self, text):
        """`text` and the net's line ending (what Enter sends in lager uart -i)."""
        return self.write(text.encode() + self._ending if isinstance(text, str) else bytes(text) + self._ending)

    def _open(self):
        if self._stream is None:
            raise LagerError("console %s: this connection is closed" % self.net)
        return self._stream


def _quote(text):
    safe = b"-._~ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(chr(b) if b in safe else "%%%02X" % b for b in str(text).encode())


def _connect():
    box = daemon()
    sock = socket.create_connection((box.host, box.port), 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return box, sock


def _head(box, method, path, length=0):
    head = "%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n" % (
        method, path, box.host, box.port, length)
    if box.token:
        head += "Authorization: Bearer %s\r\n" % box.token
    return (head + "\r\n").encode()


def _reply_head(file):
    """(status, headers) of a response being read from `file`."""
    lines = [file.readline(65537)]
    while lines[-1] not in (b"\r\n", b"\n", b""):
        lines.append(file.readline(65537))
    return _parse_head(lines)


def _parse_head(lines):
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise LagerError("lagerd answered with %r, not HTTP" % lines[0][:100])
    headers = {}
    for header in lines[1:]:
        name, _, value = header.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _error(status, body):
    """The exception for a refusal whose JSON body is `body` (bytes)."""
    import json

    try:
        reply = json.loads(body.decode() or "null")
    except ValueError:
        reply = None
    return from_reply(status, reply)


class _Stream:
    """One `/uart/stream` connection: chunked HTTP, then console frames
    (`d|e offset time_us length`, then the bytes)."""

    def __init__(self, net, query, method="GET"):
        self.net = net
        self.box, self.sock = _connect()
        path = "/uart/stream?netname=%s%s" % (_quote(net), "&" + query if query else "")
        self.sock.sendall(_head(self.box, method, path))
        # The head is read off the socket itself, not through a buffered
        # file: a buffer would keep the first frames that came with it.
        self.sock.settimeout(10)
        head = bytearray()
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(65536)
            if not data:
                self.close()
                raise LagerError("console %s: lagerd closed the stream before answering" % net)
            head += data
        end = head.index(b"\r\n\r\n") + 4
        status, headers = _parse_head(bytes(head[:end]).split(b"\r\n"))
        if status != 200:
            rest = bytes(head[end:])
            length = int(headers.get(b"content-length", b"0") or 0)
            while len(rest) < length:
                data = self.sock.recv(65536)
                if not data:
                    break
                rest += data
            self.close()
            raise _error(status, rest[:length])
        self.sock.settimeout(None)
        self.raw = bytearray(head[end:])
        self.chunk_left = 0
        self.frames = bytearray()
        self.buffer = bytearray()
        self.offset = 0
        self.missed = 0
        self.closed = False
        self.events = []
        self.hello = {}
        self._unchunk(b"")
        while not self.hello:
            if not self.fill(time.monotonic() + 10):
                self.close()
                raise LagerError("console %s: lagerd sent no status frame" % net)

    def take(self, size):
        size = min(size, len(self.buffer))
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def fill(self, deadline, block=True):
        """Reads what arrives until at least one frame was added or the
        deadline passes (None: wait forever; block=False: only what is
        there). True if something was added."""
        while True:
            if self._frames():
                return True
            if self.closed:
                raise LagerError("console %s: the box stopped serving it "
                                 "(lagerd stopping, or the net was deleted)" % self.net)
            if not block:
                self.sock.setblocking(False)
            elif deadline is None:
                self.sock.settimeout(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, socket.timeout):
                return False
            finally:
                self.sock.settimeout(None)
            if not data:
                raise LagerError("console %s: lagerd closed the stream" % self.net)
            self._unchunk(data)

    def drain(self):
        """Takes in everything that has arrived, without waiting."""
        while self.fill(None, block=False):
            pass

    def _unchunk(self, data):
        self.raw += data
        while self.raw:
            if self.chunk_left == 0:
                end = self.raw.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(self.raw[:end]).split(b";")[0].strip()
                del self.raw[: end + 2]
                if not line:
                    continue
                self.chunk_left = int(line, 16)
                if self.chunk_left == 0:
                    self.closed = True
                    return
            take = min(self.chunk_left, len(self.raw))
            self.frames += self.raw[:take]
            del self.raw[:take]
            self.chunk_left -= take

    def _frames(self):
        """Moves whole frames out of `frames`; True if any data or event."""
        import json

        added = False
        while True:
            end = self.frames.find(b"\n", 0, 80)
            if end < 0:
                return added
            kind, offset, _time_us, length = bytes(self.frames[:end]).split(b" ")
            length = int(length)
            if len(self.frames) < end + 1 + length:
                return added
            payload = bytes(self.frames[end + 1: end + 1 + length])
            del self.frames[: end + 1 + length]
            added = True
            if kind == b"d":
                self.buffer += payload
                self.offset = int(offset) + length
                continue
            event = json.loads(payload.decode())
            name = event.get("event")
            if name == "status":
                self.hello = event
                self.offset = int(event.get("from", 0))
            elif name == "gap":
                self.missed += int(event.get("missed", 0))
                self.offset = int(offset)
            elif name == "closed":
                self.closed = True
            if name != "alive":
                self.events.append(event)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class _Writer:
    """The console's writer claim (a POST stream that only carries events,
    held open as long as the claim) and the connection writes go on."""

    def __init__(self, net):
        self.net = net
        self.claim = _Stream(net, "data=0", method="POST")
        self.session = self.claim.hello.get("session")
        self.box, self.sock = _connect()
        self.file = self.sock.makefile("rb")

    def send(self, data):
        path = "/uart/write?netname=%s&session=%s" % (_quote(self.net), self.session)
        message = _head(self.box, "POST", path, len(data)) + data
        # lagerd closes a kept connection that idled for minutes; a write
        # that got no answer at all was not acted on, so it goes once more.
        for attempt in (0, 1):
            try:
                self.sock.sendall(message)
                status, headers = _reply_head(self.file)
                break
            except (OSError, LagerError):
                if attempt:
                    raise
                self.close_connection()
                self.box, self.sock = _connect()
                self.file = self.sock.makefile("rb")
        if status == 200:
            self.file.read(int(headers.get(b"content-length", b"0") or 0))
            return
        raise _error(status, self.file.read(int(headers.get(b"content-length", b"0") or 0)))

    def close_connection(self):
        for part in (self.file, self.sock):
            try:
                part.close()
            except OSError:
                pass

    def close(self):
        # Let go of the claim now; lagerd would notice the closed stream
        # only at its next write to it.
        try:
            path = "/uart/release?netname=%s&session=%s" % (_quote(self.net), self.session)
            self.sock.sendall(_head(self.box, "POST", path))
            _reply_head(self.file)
        except (OSError, LagerError):
            pass
        self.close_connection()
        self.claim.close()

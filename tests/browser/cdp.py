#!/usr/bin/env python3
"""Drives headless Chromium (Debian's `chromium`) over the DevTools
protocol, with nothing but the Python standard library: a websocket client
of ~80 lines beats installing a browser-automation stack that would try to
download a browser of its own.

Two modes:

  cdp.py check URL --shots DIR
      The status-page test's browser, steered over stdin/stdout, one JSON
      object per line. It loads URL at phone size, prints what the page
      shows ({"phase": "loaded", ...}), waits for a line
      {"expect": "<text>"} on stdin, then watches (without reloading) until
      the live reading contains that text and prints {"phase": "live"},
      takes phone and desktop screenshots into DIR, loads the page again
      with JavaScript disabled ({"phase": "nojs"}), and finally prints
      every URL the browser asked for ({"phase": "requests"}).

  cdp.py bench URL --runs N
      Loads URL N times in fresh tabs and prints METRIC lines: the bytes
      the page transferred and its first contentful paint.

Chromium runs as root here, so it needs --no-sandbox; the other switches
keep it from reaching for the network at start-up.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-port=0", "--remote-allow-origins=*",
]
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
DESKTOP = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("cdp.py: no chromium on PATH; install Debian's chromium package")


class WebSocket:
    """A client websocket: text frames out (masked), frames in."""

    def __init__(self, url):
        assert url.startswith("ws://")
        host_port, path = url[5:].split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake cut")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket refused: {head!r}")

    def send(self, text):
        data = text.encode()
        header = bytearray([0x81])
        if len(data) < 126:
            header.append(0x80 | len(data))
        elif len(data) < 65536:
            header.append(0x80 | 126)
            header += struct.pack(">H", len(data))
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", len(data))
        mask = os.urandom(4)
        header += mask
        self.sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return bytes(buf)

    def recv(self):
        message = bytearray()
        while True:
            first, second = self._exact(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(length)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0x9, 0xA):
                continue
            message += payload
            if first & 0x80:
                return message.decode()


class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="lager-cdp-")
        self.proc = subprocess.Popen(
            [find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                sys.exit("cdp.py: chromium did not open its DevTools port")
            time.sleep(0.05)
        self.port = int(open(port_file).read().split()[0])
        self.ws = None
        self.next_id = 0
        self.events = []

    def open_tab(self):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank",
                                         method="PUT")
        target = json.load(urllib.request.urlopen(request, timeout=10))
        self.ws = WebSocket(target["webSocketDebuggerUrl"])
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.ws.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except socket.timeout:
                break
            finally:
                self.ws.sock.settimeout(30)
        raise TimeoutError(f"no {method} within {timeout}s")

    def pump(self, seconds):
        """Collects events for a while (network requests happen meanwhile)."""
        end = time.time() + seconds
        while time.time() < end:
            self.ws.sock.settimeout(max(0.01, end - time.time()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except socket.timeout:
                pass
        self.ws.sock.settimeout(30)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result.get("result", {}).get("value")

    def load(self, url, metrics, scripts=True):
        self.call("Emulation.setDeviceMetricsOverride", **metrics)
        self.call("Emulation.setScriptExecutionDisabled", value=not scripts)
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def requested_urls(self):
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


# What the test reads from the page, the same way with and without JS.
READ_PAGE = """(() => {
  const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent.trim() : null; };
  return {
    title: document.title,
    box: text('#box-name'),
    holder: text('#holder'),
    queue: Array.from(document.querySelectorAll('#queue li')).map(li => li.textContent.trim()),
    nets: Array.from(document.querySelectorAll('tr.net')).map(tr => tr.getAttribute('data-net')),
    readings: Object.fromEntries(Array.from(document.querySelectorAll('[data-reading]'))
                .map(e => [e.getAttribute('data-reading'), e.textContent.trim()])),
    jobs: Array.from(document.querySelectorAll('[data-job]')).map(e => e.textContent),
    consoles: Array.from(document.querySelectorAll('[data-console]')).map(e => e.textContent),
    width: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
  };
})()"""


def say(obj):
    print(json.dumps(obj), flush=True)


def check(args):
    browser = Browser()
    seen = []
    try:
        browser.open_tab()
        for domain in ("Page", "Network", "Runtime"):
            browser.call(f"{domain}.enable")
        browser.load(args.url, PHONE)
        browser.evaluate("window.__sameDocument = 'yes'")
        # Wait for the first live readings to arrive.
        deadline = time.time() + 15
        page = browser.evaluate(READ_PAGE)
        while time.time() < deadline and any(v == "—" for v in page["readings"].values()):
            browser.pump(0.2)
            page = browser.evaluate(READ_PAGE)
        say({"phase": "loaded", **page})

        expect = json.loads(sys.stdin.readline())["expect"]
        deadline = time.time() + 20
        page = browser.evaluate(READ_PAGE)
        while time.time() < deadline and not any(expect in v for v in page["readings"].values()):
            browser.pump(0.2)
            page = browser.evaluate(READ_PAGE)
        page["same_document"] = browser.evaluate("window.__sameDocument || 'reloaded'")
        say({"phase": "live", **page})

        os.makedirs(args.shots, exist_ok=True)
        shots = []
        for name, metrics in (("phone", PHONE), ("desktop", DESKTOP)):
            browser.call("Emulation.setDeviceMetricsOverride", **metrics)
            browser.pump(0.5)
            shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            path = os.path.join(args.shots, f"status-page-{name}.png")
            with open(path, "wb") as out:
                out.write(base64.b64decode(shot["data"]))
            shots.append(path)
        seen += browser.requested_urls()

        browser.events = []
        browser.load(args.url, PHONE, scripts=False)
        browser.pump(1.5)
        page = browser.evaluate(READ_PAGE)
        page["html"] = browser.call("DOM.getOuterHTML",
                                    nodeId=browser.call("DOM.getDocument")["root"]["nodeId"])["outerHTML"]
        shot = browser.call("Page.captureScreenshot", format="png")
        path = os.path.join(args.shots, "status-page-phone-nojs.png")
        with open(path, "wb") as out:
            out.write(base64.b64decode(shot["data"]))
        shots.append(path)
        say({"phase": "nojs", "shots": shots, **page})
        seen += browser.requested_urls()
        say({"phase": "requests", "urls": seen})
    finally:
        browser.close()


def bench(args):
    browser = Browser()
    paints, sizes = [], []
    try:
        for _ in range(args.runs):
            browser.open_tab()
            browser.call("Page.enable")
            browser.call("Network.enable")
            browser.load(args.url, DESKTOP)
            browser.pump(0.3)
            paint = browser.evaluate(
                "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
            size = sum(e["params"].get("encodedDataLength", 0) for e in browser.events
                       if e.get("method") == "Network.loadingFinished")
            # Only the document counts: the live streams never finish loading.
            doc = browser.evaluate(
                "performance.getEntriesByType('navigation')[0]?.transferSize ?? 0")
            paints.append(paint)
            sizes.append(doc or size)
            browser.call("Page.close")
    finally:
        browser.close()
    paints = sorted(p for p in paints if p is not None)
    if not paints:
        sys.exit("cdp.py: the page never painted")
    median = paints[len(paints) // 2]
    print(f"METRIC page.first_paint_median_ms {median:.1f}")
    print(f"METRIC page.first_paint_max_ms {paints[-1]:.1f}")
    print(f"METRIC page.transfer_bytes {max(sizes)}")
    print(f"page: {len(paints)} loads, first contentful paint median {median:.1f} ms, "
          f"max {paints[-1]:.1f} ms, {max(sizes)} bytes transferred", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    one = sub.add_parser("check")
    one.add_argument("url")
    one.add_argument("--shots", required=True)
    many = sub.add_parser("bench")
    many.add_argument("url")
    many.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    check(args) if args.mode == "check" else bench(args)


if __name__ == "__main__":
    main()

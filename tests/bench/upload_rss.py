#!/usr/bin/env python3
"""Issue 12: lagerd's memory while it receives one large `POST /python`.

    tests/bench/upload_rss.py LAGERD [MIB] [STATE_PARENT]

Starts LAGERD on 127.0.0.1:0 with a fresh state dir under STATE_PARENT
(default: the current directory; the spool lives there, so pick a disk, not
tmpfs), uploads a MIB MiB multipart body (default 60) on loopback, samples
RssAnon (heap) and RssFile (mapped files, page cache the kernel can drop)
every 5 ms, and prints the peaks. A body buffered in memory shows up as
RssAnon; a spooled one as RssFile.
"""
import os, re, shutil, socket, subprocess, sys, tempfile, threading, time

lagerd = sys.argv[1]
size_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 60
state = tempfile.mkdtemp(prefix="upload-rss-", dir=sys.argv[3] if len(sys.argv) > 3 else ".")
p = subprocess.Popen([lagerd, "--listen", "127.0.0.1:0", "--state-dir", state], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
addr = p.stdout.readline().decode().split()[-1]
host, port = addr.rsplit(":", 1)
peak = {"anon": 0, "file": 0}
done = False
def sample():
    while not done:
        text = open(f"/proc/{p.pid}/status").read()
        for key, name in (("RssAnon", "anon"), ("RssFile", "file")):
            kb = int(re.search(key + r":\s+(\d+)", text).group(1))
            peak[name] = max(peak[name], kb)
        time.sleep(0.005)
t = threading.Thread(target=sample); t.start()
boundary = "xyzzy"
payload = os.urandom(1 << 20) * size_mib
body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"module\"; filename=\"m.zip\"\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
s = socket.create_connection((host, int(port)))
s.sendall(f"POST /python HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
start = time.time()
s.sendall(body)
reply = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    reply += chunk
elapsed = time.time() - start
time.sleep(0.2)
done = True; t.join()
p.kill(); p.wait()
shutil.rmtree(state, ignore_errors=True)
print(f"{os.path.basename(lagerd)} {size_mib} MiB upload: status {reply.split(b' ')[1].decode()} in {elapsed:.2f} s; peak RssAnon {peak['anon']/1024:.1f} MiB, peak RssFile {peak['file']/1024:.1f} MiB")

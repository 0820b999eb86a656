"""Benchmark job (scripts/bench-scripts.sh): psu.voltage() through lagerd,
beside the raw SCPI round trip to the same simulated Keithley 2281S, in one
run, interleaved in blocks so machine noise falls on both alike. Prints one
JSON line. Runs on the box as a `lager python` job (lagerd is its parent)."""

import json
import os
import socket
import sys
import time

from lager import Net, NetType

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
BLOCK = 100

psu = Net.get("supply1", type=NetType.PowerSupply)
psu.set_voltage(3.3)
psu.enable()
_, host, port, _ = psu.address.split("::")
raw = socket.create_connection((host, int(port)), 5)
raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reader = raw.makefile("rb")


def query(command):
    raw.sendall(command)
    return reader.readline()


def raw_read():
    # The SCPI a voltage read costs lagerd with the output on (§6.1).
    query(b":OUTP?\n")
    return float(query(b":MEAS:VOLT?\n"))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


lagerd = os.getppid()
for _ in range(300):
    psu.voltage()
    raw_read()
    query(b":MEAS:VOLT?\n")

timer = time.perf_counter_ns
via_lagerd, raw_two, raw_one, rss = [], [], [], [(0, rss_kib(lagerd))]
errors, wrong = 0, 0
while len(via_lagerd) < CALLS:
    for _ in range(BLOCK):
        start = timer()
        try:
            volts = psu.voltage()
        except Exception:  # counted, not raised: the target is 0
            errors += 1
            volts = None
        via_lagerd.append(timer() - start)
        if not isinstance(volts, float) or abs(volts - 3.3) > 0.066:
            wrong += 1
    for _ in range(BLOCK):
        start = timer()
        raw_read()
        raw_two.append(timer() - start)
        start = timer()
        query(b":MEAS:VOLT?\n")
        raw_one.append(timer() - start)
    if len(via_lagerd) % 1000 == 0:
        rss.append((len(via_lagerd), rss_kib(lagerd)))
psu.disable()


def percentiles(samples):
    ordered = sorted(samples)
    pick = lambda p: ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000.0
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "n": len(ordered)}


print(json.dumps({
    "via_lagerd_us": percentiles(via_lagerd),
    "raw_two_queries_us": percentiles(raw_two),
    "raw_one_query_us": percentiles(raw_one),
    "errors": errors,
    "wrong_values": wrong,
    "lagerd_rss_kib": rss,
    "python": sys.version.split()[0],
}))

#!/usr/bin/python3
"""t154 WebSocket backpressure: a client that stops reading while the process writes as fast
as it can (`yes`) must not make the helper buffer without limit. The helper's memory stays
flat, the process is held back by its full pipe (its write count stops growing),
the session still works once the client reads again, and closing it leaves no process."""
import asyncio
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

import websockets  # noqa: E402

HEADERS = {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()}
STALL = 6.0
LINE = "backpressure-" + "x" * 50


def helper_rss_kb():
    # this stack's helper only (another stack may run on the machine)
    pids = stack_pids("cm-ws")
    if len(pids) != 1:
        return None
    with open("/proc/%s/status" % pids[0]) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def yes_written():
    """Bytes the session's `yes` has written so far (host /proc: the process is visible there)."""
    p = subprocess.run(["pgrep", "-f", "yes " + LINE], stdout=subprocess.PIPE)
    pids = p.stdout.decode().split()
    if len(pids) != 1:
        return None
    try:
        with open("/proc/%s/io" % pids[0]) as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def yes_running(cuid):
    rc, out = docker_exec(cuid, ["ps", "-o", "pid,args"])
    return [l for l in out.splitlines() if "yes " in l and "ps -o" not in l]


async def session(t, cuid):
    cmd = json.dumps(["yes", LINE])
    url = URL.replace("http://", "ws://") + "/ws/%s?tty=0&command=%s" % (cuid, urllib_quote(cmd))
    # the client library's own buffers are kept small so that not reading means not reading
    async with websockets.connect(url, extra_headers=HEADERS, max_size=None, max_queue=1, read_limit=2 ** 16,
                                  ping_interval=None) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 15))
        t.eq(first.get("type"), "stdout", "output flows")
        # not reading. The buffers on the way (the helper's queue, the sockets to and from
        # nginx) fill within the first moments; after that nothing more may be taken in.
        # (Measured from 2 s on: a sanitizer build keeps freed memory in quarantine, so the
        # filling itself shows there as growth.)
        rss0 = helper_rss_kb()
        await asyncio.sleep(2)
        rss1, w1 = helper_rss_kb(), yes_written()
        await asyncio.sleep(STALL - 2)
        rss2, w2 = helper_rss_kb(), yes_written()
        t.ok(None not in (rss0, rss1, rss2) and rss2 - rss1 < 4 * 1024,
             "cm-ws memory stays flat while the client does not read (%s kB, %s kB at 2 s, %s kB at %.0f s)"
             % (rss0, rss1, rss2, STALL))
        t.ok(None not in (w1, w2) and w2 - w1 < 4 * 1024 * 1024,
             "the process is held back by its full pipe: yes wrote %s bytes between 2 s and %.0f s" %
             (None if None in (w1, w2) else w2 - w1, STALL), {"wchar at 2 s": w1, "wchar at end": w2})
        # and it goes on once the client reads again
        got = 0
        t0 = time.time()
        while got < 1024 * 1024 and time.time() - t0 < 10:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m.get("type") == "stdout":
                got += len(m.get("data", ""))
        t.ok(got >= 1024 * 1024, "output flows again once the client reads (%d bytes)" % got)
        await ws.send(json.dumps({"type": "close"}))
        codes = []
        try:
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if m.get("type") == "exit":
                    codes.append(m.get("code"))
        except websockets.exceptions.ConnectionClosed:
            pass
        t.eq(codes, [137], "close ends the process (exit 137)")
        t.eq(ws.close_code, 1000, "and the session closes normally")
    t.ok(wait_until(lambda: not yes_running(cuid), timeout=10), "no yes left in the container", yes_running(cuid))


def urllib_quote(s):
    import urllib.parse
    return urllib.parse.quote(s, safe="")


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    t.status(action(s, c, "start"), 200, "start")
    asyncio.run(session(t, c))


if __name__ == "__main__":
    run(main)

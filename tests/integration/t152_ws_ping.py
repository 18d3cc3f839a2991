#!/usr/bin/python3
"""t152 WebSocket keepalive: the helper pings a quiet session (the test stack runs with
WS_PING_INTERVAL=3), keeps it while pongs come back, and hangs up on a peer that stopped
answering, ending its process in the container. Client: aiohttp with autoping off, so the
pings are seen and the pongs are the test's own."""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

import aiohttp  # noqa: E402

INTERVAL = 3
HEADERS = {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()}


def sleepers(cuid, token):
    out = docker_exec(cuid, ["ps", "-o", "pid,args"])
    text = out[1] if isinstance(out, tuple) else str(out)
    return [l for l in text.splitlines() if token in l and "ps -o" not in l]


async def session(t, cuid):
    token = "%d" % (4000 + int(time.time()) % 1000)
    url = URL.replace("http://", "ws://") + "/ws/%s?tty=0&command=%%5B%%22sleep%%22%%2C%%22%s%%22%%5D" % (cuid, token)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, headers=HEADERS, autoping=False, autoclose=False)
        t.ok(wait_until(lambda: sleepers(cuid, token), timeout=10), "the session's process runs")
        # 1. quiet session: a ping arrives within about one interval; answer it, twice
        pings = 0
        t0 = time.time()
        while pings < 2 and time.time() - t0 < 4 * INTERVAL + 5:
            try:
                msg = await asyncio.wait_for(ws.receive(), 4 * INTERVAL)
            except asyncio.TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.PING:
                pings += 1
                await ws.pong(msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        t.eq(pings, 2, "two pings in %.1f s of silence, each answered" % (time.time() - t0))
        t.ok(not ws.closed, "the session is still open while pongs come back")
        t.ok(sleepers(cuid, token), "and its process still runs")
        # 2. stop answering: the server hangs up within about two intervals
        t1 = time.time()
        closed = False
        while time.time() - t1 < 4 * INTERVAL + 10:
            try:
                msg = await asyncio.wait_for(ws.receive(), 4 * INTERVAL + 10)
            except asyncio.TimeoutError:
                break
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                closed = True
                break
        waited = time.time() - t1
        t.ok(closed and waited <= 3 * INTERVAL + 3, "a peer that stops answering pings is dropped (%.1f s)" % waited)
        if not ws.closed:
            await ws.close()
    t.ok(wait_until(lambda: not sleepers(cuid, token), timeout=10), "and the process it left is gone from the container")


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    t.status(action(s, c, "start"), 200, "start")
    asyncio.run(session(t, c))


if __name__ == "__main__":
    run(main)

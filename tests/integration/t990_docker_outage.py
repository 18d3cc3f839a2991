#!/usr/bin/python3
"""t990 dockerd outage (runs last): with dockerd stopped, /healthz answers 503 with the reason,
reads keep working, changes fail fast with 503 and a request id and change nothing; after
dockerd is back, health returns, the event follower resumes, and changes made to a container
outside the service during and after the outage are reflected."""
import asyncio
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403


def dockerd_up():
    try:
        return docker_request("GET", "/_ping", timeout=3)[0] == 200
    except Exception:
        return False


WS_HEADERS = {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()}


async def ws_frames(path, send=(), until=("exit",), timeout=20):
    """Opens a WebSocket session, sends frames, collects frames until one of `until` types or
    the close; returns (frames, close code)."""
    import websockets
    frames = []
    url = URL.replace("http://", "ws://") + path
    async with websockets.connect(url, extra_headers=WS_HEADERS) as ws:
        for f in send:
            await ws.send(json.dumps(f))
        try:
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                frames.append(m)
        except websockets.exceptions.ConnectionClosed:
            pass
        return frames, ws.close_code


def ws_pid():
    # this stack's helper only (another stack may run on the machine)
    pids = stack_pids("cm-ws")
    return pids[0] if len(pids) == 1 else None


async def ws_open(path):
    import websockets
    return await websockets.connect(URL.replace("http://", "ws://") + path, extra_headers=WS_HEADERS)


async def ws_drain(ws, timeout):
    """Frames until the close (or timeout); returns (frames, close code or None)."""
    import websockets
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except websockets.exceptions.ConnectionClosed:
        return frames, ws.close_code
    except asyncio.TimeoutError:
        return frames, None


def docker_errors(s, kind="unreachable"):
    """cm_docker_api_errors_total{kind=...} from GET /metrics, or None."""
    r = s.get("/metrics")
    m = re.search(r'^cm_docker_api_errors_total\{kind="%s"\} (\d+)$' % kind, r.text, re.M) if r.status_code == 200 else None
    return int(m.group(1)) if m else None


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    errs_before = docker_errors(s)
    t.ok(errs_before is not None, "GET /metrics counts Docker API failures (%s unreachable so far)" % errs_before)
    t.status(action(s, c, "start"), 200, "start before the outage")
    n_before = db_container_count()
    helper = ws_pid()
    t.ok(helper is not None, "one cm-ws process before the outage")
    loop = asyncio.new_event_loop()
    live = loop.run_until_complete(ws_open("/ws/%s?tty=0&command=%%5B%%22sleep%%22%%2C%%221000%%22%%5D" % c))
    p = subprocess.run(["pkill", "-x", "dockerd"])
    t.ok(p.returncode == 0, "dockerd stopped")
    t.add_cleanup(lambda: subprocess.call([os.path.join(REPO, "scripts", "ensure-docker")]))
    t.ok(wait_until(lambda: not dockerd_up(), timeout=30), "dockerd no longer answers")

    def health_503():
        r = s.get("/healthz")
        return r if r.status_code == 503 else None
    r = wait_until(health_503, timeout=15)
    body = jbody(r) if r is not None else {}
    t.ok(r is not None and body.get("docker") == "down" and "Docker" in (body.get("message") or ""),
         "/healthz answers 503 naming Docker during the outage", body)
    r = s.get("/containers/%s" % c)
    t.status(r, 200, "reads keep working during the outage")
    t0 = time.time()
    r = s.post("/containers", json={"image": IMAGE, "command": SLEEP_CMD})
    b = check_error(t, r, 503, code="DOCKER_UNAVAILABLE", name="create during the outage")
    t.ok(time.time() - t0 < 10, "it fails fast (%.1f s)" % (time.time() - t0))
    t.ok(b is not None and b.get("request_id"), "with a request id")
    t.eq(db_container_count(), n_before, "the failed create left no row")
    check_error(t, action(s, c, "stop"), 503, code="DOCKER_UNAVAILABLE", name="stop during the outage")
    errs = docker_errors(s)
    t.ok(errs is not None and errs_before is not None and errs > errs_before,
         "the metrics' unreachable Docker API calls went up during the outage (%s -> %s)" % (errs_before, errs))
    # an open terminal ends (dockerd took its process with it) with a frame saying why, and
    # a new one is refused with an error frame; the helper itself stays up
    frames, code = loop.run_until_complete(ws_drain(live, 30))
    t.ok(code is not None, "the open terminal session is closed during the outage (code %s)" % code, frames)
    t.ok(any(f.get("type") in ("error", "exit") for f in frames), "with an exit or error frame first", frames)
    try:
        frames, code = loop.run_until_complete(ws_frames("/ws/%s?tty=0&command=true" % c))
        t.ok(code != 1000 and any(f.get("type") == "error" for f in frames),
             "a new terminal during the outage gets an error frame", (code, frames))
    except Exception as e:  # refused before the upgrade (the row may already say exited)
        t.ok(getattr(e, "status_code", 0) in (422, 503), "a new terminal during the outage is refused", repr(e))
    t.eq(ws_pid(), helper, "cm-ws survived the outage (same process)")

    p = subprocess.run([os.path.join(REPO, "scripts", "ensure-docker")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t.ok(p.returncode == 0, "dockerd is back", p.stdout.decode())
    ok = wait_until(lambda: s.get("/healthz").status_code == 200, timeout=30)
    t.ok(ok, "/healthz is 200 again")
    # dockerd's restart stopped the container; the follower's reconcile must say so
    t.ok(wait_until(lambda: (jbody(s.get("/containers/%s/status" % c)) or {}).get("running") is False, timeout=20),
         "the container's stop by the dockerd restart is reflected")
    subprocess.run(["docker", "start", c], stdout=subprocess.DEVNULL)
    t.ok(wait_until(lambda: (jbody(s.get("/containers/%s/status" % c)) or {}).get("running") is True, timeout=20),
         "a `docker start` after the outage is followed from the event stream")
    frames, code = loop.run_until_complete(ws_frames("/ws/%s?tty=0&command=echo%%20back" % c))
    t.ok(code == 1000 and {"type": "stdout", "data": "back\n", "encoding": "utf8"} in frames
         and frames[-1] == {"type": "exit", "code": 0}, "terminals work again after the outage", (code, frames))
    t.eq(ws_pid(), helper, "still the same cm-ws process")
    loop.close()
    t.status(action(s, c, "stop", json={"timeout": 1}), 200, "changes work again")
    st = docker_state(c)
    t.ok(st is not None and not st.get("Running"), "and reach Docker", st)


if __name__ == "__main__":
    run(main)

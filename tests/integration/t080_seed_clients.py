#!/usr/bin/python3
"""t080 seed clients: the client code of seed 004 (Python requests + aiohttp, Node axios, Go,
Ruby), run as written (tests/clients/), and each effect checked in Docker."""
import asyncio
import contextlib
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

sys.path.insert(0, CLIENTS_DIR)
import seed_python as seed  # noqa: E402

HEADERS = {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()}
CLIENT_ENV = dict(os.environ, CM_URL=URL, CM_USER=USER, CM_PASS=PASS)


def seed_variant(fn, replacements):
    """The seed function with literal replacements in its source (only used when a fixed host
    port of the seed is busy on this machine)."""
    src = inspect.getsource(fn)
    for a, b in replacements:
        src = src.replace(a, b)
    ns = dict(vars(seed))
    exec(compile(src, "<seed %s>" % fn.__name__, "exec"), ns)
    return ns[fn.__name__]


def quiet(fn, *a, **kw):
    """Call fn capturing what the seed code prints; returns (result, printed text)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        res = fn(*a, **kw)
    return res, buf.getvalue()


def run_client(t, argv, label, timeout=120):
    try:
        p = subprocess.run(argv, cwd=CLIENTS_DIR, env=CLIENT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except FileNotFoundError as e:
        t.ok(False, "%s: interpreter present" % label, str(e))
        return None, "", None
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    result = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    return p.returncode, out + err, result


def tool(t, name, label):
    if shutil.which(name):
        return True
    t.ok(False, "%s: `%s` is installed (CI must install it)" % (label, name))
    return False


def main(t):
    s = api()

    def track(cuid):
        if cuid:
            t.add_cleanup(lambda c=cuid: destroy(s, c))

    # ------------------------------------------------------------ HealthMonitor (request shape)
    mon = seed.HealthMonitor(URL, HEADERS, check_interval=0.2)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        mon.start()
        wait_until(lambda: "API " in buf.getvalue() or "failed" in buf.getvalue(), timeout=5)
        mon.stop()
    lines = [x for x in buf.getvalue().splitlines() if x]
    t.ok(lines and lines[0].startswith("API healthy: Compose ") and len(lines[0]) > len("API healthy: Compose "),
         "seed HealthMonitor: 'API healthy: Compose <version>'", {"printed": lines[:3]})

    # ------------------------------------------------------------ create_container (requests)
    create = seed.create_container
    if not port_free(8080):
        t.diag("127.0.0.1:8080 is busy on this machine: the seed's create_container runs with another host port")
        create = seed_variant(seed.create_container, [('"host": 8080', '"host": %d' % free_port())])
    cuid, printed = quiet(create, URL, HEADERS)
    track(cuid)
    t.ok(cuid and printed.startswith("Created container: %s" % cuid), "seed create_container returns the cuid",
         {"printed": printed})
    info = docker_inspect(cuid) if cuid else None
    if t.ok(info is not None, "seed create_container: Docker container exists"):
        env, raw = docker_env(info)
        hc = info["HostConfig"]
        t.ok(env.get("APP_ENV") == "production" and env.get("DEBUG") == "false" and env.get("TAGS") == "web,production"
             and env.get("CONTAINER_UID") == cuid, "seed create_container: env in Docker", {"Env": raw})
        t.ok(hc.get("Memory") == 4096 * 1024 * 1024 and hc.get("PidsLimit") == 2048 and hc.get("NanoCpus") == 10 ** 9,
             "seed create_container: cpus 1.0 / memory 4096m / pids 2048 in Docker",
             {"Memory": hc.get("Memory"), "PidsLimit": hc.get("PidsLimit"), "NanoCpus": hc.get("NanoCpus")})
        pb = (hc.get("PortBindings") or {}).get("80/tcp") or [{}]
        t.ok(pb[0].get("HostIp") == "127.0.0.1" and pb[0].get("HostPort"), "seed create_container: 80/tcp on 127.0.0.1",
             {"PortBindings": hc.get("PortBindings")})

    # ------------------------------------------------------------ update_ports (requests)
    if cuid:
        up = seed.update_ports
        if not (port_free(3000, "tcp") and port_free(9000, "udp")):
            pa, pb_ = free_port(), free_port()
            t.diag("3000/tcp or 9000/udp busy here: update_ports runs with %d/%d" % (pa, pb_))
            up = seed_variant(seed.update_ports, [('"host": 3000', '"host": %d' % pa), ('"host": 9000', '"host": %d' % pb_)])
            want = {"3000/tcp": [("127.0.0.1", str(pa))], "9000/udp": [("127.0.0.1", str(pb_))]}
        else:
            want = {"3000/tcp": [("127.0.0.1", "3000")], "9000/udp": [("127.0.0.1", "9000")]}
        res, _ = quiet(up, URL, cuid, HEADERS)
        t.ok(res is True, "seed update_ports returns True")
        info = docker_inspect(cuid) or {}
        got = {k: [(b.get("HostIp"), b.get("HostPort")) for b in v or []]
               for k, v in ((info.get("HostConfig") or {}).get("PortBindings") or {}).items()}
        t.eq(got, want, "seed update_ports: Docker PortBindings 3000/tcp + 9000/udp on 127.0.0.1")

    # ------------------------------------------------------------ get_container_status (safe_api_call)
    if cuid:
        st, printed = quiet(seed.get_container_status, URL, cuid, HEADERS)
        t.ok(isinstance(st, dict) and st.get("cuid") == cuid and st.get("status") == "created"
             and st.get("running") is False, "seed get_container_status (safe_api_call) returns the status", st)
        st, printed = quiet(seed.get_container_status, URL, sibling_cuid(cuid), HEADERS)
        t.ok(st is None and printed.startswith("API Error: ") and "(ID: " in printed,
             "seed safe_api_call on a 404 prints message and request_id", {"printed": printed})

    # ------------------------------------------------------------ APIClient (Session)
    with seed.APIClient(URL, USER, PASS) as client:
        r = client.create_container({"image": IMAGE, "command": ["sleep", "3600"]})
    c = jbody(r) or {}
    track(c.get("cuid"))
    t.ok(r.status_code == 201 and docker_inspect(c.get("cuid", "-")) is not None,
         "seed APIClient.create_container: 201 and a Docker container", {"status": r.status_code})

    # ------------------------------------------------------------ aiohttp batch_create
    async def batch():
        configs = [{"image": IMAGE, "command": ["sleep", "3600"], "tags": ["batch", "n%d" % i]} for i in range(3)]
        async with seed.AsyncAPIClient(URL, USER, PASS) as client:
            return await client.batch_create(configs)

    t0 = time.monotonic()
    try:
        made = asyncio.run(batch())
    except Exception as e:
        made = []
        t.ok(False, "seed AsyncAPIClient.batch_create ran", repr(e))
    took = time.monotonic() - t0
    t.ok(took < 10, "seed batch_create: 3 concurrent creates answered within 10 s (%.1f s)" % took)
    cuids = [m.get("cuid") for m in made if isinstance(m, dict)]
    for x in cuids:
        track(x)
    t.ok(len(cuids) == 3 and len(set(cuids)) == 3 and all(cuids), "seed batch_create: 3 distinct containers", made)
    infos = [docker_inspect(x) for x in cuids if x]
    t.ok(len(infos) == 3 and all(i is not None for i in infos)
         and sorted(docker_env(i)[0].get("TAGS") for i in infos) == ["batch,n0", "batch,n1", "batch,n2"],
         "seed batch_create: each one exists in Docker with its tags")

    # ------------------------------------------------------------ Node axios listContainers
    if tool(t, "node", "node client") and os.path.isdir(os.path.join(CLIENTS_DIR, "node_modules", "axios")):
        # one running, one paused
        if len(cuids) == 3:
            t.status(action(s, cuids[0], "start"), 200, "start one for the node client")
            t.status(action(s, cuids[1], "start"), 200, "start another")
            t.status(action(s, cuids[1], "pause"), 200, "pause it")
        rc, out, res = run_client(t, ["node", "list_containers.js", "running,paused"], "node listContainers")
        t.ok(rc == 0 and res and res.get("ok"), "node listContainers(['running','paused']) ran", {"output": out[-2000:]})
        got = {x["cuid"]: x["status"] for x in (res or {}).get("containers") or []}
        api_l = s.get("/containers", params={"status": "running,paused", "limit": 500}).json()["containers"]
        t.eq(got, {x["cuid"]: x["status"] for x in api_l}, "node: same running/paused containers as the API")
        t.ok(got.get(cuids[0]) == "running" and got.get(cuids[1]) == "paused", "node: sees our running and paused ones",
             got)
        found = [int(x.split()[1]) for x in out.splitlines() if x.startswith("Found ")]
        t.eq(sum(found), len(api_l), "node: 'Found N containers' lines add up")
        # a cursor from the API travels through axios' params encoding
        p1 = s.get("/containers", params={"limit": 1}).json()
        if p1.get("next_cursor"):
            rc, out, res = run_client(t, ["node", "list_containers.js", "-", p1["next_cursor"]], "node cursor")
            want = s.get("/containers", params={"cursor": p1["next_cursor"]}).json()["containers"]
            t.ok(rc == 0 and res and [x["cuid"] for x in res.get("containers") or []] == [x["cuid"] for x in want],
                 "node: listContainers with a cursor returns the next page", {"output": out[-2000:]})
        else:
            t.ok(False, "there are several containers, so limit=1 gives a next_cursor", p1)
    elif shutil.which("node"):
        t.ok(False, "node client: tests/clients/node_modules/axios installed (npm install in tests/clients)")

    # ------------------------------------------------------------ Go updateContainer
    if tool(t, "go", "go client"):
        g = must_create(s, t, "create a container for the Go client",
                        env={"OLD_VAR": "old", "KEEP": "1"}, tags=["a"], resources={"memory": "256m", "pids": 50})
        t.status(action(s, g["cuid"], "start"), 200, "start it")
        genv = dict(CLIENT_ENV)
        if not os.environ.get("HOME"):
            genv["GOCACHE"] = os.environ.get("GOCACHE", "/tmp/cm-it-gocache")
        try:
            p = subprocess.run(["go", "run", "update_container.go", "update_container_main.go", g["cuid"]],
                               cwd=CLIENTS_DIR, env=genv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
            out = p.stdout.decode("utf-8", "replace")
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc, out = -1, "timeout"
        t.ok(rc == 0 and out.strip().endswith("OK"), "go updateContainer returned nil", {"rc": rc, "output": out[-2000:]})
        info = docker_inspect(g["cuid"]) or {}
        env, raw = docker_env(info) if info else ({}, [])
        t.ok(env.get("NEW_VAR") == "value" and "OLD_VAR" not in env and env.get("KEEP") == "1",
             "go: Docker env NEW_VAR=value, OLD_VAR removed, KEEP kept", {"Env": raw})
        t.eq(env.get("TAGS"), "updated,v2", "go: TAGS=updated,v2")
        hc = info.get("HostConfig") or {}
        t.ok(hc.get("Memory") == 8192 * 1024 * 1024 and hc.get("PidsLimit") == 50,
             "go: Memory 8192m, pids kept", {"Memory": hc.get("Memory"), "PidsLimit": hc.get("PidsLimit")})
        t.ok((info.get("State") or {}).get("Running") is True, "go: container still running")

    # ------------------------------------------------------------ Ruby ContainerManager
    if tool(t, "ruby", "ruby client"):
        rb = must_create(s, t, "create a container for the Ruby client")["cuid"]

        def ruby(act):
            rc, out, res = run_client(t, ["ruby", "control_action_main.rb", act, rb], "ruby " + act)
            ok_ = rc == 0 and res and res.get("ok") and isinstance(res.get("result"), dict) \
                and res["result"].get("cuid") == rb
            t.ok(ok_, "ruby %s: parsed JSON {cuid, status}" % act, {"rc": rc, "output": out[-1500:]})
            return (res or {}).get("result") or {}

        r1 = ruby("start")
        stt = docker_state(rb) or {}
        t.ok(r1.get("status") == "running" and stt.get("Running") is True, "ruby start: Docker running", stt)
        started = stt.get("StartedAt")
        ruby("pause")
        t.ok((docker_state(rb) or {}).get("Paused") is True, "ruby pause: Docker paused")
        ruby("unpause")
        stt = docker_state(rb) or {}
        t.ok(stt.get("Running") is True and stt.get("Paused") is False, "ruby unpause: Docker running")
        time.sleep(0.05)
        ruby("restart")
        stt = docker_state(rb) or {}
        t.ok(stt.get("Running") is True and stt.get("StartedAt") != started, "ruby restart: new StartedAt", stt)
        r5 = ruby("stop")
        stt = docker_state(rb) or {}
        t.ok(stt.get("Running") is False and r5.get("status") in ("exited", "stopped"), "ruby stop: Docker stopped",
             {"answer": r5, "State": stt})
        rc, out, res = run_client(t, ["ruby", "control_action_main.rb", "pause", rb], "ruby pause stopped")
        body = (res or {}).get("result") or {}
        t.ok(body.get("error") == "state_error" and body.get("status") == 422,
             "ruby pause on a stopped container: the seed parses the 422 error JSON", {"output": out[-1500:]})


if __name__ == "__main__":
    run(main)

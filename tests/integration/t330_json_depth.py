#!/usr/bin/python3
"""t330 deep JSON (issue 15, item 6): nesting is limited to 64 before any tree is built.

Before the limit, ~150,000 nested arrays overflowed the stack in has_dup_keys/yajl_tree_free:
a 1 MiB POST /containers killed a worker and a 300 KB WebSocket frame killed cm-ws with every
terminal of every user.  Checked here through nginx:
  - POST /containers with a 1 MiB deeply nested body: 400 JSON_TOO_DEEP (details.limit 64), the
    worker pool's pids unchanged, nothing created (SQLite, Docker);
  - depth exactly 64 passes the parser (refused later by the validator with its own code, the
    document not being a valid spec), depth 65 is JSON_TOO_DEEP; PATCH likewise;
  - harpoon's POST /start_container: 65 deep -> JSON_TOO_DEEP, 64 deep -> another code, a 64 KiB
    deep body -> JSON_TOO_DEEP, cm-ws alive;
  - POST /apps with a deep `spec` part -> JSON_TOO_DEEP;
  - a 300 KB deep frame on an open terminal: an error frame JSON_TOO_DEEP, the session still
    works, cm-ws's pid unchanged."""
import asyncio
import base64
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402

AUTH = "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()
WS_BASE = "ws://" + URL.split("://", 1)[1]
JSON_HDR = {"Content-Type": "application/json"}


def deep(n, inner="1"):
    return "[" * n + inner + "]" * n


def pids():
    return sorted(stack_pids("cm-fcgi")), sorted(stack_pids("cm-ws"))


def http_part(t, s):
    before_rows = db_container_count()
    before_docker = {c["Id"] for c in docker_list_labelled()}
    fcgi0, ws0 = pids()
    t.ok(fcgi0 and ws0, "the stack's cm-fcgi workers and cm-ws are found", {"fcgi": fcgi0, "ws": ws0})

    # a 1 MiB body: {"image": ..., "command": [[[[...]]]]} padded to exactly MAX_BODY_BYTES
    head = '{"image":"%s","command":' % IMAGE
    n = (1024 * 1024 - len(head) - 1 - 1) // 2
    body = head + deep(n, "") + " " * (1024 * 1024 - len(head) - 2 * n - 1) + "}"
    t.eq(len(body), 1024 * 1024, "the deep body is 1 MiB")
    r = s.post("/containers", data=body.encode(), headers=JSON_HDR)
    check_error(t, r, 400, "validation_error", "JSON_TOO_DEEP", name="POST /containers, 1 MiB of nesting")
    t.eq((jbody(r) or {}).get("details", {}).get("limit"), 64, "details.limit is 64")
    # the same again a few times: a crashed worker would show as a changed pid set
    for _ in range(3):
        r = s.post("/containers", data=body.encode(), headers=JSON_HDR)
    t.eq(r.status_code, 400, "three more: still 400")
    fcgi1, _ = pids()
    t.eq(fcgi1, fcgi0, "no worker died (the same cm-fcgi pids)")

    # exactly 64 deep passes the parser (the validator refuses the shape); 65 is too deep
    for depth, too_deep in ((64, False), (65, True)):
        # the object itself is level 1: command's value nests depth-1 arrays
        b = '{"image":"%s","command":%s}' % (IMAGE, deep(depth - 1, '"sh"'))
        r = s.post("/containers", data=b.encode(), headers=JSON_HDR)
        code = (jbody(r) or {}).get("code")
        if too_deep:
            check_error(t, r, 400, "validation_error", "JSON_TOO_DEEP", name="POST /containers %d deep" % depth)
        else:
            t.ok(r.status_code == 400 and code not in ("JSON_TOO_DEEP", "INVALID_JSON"),
                 "POST /containers %d deep: parsed, refused by the validator (%s %s)" % (depth, r.status_code, code),
                 body_text(r))
    # dry_run must not be a way around: 65 deep with ?dry_run=true
    r = s.post("/containers?dry_run=true", data=deep(65).encode(), headers=JSON_HDR)
    check_error(t, r, 400, "validation_error", "JSON_TOO_DEEP", name="POST /containers?dry_run=true 65 deep")

    # PATCH of a real container
    c = create_container(s, t)
    cuid = (jbody(c) or {}).get("cuid")
    t.ok(c.status_code == 201 and cuid, "a container to PATCH", body_text(c))
    if cuid:
        r = s.patch("/containers/%s" % cuid, data=('{"env":' + deep(300000) + "}").encode(), headers=JSON_HDR)
        check_error(t, r, 400, "validation_error", "JSON_TOO_DEEP", name="PATCH /containers/{cuid} 300,000 deep")
        r = s.get("/containers/%s" % cuid)
        t.eq(r.status_code, 200, "the container is still there")
        t.status(action(s, cuid, "start"), 200, "start it (for the WebSocket part)")

    # harpoon's endpoint (cm-ws's event loop parses its body)
    for depth, too_deep in ((64, False), (65, True)):
        b = '{"image":"nosuchdef","ports":%s}' % deep(depth - 1, "4545")
        r = s.post("/start_container", data=b.encode(), headers=JSON_HDR)
        code = (jbody(r) or {}).get("code")
        if too_deep:
            check_error(t, r, 400, "validation_error", "JSON_TOO_DEEP", name="POST /start_container %d deep" % depth)
        else:
            t.ok(r.status_code in (400, 404) and code not in ("JSON_TOO_DEEP", "INVALID_JSON"),
                 "POST /start_container %d deep: parsed, refused on its shape (%s %s)" % (depth, r.status_code, code),
                 body_text(r))
    r = s.post("/start_container", data=deep(32000).encode(), headers=JSON_HDR)
    check_error(t, r, 400, "validation_error", "JSON_TOO_DEEP", name="POST /start_container, 64 KB of nesting")
    r = s.post("/stop_container", data=('{"image":' + deep(20000) + "}").encode(), headers=JSON_HDR)
    check_error(t, r, 400, "validation_error", "JSON_TOO_DEEP", name="POST /stop_container, 40 KB of nesting")

    # POST /apps: the JSON spec part of the multipart form
    spec = '{"name":"deepapp","command":%s}' % deep(30000, '"x"')  # the part may hold 64 KiB
    r = s.post("/apps", files={"spec": ("spec.json", spec.encode(), "application/json")})
    check_error(t, r, 400, "validation_error", "JSON_TOO_DEEP", name="POST /apps with a deep spec part")
    r = s.get("/apps/deepapp")
    t.ok(r.status_code == 404, "no app deepapp was made (%s)" % r.status_code)

    fcgi2, ws2 = pids()
    t.eq(fcgi2, fcgi0, "after everything: the same cm-fcgi pids")
    t.eq(ws2, ws0, "after everything: the same cm-ws pid")
    t.eq(db_container_count(), before_rows + (1 if cuid else 0), "no container row made by the deep requests")
    after = {c["Id"] for c in docker_list_labelled()} - before_docker
    t.ok(len(after) <= 1, "no Docker container made by the deep requests (new: %d, the PATCH target)" % len(after))
    return cuid


async def ws_part(t, cuid):
    _, ws0 = pids()
    running = await asyncio.get_running_loop().run_in_executor(
        None, lambda: wait_until(lambda: (jbody(api().get("/containers/%s" % cuid)) or {}).get("status") == "running", 30))
    t.ok(running, "the container is running")
    url = WS_BASE + "/ws/%s?tty=0&command=%s" % (cuid, urllib.parse.quote(json.dumps(["cat"])))
    ws = await websockets.connect(url, extra_headers={"Authorization": AUTH}, max_size=None, ping_interval=None)
    frames = []

    async def until(pred, timeout=15):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not pred():
            left = end - loop.time()
            if left <= 0:
                return False
            try:
                m = await asyncio.wait_for(ws.recv(), left)
            except (asyncio.TimeoutError, websockets.exceptions.ConnectionClosed):
                return pred()
            frames.append(json.loads(m))
        return True

    def out():
        return "".join(f.get("data", "") for f in frames if f.get("type") == "stdout")

    def errors():
        return [f.get("error") or {} for f in frames if f.get("type") == "error"]

    await ws.send(json.dumps({"type": "stdin", "data": "before\n"}))
    t.ok(await until(lambda: out() == "before\n"), "terminal: cat echoes before the deep frame", frames[-5:])
    frame = '{"type":"stdin","data":' + deep(150000, '"x"') + "}"
    t.ok(len(frame) > 300000, "the deep frame is %d bytes" % len(frame))
    await ws.send(frame)
    got = await until(lambda: errors())
    e = errors()[0] if errors() else {}
    t.ok(got and e.get("code") == "JSON_TOO_DEEP" and e.get("message"),
         "a 300 KB deep frame -> error frame JSON_TOO_DEEP", frames[-5:])
    await ws.send(json.dumps({"type": "stdin", "data": "after\n"}))
    t.ok(await until(lambda: out() == "before\nafter\n"), "the session still works after the deep frame",
         {"out": out(), "frames": frames[-5:]})
    # 64 deep is parsed (and refused as BAD_FRAME: data must be a string), 65 deep is JSON_TOO_DEEP
    for depth, want in ((64, "BAD_FRAME"), (65, "JSON_TOO_DEEP")):
        n = len(errors())
        await ws.send('{"type":"stdin","data":%s}' % deep(depth - 1, '"x"'))
        await until(lambda: len(errors()) > n)
        t.eq(errors()[n].get("code") if len(errors()) > n else None, want, "a frame %d deep -> %s" % (depth, want))
    await ws.send(json.dumps({"type": "eof"}))
    await until(lambda: any(f.get("type") == "exit" for f in frames))
    t.ok([f.get("code") for f in frames if f.get("type") == "exit"] == [0], "cat exits 0 after eof", frames[-3:])
    await ws.close()
    _, ws1 = pids()
    t.eq(ws1, ws0, "cm-ws pid unchanged")


def main(t):
    s = api()
    cuid = http_part(t, s)
    if cuid:
        try:
            asyncio.run(asyncio.wait_for(ws_part(t, cuid), 90))
        except Exception:
            t.ok(False, "the WebSocket part ran", traceback.format_exc())


run(main)

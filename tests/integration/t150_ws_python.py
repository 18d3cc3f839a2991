#!/usr/bin/python3
"""t150 WebSocket helper (cm-ws behind nginx at /ws/) with Python clients: `websockets` (10.x,
Debian's python3-websockets) and aiohttp.

Exec sessions: interactive shell, exit code + close 1000, initial size and resize (stty size),
INT/TERM/KILL/HUP/QUIT with and without TTY, base64 for non-UTF-8 bytes, no UTF-8 character
split across frames, stdout/stderr apart without TTY, stdin in base64, eof, close frame,
BAD_FRAME and FRAME_TOO_LARGE keep the session usable, a client that vanishes leaves no process
behind.  Logs: /ws/{cuid}/logs (tail, follow) and the plain HTTP twin
/containers/{cuid}/logs (tail, stream, timestamps, since, follow, stopped container).  Errors
before the upgrade (404, 422, 401, 400) with the JSON error body.  Audit rows of sessions.  The
seed's ContainerTerminal, stream_logs and ContainerOrchestrator (tests/clients/seed_ws.py) with
their effects checked in Docker.  Last: kill -9 of cm-ws with sessions open, then respawn."""
import asyncio
import base64
import contextlib
import io
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import types
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

import aiohttp  # noqa: E402
import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402

sys.path.insert(0, CLIENTS_DIR)
import seed_ws  # noqa: E402

AUTH = "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()
WS_BASE = "ws://" + URL.split("://", 1)[1]
LOG_LOOP = "i=0; while true; do echo line$i; echo err$i >&2; i=$((i+1)); sleep 0.2; done"
SIGNALS = [("INT", 130), ("TERM", 143), ("KILL", 137), ("HUP", 129), ("QUIT", 131)]


# ----------------------------------------------------------------------------- helpers

def qs(params):
    return urllib.parse.urlencode(params or {}, quote_via=urllib.parse.quote)


def ws_url(path, params=None):
    q = qs(params)
    return WS_BASE + path + ("?" + q if q else "")


def frame_problems(f):
    """Shape problems of one server frame (empty list = fine)."""
    if not isinstance(f, dict):
        return ["frame is not a JSON object: %r" % (f,)]
    ty = f.get("type")
    if ty in ("stdout", "stderr"):
        p = []
        if f.get("encoding") not in ("utf8", "base64"):
            p.append("%s frame encoding %r" % (ty, f.get("encoding")))
        if not isinstance(f.get("data"), str):
            p.append("%s frame data %r is not a string" % (ty, f.get("data")))
        elif f.get("encoding") == "base64":
            try:
                base64.b64decode(f["data"], validate=True)
            except Exception:
                p.append("%s frame data is not valid base64" % ty)
        else:
            try:
                f["data"].encode("utf-8")
            except UnicodeEncodeError:
                p.append("%s utf8 frame data holds lone surrogates" % ty)
        return p
    if ty == "exit":
        return [] if isinstance(f.get("code"), int) and not isinstance(f.get("code"), bool) else \
            ["exit frame code %r" % (f.get("code"),)]
    if ty == "error":
        e = f.get("error")
        if not (isinstance(e, dict) and isinstance(e.get("code"), str) and isinstance(e.get("message"), str)):
            return ["error frame without error.code/error.message: %r" % (f,)]
        return []
    return ["unknown frame type %r" % (ty,)]


def decode(f):
    if f.get("encoding") == "base64":
        return base64.b64decode(f.get("data") or "")
    d = f.get("data")
    return d.encode("utf-8", "surrogatepass") if isinstance(d, str) else b""


class Sess:
    """One websockets client connection plus everything it received."""

    def __init__(self, ws, label=""):
        self.ws = ws
        self.label = label
        self.frames = []
        self.problems = []
        self.close_code = None
        self.closed = False

    async def recv(self, timeout):
        """Next frame (dict), None once the connection is closed; asyncio.TimeoutError on timeout."""
        if self.closed:
            return None
        try:
            m = await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.exceptions.ConnectionClosed:
            self.closed = True
            self.close_code = self.ws.close_code
            return None
        if isinstance(m, bytes):
            self.problems.append("binary message (%d bytes)" % len(m))
            return {"type": "<binary>"}
        try:
            f = json.loads(m)
        except ValueError:
            self.problems.append("non-JSON text message %r" % m[:200])
            return {"type": "<non-json>"}
        self.problems.extend(frame_problems(f))
        self.frames.append(f)
        return f

    async def until(self, pred, timeout=15.0):
        """Receive until pred() holds (True), the connection closes or the time is up (pred())."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                f = await self.recv(left)
            except asyncio.TimeoutError:
                return bool(pred())
            if f is None:
                return bool(pred())
        return True

    async def wait_close(self, timeout=10.0):
        await self.until(lambda: self.closed, timeout)
        return self.close_code if self.closed else "still open after %ss" % timeout

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def stdin(self, text, encoding=None):
        m = {"type": "stdin", "data": text}
        if encoding:
            m["encoding"] = encoding
        await self.send(m)

    def out(self, *types_):
        types_ = types_ or ("stdout",)
        return b"".join(decode(f) for f in self.frames if f.get("type") in types_)

    def text(self, *types_):
        return self.out(*types_).decode("utf-8", "replace")

    def exit_codes(self):
        return [f.get("code") for f in self.frames if f.get("type") == "exit"]

    def errors(self):
        return [f.get("error") or {} for f in self.frames if f.get("type") == "error"]

    def summary(self):
        return {"label": self.label, "frames": self.frames[-15:], "n_frames": len(self.frames),
                "problems": self.problems[:10], "closed": self.closed, "close_code": self.close_code,
                "stdout": self.text()[-600:], "stderr": self.text("stderr")[-300:]}

    async def aclose(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)

    def abort(self):
        """Drop the TCP connection without a close frame."""
        self.ws.transport.abort()


async def connect(path, params=None, headers=None, label=None, timeout=15):
    hdrs = {"Authorization": AUTH} if headers is None else headers
    ws = await asyncio.wait_for(
        websockets.connect(ws_url(path, params), extra_headers=hdrs, max_size=None, ping_interval=None,
                           open_timeout=timeout, close_timeout=5), timeout + 2)
    return Sess(ws, label or path)


def upgrade_get(path, params=None, auth=(USER, PASS)):
    """A WebSocket upgrade request made with requests (to read the error body of a refusal)."""
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    url = URL + path + ("?" + qs(params) if params else "")
    return requests.get(url, headers=headers, auth=auth, timeout=15)


def ps_lines(cuid):
    """The COMMAND column of busybox `ps` in the container (its columns depend on the build)."""
    rc, out = docker_exec(cuid, ["ps"])
    lines = out.splitlines()
    if rc != 0 or not lines or "COMMAND" not in lines[0]:
        return ["<ps failed: rc %s: %s>" % (rc, out[:200])]
    n = len(lines[0].split())
    rows = []
    for ln in lines[1:]:
        parts = ln.split(None, n - 1)
        if len(parts) == n:
            rows.append(parts[-1].strip())
    return rows


def has_proc(cuid, cmd):
    return cmd in ps_lines(cuid)


def section(t, name, coro_fn, timeout=120):
    """Run one async part of the test with an overall timeout; an exception is one failure."""
    try:
        asyncio.run(asyncio.wait_for(coro_fn(), timeout))
    except asyncio.TimeoutError:
        t.ok(False, "%s: finished within %d s" % (name, timeout), traceback.format_exc())
    except Exception:
        t.ok(False, "%s: raised" % name, traceback.format_exc())


async def in_thread(fn, *a):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *a)


def audit_rows(cuid):
    return db_query("SELECT rowid AS rid, * FROM audit WHERE cuid = ? AND action LIKE 'ws.%' ORDER BY rowid",
                    (cuid,))


def log_numbers(text, prefix):
    return [int(m.group(1)) for m in re.finditer(r"(?m)^%s(\d+)$" % prefix, text)]


def consecutive(nums):
    return all(b == a + 1 for a, b in zip(nums, nums[1:]))


# ----------------------------------------------------------------------------- exec sessions

async def ex_interactive(t, cuid):
    # interactive shell: a command runs, `exit 3` ends it with code 3 and a normal close
    ss = await connect("/ws/%s" % cuid, {"cols": 80, "rows": 24}, label="interactive")
    await ss.stdin("echo hel''lo-$((40+2))\n")
    got = await ss.until(lambda: "hello-42" in ss.text(), 15)
    t.ok(got, "interactive shell: 'echo hel''lo-$((40+2))' prints hello-42", ss.summary())
    await ss.stdin("exit 3\n")
    await ss.until(lambda: ss.exit_codes(), 15)
    t.eq(ss.exit_codes(), [3], "interactive shell: 'exit 3' -> one exit frame with code 3", ss.summary())
    t.eq(await ss.wait_close(), 1000, "interactive shell: close code 1000 after the exit frame")
    t.eq([f.get("type") for f in ss.frames][-1:], ["exit"], "interactive shell: nothing after the exit frame")
    t.ok(not ss.problems, "interactive shell: every frame is well formed", ss.problems)


async def ex_resize(t, cuid):
    # initial size from the query, then resize
    ss = await connect("/ws/%s" % cuid, {"cols": 90, "rows": 30}, label="resize")
    await ss.until(lambda: ss.out(), 5)  # the prompt: the shell is up
    await ss.stdin("stty size\n")
    got = await ss.until(lambda: "30 90" in ss.text(), 10)
    t.ok(got, "tty: ?cols=90&rows=30 -> stty size prints '30 90'", ss.summary())
    await ss.send({"type": "resize", "cols": 100, "rows": 40})
    await asyncio.sleep(0.3)
    await ss.stdin("stty size\n")
    got = await ss.until(lambda: "40 100" in ss.text(), 10)
    t.ok(got, "tty: resize {cols:100, rows:40} -> stty size prints '40 100'", ss.summary())
    t.eq(ss.errors(), [], "tty: no error frame for valid resize frames")
    for what, frame in (("cols=-1", {"type": "resize", "cols": -1, "rows": 24}),
                        ("rows missing", {"type": "resize", "cols": 80}),
                        ("cols a string", {"type": "resize", "cols": "80", "rows": 24})):
        nerr = len(ss.errors())
        await ss.send(frame)
        got = await ss.until(lambda: len(ss.errors()) > nerr, 10)
        e = ss.errors()[nerr] if got else {}
        t.ok(got and e.get("code") == "BAD_FRAME" and isinstance(e.get("message"), str) and e.get("message"),
             "bad resize frame (%s) -> error frame code BAD_FRAME with a message" % what, ss.summary())
    await ss.stdin("stty size\n")
    got = await ss.until(lambda: ss.text().count("40 100") >= 2, 10)
    t.ok(got and not ss.closed, "after the bad resize frames the size is still '40 100' and the session works",
         ss.summary())
    await ss.send({"type": "close"})
    t.eq(await ss.wait_close(), 1000, "close frame -> the server closes with 1000")


async def ex_signals(t, cuid):
    # signals, with and without TTY (all sessions at once)
    async def sig_case(name, code, tty):
        # a distinct duration per case, to see in `ps` when the shell has become `sleep`: a
        # signal that reached the shell before its exec would test busybox sh, not us (it
        # ignores QUIT)
        secs = str(1000 + 10 * SIGNALS.index((name, code)) + tty)
        s2 = await connect("/ws/%s" % cuid, {"tty": tty, "command": json.dumps(["sh", "-c", "echo ready; exec sleep " + secs])},
                           label="signal %s tty=%d" % (name, tty))
        ready = await s2.until(lambda: b"ready" in s2.out(), 10)

        def execd():
            rc, out = docker_exec(cuid, ["ps", "-o", "args"])
            return any(line.strip() == "sleep " + secs for line in out.splitlines())
        loop = asyncio.get_running_loop()
        for _ in range(50):
            if await loop.run_in_executor(None, execd):
                break
            await asyncio.sleep(0.1)
        await s2.send({"type": "signal", "name": name})
        await s2.until(lambda: s2.exit_codes(), 15)
        cc = await s2.wait_close()
        return name, code, tty, ready, s2, cc

    cases = [sig_case(n, c, tty) for n, c in SIGNALS for tty in (1, 0)]
    for res in await asyncio.gather(*cases, return_exceptions=True):
        if isinstance(res, BaseException):
            t.ok(False, "signal session raised", repr(res))
            continue
        name, code, tty, ready, s2, cc = res
        t.ok(ready and s2.exit_codes() == [code] and cc == 1000,
             "signal %s, tty=%d: sleep 1000 -> exit frame code %d, close 1000" % (name, tty, code),
             dict(s2.summary(), ready=ready))


async def ex_binary(t, cuid):
    # bytes that are not UTF-8 -> base64
    ss = await connect("/ws/%s" % cuid, {"tty": 0, "command": "printf '\\377\\376abc'"}, label="binary")
    await ss.until(lambda: ss.closed, 15)
    t.eq(ss.out(), b"\xff\xfeabc", "binary output: decoded stdout is exactly \\377\\376abc", ss.summary())
    t.ok(any(f.get("type") == "stdout" and f.get("encoding") == "base64" and b"\xff" in decode(f) for f in ss.frames),
         "binary output: the bytes \\377\\376 came in a base64 frame", ss.frames)
    t.ok(ss.exit_codes() == [0] and ss.close_code == 1000 and not ss.problems,
         "binary output: exit 0, close 1000, frames well formed", ss.summary())


async def ex_utf8(t, cuid):
    # many two-byte characters: none is split across frames
    n = 250000
    want = (b"\xc3\xa9\n" * (n // 3 + 1))[:n]  # ends with a lone \xc3 (head -c cuts a character)
    ss = await connect("/ws/%s" % cuid, {"tty": 0, "command": "yes é | head -c %d" % n}, label="utf8 split")
    await ss.until(lambda: ss.closed, 30)
    got = ss.out()
    t.ok(got == want, "utf-8: 'yes é | head -c %d' arrives byte for byte (%d bytes)" % (n, len(got)),
         {"len": len(got), "head": got[:40].hex(), "tail": got[-40:].hex(), "summary": ss.summary()})
    outs = [f for f in ss.frames if f.get("type") == "stdout"]
    if len(outs) < 2:
        t.diag("utf-8: all %d bytes came in one frame: the split check below is vacuous" % n)
    split = []
    for i, f in enumerate(outs[:-1]):
        b = decode(f)
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            split.append({"frame": i, "encoding": f.get("encoding"), "head": b[:8].hex(), "tail": b[-8:].hex()})
    t.ok(not split, "utf-8: every frame but the last holds whole characters (no character split)", split[:5])
    t.ok(all(f.get("encoding") == "utf8" for f in outs[:-1]),
         "utf-8: valid UTF-8 output is sent as utf8 frames", [f.get("encoding") for f in outs][:20])
    t.ok(outs and decode(outs[-1]).endswith(b"\xc3") and outs[-1].get("encoding") == "base64",
         "utf-8: the final lone byte \\xc3 comes in a base64 frame", outs[-1:] and {
             "encoding": outs[-1].get("encoding"), "tail": decode(outs[-1])[-8:].hex()})
    t.ok(ss.exit_codes() == [0] and ss.close_code == 1000 and not ss.problems,
         "utf-8: exit 0, close 1000, frames well formed", {"exit": ss.exit_codes(), "close": ss.close_code,
                                                          "problems": ss.problems[:5]})


async def ex_stderr(t, cuid):
    # stdout and stderr apart without TTY
    ss = await connect("/ws/%s" % cuid, {"tty": 0, "command": "echo out; echo err >&2; exit 6"}, label="stderr")
    await ss.until(lambda: ss.closed, 15)
    t.eq((ss.out("stdout"), ss.out("stderr"), ss.exit_codes(), ss.close_code),
         (b"out\n", b"err\n", [6], 1000),
         "tty=0: 'echo out; echo err >&2; exit 6' -> stdout 'out', stderr 'err', exit 6, close 1000", ss.summary())

    # and with TTY both go to the terminal (one stream)
    ss = await connect("/ws/%s" % cuid, {"command": "echo out; echo err >&2"}, label="stderr tty")
    await ss.until(lambda: ss.closed, 15)
    t.ok(ss.out("stdout") == b"out\r\nerr\r\n" and ss.out("stderr") == b"" and ss.exit_codes() == [0],
         "tty=1: both lines on the terminal's stdout (CRLF), no stderr frame", ss.summary())


async def ex_stdin_eof(t, cuid):
    # stdin: utf8 (default and explicit) and base64, then eof ends cat
    ss = await connect("/ws/%s" % cuid, {"tty": 0, "command": json.dumps(["cat"])}, label="cat eof")
    await ss.stdin("plain-é\n")
    await ss.stdin("explicit\n", "utf8")
    await ss.stdin(base64.b64encode(b"b64\x00\x01\xff\n").decode(), "base64")
    want = "plain-é\nexplicit\n".encode() + b"b64\x00\x01\xff\n"
    got = await ss.until(lambda: ss.out() == want, 10)
    t.ok(got, "stdin utf8 (default + explicit) and base64 echo back byte for byte through cat", ss.summary())
    t.eq(ss.exit_codes(), [], "cat is still running before eof")
    await ss.send({"type": "eof"})
    await ss.until(lambda: ss.closed, 10)
    t.ok(ss.exit_codes() == [0] and ss.close_code == 1000, "eof closes cat's stdin -> exit 0, close 1000",
         ss.summary())


async def ex_bad_frames(t, cuid):
    # bad frames: an error frame each, the session still works after every one
    ss = await connect("/ws/%s" % cuid, {"tty": 0, "command": json.dumps(["cat"])}, label="bad frames")
    bad = [
        ("not JSON", "this is {not json"),
        ("a JSON array", "[1, 2]"),
        ("unknown type", {"type": "bogus", "data": "x"}),
        ("no type", {"data": "x"}),
        ("stdin without data", {"type": "stdin"}),
        ("stdin data not a string", {"type": "stdin", "data": 12}),
        ("stdin bad base64", {"type": "stdin", "data": "%%%not*base64%%%", "encoding": "base64"}),
        ("stdin unknown encoding", {"type": "stdin", "data": "x", "encoding": "rot13"}),
        ("signal unknown name", {"type": "signal", "name": "BOGUS"}),
    ]
    want = b""
    for i, (what, frame) in enumerate(bad):
        nerr = len(ss.errors())
        await ss.send(frame)
        got = await ss.until(lambda: len(ss.errors()) > nerr, 10)
        e = ss.errors()[nerr] if got else {}
        t.ok(got and e.get("code") == "BAD_FRAME" and isinstance(e.get("message"), str) and e.get("message"),
             "bad frame (%s) -> error frame code BAD_FRAME with a message" % what, ss.summary())
        line = "alive-%d\n" % i
        want += line.encode()
        await ss.stdin(line)
        got = await ss.until(lambda: ss.out() == want, 10)
        t.ok(got and not ss.closed, "after the bad frame (%s) the session still works" % what,
             {"want": want.decode(), "summary": ss.summary()})

    # a message over WS_MAX_FRAME (1 MiB by default)
    nerr = len(ss.errors())
    await ss.stdin("x" * (2 * 1024 * 1024))
    got = await ss.until(lambda: len(ss.errors()) > nerr, 15)
    e = ss.errors()[nerr] if got else {}
    t.ok(got and e.get("code") == "FRAME_TOO_LARGE", "a 2 MiB message -> error frame code FRAME_TOO_LARGE",
         ss.summary())
    want += b"after-big\n"
    await ss.stdin("after-big\n")
    got = await ss.until(lambda: ss.out() == want, 10)
    t.ok(got and not ss.closed, "after FRAME_TOO_LARGE the session still works, and nothing of the big message "
         "reached the process", {"stdout_tail": ss.out()[-200:], "len": len(ss.out()), "closed": ss.closed})
    await ss.send({"type": "eof"})
    await ss.until(lambda: ss.closed, 10)
    t.ok(ss.exit_codes() == [0] and ss.close_code == 1000, "bad frames session: eof -> exit 0, close 1000",
         ss.summary())
    t.ok(not ss.problems, "bad frames session: every server frame well formed", ss.problems)


async def ex_close_frame(t, cuid):
    # the close frame kills the process
    ss = await connect("/ws/%s" % cuid, {"tty": 0, "command": json.dumps(["sh", "-c", "echo ready; exec sleep 1233"])},
                       label="close frame")
    await ss.until(lambda: b"ready" in ss.out(), 10)
    t.ok(await in_thread(has_proc, cuid, "sleep 1233"), "close frame: 'sleep 1233' runs in the container first")
    await ss.send({"type": "close"})
    t.eq(await ss.wait_close(), 1000, "close frame -> normal close 1000")
    gone = await in_thread(lambda: wait_until(lambda: not has_proc(cuid, "sleep 1233"), timeout=5, interval=0.3))
    t.ok(gone, "close frame: no 'sleep 1233' left in the container within 5 s", ps_lines(cuid))


async def ex_vanish(t, cuid):
    # a client that vanishes (TCP dropped, no close frame) ends its process, with and without TTY
    for tty, arg in ((1, "1231"), (0, "1232")):
        ss = await connect("/ws/%s" % cuid, {"tty": tty, "command": "sleep %s" % arg}, label="vanish")
        here = await in_thread(lambda: wait_until(lambda: has_proc(cuid, "sleep " + arg), timeout=5, interval=0.2))
        t.ok(here, "vanish tty=%d: 'sleep %s' runs in the container" % (tty, arg), ps_lines(cuid))
        ss.abort()
        gone = await in_thread(lambda: wait_until(lambda: not has_proc(cuid, "sleep " + arg), timeout=5,
                                                  interval=0.3))
        t.ok(gone, "vanish tty=%d: no 'sleep %s' left within 5 s of the client dropping the TCP connection"
             % (tty, arg), ps_lines(cuid))


EXEC_PARTS = [ex_interactive, ex_resize, ex_signals, ex_binary, ex_utf8, ex_stderr, ex_stdin_eof, ex_bad_frames,
              ex_close_frame, ex_vanish]


def exec_tests(t, cuid):
    for fn in EXEC_PARTS:
        section(t, "exec sessions: " + fn.__name__, lambda: fn(t, cuid), 90)


async def aiohttp_tests(t, cuid):
    """The same protocol through aiohttp's ws_connect."""
    async with aiohttp.ClientSession(headers={"Authorization": AUTH}) as session:
        async with session.ws_connect(ws_url("/ws/%s" % cuid, {"tty": 0, "command": json.dumps(["sh"])}),
                                      timeout=15, heartbeat=None) as ws:
            await ws.send_json({"type": "stdin", "data": "echo via-aio-$((2+3)); echo e >&2; exit 9\n"})
            frames, out, err, close_msg = [], b"", b"", None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while loop.time() < deadline:
                msg = await asyncio.wait_for(ws.receive(), max(0.1, deadline - loop.time()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    close_msg = (msg.type.name, msg.data)
                    break
                f = json.loads(msg.data)
                frames.append(f)
                if f.get("type") == "stdout":
                    out += decode(f)
                elif f.get("type") == "stderr":
                    err += decode(f)
            codes = [f.get("code") for f in frames if f.get("type") == "exit"]
            t.ok(out == b"via-aio-5\n" and err == b"e\n" and codes == [9] and close_msg == ("CLOSE", 1000),
                 "aiohttp ws_connect: sh without TTY, stdin script -> stdout/stderr/exit 9/close frame 1000",
                 {"out": out, "err": err, "codes": codes, "close_msg": close_msg, "frames": frames[-10:]})
            # aiohttp answers the server's close frame; if the server drops TCP before that reply
            # (RFC 6455 7.1.1: the server closes TCP after sending AND receiving a Close), aiohttp
            # reports 1006 to the application
            t.eq(ws.close_code, 1000, "aiohttp: the close handshake completes, ws.close_code is 1000",
                 {"exception": repr(ws.exception())})

        for hdrs, label in (({"Authorization": "Basic " + base64.b64encode(b"admin:wrong-password").decode()},
                             "wrong password"), (None, "no auth")):
            status = None
            try:
                async with aiohttp.ClientSession(headers=hdrs) as s2:
                    async with s2.ws_connect(ws_url("/ws/%s" % cuid), timeout=15):
                        status = 101
            except aiohttp.WSServerHandshakeError as e:
                status = e.status
            t.eq(status, 401, "aiohttp ws_connect with %s -> handshake refused with 401" % label)


# ----------------------------------------------------------------------------- pre-upgrade errors

def preupgrade_tests(t, s, cuid, stopped_cuid, created_cuid):
    bad = sibling_cuid(cuid)
    r = upgrade_get("/ws/%s" % bad)
    check_error(t, r, 404, "not_found", "CONTAINER_NOT_FOUND", name="upgrade /ws/<unknown cuid>")
    r = upgrade_get("/ws/%s/logs" % bad)
    check_error(t, r, 404, "not_found", "CONTAINER_NOT_FOUND", name="upgrade /ws/<unknown cuid>/logs")
    r = upgrade_get("/ws/%s" % created_cuid)
    check_error(t, r, 422, "state_error", "CONTAINER_NOT_RUNNING", name="upgrade /ws/<created, never started>")
    r = upgrade_get("/ws/%s" % stopped_cuid)
    check_error(t, r, 422, "state_error", "CONTAINER_NOT_RUNNING", name="upgrade /ws/<stopped container>")
    r = s.get("/ws/%s" % cuid)
    check_error(t, r, 426, code="WEBSOCKET_REQUIRED", name="plain GET /ws/<cuid> (no upgrade)")
    r = upgrade_get("/ws/NOT_A_CUID")
    check_error(t, r, 400, "validation_error", "INVALID_CUID", name="upgrade /ws/NOT_A_CUID")
    r = upgrade_get("/ws/%s" % cuid, auth=None)
    check_error(t, r, 401, "auth_error", name="upgrade without Authorization")
    t.ok("Basic" in (r.headers.get("WWW-Authenticate") or ""), "401 on /ws/ carries WWW-Authenticate: Basic",
         dict(r.headers))
    r = upgrade_get("/ws/%s" % cuid, auth=(USER, PASS + "-wrong"))
    check_error(t, r, 401, "auth_error", name="upgrade with a wrong password")
    qcodes = {"INVALID_QUERY", "INVALID_VALUE"}
    # an unknown parameter: UNKNOWN_PARAMETER as GET /containers answers it (docs/API.md), or INVALID_QUERY
    ucodes = {"INVALID_QUERY", "UNKNOWN_PARAMETER"}
    for params, field in (({"cols": "abc"}, "cols"), ({"cols": "0"}, "cols"), ({"rows": "-1"}, "rows"),
                          ({"cols": "80", "rows": "x"}, "rows"), ({"command": "[1,2]"}, "command"),
                          ({"command": "[]"}, "command"), ({"tty": "7"}, "tty"), ({"foo": "1"}, "foo")):
        r = upgrade_get("/ws/%s" % cuid, params)
        check_error(t, r, 400, "validation_error", ucodes if field == "foo" else qcodes, field=field,
                    name="upgrade /ws/<cuid>?%s" % qs(params))
    for params, field in (({"tail": "abc"}, "tail"), ({"follow": "2"}, "follow"), ({"bogus": "1"}, "bogus")):
        r = upgrade_get("/ws/%s/logs" % cuid, params)
        check_error(t, r, 400, "validation_error", ucodes if field == "bogus" else qcodes, field=field,
                    name="upgrade /ws/<cuid>/logs?%s" % qs(params))

    # the websockets client sees the same refusals
    async def lib():
        out = {}
        for key, path, hdrs in (("404", "/ws/%s" % bad, None), ("422", "/ws/%s" % stopped_cuid, None),
                                ("401", "/ws/%s" % cuid, {})):
            try:
                ss = await connect(path, headers=hdrs)
                out[key] = "upgraded"
                await ss.aclose()
            except websockets.exceptions.InvalidStatusCode as e:
                out[key] = e.status_code
        return out

    got = asyncio.run(asyncio.wait_for(lib(), 60))
    t.eq(got, {"404": 404, "422": 422, "401": 401},
         "websockets.connect raises InvalidStatusCode 404 / 422 / 401 before the upgrade")


# ----------------------------------------------------------------------------- logs

def http_logs(s, cuid, **params):
    return s.get("/containers/%s/logs" % cuid, params=params)


def logs_tests(t, s, lc):
    # let the container write some lines
    wait_until(lambda: len(log_numbers(docker_logs_text(lc), "line")) >= 12, timeout=10)

    async def ws_part():
        # tail without follow: the last lines, then a normal close
        before = log_numbers(docker_logs_text(lc), "line")
        # (follow defaults to 1 on the WebSocket, docs/API.md: ask for a snapshot explicitly)
        ss = await connect("/ws/%s/logs" % lc, {"tail": 5, "follow": 0}, label="logs tail=5 follow=0")
        await ss.until(lambda: ss.closed, 15)
        out, err = ss.text("stdout"), ss.text("stderr")
        lines, errs = log_numbers(out, "line"), log_numbers(err, "err")
        t.ok(ss.close_code == 1000, "ws logs tail=5 follow=0: the server closes with 1000 after the last line", ss.summary())
        t.ok(len(lines) + len(errs) == 5 and lines and errs,
             "ws logs tail=5 follow=0: the last 5 lines (stdout and stderr counted together, as Docker does)",
             {"stdout": out, "stderr": err})
        t.ok(all(re.match(r"^line\d+$", x) for x in out.splitlines())
             and all(re.match(r"^err\d+$", x) for x in err.splitlines()),
             "ws logs: stdout frames carry the lineN lines, stderr frames the errN lines",
             {"stdout": out, "stderr": err})
        t.ok(consecutive(lines) and consecutive(errs) and before and lines and lines[-1] >= before[-1],
             "ws logs tail=5 follow=0: consecutive and the most recent lines", {"lines": lines, "errs": errs,
                                                                      "docker_last": before[-1:]})
        t.eq(ss.exit_codes(), [], "ws logs: no exit frame (it is not a process)")
        t.ok(not ss.problems, "ws logs: frames well formed", ss.problems)
        await ss.aclose()

        ss = await connect("/ws/%s/logs" % lc, {"tail": 3, "follow": 0, "stream": "stderr"}, label="logs stderr")
        await ss.until(lambda: ss.closed, 15)
        errs = log_numbers(ss.text("stderr"), "err")
        # Docker takes the last 3 lines of both streams, then keeps the stderr ones
        t.ok(ss.close_code == 1000 and ss.out("stdout") == b"" and 1 <= len(errs) <= 3 and consecutive(errs)
             and len(ss.text("stderr").splitlines()) == len(errs),
             "ws logs stream=stderr tail=3 follow=0: only errN lines, in stderr frames, then close 1000",
             ss.summary())
        await ss.aclose()

        # follow: new lines keep coming
        ss = await connect("/ws/%s/logs" % lc, {"tail": 1, "follow": 1}, label="logs follow")
        got = await ss.until(lambda: len(log_numbers(ss.text("stdout"), "line")) >= 6
                             and len(log_numbers(ss.text("stderr"), "err")) >= 6, 10)
        lines = log_numbers(ss.text("stdout"), "line")
        t.ok(got and not ss.closed and consecutive(lines),
             "ws logs follow=1: new stdout and stderr lines keep arriving, in order", ss.summary())
        await ss.aclose()

    section(t, "ws logs", ws_part, 60)

    # plain HTTP twin
    r = http_logs(s, lc, tail=4)
    t.status(r, 200, "GET /containers/<cuid>/logs?tail=4")
    t.ok((r.headers.get("Content-Type") or "").startswith("text/plain"), "logs: Content-Type text/plain",
         dict(r.headers))
    ls = r.text.splitlines()
    t.ok(len(ls) == 4 and all(re.match(r"^(line|err)\d+$", x) for x in ls)
         and any(x.startswith("line") for x in ls) and any(x.startswith("err") for x in ls),
         "logs tail=4: 4 lines of both streams, demultiplexed (no 8-byte frame headers)", {"body": r.text[:500]})
    r = http_logs(s, lc, tail=100000)
    allnums = log_numbers(r.text, "line")
    t.ok(r.status_code == 200 and allnums[:1] == [0] and consecutive(allnums) and len(allnums) >= 12,
         "logs tail=100000: every line from line0 on", {"status": r.status_code, "first": r.text[:100]})
    r = http_logs(s, lc, stream="stderr", tail=20)
    ls = r.text.splitlines()
    t.ok(r.status_code == 200 and ls and all(re.match(r"^err\d+$", x) for x in ls),
         "logs stream=stderr: only the errN lines", {"status": r.status_code, "body": r.text[:400]})
    r = http_logs(s, lc, stream="stdout", tail=20)
    ls = r.text.splitlines()
    t.ok(r.status_code == 200 and ls and all(re.match(r"^line\d+$", x) for x in ls),
         "logs stream=stdout: only the lineN lines", {"status": r.status_code, "body": r.text[:400]})
    r = http_logs(s, lc, tail=6, timestamps=1)
    ls = r.text.splitlines()
    t.ok(r.status_code == 200 and ls and all(
        re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (line|err)\d+$", x) for x in ls),
        "logs timestamps=1: each line starts with an RFC 3339 UTC time", {"body": r.text[:500]})
    # since: nothing older than the given time
    since = int(time.time()) + 1
    while time.time() < since + 1.5:
        time.sleep(0.1)
    r = http_logs(s, lc, since=since, timestamps=1)
    ls = r.text.splitlines()
    times = []
    for x in ls:
        with contextlib.suppress(Exception):
            times.append(parse_time(x.split(" ", 1)[0]).timestamp())
    t.ok(r.status_code == 200 and len(ls) >= 4 and len(times) == len(ls) and min(times) >= since,
         "logs since=<t>: only lines written at or after t", {"since": since, "body": r.text[:600]})
    r = s.get("/containers/%s/logs" % sibling_cuid(lc))
    check_error(t, r, 404, "not_found", "CONTAINER_NOT_FOUND", name="GET /containers/<unknown>/logs")
    r = http_logs(s, lc, tail="abc")
    check_error(t, r, 400, "validation_error", {"INVALID_VALUE", "INVALID_QUERY"}, field="tail",
                name="GET /containers/<cuid>/logs?tail=abc")

    # follow=1 streams (chunked): read a few new lines, then hang up
    first, got = None, []
    try:
        with s.get("/containers/%s/logs" % lc, params={"tail": 1, "follow": 1, "stream": "stdout"}, stream=True,
                   timeout=(5, 10)) as r:
            # (not t.status: its diagnostics would read the endless body)
            t.eq(r.status_code, 200, "GET logs?follow=1 -> HTTP 200")
            t.eq(r.headers.get("Transfer-Encoding"), "chunked", "logs follow=1: a chunked response")
            t0 = time.monotonic()
            for ln in r.iter_lines(chunk_size=1):
                ln = ln.decode("utf-8", "replace")
                got.append(ln)
                if len(log_numbers("\n".join(got), "line")) >= 5 or time.monotonic() - t0 > 10:
                    break
    except Exception as e:
        t.ok(False, "logs follow=1: reading the stream", repr(e))
    nums = log_numbers("\n".join(got), "line")
    t.ok(len(nums) >= 5 and consecutive(nums) and len(nums) == len(got),
         "logs follow=1: new stdout lines stream in as they are written", got[:20])

    # follow=1 ends when the container stops
    state = {"lines": 0, "ended": None, "error": None}

    def reader():
        try:
            with s.get("/containers/%s/logs" % lc, params={"tail": 1, "follow": 1}, stream=True,
                       timeout=(5, 25)) as r2:
                state["status"] = r2.status_code
                for _ in r2.iter_lines(chunk_size=1):
                    state["lines"] += 1
            state["ended"] = time.monotonic()
        except Exception as e:
            state["error"] = repr(e)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    wait_until(lambda: state["lines"] >= 2 or state["error"], timeout=10)
    t_stop = time.monotonic()
    t.status(action(s, lc, "stop", json={"timeout": 1}), 200, "stop the logging container")
    th.join(30)
    t.ok(state["ended"] is not None and state["ended"] - t_stop < 15 and state["lines"] >= 2,
         "logs follow=1: the response ends (normally) once the container stops",
         dict(state, since_stop=None if state["ended"] is None else round(state["ended"] - t_stop, 1)))

    # a stopped container's logs are still there
    r = http_logs(s, lc, tail=3)
    ls = r.text.splitlines()
    t.ok(r.status_code == 200 and len(ls) == 3 and all(re.match(r"^(line|err)\d+$", x) for x in ls),
         "logs of a stopped container: 200 with its last lines", {"status": r.status_code, "body": r.text[:300]})

    async def ws_stopped():
        ss = await connect("/ws/%s/logs" % lc, {"tail": 4}, label="logs stopped")
        await ss.until(lambda: ss.closed, 15)
        t.ok(ss.close_code == 1000 and log_numbers(ss.text("stdout"), "line"),
             "ws logs of a stopped container: its lines, then close 1000", ss.summary())
        ss = await connect("/ws/%s/logs" % lc, {"tail": 2, "follow": 1}, label="logs stopped follow")
        await ss.until(lambda: ss.closed, 15)
        t.ok(ss.closed and log_numbers(ss.text("stdout") + ss.text("stderr"), "(?:line|err)"),
             "ws logs follow=1 of a stopped container: its lines, then the server closes", ss.summary())

    section(t, "ws logs (stopped)", ws_stopped, 40)


def docker_logs_text(cuid):
    st, body = docker_request("GET", "/containers/%s/logs?stdout=1&stderr=1&tail=50" % cuid)
    if st != 200 or not isinstance(body, str):
        return ""
    # strip the 8-byte multiplexing headers roughly: keep printable line content
    return "\n".join(re.findall(r"(?:line|err)\d+", body))


# ----------------------------------------------------------------------------- audit

def audit_tests(t, s):
    if not {"command", "bytes_in", "bytes_out", "exit_code"} <= set(db_columns("audit")):
        t.ok(False, "audit table has the session columns command/bytes_in/bytes_out/exit_code", db_columns("audit"))
        return
    a = must_create(s, t, "create a container for the audit checks")["cuid"]
    t.status(action(s, a, "start"), 200, "start it")

    async def sessions():
        ss = await connect("/ws/%s" % a, {"tty": 0, "command": json.dumps(["cat"])}, label="audit cat")
        await ss.stdin("12345\n")
        await ss.stdin(base64.b64encode(b"\x00\x01\xfe\n").decode(), "base64")
        await ss.until(lambda: len(ss.out()) >= 10, 10)
        await asyncio.sleep(1.0)
        await ss.send({"type": "eof"})
        await ss.until(lambda: ss.closed, 10)
        t.ok(ss.out() == b"12345\n\x00\x01\xfe\n" and ss.exit_codes() == [0], "audit session 1 (cat) ran",
             ss.summary())
        ss = await connect("/ws/%s" % a, {"tty": 0, "command": "echo abc; exit 7"}, label="audit sh -c")
        await ss.until(lambda: ss.closed, 10)
        t.ok(ss.out() == b"abc\n" and ss.exit_codes() == [7], "audit session 2 (sh -c) ran", ss.summary())
        ss = await connect("/ws/%s" % a, {"cols": 80, "rows": 24}, label="audit shell")
        await ss.stdin("exit 0\n")
        await ss.until(lambda: ss.closed, 10)
        ss = await connect("/ws/%s/logs" % a, {"tail": 10}, label="audit logs")
        await ss.until(lambda: ss.closed, 10)

    t0 = time.monotonic()
    section(t, "audit sessions", sessions, 60)
    rows = wait_until(lambda: len(audit_rows(a)) >= 4 and audit_rows(a), timeout=5) or audit_rows(a)
    t.ok(len(rows) == 4, "audit: one row per session (4) within a few seconds of the end", rows)
    if len(rows) < 4:
        return
    execs = [r for r in rows if r.get("action") == "ws.exec"]
    logs = [r for r in rows if r.get("action") == "ws.logs"]
    t.ok(len(execs) == 3 and len(logs) == 1, "audit: 3 ws.exec rows and 1 ws.logs row",
         [r.get("action") for r in rows])
    for r in rows:
        t.ok(r.get("method") == "GET" and r.get("status") == 101 and r.get("user") == USER and r.get("cuid") == a
             and (r.get("path") or "").split("?")[0] == ("/ws/%s" % a if r.get("action") == "ws.exec"
                                                         else "/ws/%s/logs" % a),
             "audit %s row: method GET, status 101, user, cuid, path" % r.get("action"), r)
    if len(execs) == 3:
        c1, c2, c3 = execs
        try:
            cmds = [json.loads(c["command"]) for c in execs]
        except Exception:
            cmds = [c.get("command") for c in execs]
        t.eq(cmds, [["cat"], ["/bin/sh", "-c", "echo abc; exit 7"], ["/bin/sh"]],
             "audit: command = JSON argv (array as given; a string runs through /bin/sh -c; default /bin/sh)")
        t.eq((c1.get("bytes_in"), c1.get("bytes_out"), c1.get("exit_code")), (10, 10, 0),
             "audit cat row: bytes_in 10 (decoded stdin), bytes_out 10, exit_code 0", c1)
        t.eq((c2.get("bytes_in"), c2.get("bytes_out"), c2.get("exit_code")), (0, 4, 7),
             "audit sh -c row: bytes_in 0, bytes_out 4, exit_code 7", c2)
        t.eq(c3.get("exit_code"), 0, "audit shell row: exit_code 0")
        took = time.monotonic() - t0
        d = c1.get("duration_ms")
        t.ok(isinstance(d, (int, float)) and not isinstance(d, bool) and 1000 <= d <= took * 1000 + 1000,
             "audit cat row: duration_ms covers the session (>= 1000 ms, held open 1 s)", {"duration_ms": d})


# ----------------------------------------------------------------------------- seed code

def find_task(name):
    for task in asyncio.all_tasks():
        if getattr(task.get_coro(), "__name__", "") == name or name in repr(task.get_coro()):
            return task
    return None


def seed_tests(t, s, cuid):
    # ContainerTerminal, used directly
    buf = io.StringIO()
    res = {}

    async def terminal():
        with contextlib.redirect_stdout(buf):
            await terminal_steps()

    async def terminal_steps():
        term = seed_ws.ContainerTerminal(URL, cuid, USER, PASS)
        await term.connect(cols=100, rows=30)
        task = find_task("_receive_output")
        res["task_found"] = task is not None
        await term.send_input("echo hi > /app/x\n")
        res["file"] = await in_thread(lambda: wait_until(
            lambda: docker_exec(cuid, ["cat", "/app/x"]) == (0, "hi\n"), timeout=10, interval=0.3))
        await term.send_input("stty size\n")
        await in_thread(lambda: wait_until(lambda: "30 100" in buf.getvalue(), timeout=10))
        await term.resize(120, 40)
        await asyncio.sleep(0.3)
        await term.send_input("stty size\n")
        await in_thread(lambda: wait_until(lambda: "40 120" in buf.getvalue(), timeout=10))
        await term.send_input("echo bg-$((2*21))\n")
        await in_thread(lambda: wait_until(lambda: "bg-42" in buf.getvalue(), timeout=10))
        await term.send_signal("KILL")
        if task is not None:
            with contextlib.suppress(Exception):  # a timeout, or the task's own exception (checked below)
                await asyncio.wait_for(asyncio.shield(task), 10)
            res["task_done"] = task.done()
            res["task_exc"] = repr(task.exception()) if task.done() and not task.cancelled() and task.exception() \
                else None
        res["close_code"] = term.ws.close_code

    section(t, "seed ContainerTerminal", terminal, 60)
    printed = buf.getvalue()
    t.ok(res.get("file") is True, "seed ContainerTerminal: send_input('echo hi > /app/x') -> Docker sees /app/x = hi",
         res)
    host = os.path.join(app_dir(cuid), "x")
    t.ok(os.path.isfile(host), "seed ContainerTerminal: /app/x is in the bind-mounted app dir on the host",
         {"path": host})
    t.ok("30 100" in printed, "seed ContainerTerminal: connect(cols=100, rows=30) -> stty size '30 100'",
         printed[-800:])
    t.ok("40 120" in printed, "seed ContainerTerminal: resize(120, 40) -> stty size '40 120'", printed[-800:])
    t.ok("bg-42" in printed, "seed ContainerTerminal: printed the shell output", printed[-800:])
    t.ok("[Process exited with code 137]" in printed,
         "seed ContainerTerminal: send_signal('KILL') -> '[Process exited with code 137]'", printed[-800:])
    t.ok(res.get("task_found") and res.get("task_done") and res.get("task_exc") is None,
         "seed ContainerTerminal: _receive_output ended without an exception (frames had type/encoding/data/code)",
         res)
    t.eq(res.get("close_code"), 1000, "seed ContainerTerminal: the socket closed normally")

    # ContainerTerminal.run_interactive with a scripted aioconsole
    buf = io.StringIO()
    res = {}

    async def interactive():
        with contextlib.redirect_stdout(buf):
            await interactive_steps()

    async def interactive_steps():
        q = asyncio.Queue()

        async def ainput(prompt=""):
            return await q.get()

        sys.modules["aioconsole"] = types.SimpleNamespace(ainput=ainput)
        term = seed_ws.ContainerTerminal(URL, cuid, USER, PASS)
        run = asyncio.create_task(term.run_interactive())
        await q.put("echo seed-ri-$((3*3)) > /app/ri.txt")
        res["file"] = await in_thread(lambda: wait_until(
            lambda: docker_exec(cuid, ["cat", "/app/ri.txt"]) == (0, "seed-ri-9\n"), timeout=10, interval=0.3))
        await q.put("exit")
        await asyncio.wait_for(run, 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(term.ws.wait_closed(), 10)
        res["close_code"] = term.ws.close_code

    try:
        section(t, "seed ContainerTerminal.run_interactive", interactive, 40)
    finally:
        sys.modules.pop("aioconsole", None)
    printed = buf.getvalue()
    t.ok(printed.startswith("Connected to container. Type 'exit' to quit."),
         "seed run_interactive: connected", printed[:300])
    t.ok(res.get("file") is True, "seed run_interactive: the typed line ran (Docker sees /app/ri.txt)", res)
    t.eq(res.get("close_code"), 1000, "seed run_interactive: 'exit' sends the close frame -> normal close 1000")

    # stream_logs: `tail -f /app/logs/app.log` in the shell, lines handed to process_log_line
    rc, out = docker_exec(cuid, ["sh", "-c", "mkdir -p /app/logs && echo seed-log-0 > /app/logs/app.log"])
    t.ok(rc == 0, "create /app/logs/app.log in the container", out)
    seen = []
    seed_ws.process_log_line = seen.append
    res = {}

    async def logs():
        task = asyncio.create_task(seed_ws.stream_logs(URL, cuid, AUTH.split(" ", 1)[1]))
        res["first"] = await in_thread(lambda: wait_until(lambda: "seed-log-0" in "".join(seen), timeout=10))
        docker_exec(cuid, ["sh", "-c", "echo seed-log-1 >> /app/logs/app.log"])
        res["second"] = await in_thread(lambda: wait_until(lambda: "seed-log-1" in "".join(seen), timeout=10))
        res["tail_running"] = await in_thread(has_proc, cuid, "tail -f /app/logs/app.log")
        res["task_error"] = repr(task.exception()) if task.done() else None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    section(t, "seed stream_logs", logs, 40)
    text = "".join(seen)
    t.ok(res.get("first") and res.get("second"),
         "seed stream_logs: process_log_line gets the file's lines, also one appended later", {"seen": text[-600:],
                                                                                                "res": res})
    t.ok(res.get("tail_running") is True and res.get("task_error") is None,
         "seed stream_logs: 'tail -f /app/logs/app.log' runs in the container while streaming", res)
    gone = wait_until(lambda: not has_proc(cuid, "tail -f /app/logs/app.log"), timeout=5, interval=0.3)
    t.ok(res.get("tail_running") is True and gone,
         "seed stream_logs: leaving the `async with` ends the session: the tail -f that ran is gone", ps_lines(cuid))

    # ContainerOrchestrator.deploy_and_run: create, upload-zip, start, ws, stop, delete
    buf = io.StringIO()
    code = 'print("hello from boot.py")\n'
    seen_during = {}

    def watcher(stop):
        cu = None
        while not stop.is_set():
            m = re.search(r"Created container: (\S+)", buf.getvalue())
            if m:
                cu = m.group(1)
                seen_during["cuid"] = cu
                t.add_cleanup(lambda c=cu: destroy(s, c))
                break
            time.sleep(0.05)
        while cu and not stop.is_set() and "Connected to container output:" not in buf.getvalue():
            time.sleep(0.05)
        if cu and not stop.is_set():
            seen_during["boot"] = docker_exec(cu, ["cat", "/app/boot.py"])
            seen_during["shell"] = wait_until(
                lambda: any(re.match(r"^(/bin/)?-?sh( -[il]+)?$", x) for x in ps_lines(cu)), timeout=5, interval=0.3)
            seen_during["ps"] = ps_lines(cu)

    stop = threading.Event()
    th = threading.Thread(target=watcher, args=(stop,), daemon=True)
    orch = seed_ws.ContainerOrchestrator(URL, USER, PASS)

    async def deploy():
        with contextlib.redirect_stdout(buf):
            return await orch.deploy_and_run(image=IMAGE, code=code, env={"APP_ENV": "production"})

    th.start()
    try:
        section(t, "seed ContainerOrchestrator.deploy_and_run", deploy, 60)
    finally:
        stop.set()
        th.join(10)
    printed = buf.getvalue()
    cu = seen_during.get("cuid")
    for line in ("Created container: ", "Code uploaded successfully", "Container started",
                 "Connected to container output:", "Container stopped", "Container deleted"):
        t.ok(line in printed, "seed orchestrator printed %r" % line, printed[-1000:])
    t.eq(seen_during.get("boot"), (0, code), "seed orchestrator: /app/boot.py in the container holds the code")
    t.ok(seen_during.get("shell"), "seed orchestrator: the WebSocket session runs a shell in the container",
         seen_during.get("ps"))
    t.ok("[OUT] " in printed, "seed orchestrator: stdout frames (the shell prompt) printed as [OUT]", printed[-500:])
    if cu:
        t.ok(docker_inspect(cu) is None, "seed orchestrator: the container is gone from Docker at the end")
        rows = wait_until(lambda: [r for r in audit_rows(cu) if r.get("action") == "ws.exec"], timeout=5)
        t.ok(rows and rows[0].get("status") == 101, "seed orchestrator: a ws.exec audit row for its session", rows)


# ----------------------------------------------------------------------------- kill -9 cm-ws

def cm_ws_pids():
    out = []
    for pid, ppid, start, cmd in find_procs("cm-ws"):
        argv = cmd.split(" ")
        # cm-ws itself, or cm-ws run by a tool such as valgrind (tests/run-valgrind)
        if os.path.basename(argv[0]) == "cm-ws" or (
                "valgrind" in os.path.basename(argv[0]) and any(os.path.basename(a) == "cm-ws" for a in argv)):
            out.append(pid)
    return sorted(out)


def crash_tests(t, cuid):
    pids = cm_ws_pids()
    if not t.ok(pids, "cm-ws runs below the stack", [p[3] for p in find_procs("cm")][:20]):
        return

    async def crash():
        a = await connect("/ws/%s" % cuid, {"tty": 1, "command": json.dumps(["sh", "-c", "echo ready; exec sleep 1241"])})
        b = await connect("/ws/%s" % cuid, {"tty": 0, "command": json.dumps(["sh", "-c", "echo ready; exec sleep 1242"])})
        ra = await a.until(lambda: b"ready" in a.out(), 10)
        rb = await b.until(lambda: b"ready" in b.out(), 10)
        t.ok(ra and rb, "two sessions open before the crash")
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        ca = await a.wait_close(10)
        cb = await b.wait_close(10)
        t.ok(a.closed and b.closed, "kill -9 cm-ws: both open sessions end (close codes %s, %s)" % (ca, cb),
             {"a": a.summary(), "b": b.summary()})
        new = await in_thread(lambda: wait_until(lambda: [p for p in cm_ws_pids() if p not in pids], timeout=10))
        t.ok(new, "cm-ws is respawned within 10 s", {"old": pids, "now": cm_ws_pids()})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        ok_, last = False, None
        while loop.time() < deadline and not ok_:
            try:
                ss = await connect("/ws/%s" % cuid, {"tty": 0, "command": "echo back-$((1+1))"}, timeout=5)
                await ss.until(lambda: ss.closed, 10)
                ok_ = ss.out() == b"back-2\n" and ss.exit_codes() == [0]
                last = ss.summary()
            except Exception as e:
                last = repr(e)
            if not ok_:
                await asyncio.sleep(0.5)
        t.ok(ok_, "after the respawn a new session works", last)

    section(t, "kill -9 cm-ws", crash, 60)
    left = [x for x in ps_lines(cuid) if x in ("sleep 1241", "sleep 1242")]
    if left:
        t.diag("after kill -9 of cm-ws, processes of its sessions still run in the container: %s" % left)


# ----------------------------------------------------------------------------- main

def main(t):
    s = api()
    c = must_create(s, t, "create a container for the exec sessions")
    cuid = c["cuid"]
    t.status(action(s, cuid, "start"), 200, "start it")
    lc = must_create(s, t, "create a container that writes logs", command=["sh", "-c", LOG_LOOP])["cuid"]
    t.status(action(s, lc, "start"), 200, "start it")
    created = must_create(s, t, "create a container that is never started")["cuid"]
    st = must_create(s, t, "create a container to stop")["cuid"]
    t.status(action(s, st, "start"), 200, "start it")
    t.status(action(s, st, "stop", json={"timeout": 1}), 200, "stop it")

    preupgrade_tests(t, s, cuid, st, created)
    exec_tests(t, cuid)
    section(t, "aiohttp", lambda: aiohttp_tests(t, cuid), 40)
    logs_tests(t, s, lc)
    audit_tests(t, s)
    seed_tests(t, s, cuid)
    crash_tests(t, cuid)


if __name__ == "__main__":
    run(main)

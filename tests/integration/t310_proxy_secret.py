#!/usr/bin/python3
"""t310: the WebSocket helper trusts only its own nginx. Its two sockets (ws.sock, harpoon.sock)
are open to the whole www-data group, so another www-data process (a PHP pool, another site)
could name any user in X-CM-User; nginx proves itself with this start's secret header instead.
As user www-data: raw requests with a forged X-CM-User (no secret, a wrong secret, a truncated
one) to every endpoint of both sockets get 401 UNTRUSTED_PROXY and start nothing (no exec in
Docker); www-data cannot read the files that hold the secret, nor find it in any file of the
run directory it can read. Through nginx everything still works: a terminal, the WebSocket and
plain-HTTP log streams, harpoon's endpoints. A private stack shows the secret is new at every
start and is written to no log and no audit row."""
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

import websockets  # noqa: E402

WWW = ["setpriv", "--reuid=www-data", "--regid=www-data", "--init-groups"]
AUTH = "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()

# run as www-data: one raw request to a unix socket; prints the status line and the body
RAW = r"""
import socket, sys, json
path, req = sys.argv[1], sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(15)
try:
    s.connect(path)
except OSError as e:
    print(json.dumps({"connect_error": e.errno})); sys.exit(0)
s.sendall(req)
out = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
        if b"\r\n\r\n" in out:
            head, _, body = out.partition(b"\r\n\r\n")
            import re
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            if m and len(body) >= int(m.group(1)):
                break
            if head.startswith(b"HTTP/1.1 101"):
                break
except OSError:
    pass
head, _, body = out.partition(b"\r\n\r\n")
print(json.dumps({"status": head.split(b"\r\n")[0].decode("latin-1"), "body": body.decode("latin-1")}))
"""

# run as www-data: try to read each file; print what happened
READ = r"""
import sys, json, os
res = {}
for p in sys.argv[1:]:
    try:
        with open(p, "rb") as f:
            res[p] = f.read().decode("latin-1")
    except OSError as e:
        res[p] = "ERRNO %d" % e.errno
print(json.dumps(res))
"""


# run as www-data: one FastCGI request to the worker pool's socket (cmtest.fcgi_request)
FCGI = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from cmtest import fcgi_request
try:
    print(json.dumps({"out": fcgi_request(sys.argv[2], json.loads(sys.argv[3])).decode("latin-1")}))
except OSError as e:
    print(json.dumps({"connect_error": e.errno}))
"""


def run_dir():
    for p in find_procs("cm-ws"):
        m = re.search(r"--socket (\S+)/ws\.sock", p[3])
        if m:
            return m.group(1)
    return None


def as_www(code, *args):
    p = subprocess.run(WWW + ["/usr/bin/python3", "-c", code] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    try:
        return json.loads(p.stdout.decode())
    except ValueError:
        return {"error": p.stdout.decode()[-500:] + p.stderr.decode()[-500:]}


def raw_request(sock, method, path, headers, body=""):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: localhost"] + ["%s: %s" % h for h in headers]
    if body or method == "POST":
        lines += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
    req = "\r\n".join(lines) + "\r\n\r\n" + body
    return as_www(RAW, sock, req.encode("unicode_escape").decode("latin-1"))


def docker_exec_ids(cuid):
    info = docker_inspect(cuid)
    return set(info.get("ExecIDs") or []) if info else set()


async def terminal(cuid):
    url = "ws://" + URL.split("://", 1)[1] + "/ws/%s?tty=0&command=%s" % (cuid, "echo%20through-nginx")
    out, code = "", None
    async with websockets.connect(url, extra_headers={"Authorization": AUTH}, ping_interval=None,
                                  open_timeout=15) as ws:
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if m.get("type") == "stdout":
                out += base64.b64decode(m["data"]).decode() if m.get("encoding") == "base64" else m["data"]
            if m.get("type") == "exit":
                code = m.get("code")
                break
    return out, code


async def logs_ws(cuid):
    url = "ws://" + URL.split("://", 1)[1] + "/ws/%s/logs?tail=all&follow=0" % cuid
    out = ""
    async with websockets.connect(url, extra_headers={"Authorization": AUTH}, ping_interval=None,
                                  open_timeout=15) as ws:
        try:
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if m.get("type") == "stdout":
                    out += base64.b64decode(m["data"]).decode() if m.get("encoding") == "base64" else m["data"]
        except websockets.exceptions.ConnectionClosed:
            pass
    return out


def main(t):
    s = api()
    c = must_create(s, t, command=["sh", "-c", "echo hello-logs; sleep 3600"])["cuid"]
    action(s, c, "start")
    rd = run_dir()
    t.ok(rd is not None, "found the run directory from the helper's command line", rd)
    if not rd:
        return
    ws_sock, h_sock = os.path.join(rd, "ws.sock"), os.path.join(rd, "harpoon.sock")
    try:
        with open(os.path.join(rd, "proxy.secret")) as f:
            secret = f.read()
    except OSError as e:
        secret = "(none: %s)" % e
    t.ok(re.match(r"^[0-9a-f]{64}$", secret) is not None, "the secret is 256 random bits in hex")

    # ---------------------------------------------------------------- www-data cannot read it
    files = [os.path.join(rd, n) for n in ("proxy.secret", "proxysecret.conf", "proxysecret-fcgi.conf")]
    # the stack's user: whoever runs cm-ws (root under serve, the units' own user when packaged)
    stack_uid = os.getuid()
    for p in find_procs("cm-ws"):
        if rd in p[3]:
            try:
                with open("/proc/%d/status" % p[0]) as f:
                    stack_uid = int(next(x for x in f if x.startswith("Uid:")).split()[1])
            except (OSError, StopIteration, ValueError):
                pass
    for p in files:
        st = os.stat(p) if os.path.exists(p) else None
        t.ok(st and st.st_mode & 0o777 == 0o600 and st.st_uid == stack_uid,
             "%s: 0600, owned by the stack's user (nginx's master reads it)" % os.path.basename(p),
             oct(st.st_mode) if st else "missing")
    got = as_www(READ, *files)
    for p in files:
        t.ok(str(got.get(p, "")).startswith("ERRNO 13"), "www-data cannot read %s" % os.path.basename(p), got.get(p))
    readable = []
    for dirpath, _, names in os.walk(rd):
        readable += [os.path.join(dirpath, n) for n in names]
    got = as_www(READ, *readable)
    leaks = [p for p, v in got.items() if secret in v]
    t.ok(not leaks and "error" not in got, "no file of the run directory that www-data can read holds the secret", leaks or got.get("error"))

    # ---------------------------------------------------------------- forged requests as www-data
    ws_hdr = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
              ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
    forged = [("X-CM-User", USER), ("X-CM-Query", "tty=0&command=id")]
    wrong = "0" * 64
    variants = [("no secret", []), ("a wrong secret", [("X-CM-Proxy-Secret", wrong)]),
                ("the secret cut short", [("X-CM-Proxy-Secret", secret[:63])]),
                ("the secret with more after it", [("X-CM-Proxy-Secret", secret + "0")])]
    execs_before = docker_exec_ids(c)
    for label, extra in variants:
        cases = [
            ("terminal upgrade", ws_sock, "GET", "/ws/%s" % c, ws_hdr, ""),
            ("log stream upgrade", ws_sock, "GET", "/ws/%s/logs" % c, ws_hdr, ""),
            ("plain-HTTP logs", ws_sock, "GET", "/containers/%s/logs" % c, [], ""),
            ("start_container", h_sock, "POST", "/start_container", [], json.dumps({"image": "nope"})),
            ("stop_container", h_sock, "POST", "/stop_container", [], json.dumps({"image": "nope"})),
            ("unlock_container", h_sock, "POST", "/unlock_container", [], json.dumps({"image": "nope"})),
            ("shutdown", h_sock, "GET", "/shutdown", [], ""),
        ]
        for name, sock, method, path, hdr, body in cases:
            r = raw_request(sock, method, path, hdr + forged + extra, body)
            st = r.get("status", "")
            try:
                b = json.loads(r.get("body") or "{}")
            except ValueError:
                b = {}
            t.ok(st.startswith("HTTP/1.1 401 ") and b.get("code") == "UNTRUSTED_PROXY" and b.get("status") == 401,
                 "www-data, forged X-CM-User, %s: %s %s -> 401 UNTRUSTED_PROXY" % (label, name, path), r)
    t.ok(docker_exec_ids(c) == execs_before, "no exec was started in the container by the forged requests",
         docker_exec_ids(c) - execs_before)
    t.ok(s.get("/healthz").status_code == 200, "the stack still answers (the forged shutdown did nothing)")

    # ---------------------------------------------------------------- the worker pool's socket
    # as www-data, straight to fcgi.sock with the right password: whatever it claims (another
    # client address to dodge the login throttle, nginx's sub-request, its mark) is refused
    fsock = os.path.join(rd, "fcgi.sock")
    audit_before = db_query("SELECT count(*) AS n FROM audit WHERE error_code = 'UNTRUSTED_PROXY' AND remote_addr = 'untrusted'")[0]["n"]
    base = {"REQUEST_METHOD": "GET", "QUERY_STRING": "", "HTTP_AUTHORIZATION": AUTH, "HTTP_HOST": "localhost"}
    fcases = [
        ("GET /containers from a forged address", dict(base, DOCUMENT_URI="/containers", REMOTE_ADDR="198.51.100.7")),
        ("nginx's /_auth sub-request", dict(base, DOCUMENT_URI="/_auth", CM_AUTH_SUBREQUEST="1", REMOTE_ADDR="127.0.0.1")),
        ("a wrong secret", dict(base, DOCUMENT_URI="/containers", REMOTE_ADDR="127.0.0.1", CM_PROXY_SECRET=wrong)),
    ]
    for label, params in fcases:
        got = as_www(FCGI, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"), fsock, json.dumps(params))
        out = got.get("out", "")
        t.ok(out.startswith("Status: 401") and "UNTRUSTED_PROXY" in out,
             "www-data on fcgi.sock, %s, with the right password -> 401 UNTRUSTED_PROXY" % label, got)
    def audited():
        n = db_query("SELECT count(*) AS n FROM audit WHERE error_code = 'UNTRUSTED_PROXY' AND remote_addr = 'untrusted'")[0]["n"]
        return n if n - audit_before >= len(fcases) else None
    audit_after = wait_until(audited, timeout=10, interval=0.2) or audit_before
    t.ok(audit_after - audit_before == len(fcases), "each refusal is audited (%d rows)" % (audit_after - audit_before))
    forged_rows = db_query("SELECT count(*) AS n FROM audit WHERE remote_addr = '198.51.100.7'")[0]["n"]
    t.eq(forged_rows, 0, "the forged client address reaches no audit row")
    r = s.get("/containers/" + c)
    t.status(r, 200, "the same credentials through nginx still work")

    # ---------------------------------------------------------------- nginx still gets through
    out, code = asyncio.run(terminal(c))
    t.ok("through-nginx" in out and code == 0, "a terminal through nginx runs its command", (out, code))
    out = asyncio.run(logs_ws(c))
    t.ok("hello-logs" in out, "the WebSocket log stream through nginx", out[-300:])
    r = s.get("/containers/%s/logs" % c, params={"tail": "all"}, timeout=15)
    t.ok(r.status_code == 200 and "hello-logs" in r.text, "the plain-HTTP log stream through nginx",
         (r.status_code, r.text[-300:]))
    for path, body in (("/stop_container", {"image": "no-such-definition"}), ("/unlock_container", {"image": "no-such-definition"})):
        r = s.post(path, json=body, timeout=15)
        t.ok(r.status_code != 401 and r.headers.get("Content-Type", "").startswith("application/json")
             and jbody(r).get("code") != "UNTRUSTED_PROXY",
             "%s through nginx reaches the helper (%d %s)" % (path, r.status_code, jbody(r).get("code")), body_text(r))
    r = requests.post(URL + "/stop_container", json={"image": "no-such-definition"}, timeout=15)
    t.ok(r.status_code == 401 and jbody(r).get("code") in ("AUTH_REQUIRED", "INVALID_CREDENTIALS"),
         "without credentials nginx's auth still answers 401 first", body_text(r))

    # ---------------------------------------------------------------- new at each start, never logged
    if os.environ.get("CM_IT_NO_SERVE") == "1":
        t.skip("a private stack's secret is new at every start", "no serve launcher (the installed units)")
        return
    d = tempfile.mkdtemp(prefix="t310.", dir=os.environ.get("CM_IT_TMP", "/tmp"))
    os.chmod(d, 0o755)
    ps = PrivateStack(d, ["DEFAULT_USER_UID=1000:1000"])
    secrets = []
    try:
        for i in range(2):
            started = ps.start()
            t.ok(started, "private stack start %d" % (i + 1), ps.stderr[-800:])
            if not started:
                return
            prd = None
            for p in find_procs("cm-ws", root=ps.pid):
                m = re.search(r"--socket (\S+)/ws\.sock", p[3])
                if m:
                    prd = m.group(1)
            try:
                with open(os.path.join(prd, "proxy.secret")) as f:
                    secrets.append(f.read())
            except (OSError, TypeError) as e:
                t.ok(False, "private stack %d: its secret" % (i + 1), str(e))
            r = ps.session().post(ps.url + "/unlock_container", json={"image": "no-such-definition"}, timeout=15)
            t.ok(r.status_code != 401, "private stack %d: harpoon endpoint through nginx (%d)" % (i + 1, r.status_code),
                 body_text(r))
            # a forged request, so the rejection path has logged and audited too
            raw_request(os.path.join(prd, "harpoon.sock"), "GET", "/shutdown", forged)
            t.ok(ps.stop(), "private stack %d stops" % (i + 1))
        t.ok(len(secrets) == 2 and secrets[0] != secrets[1], "each start has a new secret")
        hits = []
        for dirpath, _, names in os.walk(d):
            for n in names:
                p = os.path.join(dirpath, n)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                with open(p, "rb") as f:
                    data = f.read()
                if any(x.encode() in data for x in secrets):
                    hits.append(p)
        t.ok(not hits, "neither secret is in any file of the data directory (logs, database, audit)", hits)
        rows = ps.db_query("SELECT count(*) FROM audit")
        t.ok(rows and rows[0][0] > 0, "the private stack audited its requests", rows)
    finally:
        ps.stop()
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    run(main)

#!/usr/bin/python3
"""t130: the ready-made audit queries run in the sqlite3 shell and find what happened; the
FastCGI, runner and WebSocket helper sockets cannot be opened by an unprivileged local user, and a request
that reaches the application without credentials is refused by the application itself."""
import glob
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

QUERIES = os.path.join(REPO, "sql", "audit")


def sqlite_shell(sql_file, *cmd):
    args = ["sqlite3", "-readonly", "-header", "-separator", "|"]
    for c in cmd:
        args += ["-cmd", c]
    with open(sql_file) as f:
        return subprocess.run(args + [DB], stdin=f, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)


def run_dir():
    for p in find_procs("cm-fcgi"):
        m = re.search(r"--socket (\S+)/fcgi\.sock", p[3])
        if m:
            return m.group(1)
    return None


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    action(s, c, "start")
    intruder = "mallory-" + rand_suffix()
    api(user=intruder, password="wrong").get("/containers")
    wait_until(lambda: db_query("SELECT 1 FROM audit WHERE user = ?", (intruder,)), timeout=5)
    wait_until(lambda: db_query("SELECT 1 FROM audit WHERE cuid = ? AND action = 'container.start'", (c,)), timeout=5)

    files = sorted(glob.glob(os.path.join(QUERIES, "*.sql")))
    t.ok(len(files) >= 4, "sql/audit holds the ready queries", files)
    for f in files:
        p = sqlite_shell(f, ".param set :cuid %s" % c)
        t.ok(p.returncode == 0 and b"Error" not in p.stdout, "sqlite3 runs %s" % os.path.basename(f), p.stdout.decode()[-800:])
    out = sqlite_shell(os.path.join(QUERIES, "failed-logins.sql")).stdout.decode()
    t.ok("127.0.0.1" in out and intruder in out, "failed-logins shows the address and the name tried", out)
    out = sqlite_shell(os.path.join(QUERIES, "container-history.sql"), ".param set :cuid %s" % c).stdout.decode()
    t.ok("container.create" in out and "container.start" in out, "container-history lists create and start", out)
    out = sqlite_shell(os.path.join(QUERIES, "actions-per-user.sql")).stdout.decode()
    t.ok(USER in out and "container.create" in out, "actions-per-user counts this user's creates", out)
    out = sqlite_shell(os.path.join(QUERIES, "slowest-requests.sql")).stdout.decode()
    t.ok(out.count("\n") >= 2, "slowest-requests returns rows", out)

    rd = run_dir()
    t.ok(rd is not None, "found the run directory from the pool's command line", rd)
    if rd:
        for name in ("fcgi.sock", "runner.sock", "audit.sock", "ws.sock"):
            path = os.path.join(rd, name)
            kind = "SOCK_DGRAM" if name == "audit.sock" else "SOCK_STREAM"
            code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX, socket.%s)\n"
                    "try:\n s.connect(%r); print('CONNECTED')\nexcept OSError as e:\n print('REFUSED', e.errno)" % (kind, path))
            p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c", code],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
            out = p.stdout.decode().strip()
            t.ok(out.startswith("REFUSED"), "user nobody cannot open %s" % name, out)
        # straight to the FastCGI socket, as root, with no Authorization: the app refuses it
        body = fcgi_request(os.path.join(rd, "fcgi.sock"), {"REQUEST_METHOD": "GET", "DOCUMENT_URI": "/containers",
                                                           "QUERY_STRING": "", "REMOTE_ADDR": "127.0.0.1"})
        t.ok(body.startswith(b"Status: 401") and b"auth_error" in body,
             "a request that bypasses nginx without credentials gets 401 from the application", body[:300])
        # and straight to the WebSocket helper's socket: no user named by nginx, no session
        s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s2.settimeout(10)
        s2.connect(os.path.join(rd, "ws.sock"))
        s2.sendall(b"GET /ws/c00000000-0000-0000-0000-000000000000 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                   b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = s2.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
        s2.close()
        t.ok(head.startswith(b"HTTP/1.1 401 "),
             "a WebSocket upgrade that bypasses nginx gets 401 from the helper", head[:300])


if __name__ == "__main__":
    run(main)

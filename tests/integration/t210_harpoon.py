#!/usr/bin/python3
"""t210 harpoon: `container-manager serve [FILE][:PORT]` with named image definitions
(harpoon's container manager, seed 000, issue #5), on private stacks started by this test.

Covered, each checked in Docker (Engine API over the unix socket), in the stack's SQLite
database (`builds`) and in /proc, not only in the API's answers:
  - serve FILE (free port chosen, PORT/PID written, foreground exits 0), FILE:PORT, :PORT (overrides
    CM_HTTP_LISTEN), no positional (127.0.0.1:4545, or CM_HTTP_LISTEN), --images, --no-auth,
    CM_AUTH=off, YAML and JSON definitions; start failures (busy port, bad definitions, bad env,
    --no-auth / CM_AUTH=off with a non-loopback listener) exit non-zero with a reason on stderr;
    the pre-bound HTTP listener is non-blocking in every nginx worker (/proc fdinfo)
  - start_container: answer shape, the container in Docker (image tag, port binding, running),
    the file served over the mapped port, every `ports` form, reuse (same id/port, just_created
    false, < 1 s), context files (`get`), wait_condition command/port_open
  - error bodies: 401, 404 IMAGE_DEFINITION_NOT_FOUND (details.available), 400 MISSING_FIELD,
    INVALID_VALUE, UNKNOWN_FIELD, 409 NOT_LOCKED, 408 timeout, 422 BUILD_FAILED (not poisoned)
  - builds: one build for 10 concurrent first calls, parallel builds of two images, no rebuild of
    an unchanged definition across a restart or in a fresh data dir (image exists), a changed one
    rebuilt under a new tag
  - locks: FIFO waiters, N locks need N unlocks, lock_timeout, a vanished waiter leaves the queue,
    per-image locks, 50 waiters while other calls answer quickly
  - stop: stop_container (removed from Docker), GET /shutdown (waiters 503 shutting_down, every
    start_container container removed, POST /containers containers kept, processes gone),
    SIGINT/SIGTERM timed (< 2 s)
"""
import base64
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

CLI = os.environ.get("CM_IT_CLI") or os.path.join(REPO, "cli", "container-manager")
TMP_ROOT = os.environ.get("CM_IT_TMP") or tempfile.gettempdir()
NONCE = rand_suffix(12)  # in every definition: this run's images never exist beforehand
HEX64 = re.compile(r"^[0-9a-f]{64}$")
VERSION_RE = re.compile(r"^container-manager \d+\.\d+\.\d+\s*$")
MISSING_BASE = "cm-it-missing-base:latest"
HARPOON_LABEL = "io.container-manager.harpoon"
INSTANCE_LABEL = "io.container-manager.instance"
ALL_TAGS = set()  # images the stacks of this test built (removed at the end)
STOP_BOUND = 2.0  # seconds: SIGINT/SIGTERM/shutdown to "supervisor gone, containers removed"


# ----------------------------------------------------------------------------- definitions

def sleeper(label, extra=()):
    return {"context": False,
            "commands": ["FROM " + IMAGE, ["ADD", {"dest": "/nonce", "content": "%s %s" % (label, NONCE)}]]
            + list(extra) + ['CMD ["sleep", "3600"]']}


WEB = {"context": False,
       "commands": ["FROM " + IMAGE,
                    ["ADD", {"dest": "/www/example_file", "content": "hello there"}],
                    ["ADD", {"dest": "/www/nonce", "content": NONCE}],
                    'CMD ["httpd", "-f", "-p", "4545", "-h", "/www"]'],
       "wait_condition": {"port_open": 4545}}
CTX_CONTENT = "from the context directory " + NONCE + "\n"


def defs_a(mutable="v1"):
    return {
        "web": WEB,
        "sleeper": sleeper("sleeper"),
        "lk": sleeper("lk"),
        "lk2": sleeper("lk2"),
        "conc": sleeper("conc"),
        "mutable": sleeper("mutable " + mutable),
        "ctx": {"context": "ctxdir",
                "commands": ["FROM " + IMAGE, ["ADD", {"dest": "/data/file.txt", "get": "sub/file.txt"}],
                             'CMD ["sleep", "3600"]']},
        "waitcmd": {"context": False,
                    "commands": ["FROM " + IMAGE, ["ADD", {"dest": "/nonce", "content": "waitcmd " + NONCE}],
                                 "RUN mkdir -p /w && chmod 777 /w",
                                 'CMD ["sh", "-c", "sleep 2; touch /w/ready; exec sleep 3600"]'],
                    "wait_condition": {"command": "test -f /w/ready", "timeout": 30}},
        "slowa": sleeper("slowa", ["RUN sleep 3"]),
        "slowb": sleeper("slowb", ["RUN sleep 3"]),
        "badbase": {"context": False,
                    "commands": ["FROM " + MISSING_BASE, ["ADD", {"dest": "/nonce", "content": "bad " + NONCE}],
                                 'CMD ["sleep", "3600"]']},
    }


def plain_ok(s):
    """A string YAML reads back unchanged as a plain scalar in block context (as the seed writes
    `- CMD python -m http.server 4545`)."""
    return bool(s) and (s[0].isalnum() or s[0] == "/") and s == s.strip() and ": " not in s and " #" not in s \
        and not s.endswith(":") and "\n" not in s and "\t" not in s \
        and s.lower() not in ("true", "false", "null", "yes", "no", "on", "off", "y", "n", "~") \
        and not re.match(r"^[-+0-9.:_eExXoObB]+$", s)


def yscalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    if plain_ok(s):
        return s
    return json.dumps(s)


def ylines(v, ind):
    """Block YAML in harpoon's style (`- - ADD` / `  - dest: ...`) for dicts and lists."""
    pad = " " * ind
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                out.append("%s%s:" % (pad, k))
                out.extend(ylines(x, ind + 2))
            else:
                out.append("%s%s: %s" % (pad, k, yscalar(x) if not isinstance(x, (dict, list)) else json.dumps(x)))
    else:
        for x in v:
            if isinstance(x, (dict, list)) and x:
                sub = ylines(x, ind + 2)
                sub[0] = pad + "- " + sub[0][ind + 2:]
                out.extend(sub)
            else:
                out.append("%s- %s" % (pad, yscalar(x) if not isinstance(x, (dict, list)) else json.dumps(x)))
    return out


def to_yaml(doc):
    return "---\n" + "\n".join(ylines(doc, 0)) + "\n"


# ----------------------------------------------------------------------------- processes

def proc_table():
    """pid -> {state, ppid, pgrp, sid, start, cmd}"""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                st = f.read().decode("utf-8", "replace")
            rest = st[st.rindex(")") + 2:].split()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            out[int(d)] = {"state": rest[0], "ppid": int(rest[1]), "pgrp": int(rest[2]), "sid": int(rest[3]),
                           "start": int(rest[19]), "cmd": cmd}
        except (OSError, ValueError, IndexError):
            continue
    return out


def alive(pid):
    """True while pid exists and is not a zombie (PID 1 here may not reap orphans)."""
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            st = f.read().decode("utf-8", "replace")
        return st[st.rindex(")") + 2:].split()[0] not in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return False


def descendants(root, table=None):
    table = table or proc_table()
    keep = {root} if root in table else set()
    changed = True
    while changed:
        changed = False
        for pid, p in table.items():
            if p["ppid"] in keep and pid not in keep:
                keep.add(pid)
                changed = True
    return {pid: table[pid] for pid in keep}


def port_listening(port):
    return tcp_connect_ok(port, timeout=1)


def listen_inodes(port):
    """Socket inodes of TCP listeners on `port` (from /proc/net/tcp and tcp6)."""
    out = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        out.add(parts[9])
        except OSError:
            continue
    return out


def listener_fds(pid, port):
    """[(fd, nonblocking)] of pid's descriptors on the TCP listener of port."""
    inodes = listen_inodes(port)
    out = []
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            m = re.match(r"^socket:\[(\d+)\]$", link)
            if not m or m.group(1) not in inodes:
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as fh:
                flags = [ln for ln in fh.read().splitlines() if ln.startswith("flags:")][0].split()[1]
            out.append((int(fd), bool(int(flags, 8) & os.O_NONBLOCK)))
        except (OSError, IndexError, ValueError):
            continue
    return out


# ----------------------------------------------------------------------------- Docker

def image_exists(ref):
    st, _ = docker_request("GET", "/images/%s/json" % urllib.parse.quote(ref, safe=""))
    return st == 200


def docker_rm(cid):
    try:
        docker_request("DELETE", "/containers/%s?force=1&v=1" % cid)
    except Exception:
        pass


def labelled(label_filters):
    flt = urllib.parse.quote(json.dumps({"label": label_filters}))
    st, body = docker_request("GET", "/containers/json?all=1&filters=%s" % flt)
    return body if st == 200 and isinstance(body, list) else []


def host_binding(info, cport="4545/tcp"):
    b = ((info or {}).get("NetworkSettings") or {}).get("Ports") or {}
    lst = b.get(cport) or []
    return lst[0] if lst else None


# ----------------------------------------------------------------------------- a private stack

class Stack:
    """One private `container-manager serve` with its own env file, data dir and definitions."""

    def __init__(self, t, name, defs=None, defs_json=False, auth="basic", https="off", images_in_env=True,
                 extra_env=(), ctx_files=None):
        self.t = t
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="t210-%s." % name, dir=TMP_ROOT)
        self.data = os.path.join(self.dir, "data")
        self.envf = os.path.join(self.dir, ".env")
        self.info = os.path.join(self.dir, "info")
        self.out = os.path.join(self.dir, "serve.out")
        self.err = os.path.join(self.dir, "serve.err")
        self.user = "t210"
        self.password = rand_suffix(16)
        self.auth = auth
        self.defs_path = None
        self.port = None
        self.pid = None  # the supervisor
        self.proc = None  # foreground Popen
        self.cli_pid = None
        self.sids = set()
        self.pgrps = set()
        self.known = {}  # pid -> start time of every process seen below the supervisor
        self.cids = set()
        self.instance = None
        for rel, content in (ctx_files or {}).items():
            p = os.path.join(self.dir, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(content)
        if defs is not None:
            self.write_defs(defs, defs_json)
        lines = ["CM_DATA_DIR=%s" % self.data]
        if https is not None:
            lines.append("CM_HTTPS_LISTEN=%s" % https)
        if self.defs_path and images_in_env:
            lines.append("CM_IMAGES=%s" % self.defs_path)
        if auth == "basic":
            lines += ["APP_USER=%s" % self.user, "APP_PASS=%s" % self.password]
        elif auth == "env-off":
            lines.append("CM_AUTH=off")
        elif auth == "flag":  # credentials exist, --no-auth turns them off
            lines += ["APP_USER=%s" % self.user, "APP_PASS=%s" % self.password]
        lines += list(extra_env)
        with open(self.envf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.envf, 0o600)
        t.add_cleanup(self.cleanup)

    def write_defs(self, defs, as_json=False):
        self.defs_path = self.defs_path or os.path.join(self.dir, "defs.json" if as_json else "defs.yml")
        doc = {"images": defs}
        with open(self.defs_path, "w") as f:
            f.write(json.dumps(doc, indent=2) if as_json else to_yaml(doc))

    # -------------------------------------------------------------- starting
    @staticmethod
    def child_env():
        env = {k: v for k, v in os.environ.items() if not re.match(r"^(CM_|APP_|WS_)", k)}
        return env

    def argv(self, spec, extra):
        a = [CLI, "serve"]
        if spec is not None:
            a.append(spec)
        return a + list(extra) + ["--env-file", self.envf]

    def start_bg(self, spec, extra=("--non-interactive",), timeout=120):
        """Runs `serve FILE[:PORT]` to completion. Returns {rc, out, err, elapsed}; on rc 0 the
        info file gives port and supervisor pid."""
        t0 = time.monotonic()
        with open(self.out, "w") as fo, open(self.err, "w") as fe:
            p = subprocess.Popen(self.argv(spec, extra), stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                 start_new_session=True, cwd=self.dir, env=self.child_env())
        self.cli_pid = p.pid
        self.sids.add(p.pid)
        self.pgrps.add(p.pid)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
            self.kill_groups()
            p.wait()
        res = {"rc": rc, "elapsed": time.monotonic() - t0, "out": self.read(self.out), "err": self.read(self.err),
               "argv": " ".join(self.argv(spec, extra))}
        res["info"] = self.read(self.info) if spec and spec.split(":")[0] == self.info else None
        if rc == 0 and res["info"] is not None:
            m = re.match(r"^(\d+)\n(\d+)\n$", res["info"])
            if m:
                self.port, self.pid = int(m.group(1)), int(m.group(2))
                self.snapshot()
        return res

    def start_fg(self, spec=None, extra=(), port=None, timeout=60):
        """Starts `serve [spec]` in the foreground (our child) and waits until /version answers on
        port. Returns None when up, else a description of what went wrong."""
        self.port = port
        self.out_f = open(self.out, "w")
        self.err_f = open(self.err, "w")
        self.proc = subprocess.Popen(self.argv(spec, extra), stdout=self.out_f, stderr=self.err_f,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir,
                                     env=self.child_env())
        self.pid = self.cli_pid = self.proc.pid
        self.sids.add(self.pid)
        self.pgrps.add(self.pid)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited with %s: %s" % (self.proc.returncode, self.read(self.err)[-2000:])
            try:
                r = self.session().get(self.base + "/version", timeout=2)
                last = "%s %s" % (r.status_code, r.text[:100])
                if r.status_code == 200:
                    self.snapshot()
                    return None
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        return "no answer on port %s within %ds (last: %s); stderr: %s" % (port, timeout, last, self.read(self.err)[-2000:])

    @staticmethod
    def read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def snapshot(self):
        """Remembers every process below the supervisor (to prove later that none is left)."""
        if not self.pid:
            return
        table = proc_table()
        for pid, p in descendants(self.pid, table).items():
            self.known[pid] = p["start"]
            self.sids.add(p["sid"])
            self.pgrps.add(p["pgrp"])

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def session(self, creds=True):
        s = requests.Session()
        if creds and self.auth in ("basic", "flag"):
            s.auth = (self.user, self.password)
        return s

    def post(self, path, body, creds=True, timeout=60, session=None):
        s = session or self.session(creds)
        kw = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
        if isinstance(body, (str, bytes)):
            kw["headers"] = {"Content-Type": "application/json"}
        return s.post(self.base + path, timeout=timeout, **kw)

    def get(self, path, creds=True, timeout=30):
        return self.session(creds).get(self.base + path, timeout=timeout)

    def start(self, image, ports=None, **kw):
        body = {"image": image, "ports": [] if ports is None else ports}
        body.update(kw)
        r = self.post("/start_container", body)
        b = jbody(r)
        if r.status_code == 200 and isinstance(b, dict) and isinstance(b.get("container_id"), str):
            self.cids.add(b["container_id"])
        return r

    # -------------------------------------------------------------- database
    def db_rows(self, sql, args=()):
        path = os.path.join(self.data, "db", "cm.sqlite")
        last = None
        for _ in range(50):
            try:
                conn = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True, timeout=10)
                conn.row_factory = sqlite3.Row
                try:
                    return [dict(r) for r in conn.execute(sql, args).fetchall()]
                finally:
                    conn.close()
            except sqlite3.OperationalError as e:
                last = e
                if "locked" in str(e) or "busy" in str(e):
                    time.sleep(0.1)
                    continue
                raise
        raise last

    def builds(self, image=None):
        if image is None:
            return self.db_rows("SELECT * FROM builds ORDER BY id")
        return self.db_rows("SELECT * FROM builds WHERE image = ? ORDER BY id", (image,))

    def instance_id(self):
        if self.instance is None:
            try:
                rows = self.db_rows("SELECT lower(hex(value)) AS v FROM settings WHERE key = 'instance_id'")
                if rows and rows[0]["v"]:
                    self.instance = rows[0]["v"][:16]
            except Exception:
                pass
        return self.instance

    def harpoon_containers(self):
        """Docker containers of this stack's instance that start_container made."""
        inst = self.instance_id()
        if not inst:
            return []
        return labelled(["%s=%s" % (INSTANCE_LABEL, inst), HARPOON_LABEL])

    # -------------------------------------------------------------- stopping
    def supervisor_alive(self):
        if self.proc is not None and self.proc.pid == self.pid:
            return self.proc.poll() is None
        return alive(self.pid)

    def leftovers(self):
        """Processes of this stack still running (remembered pids, its sessions, or its dir in argv)."""
        me = os.getpid()
        out = []
        for pid, p in proc_table().items():
            if pid == me or p["state"] in ("Z", "X"):
                continue
            if self.known.get(pid) == p["start"] or p["sid"] in self.sids or self.dir in p["cmd"]:
                out.append((pid, p["cmd"]))
        return out

    def kill_groups(self):
        mine = os.getpgrp()
        for g in self.pgrps:
            if g and g != mine and g > 1:
                try:
                    os.killpg(g, signal.SIGKILL)
                except OSError:
                    pass
        for pid, _ in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def signal_and_time(self, sig, cids, bound=10.0):
        """Sends sig to the supervisor and waits until it is gone and every container in cids is
        gone from Docker. Returns (seconds or None, containers still there)."""
        self.snapshot()
        t0 = time.monotonic()
        os.kill(self.pid, sig)
        left = set(cids)
        done = None
        while time.monotonic() - t0 < bound:
            if not self.supervisor_alive():
                left = {c for c in left if docker_inspect(c) is not None}
                if not left:
                    done = time.monotonic() - t0
                    break
            time.sleep(0.02)
        return done, sorted(left)

    def check_gone(self, t, label, cids, timeout=5.0):
        """The supervisor, every process it had and every start_container container are gone."""
        gone = wait_until(lambda: not self.supervisor_alive(), timeout=timeout, interval=0.05)
        t.ok(gone, "%s: the supervisor (pid %s) exited" % (label, self.pid),
             None if gone else {"cmd": proc_table().get(self.pid, {}).get("cmd")})
        left = wait_until(lambda: not self.leftovers(), timeout=3.0) or self.leftovers()
        t.ok(left is True, "%s: no process of the stack is left" % label, None if left is True else left)
        t.ok(not port_listening(self.port), "%s: nothing listens on port %s any more" % (label, self.port))
        still = [c[:12] for c in cids if docker_inspect(c) is not None]
        t.ok(not still, "%s: every start_container container is gone from Docker (%d)" % (label, len(cids)),
             None if not still else {"still_in_docker": still})
        extra = [c["Id"][:12] for c in self.harpoon_containers()]
        t.ok(not extra, "%s: no start_container container of this instance in Docker" % label,
             None if not extra else {"labelled": extra})

    def cleanup(self):
        if self.pid and self.supervisor_alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except OSError:
                pass
            wait_until(lambda: not self.supervisor_alive(), timeout=15, interval=0.1)
        if self.leftovers() or (self.pid and self.supervisor_alive()):
            self.kill_groups()
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()
            self.out_f.close()
            self.err_f.close()
        inst = self.instance_id()
        if inst:
            for c in labelled(["%s=%s" % (INSTANCE_LABEL, inst)]):
                docker_rm(c["Id"])
        for c in self.cids:
            docker_rm(c)
        try:
            for b in self.builds():
                if b.get("tag"):
                    ALL_TAGS.add(b["tag"])
        except Exception:
            pass
        if not os.environ.get("CM_IT_TMP") and not self.t.failed:  # the runner removes its own temp dir
            shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- helpers

def background_call(st, path, body, timeout=60, creds=True):
    """POST in a thread; returns a dict filled with r/exc and t (completion time) when done."""
    res = {"sent": time.monotonic()}

    def go():
        try:
            res["r"] = st.post(path, body, creds=creds, timeout=timeout)
        except Exception as e:
            res["exc"] = e
        res["t"] = time.monotonic()

    th = threading.Thread(target=go, daemon=True)
    res["thread"] = th
    th.start()
    return res


def finished(calls):
    return [c for c in calls if "t" in c]


def describe(res):
    if "r" in res:
        return {"status": res["r"].status_code, "body": body_text(res["r"], 500)}
    if "exc" in res:
        return {"exception": repr(res["exc"])}
    return {"pending": True}


def raw_request(port, method, path, body, auth=None):
    """Sends one HTTP/1.1 request on a plain socket and returns the socket (not read)."""
    data = json.dumps(body).encode() if body is not None else b""
    hdr = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % port, "Content-Type: application/json",
           "Content-Length: %d" % len(data)]
    if auth:
        hdr.append("Authorization: Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode())
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("\r\n".join(hdr) + "\r\n\r\n").encode() + data)
    return s


def answered(sock):
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def start_ok(t, st, image, name, ports=None, expect_created=None, **kw):
    """start_container that must answer 200 with the contract's shape; returns the body or None."""
    t0 = time.monotonic()
    r = st.start(image, ports, **kw)
    el = time.monotonic() - t0
    if not t.status(r, 200, "%s (%.2fs)" % (name, el)):
        return None
    b = jbody(r) or {}
    problems = []
    if set(b) != {"ports", "just_created", "container_id"}:
        problems.append("keys %s" % sorted(b))
    if not isinstance(b.get("container_id"), str) or not HEX64.match(b.get("container_id") or ""):
        problems.append("container_id is not 64 hex")
    if not isinstance(b.get("ports"), dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in (b.get("ports") or {}).values()):
        problems.append("ports is not an object of integers")
    if not isinstance(b.get("just_created"), bool):
        problems.append("just_created is not a boolean")
    elif expect_created is not None and b["just_created"] != expect_created:
        problems.append("just_created %r, expected %r" % (b["just_created"], expect_created))
    t.ok(not problems, "%s: answer {ports, just_created%s, container_id}" % (
        name, "" if expect_created is None else ": " + str(expect_created).lower()),
        None if not problems else {"problems": problems, "body": b})
    b["_elapsed"] = el
    return b


def check_running(t, name, cid, tag_prefix):
    info = docker_inspect(cid)
    problems = []
    if info is None:
        problems.append("docker inspect 404")
    else:
        if not (info.get("State") or {}).get("Running"):
            problems.append("not running: %s" % (info.get("State") or {}).get("Status"))
        img = (info.get("Config") or {}).get("Image") or ""
        if not re.match(r"^%s:[0-9a-f]{16}$" % re.escape(tag_prefix), img):
            problems.append("Config.Image %r is not %s:<16 hex>" % (img, tag_prefix))
    t.ok(not problems, "%s: Docker has container %s running %s:<16 hex>" % (name, cid[:12], tag_prefix),
         None if not problems else problems)
    return info


def fetch(port, path="/example_file"):
    try:
        r = requests.get("http://127.0.0.1:%d%s" % (port, path), timeout=5)
        return r.status_code, r.text
    except requests.RequestException as e:
        return None, repr(e)


# ----------------------------------------------------------------------------- sections

def section_startup(t, A):
    res = A.start_bg(A.info)
    ok = t.ok(res["rc"] == 0, "serve FILE --non-interactive exits 0 once the stack answers (%.1fs)" % res["elapsed"],
              res)
    t.ok(res["info"] is not None and re.match(r"^\d+\n\d+\n$", res["info"] or ""),
         "serve FILE: the file holds 'PORT\\nPID\\n'", {"file": res["info"]})
    if not ok or not A.pid:
        return False
    t.ok(A.port != 4545 and 1024 < A.port < 65536, "serve FILE picked a port itself (%s)" % A.port)
    t.ok(A.supervisor_alive() and "container-manager" in proc_table().get(A.pid, {}).get("cmd", ""),
         "the PID in the file is a running container-manager (the supervisor)",
         {"pid": A.pid, "cmd": proc_table().get(A.pid, {}).get("cmd")})
    t.ok(A.pid != A.cli_pid and not alive(A.cli_pid), "the foreground command is gone, the supervisor runs on",
         {"cli_pid": A.cli_pid, "supervisor": A.pid})
    r = A.get("/version")
    t.ok(r.status_code == 200 and VERSION_RE.match(r.text), "GET /version -> 'container-manager X.Y.Z'",
         {"status": r.status_code, "body": r.text[:200]})
    r = A.get("/healthz")
    t.status(r, 200, "GET /healthz on the private stack")
    # nginx's workers share the HTTP listener; a blocking one lets a worker that lost the race for a
    # connection sleep in accept(), and the requests it already holds wait until the next connection
    tab = proc_table()
    workers = [pid for pid, p in descendants(A.pid, tab).items() if p["cmd"].startswith("nginx: worker")]
    fds = {pid: listener_fds(pid, A.port) for pid in workers}
    t.ok(workers and all(fds[w] and all(nb for _, nb in fds[w]) for w in workers),
         "the HTTP listener is non-blocking in every nginx worker (%d)" % len(workers),
         {"fds (fd, O_NONBLOCK) per worker": fds})
    return True


def section_auth(t, A):
    ref = jbody(A.get("/version", creds=False)) or {}
    codes = {}
    for path, body in (("/start_container", {"image": "web", "ports": [[0, 4545]]}),
                       ("/stop_container", {"image": "web"}), ("/unlock_container", {"image": "web"})):
        r = A.post(path, body, creds=False)
        b = check_error(t, r, 401, "auth_error", None, name="no credentials: POST %s" % path)
        codes[path] = (b or {}).get("code")
        t.ok(r.headers.get("WWW-Authenticate", "").startswith("Basic"), "no credentials: POST %s: WWW-Authenticate Basic"
             % path, dict(r.headers))
    s = requests.Session()
    s.auth = (A.user, A.password + "x")
    r = A.post("/start_container", {"image": "web", "ports": []}, session=s)
    check_error(t, r, 401, "auth_error", name="wrong password: POST /start_container")
    r = A.get("/shutdown", creds=False)
    b = check_error(t, r, 401, "auth_error", None, name="no credentials: GET /shutdown")
    codes["/shutdown"] = (b or {}).get("code")
    t.ok(all(c == ref.get("code") for c in codes.values()),
         "no credentials: the harpoon routes give the REST API's code (%s)" % ref.get("code"), codes)
    time.sleep(0.3)
    t.ok(A.supervisor_alive() and A.get("/version").status_code == 200,
         "an unauthenticated /shutdown leaves the stack running")
    t.ok(not A.harpoon_containers(), "no container was started by unauthenticated calls",
         [c["Id"][:12] for c in A.harpoon_containers()])


def section_errors(t, A, names):
    r = A.start("nope-" + NONCE[:4], [[0, 4545]])
    b = check_error(t, r, 404, "not_found", "IMAGE_DEFINITION_NOT_FOUND", name="start_container of an unknown definition")
    avail = ((b or {}).get("details") or {}).get("available")
    t.ok(isinstance(avail, list) and sorted(avail) == sorted(names),
         "404 details.available lists every defined name", {"got": avail, "expected": sorted(names)})
    cases = [
        ("missing image", {"ports": [[0, 4545]]}, "MISSING_FIELD", "image"),
        ("missing ports", {"image": "web"}, "MISSING_FIELD", "ports"),
        ("image is a number", {"image": 5, "ports": []}, "INVALID_VALUE", "image"),
        ("image is null", {"image": None, "ports": []}, {"INVALID_VALUE", "MISSING_FIELD"}, "image"),
        ("ports is a string", {"image": "web", "ports": "4545"}, "INVALID_VALUE", None),
        ("ports is an object", {"image": "web", "ports": {"4545": 0}}, "INVALID_VALUE", None),
        ("port pair with a word", {"image": "web", "ports": [["a", 4545]]}, "INVALID_VALUE", None),
        ("container port 70000", {"image": "web", "ports": [[0, 70000]]}, "INVALID_VALUE", None),
        ("container port 0", {"image": "web", "ports": [0]}, "INVALID_VALUE", None),
        ("negative port", {"image": "web", "ports": [-1]}, "INVALID_VALUE", None),
        ("one-element pair", {"image": "web", "ports": [[4545]]}, "INVALID_VALUE", None),
        ("three-element pair", {"image": "web", "ports": [[0, 4545, 1]]}, "INVALID_VALUE", None),
        ("'x:y' string", {"image": "web", "ports": ["x:y"]}, "INVALID_VALUE", None),
        ("'1:2:3:4545' string", {"image": "web", "ports": ["1:2:3:4545"]}, "INVALID_VALUE", None),
        ("object in ports", {"image": "web", "ports": [{}]}, "INVALID_VALUE", None),
        ("lock is a string", {"image": "web", "ports": [], "lock": "yes"}, "INVALID_VALUE", "lock"),
        ("lock_timeout is a string", {"image": "web", "ports": [], "lock": True, "lock_timeout": "soon"},
         "INVALID_VALUE", "lock_timeout"),
        ("unknown key", {"image": "web", "ports": [], "bogus": 1}, "UNKNOWN_FIELD", "bogus"),
    ]
    for label, body, code, field in cases:
        r = A.post("/start_container", body)
        fld = field if field is not None else (lambda f: isinstance(f, str) and f.startswith("ports"))
        check_error(t, r, 400, None, code, field=fld, name="start_container, %s" % label)
    for label, raw in (("invalid JSON", "{\"image\": "), ("JSON array", "[1, 2]")):
        r = A.post("/start_container", raw)
        check_error(t, r, 400, None, None, name="start_container, %s" % label)
    for path in ("/stop_container", "/unlock_container"):
        r = A.post(path, {})
        check_error(t, r, 400, None, "MISSING_FIELD", field="image", name="%s without image" % path)
        r = A.post(path, {"image": "web", "bogus": True})
        check_error(t, r, 400, None, "UNKNOWN_FIELD", field="bogus", name="%s with an unknown key" % path)
    left = A.harpoon_containers()
    t.ok(not left, "no container was started by refused calls", [c["Id"][:12] for c in left])
    t.ok(A.builds() == [], "no build was started by refused calls", A.builds())


def section_web(t, A):
    """The seed's example: build, start, port mapped, file served, reuse, every ports form."""
    b = start_ok(t, A, "web", "start_container web [[0, 4545]] (first call: build + start)", [[0, 4545]],
                 expect_created=True)
    if not b:
        return None
    cid = b["container_id"]
    hp = (b.get("ports") or {}).get("4545")
    t.eq(sorted(b["ports"]), ["4545"], "ports answer has exactly the key '4545'")
    info = check_running(t, "web", cid, "cm-def-web")
    bind = host_binding(info)
    t.ok(bind is not None and str(bind.get("HostPort")) == str(hp),
         "Docker publishes 4545/tcp on the host port of the answer (%s)" % hp, {"binding": bind, "answer": hp})
    st, text = fetch(hp)
    t.ok(st == 200 and text == "hello there", "GET http://127.0.0.1:%s/example_file -> 'hello there'" % hp,
         {"status": st, "body": text[:300] if text else text})
    rows = A.builds("web")
    tag = (info or {}).get("Config", {}).get("Image")
    t.ok(len(rows) == 1 and rows[0]["status"] == "succeeded" and rows[0]["tag"] == tag and
         re.match(r"^cm-def-web:[0-9a-f]{16}$", rows[0]["tag"] or "") and (rows[0]["log"] or "").strip(),
         "builds: one succeeded row for web, tag = the container's image, with a log",
         [{k: (v[:200] if isinstance(v, str) else v) for k, v in row.items()} for row in rows])
    t.ok(bool(tag) and image_exists(tag), "the image %s exists in Docker" % tag)
    t.ok(len(rows) == 1 and HEX64.match(rows[0]["hash"] or "") and tag == "cm-def-web:" + rows[0]["hash"][:16],
         "the tag is cm-def-web:<first 16 hex of the build's hash>", {"tag": tag, "rows": [r["hash"] for r in rows]})

    times = []
    same = True
    for i in range(5):
        t0 = time.monotonic()
        r = A.start("web", [[0, 4545]])
        times.append(time.monotonic() - t0)
        bb = jbody(r) or {}
        if r.status_code != 200 or bb.get("container_id") != cid or bb.get("ports") != {"4545": hp} \
                or bb.get("just_created") is not False:
            same = False
            t.diag("repeat %d: %s %s" % (i, r.status_code, body_text(r, 300)))
    t.diag("repeated start_container of a running image: %s s" % ", ".join("%.3f" % x for x in times))
    t.ok(same, "5 repeated start_container web: same container_id and port, just_created false")
    t.ok(max(times) < 1.0, "each repeated start_container answers in under a second (max %.3fs)" % max(times))
    t.eq(len(A.builds("web")), 1, "repeated starts build nothing")

    # every form of `ports`: stop (removed from Docker), start again with the form
    fixed = free_port()
    forms = [([4545], None, None), (["4545"], None, None), (["0:4545"], None, None),
             (["127.0.0.1:0:4545"], "127.0.0.1", None), ([[fixed, 4545]], None, fixed)]
    last = cid
    for form, want_ip, want_port in forms:
        t0 = time.monotonic()
        r = A.post("/stop_container", {"image": "web"})
        el = time.monotonic() - t0
        t.ok(r.status_code == 204 and r.content == b"", "stop_container web -> 204, empty body (%.2fs)" % el,
             {"status": r.status_code, "body": body_text(r)})
        gone = wait_until(lambda: docker_inspect(last) is None, timeout=3)
        t.ok(gone, "after stop_container, container %s is removed from Docker (inspect 404)" % last[:12])
        bb = start_ok(t, A, "web", "start_container web ports=%s" % json.dumps(form), form, expect_created=True)
        if not bb:
            continue
        t.ok(bb["container_id"] != last, "a new container after stop_container")
        last = bb["container_id"]
        hp2 = (bb.get("ports") or {}).get("4545")
        t.ok(sorted(bb["ports"]) == ["4545"] and isinstance(hp2, int) and (want_port is None or hp2 == want_port),
             "ports=%s: answer maps 4545 to %s" % (json.dumps(form), want_port or "a host port"), bb["ports"])
        info = docker_inspect(last)
        bind = host_binding(info)
        problems = []
        if bind is None or str(bind.get("HostPort")) != str(hp2):
            problems.append("binding %r vs answer %r" % (bind, hp2))
        if want_ip and (bind or {}).get("HostIp") != want_ip:
            problems.append("HostIp %r, expected %s" % ((bind or {}).get("HostIp"), want_ip))
        t.ok(not problems, "ports=%s: Docker's binding matches" % json.dumps(form), problems)
        st, text = fetch(hp2) if isinstance(hp2, int) else (None, None)
        t.ok(st == 200 and text == "hello there", "ports=%s: example_file served on %s" % (json.dumps(form), hp2),
             {"status": st, "body": text})
    r = A.post("/stop_container", {"image": "web"})
    t.ok(r.status_code == 204 and wait_until(lambda: docker_inspect(last) is None, timeout=3),
         "stop_container web -> 204 and removed")
    r = A.post("/stop_container", {"image": "web"})
    t.status(r, 204, "stop_container web when nothing runs")
    b = start_ok(t, A, "web", "start_container web [[0, 4545]] again", [[0, 4545]], expect_created=True)
    t.eq(len(A.builds("web")), 1, "start/stop cycles never rebuilt web")
    return b


def section_misc_defs(t, A):
    # ports [] on a definition without wait_condition
    b = start_ok(t, A, "sleeper", "start_container sleeper ports=[]", [], expect_created=True)
    if b:
        t.eq(b["ports"], {}, "ports=[] answers ports {}")
        info = check_running(t, "sleeper", b["container_id"], "cm-def-sleeper")
        binds = ((info or {}).get("HostConfig") or {}).get("PortBindings") or {}
        t.ok(not binds, "ports=[]: no port binding in Docker", binds)
    # context directory + get
    b = start_ok(t, A, "ctx", "start_container ctx (context dir, ADD get)", [], expect_created=True)
    if b:
        check_running(t, "ctx", b["container_id"], "cm-def-ctx")
        rc, out = docker_exec(b["container_id"], ["cat", "/data/file.txt"])
        t.ok(rc == 0 and out == CTX_CONTENT, "ctx: /data/file.txt in the container is the context's sub/file.txt",
             {"rc": rc, "out": out[:300]})
    # wait_condition command
    t0 = time.monotonic()
    b = start_ok(t, A, "waitcmd", "start_container waitcmd (wait_condition command)", [], expect_created=True)
    if b:
        el = time.monotonic() - t0
        rc, out = docker_exec(b["container_id"], ["test", "-f", "/w/ready"])
        t.ok(rc == 0, "waitcmd: when start_container answers, the wait command's file exists (%.1fs)" % el,
             {"rc": rc, "out": out})
        info = docker_inspect(b["container_id"])
        started = parse_time(((info or {}).get("State") or {}).get("StartedAt"))
        t.ok(el >= 1.5, "waitcmd: the answer waited for the condition (%.1fs >= 1.5s)" % el,
             {"started_at": str(started)})


def section_concurrency(t, A):
    n = 10
    barrier = threading.Barrier(n)

    def one(_):
        s = A.session()
        barrier.wait()
        t0 = time.monotonic()
        try:
            r = A.post("/start_container", {"image": "conc", "ports": []}, session=s)
            return r.status_code, jbody(r), time.monotonic() - t0
        except Exception as e:
            return None, repr(e), time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        res = list(ex.map(one, range(n)))
    statuses = [r[0] for r in res]
    t.ok(all(s == 200 for s in statuses), "10 concurrent first start_container conc -> all 200", res)
    ids = {(r[1] or {}).get("container_id") for r in res if isinstance(r[1], dict)}
    created = [r for r in res if isinstance(r[1], dict) and r[1].get("just_created") is True]
    t.ok(len(ids) == 1 and None not in ids, "all 10 got the same container_id", sorted(map(str, ids)))
    t.eq(len(created), 1, "exactly one of the 10 says just_created true")
    for i in ids:
        if i:
            A.cids.add(i)
    rows = A.builds("conc")
    t.eq(len(rows), 1, "builds: exactly one build of conc for 10 concurrent calls",
         [{k: v for k, v in row.items() if k != "log"} for row in rows])
    if len(ids) == 1 and None not in ids:
        check_running(t, "conc", ids.pop(), "cm-def-conc")
    conc = A.harpoon_containers()
    names = [((c.get("Labels") or {}).get(HARPOON_LABEL)) for c in conc]
    t.eq(names.count("conc"), 1, "Docker holds exactly one container for conc", names)

    # two slow images build in parallel
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        futs = [ex.submit(lambda img: (A.start(img, []), time.monotonic() - t0), img) for img in ("slowa", "slowb")]
        res = [f.result() for f in futs]
    total = time.monotonic() - t0
    t.diag("slowa + slowb (RUN sleep 3 each) started together: %.2fs in all (%s)" % (
        total, ", ".join("%.2f" % x[1] for x in res)))
    t.ok(all(r.status_code == 200 for r, _ in res), "slowa and slowb -> 200",
         [(r.status_code, body_text(r, 300)) for r, _ in res])
    for r, _ in res:
        if r.status_code == 200:
            A.cids.add(r.json()["container_id"])
    ra, rb = A.builds("slowa"), A.builds("slowb")
    if len(ra) == 1 and len(rb) == 1 and ra[0]["finished_at"] and rb[0]["finished_at"]:
        a, b = ra[0], rb[0]
        # builds.started_at/finished_at are in milliseconds
        da, db = (a["finished_at"] - a["started_at"]) / 1000.0, (b["finished_at"] - b["started_at"]) / 1000.0
        overlap = (min(a["finished_at"], b["finished_at"]) - max(a["started_at"], b["started_at"])) / 1000.0
        t.diag("builds: slowa %.2fs, slowb %.2fs, overlapping %.2fs" % (da, db, overlap))
        t.ok(overlap >= 2.0, "the builds of slowa and slowb ran at the same time (overlap %.2fs >= 2s)" % overlap,
             {"slowa": [a["started_at"], a["finished_at"]], "slowb": [b["started_at"], b["finished_at"]]})
        t.ok(total < 0.75 * (da + db), "wall time %.2fs is well under the sum of the two builds (%.2fs)" % (total, da + db))
    else:
        t.ok(False, "one finished builds row each for slowa and slowb", {"slowa": ra, "slowb": rb})


def section_build_failure(t, A):
    st, _ = docker_request("DELETE", "/images/%s" % urllib.parse.quote(MISSING_BASE, safe=""))
    t.ok(not image_exists(MISSING_BASE), "%s does not exist locally" % MISSING_BASE)
    t0 = time.monotonic()
    r = A.start("badbase", [])
    el = time.monotonic() - t0
    b = check_error(t, r, 422, None, "BUILD_FAILED", name="start_container badbase (FROM a missing image) (%.1fs)" % el)
    rows = A.builds("badbase")
    t.ok(len(rows) == 1 and rows[0]["status"] == "failed" and (rows[0]["error"] or "").strip(),
         "builds: one failed row for badbase with its error", rows)
    msg = (b or {}).get("message") or ""
    err = ((rows[0]["error"] or "") if rows else "").strip()
    t.ok("cm-it-missing-base" in msg or (err and err[:60] in msg),
         "the 422 message carries the build's error", {"message": msg, "builds.error": err})
    t.ok(not [c for c in A.harpoon_containers() if (c.get("Labels") or {}).get(HARPOON_LABEL) == "badbase"],
         "no container for badbase after a failed build")
    st, body = docker_request("POST", "/images/%s/tag?repo=cm-it-missing-base&tag=latest" % urllib.parse.quote(IMAGE, safe=""))
    t.ok(st == 201, "docker tag %s %s" % (IMAGE, MISSING_BASE), {"status": st, "body": body})
    b = start_ok(t, A, "badbase", "start_container badbase after the base exists (not poisoned)", [], expect_created=True)
    rows = A.builds("badbase")
    t.ok(len(rows) == 2 and rows[-1]["status"] == "succeeded", "builds: the second badbase build succeeded",
         [{k: v for k, v in row.items() if k != "log"} for row in rows])
    if b:
        check_running(t, "badbase", b["container_id"], "cm-def-badbase")


def section_locks(t, A):
    r = A.post("/unlock_container", {"image": "lk"})
    check_error(t, r, 409, "conflict", "NOT_LOCKED", name="unlock_container lk with nothing held")
    h = start_ok(t, A, "lk", "start_container lk lock:true (first holder)", [], lock=True)
    if not h:
        return
    # per image: lk2 is not held up by lk's lock
    b = start_ok(t, A, "lk2", "start_container lk2 lock:true while lk is held (locks are per image)", [], lock=True)
    r = A.post("/unlock_container", {"image": "lk2"})
    t.status(r, 204, "unlock_container lk2")
    r = A.post("/unlock_container", {"image": "lk2"})
    check_error(t, r, 409, "conflict", "NOT_LOCKED", name="unlock_container lk2 a second time")

    # FIFO: 4 waiters queued 0.3 s apart
    waiters = []
    for i in range(4):
        waiters.append(background_call(A, "/start_container", {"image": "lk", "ports": [], "lock": True}))
        time.sleep(0.3)
    time.sleep(0.7)
    t.ok(not finished(waiters), "4 lock:true calls wait while lk is held", [describe(w) for w in waiters])
    order = []
    for i in range(4):
        t0 = time.monotonic()
        r = A.post("/unlock_container", {"image": "lk"})
        t.status(r, 204, "unlock_container lk #%d" % (i + 1))
        wait_until(lambda: len(finished(waiters)) > i, timeout=5, interval=0.02)
        time.sleep(0.3)  # would another one be released too?
        done = [j for j, w in enumerate(waiters) if "t" in w and j not in order]
        order.extend(done)
        w = waiters[done[0]] if done else None
        t.ok(len(done) == 1, "unlock #%d releases exactly one waiter (%s)" % (
            i + 1, "%.2fs" % (w["t"] - t0) if w else "none"), [describe(x) for x in waiters])
        if w is not None:
            rr = w.get("r")
            t.ok(rr is not None and rr.status_code == 200 and (jbody(rr) or {}).get("container_id") == h["container_id"]
                 and (jbody(rr) or {}).get("just_created") is False,
                 "the released waiter gets 200 with lk's container, just_created false", describe(w))
    t.eq(order, [0, 1, 2, 3], "waiters were released in FIFO order")
    r = A.post("/unlock_container", {"image": "lk"})
    t.status(r, 204, "unlock #5 releases the last holder (5 locked starts, 5 unlocks)")
    r = A.post("/unlock_container", {"image": "lk"})
    check_error(t, r, 409, "conflict", "NOT_LOCKED", name="unlock #6 finds nothing held")

    # lock_timeout
    start_ok(t, A, "lk", "start_container lk lock:true (holder)", [], lock=True)
    t0 = time.monotonic()
    r = A.start("lk", [], lock=True, lock_timeout=1)
    el = time.monotonic() - t0
    check_error(t, r, 408, "timeout", None, name="lock:true lock_timeout:1 while held (%.2fs)" % el)
    t.ok(0.8 <= el < 5, "the timeout answer came after about 1 s (%.2fs)" % el)
    r = A.post("/unlock_container", {"image": "lk"})
    t.status(r, 204, "unlock_container lk releases the holder")
    r = A.post("/unlock_container", {"image": "lk"})
    check_error(t, r, 409, "conflict", "NOT_LOCKED", name="the timed-out waiter never took the lock")

    # a waiter whose client disconnects leaves the queue
    start_ok(t, A, "lk", "start_container lk lock:true (holder again)", [], lock=True)
    sock = raw_request(A.port, "POST", "/start_container", {"image": "lk", "ports": [], "lock": True},
                       auth=(A.user, A.password))
    time.sleep(0.7)
    t.ok(not answered(sock), "a raw-socket lock:true waiter is held open")
    w2 = background_call(A, "/start_container", {"image": "lk", "ports": [], "lock": True})
    time.sleep(0.5)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    time.sleep(1.0)
    t.ok("t" not in w2, "the second waiter still waits", describe(w2))
    t0 = time.monotonic()
    r = A.post("/unlock_container", {"image": "lk"})
    t.status(r, 204, "unlock_container lk (holder)")
    wait_until(lambda: "t" in w2, timeout=5, interval=0.02)
    t.ok("r" in w2 and w2["r"].status_code == 200,
         "the unlock went to the live waiter, not the disconnected one (%s)" % (
             "%.2fs" % (w2["t"] - t0) if "t" in w2 else "still waiting"), describe(w2))
    r = A.post("/unlock_container", {"image": "lk"})
    t.status(r, 204, "unlock_container lk (the live waiter's lock)")
    r = A.post("/unlock_container", {"image": "lk"})
    check_error(t, r, 409, "conflict", "NOT_LOCKED", name="the disconnected waiter holds nothing")


def section_shutdown(t, A):
    """50 waiters while other calls answer quickly, then GET /shutdown."""
    rest = requests.Session()
    rest.auth = (A.user, A.password)
    r = rest.post(A.base + "/containers", json={"image": IMAGE, "command": ["sleep", "3600"]}, timeout=60)
    rest_cuid = (jbody(r) or {}).get("cuid") if r.status_code == 201 else None
    t.ok(rest_cuid is not None, "POST /containers {image, command} -> 201 (a container of the REST API)",
         {"status": r.status_code, "body": body_text(r)})
    if rest_cuid:
        A.cids.add(rest_cuid)  # removed at cleanup in any case
        r = rest.post(A.base + "/containers/%s/start" % rest_cuid, timeout=60)
        t.status(r, 200, "POST /containers/<cuid>/start")

    h = start_ok(t, A, "lk", "start_container lk lock:true (holder for 50 waiters)", [], lock=True)
    waiters = [background_call(A, "/start_container", {"image": "lk", "ports": [], "lock": True}, timeout=60)
               for _ in range(50)]
    time.sleep(2.0)
    t.ok(not finished(waiters), "50 lock:true waiters are held open",
         [describe(w) for w in finished(waiters)][:5])
    slow = []
    probes = [("GET /version", lambda: A.get("/version")), ("GET /healthz", lambda: A.get("/healthz")),
              ("start_container web (running)", lambda: A.start("web", [[0, 4545]])),
              ("start_container sleeper (running)", lambda: A.start("sleeper", [])),
              ("start_container lk2 lock:false", lambda: A.start("lk2", []))]
    times = {}
    for _ in range(3):
        for name, fn in probes:
            t0 = time.monotonic()
            r = fn()
            el = time.monotonic() - t0
            times.setdefault(name, []).append(el)
            if r.status_code != 200 or el >= 1.0:
                slow.append((name, r.status_code, round(el, 3), body_text(r, 200)))
    t.diag("with 50 waiters: " + "; ".join("%s max %.3fs" % (k, max(v)) for k, v in times.items()))
    t.ok(not slow, "with 50 waiters queued, /version, /healthz and other start_container calls answer 200 in < 1 s",
         slow)
    t.ok(not finished(waiters), "the 50 waiters still wait", [describe(w) for w in finished(waiters)][:5])

    cids = [c["Id"] for c in A.harpoon_containers()]
    t.ok(len(cids) >= 8, "Docker holds this stack's start_container containers before shutdown (%d)" % len(cids))
    A.snapshot()
    t0 = time.monotonic()
    r = A.get("/shutdown")
    t.ok(r.status_code == 204 and r.content == b"", "GET /shutdown -> 204 (%.2fs)" % (time.monotonic() - t0),
         {"status": r.status_code, "body": body_text(r)})
    wait_until(lambda: len(finished(waiters)) == len(waiters), timeout=10, interval=0.05)
    bad = []
    for w in waiters:
        rr = w.get("r")
        b = jbody(rr) if rr is not None else None
        if rr is None or rr.status_code != 503 or not isinstance(b, dict) or b.get("error") != "shutting_down":
            bad.append(describe(w))
    t.ok(not bad, "all 50 waiters got 503 error shutting_down (%d of 50 wrong)" % len(bad), bad[:5])
    if waiters and waiters[0].get("r") is not None:
        check_error(t, waiters[0]["r"], 503, "shutting_down", None, name="a waiter's 503 body")
    try:
        r2 = A.get("/shutdown", timeout=10)
        second = r2.status_code
    except requests.RequestException as e:
        second = "refused" if "refused" in repr(e) or "Connection" in repr(e) else repr(e)
    t.ok(second in (204, "refused"), "a second GET /shutdown -> 204 (or refused once the stack is gone): %s" % second)
    gone = wait_until(lambda: not A.supervisor_alive(), timeout=5, interval=0.02)
    t.diag("GET /shutdown -> supervisor gone in %.2fs" % (time.monotonic() - t0))
    A.check_gone(t, "after GET /shutdown", cids)
    if rest_cuid:
        info = docker_inspect(rest_cuid)
        t.ok(info is not None and (info.get("State") or {}).get("Running"),
             "the POST /containers container still runs in Docker after shutdown",
             None if info is None else info.get("State"))
    t.ok(gone, "the stack is gone within 5 s of GET /shutdown")
    return cids


def section_restart(t, A, web_tag):
    """Same data dir, definitions with `mutable` changed: no rebuild of unchanged ones; then SIGTERM."""
    n_before = {img: len(A.builds(img)) for img in ("web", "mutable", "sleeper")}
    A.write_defs(defs_a(mutable="v2"))
    port = free_port()
    res = A.start_bg("%s:%d" % (A.info, port))
    if not t.ok(res["rc"] == 0 and A.port == port, "restart: serve FILE:%d exits 0, the file names port %d" % (port, port),
                res):
        return
    r = A.get("/version")
    t.ok(r.status_code == 200 and VERSION_RE.match(r.text), "restart: GET /version on port %d" % port)
    b = start_ok(t, A, "web", "restart: start_container web", [[0, 4545]], expect_created=True)
    if b:
        info = check_running(t, "restart web", b["container_id"], "cm-def-web")
        t.eq((info or {}).get("Config", {}).get("Image"), web_tag, "restart: web runs the same image tag as before")
        st, text = fetch(b["ports"].get("4545", 0))
        t.eq(text, "hello there", "restart: example_file served")
    t.eq(len(A.builds("web")), n_before["web"], "restart: unchanged web was not rebuilt (image exists)")
    b = start_ok(t, A, "sleeper", "restart: start_container sleeper", [], expect_created=True)
    t.eq(len(A.builds("sleeper")), n_before["sleeper"], "restart: unchanged sleeper was not rebuilt")
    old = [row["tag"] for row in A.builds("mutable")]
    b = start_ok(t, A, "mutable", "restart: start_container mutable (definition changed)", [], expect_created=True)
    rows = A.builds("mutable")
    t.ok(len(rows) == n_before["mutable"] + 1 and rows[-1]["status"] == "succeeded" and rows[-1]["tag"] not in old,
         "restart: the changed definition was built once more under a new tag",
         {"before": old, "rows": [{k: v for k, v in row.items() if k != "log"} for row in rows]})
    if b:
        info = check_running(t, "restart mutable", b["container_id"], "cm-def-mutable")
        t.eq((info or {}).get("Config", {}).get("Image"), rows[-1]["tag"], "mutable runs the new tag")
    # waiters are released by SIGTERM as by /shutdown
    start_ok(t, A, "sleeper", "restart: start_container sleeper lock:true (holder)", [], lock=True)
    waiters = [background_call(A, "/start_container", {"image": "sleeper", "ports": [], "lock": True})
               for _ in range(3)]
    time.sleep(1.0)
    t.ok(not finished(waiters), "restart: 3 lock:true waiters wait", [describe(w) for w in waiters])
    cids = [c["Id"] for c in A.harpoon_containers()]
    el, left = A.signal_and_time(signal.SIGTERM, cids)
    wait_until(lambda: len(finished(waiters)) == len(waiters), timeout=5, interval=0.05)
    bad = [describe(w) for w in waiters
           if w.get("r") is None or w["r"].status_code != 503 or (jbody(w["r"]) or {}).get("error") != "shutting_down"]
    t.ok(not bad, "SIGTERM: the 3 waiters got 503 error shutting_down", bad)
    t.diag("SIGTERM to the background supervisor -> stopped, %d containers removed in %s" % (
        len(cids), "%.2fs" % el if el is not None else "> 10 s"))
    t.ok(el is not None and el < STOP_BOUND, "SIGTERM stops the stack and removes its containers in < %.0f s (%s)" % (
        STOP_BOUND, "%.2fs" % el if el is not None else "not within 10 s"), {"left": left})
    A.check_gone(t, "after SIGTERM", cids)


def section_fg_noauth(t):
    """:PORT overrides CM_HTTP_LISTEN, --images with JSON, --no-auth, fresh data dir (image exists
    -> no build), then SIGINT."""
    port, other = free_port(), free_port()
    B = Stack(t, "b", defs={"web": WEB}, defs_json=True, auth="flag", images_in_env=False,
              extra_env=["CM_HTTP_LISTEN=127.0.0.1:%d" % other])
    why = B.start_fg(":%d" % port, ["--no-auth", "--images", B.defs_path], port=port)
    if not t.ok(why is None, "serve :%d --no-auth --images defs.json answers on port %d" % (port, port), why):
        return
    t.ok(not port_listening(other), ":PORT overrides CM_HTTP_LISTEN (nothing on %d)" % other)
    r = B.get("/version", creds=False)
    t.ok(r.status_code == 200 and VERSION_RE.match(r.text), "--no-auth: GET /version without credentials")
    b = start_ok(t, B, "web", "--no-auth: start_container web without credentials (JSON definitions)", [[0, 4545]],
                 expect_created=True)
    if not b:
        return
    check_running(t, "B web", b["container_id"], "cm-def-web")
    st, text = fetch(b["ports"].get("4545", 0))
    t.eq(text, "hello there", "B: example_file served")
    t.eq(B.builds("web"), [], "fresh data dir, same definition: no build (the image exists)")
    cids = [b["container_id"]]
    el, left = B.signal_and_time(signal.SIGINT, cids)
    t.diag("SIGINT to the foreground serve -> stopped, container removed in %s" % (
        "%.2fs" % el if el is not None else "> 10 s"))
    t.ok(el is not None and el < STOP_BOUND, "SIGINT stops the foreground stack and removes its container in < %.0f s (%s)" % (
        STOP_BOUND, "%.2fs" % el if el is not None else "not within 10 s"), {"left": left})
    if B.proc.poll() is not None:
        t.diag("foreground serve exit status after SIGINT: %s" % B.proc.returncode)
    B.check_gone(t, "after SIGINT", cids)


def section_default_ports(t):
    # no positional, CM_HTTP_LISTEN in the env file
    port = free_port()
    E = Stack(t, "e", defs={"sleeper": sleeper("sleeper")}, extra_env=["CM_HTTP_LISTEN=127.0.0.1:%d" % port])
    why = E.start_fg(None, port=port)
    t.ok(why is None, "serve (no positional) listens on CM_HTTP_LISTEN 127.0.0.1:%d" % port, why)
    if why is None:
        el, _ = E.signal_and_time(signal.SIGTERM, [])
        t.ok(el is not None and el < STOP_BOUND, "SIGTERM stops the foreground stack in < %.0f s (%s)" % (
            STOP_BOUND, "%.2fs" % el if el is not None else "no"))
        E.check_gone(t, "E after SIGTERM", [])
    # no positional, no CM_HTTP_LISTEN: 127.0.0.1:4545
    if not port_free(4545) or tcp_connect_ok(4545):
        t.skip("serve without a positional listens on 127.0.0.1:4545", "port 4545 is busy on this machine")
        return
    D = Stack(t, "d", defs={"sleeper": sleeper("sleeper")})
    why = D.start_fg(None, port=4545)
    t.ok(why is None, "serve (no positional, no CM_HTTP_LISTEN) listens on 127.0.0.1:4545", why)
    if why is None:
        r = D.get("/version")
        t.ok(r.status_code == 200 and VERSION_RE.match(r.text), "GET /version on 4545")
        D.signal_and_time(signal.SIGTERM, [])
        D.check_gone(t, "D after SIGTERM", [])


def section_start_failures(t):
    def expect_fail(label, st, spec, extra=("--non-interactive",), reason=None, once=None):
        res = st.start_bg(spec, extra, timeout=60)
        if res["rc"] == 0 and st.pid:  # it started although it must not: stop it
            st.cleanup()
        t.ok(res["rc"] not in (0, "timeout") and (res["err"] or "").strip(),
             "%s: exits non-zero with a reason on stderr (rc %s, %.1fs)" % (label, res["rc"], res["elapsed"]), res)
        if reason is not None and (res["err"] or "").strip():
            t.ok(re.search(reason, res["err"], re.I), "%s: stderr says why" % label, {"stderr": res["err"][-1500:],
                                                                                     "expected": reason})
        if once is not None:
            t.ok((res["err"] or "").count(once) == 1, "%s: stderr names the file once" % label, {"stderr": res["err"]})
        left = wait_until(lambda: not st.leftovers(), timeout=5) or st.leftovers()
        t.ok(left is True, "%s: no process left behind" % label, None if left is True else left)
        return res

    def expect_fail_fg(label, st, spec, extra=(), reason=None):
        """A foreground serve that cannot start must exit non-zero by itself, saying why."""
        t0 = time.monotonic()
        with open(st.err, "w") as fe:
            p = subprocess.Popen(st.argv(spec, extra), stdout=subprocess.DEVNULL, stderr=fe, stdin=subprocess.DEVNULL,
                                 start_new_session=True, cwd=st.dir, env=Stack.child_env())
        st.sids.add(p.pid)
        st.pgrps.add(p.pid)
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = "still running after 30 s"
            st.kill_groups()
            p.wait()
        err = st.read(st.err) or ""
        t.ok(rc not in (0, "still running after 30 s") and err.strip(),
             "%s: exits non-zero with a reason on stderr (rc %s, %.1fs)" % (label, rc, time.monotonic() - t0),
             {"stderr": err[-1500:]})
        if reason is not None and err.strip():
            t.ok(re.search(reason, err, re.I), "%s: stderr says why" % label, {"stderr": err[-1500:], "expected": reason})
        left = wait_until(lambda: not st.leftovers(), timeout=5) or st.leftovers()
        t.ok(left is True, "%s: no process left behind" % label, None if left is True else left)

    # busy port
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", 0))
    busy.listen(5)
    bport = busy.getsockname()[1]
    try:
        F1 = Stack(t, "f1", defs={"sleeper": sleeper("sleeper")})
        expect_fail("serve FILE:%d with the port busy" % bport, F1, "%s:%d" % (F1.info, bport),
                    reason=r"%d|in use|address" % bport)
        F1b = Stack(t, "f1b", defs={"sleeper": sleeper("sleeper")})
        expect_fail_fg("serve :%d (foreground) with the port busy" % bport, F1b, ":%d" % bport)
    finally:
        busy.close()
    # bad definitions
    F2 = Stack(t, "f2", defs=None, extra_env=[])
    F2.defs_path = os.path.join(F2.dir, "defs.yml")
    with open(F2.defs_path, "w") as f:
        f.write("images:\n  web:\n    context: false\n    commands: 5\n")
    with open(F2.envf, "a") as f:
        f.write("CM_IMAGES=%s\n" % F2.defs_path)
    expect_fail("a definitions file with commands: 5", F2, F2.info, reason=r"images\.web\.commands", once=F2.defs_path)
    F3 = Stack(t, "f3", defs=None, extra_env=["CM_IMAGES=%s" % os.path.join(TMP_ROOT, "no-such-%s.yml" % NONCE)])
    expect_fail("CM_IMAGES names a missing file", F3, F3.info, reason=r"no-such-|no such file|not found|cannot")
    F3b = Stack(t, "f3b", defs=None)
    F3b.defs_path = os.path.join(F3b.dir, "defs.yml")
    with open(F3b.defs_path, "w") as f:
        f.write("images:\n  web: [unclosed\n")
    expect_fail("--images with invalid YAML", F3b, F3b.info, extra=("--non-interactive", "--images", F3b.defs_path),
                reason=r"YAML|line")
    # bad env
    F4 = Stack(t, "f4", defs={"sleeper": sleeper("sleeper")}, extra_env=["DEFAULT_MEMORY=lots"])
    expect_fail("DEFAULT_MEMORY=lots in the env file", F4, F4.info, reason=r"DEFAULT_MEMORY")
    F4b = Stack(t, "f4b", defs={"sleeper": sleeper("sleeper")}, extra_env=["CM_HTTP_LISTEN=not-an-address"])
    expect_fail_fg("serve (no positional) with CM_HTTP_LISTEN=not-an-address", F4b, None,
                   reason=r"CM_HTTP_LISTEN")
    # no auth with a non-loopback listener
    q = free_port()
    F5 = Stack(t, "f5", defs={"sleeper": sleeper("sleeper")}, https="0.0.0.0:%d" % q)
    expect_fail("--no-auth with CM_HTTPS_LISTEN=0.0.0.0:%d" % q, F5, F5.info, extra=("--non-interactive", "--no-auth"),
                reason=r"loopback|auth|0\.0\.0\.0")
    F6 = Stack(t, "f6", defs={"sleeper": sleeper("sleeper")}, auth="env-off", https="0.0.0.0:%d" % q)
    expect_fail("CM_AUTH=off with CM_HTTPS_LISTEN=0.0.0.0:%d" % q, F6, F6.info, reason=r"loopback|auth|0\.0\.0\.0")


# ----------------------------------------------------------------------------- main

def remove_images():
    for tag in sorted(ALL_TAGS):
        st, body = docker_request("DELETE", "/images/%s" % urllib.parse.quote(tag, safe=""))
        if st not in (200, 404):
            TAP.diag("could not remove image %s: %s %s" % (tag, st, body))
    docker_request("DELETE", "/images/%s" % urllib.parse.quote(MISSING_BASE, safe=""))


def main(t):
    if not os.access(CLI, os.X_OK):
        raise RuntimeError("%s is missing" % CLI)
    t.add_cleanup(remove_images)  # first registered: runs after every stack's cleanup
    defs = defs_a()
    A = Stack(t, "a", defs=defs, ctx_files={"ctxdir/sub/file.txt": CTX_CONTENT})
    if not section_startup(t, A):
        t.diag("stderr of serve: " + (A.read(A.err) or "")[-3000:])
        section_start_failures(t)
        return
    for fn in (lambda: section_auth(t, A), lambda: section_errors(t, A, defs)):
        try:
            fn()
        except Exception:
            t.ok(False, "section raised", traceback.format_exc())
    web = None
    try:
        web = section_web(t, A)
    except Exception:
        t.ok(False, "web section raised", traceback.format_exc())
    for fn in (section_misc_defs, section_concurrency, section_build_failure, section_locks):
        try:
            fn(t, A)
        except Exception:
            t.ok(False, "%s raised" % fn.__name__, traceback.format_exc())
            if not A.supervisor_alive():
                t.diag("the stack died; stderr: " + (A.read(A.err) or "")[-3000:])
                break
    web_tag = None
    if web:
        info = docker_inspect(web["container_id"])
        web_tag = (info or {}).get("Config", {}).get("Image")
    try:
        if A.supervisor_alive():
            section_shutdown(t, A)
    except Exception:
        t.ok(False, "shutdown section raised", traceback.format_exc())
    try:
        if not A.supervisor_alive() and web_tag:
            section_restart(t, A, web_tag)
    except Exception:
        t.ok(False, "restart section raised", traceback.format_exc())
    for fn in (section_fg_noauth, section_default_ports, section_start_failures):
        try:
            fn(t)
        except Exception:
            t.ok(False, "%s raised" % fn.__name__, traceback.format_exc())


if __name__ == "__main__":
    run(main)

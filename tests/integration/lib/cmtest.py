"""Helpers for the container-manager integration tests.

Every test file is a TAP producer.  This module gives it:
  - TAP output (ok / not ok with YAML-ish diagnostics, plan at the end),
  - an authenticated requests Session pointed at the stack under test,
  - a tiny Docker Engine API client over /var/run/docker.sock (stdlib http.client),
  - read-only sqlite3 queries on the stack's database (CM_DB),
  - container create/cleanup helpers that use the suite's busybox test image,
  - process discovery below the launcher (for the crash tests).

Environment (set by tests/integration/run):
  CM_URL, CM_HTTPS_URL, CM_USER, CM_PASS, CM_DATA_DIR, CM_DB, CM_SERVE_PID, CM_TEST_IMAGE
"""

import base64
import datetime
import hashlib
import http.client
import io
import json
import os
import random
import re
import socket
import stat
import sqlite3
import string
import subprocess
import sys
import tarfile
import time
import traceback
import urllib.parse

import requests

try:  # silence "Unverified HTTPS request" for the self-signed listener
    import urllib3

    urllib3.disable_warnings()
except Exception:  # pragma: no cover
    pass

URL = os.environ.get("CM_URL", "http://127.0.0.1:18080").rstrip("/")
HTTPS_URL = os.environ.get("CM_HTTPS_URL", "https://127.0.0.1:18443").rstrip("/")
USER = os.environ.get("CM_USER", "admin")
PASS = os.environ.get("CM_PASS", "")
DATA_DIR = os.environ.get("CM_DATA_DIR", "")
DB = os.environ.get("CM_DB") or (os.path.join(DATA_DIR, "db", "cm.sqlite") if DATA_DIR else "")
IMAGE = os.environ.get("CM_TEST_IMAGE", "cm-test-busybox:latest")
IMAGE_ALT = os.environ.get("CM_TEST_IMAGE_ALT", "cm-test-busybox:alt")
DEFAULT_UID = os.environ.get("CM_DEFAULT_USER_UID", "1000:1000")
SERVE_PID = int(os.environ.get("CM_SERVE_PID", "0") or 0)
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CLIENTS_DIR = os.path.join(REPO, "tests", "clients")
SLEEP_CMD = ["sleep", "3600"]
LABEL = "io.container-manager.cuid"
ERROR_KEYS = {"error", "code", "message", "status", "request_id", "timestamp", "details"}
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
CUID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{2,62}$")


def rand_suffix(n=8):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


# ----------------------------------------------------------------------------- TAP

class TAP:
    """Minimal TAP producer; the plan is printed at the end (done())."""

    def __init__(self):
        self.n = 0
        self.failed = 0
        self.cleanups = []  # callables run (LIFO) at the end, whatever happened

    @staticmethod
    def diag(msg):
        for line in str(msg).splitlines() or [""]:
            print("# " + line)
        sys.stdout.flush()

    def ok(self, cond, name, diag=None):
        self.n += 1
        name = str(name).replace("#", "\\#").replace("\n", " ")
        if cond:
            print("ok %d - %s" % (self.n, name))
        else:
            self.failed += 1
            print("not ok %d - %s" % (self.n, name))
            if diag is not None:
                if not isinstance(diag, str):
                    try:
                        diag = json.dumps(diag, indent=2, sort_keys=True, default=str)
                    except Exception:
                        diag = repr(diag)
                self.diag(diag[:4000])
        sys.stdout.flush()
        return bool(cond)

    def eq(self, got, expected, name, extra=None):
        d = {"expected": expected, "got": got}
        if extra is not None:
            d["context"] = extra
        return self.ok(got == expected, name, d)

    def todo(self, cond, name, reason, diag=None):
        """A known gap (documented, with its reason): reported as TAP TODO, so it neither fails
        the run nor hides; an unexpected pass shows as such."""
        self.n += 1
        name = str(name).replace("#", "\\#").replace("\n", " ")
        print("%sok %d - %s # TODO %s" % ("" if cond else "not ", self.n, name, reason))
        if not cond and diag is not None:
            self.diag(diag if isinstance(diag, str) else json.dumps(diag, default=str)[:4000])
        sys.stdout.flush()
        return bool(cond)

    def skip(self, name, reason):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, name, reason))
        sys.stdout.flush()

    def status(self, r, expected, name):
        """Check an HTTP status; on mismatch show the body."""
        exp = expected if isinstance(expected, (list, tuple, set)) else [expected]
        return self.ok(r is not None and r.status_code in exp, "%s -> HTTP %s" % (name, "/".join(map(str, exp))),
                       None if r is None else {"got": r.status_code, "body": body_text(r),
                                               "request": "%s %s" % (r.request.method, r.request.url)})

    def add_cleanup(self, fn):
        self.cleanups.append(fn)

    def done(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # cleanup must never hide the results
                self.diag("cleanup error: %r" % (e,))
        print("1..%d" % self.n)
        sys.stdout.flush()
        return 1 if self.failed else 0


def run(main):
    """Run main(t) with a TAP object; an exception is one failed test point."""
    t = TAP()
    try:
        main(t)
    except Exception:
        t.ok(False, "test script raised an exception", traceback.format_exc())
    rc = t.done()
    sys.exit(rc)


def body_text(r, limit=1500):
    try:
        return r.text[:limit]
    except Exception:
        return "<unreadable>"


def jbody(r):
    try:
        return r.json()
    except Exception:
        return None


# ----------------------------------------------------------------------------- HTTP API

class Api(requests.Session):
    """requests.Session with basic auth, a base URL and a default timeout.
    Records every (method, path, status, X-Request-Id) it sees in .seen."""

    def __init__(self, base=URL, user=USER, password=PASS, timeout=60, auth=True):
        super().__init__()
        self.base = base
        self.default_timeout = timeout
        if auth:
            self.auth = (user, password)
        self.seen = []

    def request(self, method, url, *args, **kw):
        if url.startswith("/"):
            url = self.base + url
        kw.setdefault("timeout", self.default_timeout)
        if self.verify is False:  # a session-level False loses to REQUESTS_CA_BUNDLE; pass it per request
            kw.setdefault("verify", False)
        r = super().request(method, url, *args, **kw)
        self.seen.append((method, url, r.status_code, r.headers.get("X-Request-Id")))
        return r


def api(**kw):
    return Api(**kw)


def check_error(t, r, status, error=None, code=None, field=None, name=""):
    """Assert r is an error of the contract's schema.  code/error may be a str or a set
    of acceptable values; field is checked against details.field (str: exact, callable: predicate).
    Returns the parsed body (or None)."""
    label = name or ("%s %s" % (r.request.method, urllib.parse.urlsplit(r.request.url).path))
    body = jbody(r)
    statuses = set(status) if isinstance(status, (tuple, list, set)) else {status}
    good = r.status_code in statuses
    problems = []
    if not good:
        problems.append("status %s != %s" % (r.status_code, status))
    if not isinstance(body, dict):
        problems.append("body is not a JSON object")
        body = None
    else:
        missing = ERROR_KEYS - set(body)
        if missing:
            problems.append("missing keys %s" % sorted(missing))
        if body.get("status") != r.status_code or body.get("status") not in statuses:
            problems.append("body.status %r != %s" % (body.get("status"), r.status_code))
        rid = r.headers.get("X-Request-Id")
        if not rid:
            problems.append("no X-Request-Id header")
        elif body.get("request_id") != rid:
            problems.append("request_id %r != X-Request-Id %r" % (body.get("request_id"), rid))
        ts = body.get("timestamp")
        if not (isinstance(ts, str) and RFC3339.match(ts)):
            problems.append("timestamp %r is not RFC 3339" % (ts,))
        if not isinstance(body.get("message"), str) or not body.get("message"):
            problems.append("message missing/empty")
        if "details" in body and body["details"] is not None and not isinstance(body["details"], dict):
            problems.append("details is not an object")
        if error is not None:
            ok_errors = {error} if isinstance(error, str) else set(error)
            if body.get("error") not in ok_errors:
                problems.append("error %r not in %s" % (body.get("error"), sorted(ok_errors)))
        if code is not None:
            ok_codes = {code} if isinstance(code, str) else set(code)
            if body.get("code") not in ok_codes:
                problems.append("code %r not in %s" % (body.get("code"), sorted(ok_codes)))
        if field is not None:
            det = body.get("details") if isinstance(body.get("details"), dict) else {}
            got = det.get("field")
            okf = field(got) if callable(field) else got == field
            if not okf:
                problems.append("details.field %r, expected %s" % (got, field if not callable(field) else "match"))
    t.ok(not problems, "%s: error %s%s" % (label, "/".join(map(str, sorted(statuses))), " " + (code if isinstance(code, str) else "") if code else ""),
         None if not problems else {"problems": problems, "status": r.status_code, "body": body_text(r),
                                    "headers": dict(r.headers)})
    return body


def create_container(s, t=None, cleanup=True, **spec):
    """POST /containers with the test image and `sleep 3600` unless overridden.
    Registers the cuid for deletion at the end of the test (t.add_cleanup)."""
    payload = {"image": IMAGE, "command": list(SLEEP_CMD)}
    payload.update(spec)
    for k in [k for k, v in payload.items() if v is None]:
        del payload[k]
    r = s.post("/containers", json=payload)
    if r.status_code in (200, 201) and cleanup and t is not None:
        b = jbody(r) or {}
        if b.get("cuid"):
            t.add_cleanup(lambda c=b["cuid"]: destroy(s, c))
    return r


def sibling_cuid(cuid):
    """A cuid of the same shape as `cuid` that (almost surely) does not exist: the last
    alphanumeric characters are replaced by others of the same class."""
    chars = list(cuid)
    changed = 0
    for i in range(len(chars) - 1, -1, -1):
        ch = chars[i]
        if ch.isdigit():
            chars[i] = "7" if ch != "7" else "3"
        elif ch in "abcdef":
            chars[i] = "e" if ch != "e" else "b"
        elif ch.isalpha():
            chars[i] = "q" if ch != "q" else "z"
        else:
            continue
        changed += 1
        if changed == 6:
            break
    return "".join(chars)


def must_create(s, t, name="create container", **spec):
    r = create_container(s, t, **spec)
    if not t.status(r, 201, name):
        raise RuntimeError("cannot continue: %s failed: %s %s" % (name, r.status_code, body_text(r)))
    return r.json()


def destroy(s, cuid):
    """Best-effort removal of a container created by a test: API first, Docker + files after."""
    try:
        s.delete("/containers/%s" % cuid, timeout=30)
    except Exception:
        pass
    info = docker_inspect(cuid)
    if info is not None and info.get("Name") == "/" + cuid:
        docker_request("DELETE", "/containers/%s?force=1&v=1" % info["Id"])
    if DATA_DIR and CUID_RE.match(cuid):
        d = os.path.join(DATA_DIR, "containers", cuid)
        if os.path.isdir(d):
            subprocess.call(["rm", "-rf", "--", d])


def action(s, cuid, act, **kw):
    return s.post("/containers/%s/%s" % (cuid, act), **kw)


def app_dir(cuid):
    return os.path.join(DATA_DIR, "containers", cuid, "app")


def wait_until(fn, timeout=10.0, interval=0.1):
    """Poll fn() until it returns a truthy value or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def parse_time(s):
    """RFC 3339 (Docker's nanoseconds too) -> aware datetime; None for null/zero time."""
    if not s or s.startswith("0001-01-01"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", s)
    if not m:
        raise ValueError("not RFC 3339: %r" % s)
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    frac = float(m.group(2)) if m.group(2) else 0.0
    tz = m.group(3)
    if tz == "Z":
        off = datetime.timedelta(0)
    else:
        sign = 1 if tz[0] == "+" else -1
        off = sign * datetime.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    dt = (base - off).replace(tzinfo=datetime.timezone.utc)
    return dt + datetime.timedelta(seconds=frac)


def same_time(api_value, docker_value, slack=1.5):
    """True when an API time and a Docker time denote the same instant (API may truncate)."""
    a = parse_time(api_value) if api_value else None
    d = parse_time(docker_value) if docker_value else None
    if a is None or d is None:
        return a is None and d is None
    return abs((a - d).total_seconds()) <= slack


# ----------------------------------------------------------------------------- Docker

DOCKER_SOCK = os.environ.get("DOCKER_SOCK", "/var/run/docker.sock")
DOCKER_API = "/v1.41"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def docker_request(method, path, body=None, timeout=60):
    """Engine API call -> (status, parsed JSON or raw text)."""
    conn = UnixHTTPConnection(DOCKER_SOCK, timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, DOCKER_API + path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def docker_inspect(name_or_id):
    """Container inspect dict, or None when Docker answers 404."""
    st, body = docker_request("GET", "/containers/%s/json" % urllib.parse.quote(name_or_id, safe=""))
    if st == 404:
        return None
    if st != 200:
        raise RuntimeError("docker inspect %s: %s %s" % (name_or_id, st, body))
    return body


def docker_list_labelled():
    """All Docker containers (any state) carrying the io.container-manager.cuid label."""
    flt = urllib.parse.quote(json.dumps({"label": [LABEL]}))
    st, body = docker_request("GET", "/containers/json?all=1&filters=%s" % flt)
    if st != 200:
        raise RuntimeError("docker ps: %s %s" % (st, body))
    return body


def _mount_sources(c):
    out = []
    for m in c.get("Mounts") or []:
        if m.get("Source"):
            out.append(m["Source"])
    return out


def ours_managed():
    """{name: summary} of labelled Docker containers that belong to THIS stack: their bind
    mount lives under CM_DATA_DIR, or their name is a cuid in our database.  (Another stack
    may run on this machine; its containers are not ours.)"""
    cuids = set(db_container_cuids() or [])
    out = {}
    data = os.path.realpath(DATA_DIR) if DATA_DIR else None
    for c in docker_list_labelled():
        name = (c.get("Names") or ["/?"])[0].lstrip("/")
        srcs = _mount_sources(c)
        mine = name in cuids or (data and any(
            os.path.realpath(s) == data or os.path.realpath(s).startswith(data + "/") for s in srcs))
        if mine:
            out[name] = c
    return out


def docker_env(info):
    """Config.Env as a dict (last wins) plus the raw list."""
    env = {}
    raw = (info.get("Config") or {}).get("Env") or []
    for e in raw:
        k, _, v = e.partition("=")
        env[k] = v
    return env, raw


def docker_exec(container, argv, timeout=20):
    """Run argv inside the container with the docker CLI; returns (rc, stdout+stderr)."""
    p = subprocess.run(["docker", "exec", container] + list(argv), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def docker_state(cuid):
    info = docker_inspect(cuid)
    return None if info is None else info.get("State")


def wait_docker(cuid, pred, timeout=10.0):
    """Poll Docker inspect until pred(info) holds; returns the last info (or None)."""
    last = [None]

    def f():
        last[0] = docker_inspect(cuid)
        return last[0] is not None and pred(last[0])

    wait_until(f, timeout=timeout)
    return last[0]


# ----------------------------------------------------------------------------- SQLite

def db_connect():
    if not DB or not os.path.exists(DB):
        raise RuntimeError("database %r does not exist" % DB)
    conn = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(DB), uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.text_factory = lambda b: b.decode("utf-8", "replace")
    return conn


def db_query(sql, args=(), retries=50):
    """Read-only query with retries on SQLITE_BUSY; rows as dicts."""
    last = None
    for _ in range(retries):
        try:
            conn = db_connect()
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


def db_columns(table):
    return [r["name"] for r in db_query("PRAGMA table_info(%s)" % table)]


def db_container_cuids():
    """cuids of live container rows (rows marked deleted are left out)."""
    try:
        cols = db_columns("containers")
    except Exception:
        return None
    if "cuid" not in cols:
        return None
    where = []
    if "deleted_at" in cols:
        where.append("deleted_at IS NULL")
    if "status" in cols:
        where.append("status NOT IN ('deleted','removed')")
    sql = "SELECT cuid FROM containers" + (" WHERE " + " AND ".join(where) if where else "")
    return [r["cuid"] for r in db_query(sql)]


def db_container_count():
    c = db_container_cuids()
    return None if c is None else len(c)


def db_audit(request_id):
    return db_query("SELECT * FROM audit WHERE request_id = ?", (request_id,))


# ----------------------------------------------------------------------------- ports / processes

def free_port(proto="tcp"):
    """A port free on 127.0.0.1 for tcp AND udp (so either protocol can use it)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        try:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", p))
            u.close()
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind(("127.0.0.1", p))
            t.close()
            return p
        except OSError:
            continue
    raise RuntimeError("no free port")


def port_free(port, proto="tcp"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tcp_connect_ok(port, host="127.0.0.1", timeout=2):
    try:
        c = socket.create_connection((host, port), timeout=timeout)
        c.close()
        return True
    except OSError:
        return False


def _procs():
    """pid -> (ppid, starttime, cmdline)"""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                stat = f.read().decode("utf-8", "replace")
            rest = stat[stat.rindex(")") + 2:].split()
            ppid, start = int(rest[1]), int(rest[19])
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            out[int(d)] = (ppid, start, cmd)
        except (OSError, ValueError, IndexError):
            continue
    return out


def stack_pids(program, root=None):
    """pids of this stack's processes running program (argv[0]'s base name), oldest first."""
    return [p[0] for p in find_procs(program, root) if os.path.basename(p[3].split()[0]) == program]


def find_procs(needle, root=None):
    """[(pid, ppid, starttime, cmdline)] of processes whose cmdline contains needle, restricted
    to descendants of root (default CM_SERVE_PID) when it is known (another stack may run on
    this machine)."""
    procs = _procs()
    me = os.getpid()
    allowed = None
    root = root or SERVE_PID
    if root and root in procs:
        allowed = {root}
        changed = True
        while changed:
            changed = False
            for pid, (ppid, _, _) in procs.items():
                if ppid in allowed and pid not in allowed:
                    allowed.add(pid)
                    changed = True
    out = []
    for pid, (ppid, start, cmd) in procs.items():
        if pid == me or needle not in cmd:
            continue
        if allowed is not None and pid not in allowed:
            continue
        out.append((pid, ppid, start, cmd))
    out.sort(key=lambda x: (x[2], x[0]))
    return out


def tree_digest(root):
    """Hash of every name, type, mode, owner and content below root (links not followed)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(("%s %o %d %d\n" % (os.path.relpath(p, root), st.st_mode, st.st_uid, st.st_gid)).encode())
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h.update(f.read())
            elif stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ private stacks
CLI = os.environ.get("CM_IT_CLI") or os.path.join(REPO, "cli", "container-manager")


def proc_gone(pid):
    """True when pid has exited (a zombie waiting for a slow reaper counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


class PrivateStack:
    """A stack of its own (`serve FILE` in the background) in directory d, with env_lines as its
    env file; the caller's CM_*/APP_*/WS_* variables are not passed on. stop() ends it."""

    def __init__(self, d, env_lines, user="admin", password=None):
        self.dir = d
        self.data = os.path.join(d, "data")
        self.envf = os.path.join(d, "env")
        self.info = os.path.join(d, "info")
        self.user = user
        self.password = password or rand_suffix(16)
        lines = ["CM_DATA_DIR=%s" % self.data, "CM_HTTPS_LISTEN=off", "APP_USER=%s" % user,
                 "APP_PASS=%s" % self.password] + list(env_lines)
        with open(self.envf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.envf, 0o600)
        self.pid = self.port = None
        self.stderr = ""

    def start(self, timeout=90):
        env = {k: v for k, v in os.environ.items() if not re.match(r"^(CM_|APP_|WS_)", k)}
        p = subprocess.run([CLI, "serve", self.info, "--env-file", self.envf], cwd=self.dir, env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, start_new_session=True)
        self.stderr = p.stderr.decode("utf-8", "replace")
        if p.returncode != 0:
            return False
        port, pid = open(self.info).read().split()
        self.port, self.pid = int(port), int(pid)
        return True

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def session(self):
        s = requests.Session()
        s.auth = (self.user, self.password)
        return s

    def db_query(self, sql, args=()):
        con = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data, "db", "cm.sqlite"), uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def stop(self, timeout=30):
        """SIGTERM to the supervisor; SIGKILL to its session after timeout. True if it stopped."""
        if not self.pid or proc_gone(self.pid):
            return True
        try:
            os.kill(self.pid, 15)
        except OSError:
            return True
        if wait_until(lambda: proc_gone(self.pid), timeout=timeout, interval=0.05):
            return True
        try:
            os.killpg(self.pid, 9)
        except OSError:
            pass
        return False


def fcgi_request(path, params):
    """A minimal FastCGI client: one GET, returns the stdout stream."""
    def rec(kind, content, req=1):
        return bytes([1, kind, req >> 8, req & 255, len(content) >> 8, len(content) & 255, 0, 0]) + content

    def nv(k, v):
        k, v = k.encode(), v.encode()
        return bytes([len(k)]) + bytes([len(v)]) + k + v
    msg = rec(1, bytes([0, 1, 0, 0, 0, 0, 0, 0]))
    msg += rec(4, b"".join(nv(k, v) for k, v in params.items())) + rec(4, b"") + rec(5, b"")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(msg)
    out, buf = b"", b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    while len(buf) >= 8:
        kind, clen, plen = buf[1], buf[4] << 8 | buf[5], buf[6]
        if kind == 6:
            out += buf[8:8 + clen]
        buf = buf[8 + clen + plen:]
    return out


def mktar(files, mode="w", special=None):
    """A tar (bytes) of {name: str or bytes} regular files, plus the TarInfo entries of special."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode=mode) as t:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        for ti in special or []:
            t.addfile(ti)
    return b.getvalue()

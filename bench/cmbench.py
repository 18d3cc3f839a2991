#!/usr/bin/python3
"""cmbench.py: the container-manager benchmarks (see bench/README.md). Run it through bench/run.

    bench/run            # a ... g, then a summary block
    bench/run b d        # some of them

Each benchmark brings up its own private stacks (temporary data directories, loopback ports
picked at random), measures the service and its reference side by side in alternating rounds,
prints medians and ratios, and removes everything it made. The targets are printed for
information only: the exit status says whether the benchmarks could run, never whether a
target was met. Do not use this as a CI gate.
"""

import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zipfile
import uuid

import requests

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
CLI = os.path.join(ROOT, "cli", "container-manager")  # replaced by the copy main() takes
SHARE = ROOT
TRIVIAL = os.path.join(BENCH, "trivial-fcgi")
IMAGE = "cm-bench-busybox:latest"
DOCKER_SOCK = "/var/run/docker.sock"
DOCKER_API = "/v1.41"
CMD = ["sleep", "3600"]
CHECK_UA = "cm-bench-check"  # requests whose non-2xx answer the harness expects (sanity checks)


def env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


WORKERS = env_int("BENCH_WORKERS", 4)           # WORKERS_MIN = WORKERS_MAX = trivial processes
ROUNDS_A = env_int("BENCH_ROUNDS_A", 15)        # create+start rounds (each side)
ROUNDS = env_int("BENCH_ROUNDS", 3)             # wrk rounds (each side) for b, c, d
ROUNDS_LAT = env_int("BENCH_ROUNDS_LAT", 5)     # latency rounds (each row count) for c
DURATION = env_int("BENCH_DURATION", 5)         # seconds per wrk run (throughput)
LAT_DURATION = env_int("BENCH_LAT_DURATION", 3)  # seconds per wrk run (latency, 1 connection)
CONNS = env_int("BENCH_CONNECTIONS", 32)
THREADS = env_int("BENCH_THREADS", 2)
# (i): busybox httpd forks per connection and closes it after each answer; 32 connections
# overflow its listen backlog, and the 1 s SYN retries then dominate every side alike
CONNS_I = env_int("BENCH_CONNECTIONS_I", 8)
ROUNDS_I = env_int("BENCH_ROUNDS_I", 5)
KEEP = os.environ.get("BENCH_KEEP") == "1"
# fastcgi_keep_conn of the trivial location: "mirror" = whatever the service's location says
TRIVIAL_KEEP_CONN = os.environ.get("BENCH_TRIVIAL_KEEP_CONN", "mirror")

PROBLEMS = []   # (benchmark, text): everything odd the service did, for the summary
RESULTS = {}    # benchmark -> dict, for the summary
CLEANUPS = []   # callables, run LIFO on exit whatever happened


def say(msg=""):
    print(msg, flush=True)


def problem(bench, text):
    PROBLEMS.append((bench, text))
    say("  !! %s" % text)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_rps(x):
    return "{:,.0f} req/s".format(x)


# ------------------------------------------------------------------------------ Docker client

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Http:
    """One persistent HTTP/1.1 connection (http.client). (a) uses the same client for the
    API and for the Engine API so client overhead is the same on both sides."""

    def __init__(self, conn_factory, headers=None):
        self.factory = conn_factory
        self.headers = headers or {}
        self.conn = None

    def call(self, method, path, body=None):
        hdrs = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self.factory()
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                r = self.conn.getresponse()
                raw = r.read()
                return r.status, raw, r
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


def docker_client():
    return Http(lambda: UnixHTTPConnection(DOCKER_SOCK))


def docker(method, path, body=None):
    c = docker_client()
    try:
        st, raw, _ = c.call(method, DOCKER_API + path, body)
    finally:
        c.close()
    try:
        return st, json.loads(raw) if raw else None
    except ValueError:
        return st, raw.decode(errors="replace")


# ------------------------------------------------------------------------------ wrk

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(url, headers=None, threads=THREADS, conns=CONNS, duration=DURATION, label=""):
    """Runs wrk; returns {rps, p50, p99, requests, non2xx, sockerr}."""
    cmd = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration, "--latency", "--timeout", "10s"]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    cmd.append(url)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=duration + 60)
    out = p.stdout
    res = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "max": float("nan"), "requests": 0, "non2xx": 0,
           "sockerr": {}, "duration": duration}
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        res["max"] = _ms(m.group(3))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    if m:
        res["p50"] = _ms(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if m:
        res["p99"] = _ms(m.group(1))
    done = re.search(r"(\d+) requests in", out)
    if done:
        res["requests"] = int(done.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["sockerr"] = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups()) if int(v)}
    if p.returncode != 0 or not done:
        raise RuntimeError("wrk failed (%s): %s" % (p.returncode, out[-2000:]))
    return res


def wrk_line(r):
    s = "%12s  p50 %6.2f ms  p99 %7.1f ms  max %7.1f ms  (%d requests" % (
        fmt_rps(r["rps"]), r["p50"], r["p99"], r["max"], r["requests"])
    if r["non2xx"]:
        s += ", %d non-2xx" % r["non2xx"]
    if r["sockerr"]:
        s += ", socket errors %s" % r["sockerr"]
    return s + ")"


STALL_MS = 1000.0  # a single GET answered from SQLite should never take a second on loopback


def check_wrk(bench, what, r):
    if not r["requests"]:
        problem(bench, "%s: not one request was answered in %d s" % (what, r["duration"]))
        r["p50"] = r["p99"] = r["max"] = float("nan")
    if r["non2xx"] or r["sockerr"]:
        problem(bench, "%s: wrk saw %d non-2xx responses and socket errors %s in %d requests"
                % (what, r["non2xx"], r["sockerr"] or "none", r["requests"]))
    st = STALLS.setdefault((bench, what), {"runs": 0, "stalled": 0, "max": 0.0, "p99": 0.0})
    st["runs"] += 1
    if r["max"] > STALL_MS:
        st["stalled"] += 1
        st["max"] = max(st["max"], r["max"])
        st["p99"] = max(st["p99"], r["p99"])


STALLS = {}


def stall_problems():
    for (bench, what), st in STALLS.items():
        if st["stalled"]:
            PROBLEMS.append((bench, "%s: %d of %d wrk runs had requests waiting over %.0f s (slowest %.0f ms, "
                                    "p99 up to %.0f ms)" % (what, st["stalled"], st["runs"], STALL_MS / 1000,
                                                            st["max"], st["p99"])))


# ------------------------------------------------------------------------------ stacks

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fnv1a_run_dir(data_dir):
    h = 2166136261
    for b in data_dir.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return "/run/container-manager/%08x" % h


class Stack:
    """One private container-manager stack (serve + runner + pool + nginx)."""

    def __init__(self, root, name, auth=True, workers=WORKERS, workers_max=None):
        self.name = name
        self.workers_max = workers_max or workers
        self.dir = os.path.join(root, name)
        self.data = os.path.join(self.dir, "data")
        self.envf = os.path.join(self.dir, "env")
        self.logf = os.path.join(self.dir, "serve.log")
        self.auth = auth
        self.workers = workers
        self.port = free_port()
        self.user = "bench"
        self.password = base64.b16encode(os.urandom(12)).decode().lower()
        self.base = "http://127.0.0.1:%d" % self.port
        self.proc = None
        self.run_dir = None
        self.trivial = None
        self.cuids = []  # containers made through the API (deleted at the end)
        self.ready_at = None

    @property
    def authz(self):
        tok = base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode()
        return {"Authorization": "Basic " + tok}

    @property
    def db(self):
        return os.path.join(self.data, "db", "cm.sqlite")

    def session(self):
        s = requests.Session()
        s.auth = (self.user, self.password)
        return s

    def start(self):
        os.makedirs(self.data)
        lines = [
            "CM_DATA_DIR=%s" % self.data,
            "CM_HTTP_LISTEN=127.0.0.1:%d" % self.port,
            "CM_HTTPS_LISTEN=off",
            "APPS_LISTEN=off",  # (apps are not measured; no second port to find free)
            "APP_USER=%s" % self.user,
            "APP_PASS=%s" % self.password,
            'BOOT_COMMAND="sleep 3600"',
            "WORKERS_MIN=%d" % self.workers,
            "WORKERS_MAX=%d" % self.workers_max,
        ]
        if not self.auth:
            lines.append("CM_AUTH=off")
        with open(self.envf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.envf, 0o600)
        log = open(self.logf, "w")
        # own session: a Ctrl-C on the terminal reaches the harness only, which then cleans up
        env = dict(os.environ, CM_SHARE_DIR=SHARE)
        self.proc = subprocess.Popen([CLI, "serve", "--env-file", self.envf], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir, env=env)
        log.close()
        CLEANUPS.append(self.stop)

    def log_text(self):
        try:
            with open(self.logf, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_ready(self, timeout=90):
        deadline = time.time() + timeout
        s = self.session()
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("stack %s exited (%s) while starting:\n%s"
                                   % (self.name, self.proc.returncode, self.log_text()[-3000:]))
            try:
                r = s.get(self.base + "/healthz", timeout=5)
                last = r.status_code
                if r.status_code == 200:
                    break
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.2)
        else:
            raise RuntimeError("stack %s not ready after %ds (last: %s):\n%s"
                               % (self.name, timeout, last, self.log_text()[-3000:]))
        # the run directory: the pool says where its socket is; the launcher hashes the data dir
        m = re.search(r"listening on (\S+)/fcgi\.sock", self.log_text())
        self.run_dir = m.group(1) if m else fnv1a_run_dir(os.path.realpath(self.data))
        if m and self.run_dir != fnv1a_run_dir(os.path.realpath(self.data)):
            say("  note: run dir %s differs from the hash of the data dir" % self.run_dir)
        self.ready_at = time.time()

    def create_container(self, start=True):
        s = self.session()
        r = s.post(self.base + "/containers", json={"image": IMAGE, "command": CMD}, timeout=150)
        if r.status_code != 201:
            raise RuntimeError("%s: POST /containers -> %s %s" % (self.name, r.status_code, r.text[:500]))
        cuid = r.json()["cuid"]
        self.cuids.append(cuid)
        if start:
            r = s.post(self.base + "/containers/%s/start" % cuid, timeout=150)
            if r.status_code != 200:
                raise RuntimeError("%s: start -> %s %s" % (self.name, r.status_code, r.text[:500]))
        return cuid

    def delete_container(self, cuid, bench):
        try:
            r = self.session().delete(self.base + "/containers/%s" % cuid, timeout=150)
            ok = r.status_code == 204
            if not ok:
                problem(bench, "%s: DELETE /containers/%s -> %s %s" % (self.name, cuid, r.status_code, r.text[:300]))
        except requests.RequestException as e:
            ok = False
            problem(bench, "%s: DELETE /containers/%s failed: %r" % (self.name, cuid, e))
        if not ok:  # never leave it running: remove the Docker container ourselves
            docker("DELETE", "/containers/%s?force=1&v=1" % cuid)
        if cuid in self.cuids:
            self.cuids.remove(cuid)

    def add_trivial(self, nprocs, nokeep_cm=False):
        """Runs trivial-fcgi on a socket in the run dir and routes /bench/trivial to it
        (and, with nokeep_cm, /bench/cm-nokeep/... to the service's own socket without the
        upstream keepalive pool) through <run_dir>/conf.d/bench.conf, then reloads nginx."""
        sock = os.path.join(self.run_dir, "bench-trivial.sock")
        self.trivial = subprocess.Popen([TRIVIAL, sock, str(nprocs), "www-data"], stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(self.dir, "trivial.log"), "w"))
        CLEANUPS.append(self.stop_trivial)
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        params, keep = self._location_params()
        if TRIVIAL_KEEP_CONN in ("on", "off"):
            keep = TRIVIAL_KEEP_CONN
        self.keep_conn = keep
        kc = ["\tfastcgi_keep_conn %s;" % keep]
        conf = ["# written by bench/cmbench.py; removed when the benchmark ends",
                "location = /bench/trivial {",
                "\tfastcgi_pass unix:%s;" % sock] + kc + ["\t" + p for p in params] + ["}"]
        if nokeep_cm:
            conf += ["location ^~ /bench/cm-nokeep/ {",
                     "\trewrite ^/bench/cm-nokeep(/.*)$ $1 break;",
                     "\tfastcgi_pass unix:%s/fcgi.sock;" % self.run_dir] + kc + ["\t" + p for p in params] + ["}"]
        self.bench_conf = os.path.join(self.run_dir, "conf.d", "bench.conf")
        with open(self.bench_conf, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.reload_nginx()
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                r = requests.get(self.base + "/bench/trivial", headers=dict(self.authz, **{"User-Agent": CHECK_UA}),
                                 timeout=5)
                if r.status_code == 200 and "c3f0b7f2e" in r.text:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("%s: nginx does not route /bench/trivial after reload; nginx-error.log:\n%s"
                           % (self.name, self._tail(os.path.join(self.data, "log", "nginx-error.log"))))

    def _location_params(self):
        """The directives of the service's own `location /` (from the rendered locations.conf),
        without fastcgi_pass/fastcgi_keep_conn, so both locations pass the same parameters; and
        the service's fastcgi_keep_conn setting ("on" or "off")."""
        with open(os.path.join(self.run_dir, "locations.conf")) as f:
            text = f.read()
        m = re.search(r"^location / \{\n(.*?)^\}", text, re.M | re.S)
        if not m:
            raise RuntimeError("no `location / {` block in %s/locations.conf" % self.run_dir)
        out = []
        keep = ["off"]

        def take(lines, depth=0):
            for line in lines:
                line = line.strip()
                inc = re.match(r"include\s+(\S+);$", line)
                if inc and depth < 4:  # the rendered config may keep the directives in an included file
                    with open(inc.group(1)) as f:
                        take(f.read().splitlines(), depth + 1)
                elif line.startswith("fastcgi_keep_conn "):
                    keep[0] = line.split()[1].rstrip(";")
                elif line and not line.startswith("#") and not line.startswith("fastcgi_pass "):
                    out.append(line)
        take(m.group(1).splitlines())
        return out, keep[0]

    def nginx_workers(self):
        """pids of the nginx master's current worker processes."""
        with open(os.path.join(self.run_dir, "nginx.pid")) as f:
            master = f.read().strip()
        out = set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    ppid = f.read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            if ppid == master:
                out.add(pid)
        return out

    def wait_old_nginx_workers(self, old, timeout=15):
        """After a reload: waits until the workers from before it (old) have exited, so that
        no benchmark connection lands on a worker that is shutting down."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not any(os.path.exists("/proc/%s" % pid) for pid in old):
                return
            time.sleep(0.05)
        say("  note: nginx workers from before the reload still running after %d s" % timeout)

    def reload_nginx(self, wait=True):
        old = self.nginx_workers()
        with open(os.path.join(self.run_dir, "nginx.pid")) as f:
            os.kill(int(f.read().strip()), signal.SIGHUP)
        if wait:
            self.wait_old_nginx_workers(old)

    def keeps_fcgi_connections(self):
        """Whether the service's location keeps FastCGI connections open between requests
        (an upstream keepalive pool and fastcgi_keep_conn on)."""
        with open(os.path.join(self.run_dir, "nginx.conf")) as f:
            conf = f.read()
        m = re.search(r"upstream cm_fcgi \{(.*?)\}", conf, re.S)
        pool = bool(m and re.search(r"^\s*keepalive\s+\d+\s*;", m.group(1), re.M))
        return pool and self._location_params()[1] == "on"

    @staticmethod
    def _tail(path, n=3000):
        try:
            with open(path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return "(no %s)" % path

    def stop_trivial(self):
        if getattr(self, "bench_conf", None) and os.path.exists(self.bench_conf):
            os.unlink(self.bench_conf)
            try:
                self.reload_nginx(wait=False)
            except (OSError, ValueError):
                pass
        if self.trivial and self.trivial.poll() is None:
            self.trivial.terminate()
            try:
                self.trivial.wait(10)
            except subprocess.TimeoutExpired:
                self.trivial.kill()
                self.trivial.wait()
        self.trivial = None

    def stop(self):
        if not self.proc or self.proc.returncode is not None:
            return
        self.stop_trivial()
        for cuid in list(self.cuids):
            self.delete_container(cuid, "cleanup")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            PROBLEMS.append((self.name, "serve did not stop within 60 s of SIGTERM; killed its process group"))
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.run_dir and os.path.isdir(self.run_dir):  # sockets and rendered config only
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def report(self, bench):
        """After stop: non-2xx answers in nginx's access log (the harness's own expected
        ones excluded), audit rows vs requests, and the warnings the stack logged."""
        counts, bad, aborted = {}, {}, {}
        path = os.path.join(self.data, "log", "nginx-access.log")
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    m = re.search(r'"(\S+) (\S+) [^"]*" (\d{3}) ', line)
                    if not m or CHECK_UA in line or "container-manager-readiness" in line:
                        continue
                    meth, uri, st = m.group(1), m.group(2), int(m.group(3))
                    if uri.startswith("/healthz"):
                        continue  # readiness polling (503 until the runner's first heartbeat)
                    key = "trivial" if uri.startswith("/bench/trivial") else "service"
                    counts[key] = counts.get(key, 0) + 1
                    if st == 101 and uri.startswith("/ws/"):
                        continue  # a WebSocket session (the helper audits it; checked below)
                    if st == 499:  # wrk stops with requests in flight: nginx logs them as 499
                        aborted[key] = aborted.get(key, 0) + 1
                    elif not 200 <= st < 300:
                        k = (key, st, meth, re.sub(r"c[0-9a-f-]{36}", "{cuid}", uri.split("?")[0]))
                        bad[k] = bad.get(k, 0) + 1
        except OSError:
            pass
        for (key, st, meth, uri), n in sorted(bad.items()):
            problem(bench, "%s: nginx answered %d x HTTP %d to %s %s (%s)" % (self.name, n, st, meth, uri, key))
        for key, n in sorted(aborted.items()):
            say("  %s: %d %s requests abandoned by the client (499, wrk stopping mid-request)" % (self.name, n, key))
        # every request that reached the application must leave an audit row (matched by the
        # request id nginx makes and passes on; it ends every access log line)
        try:
            p = subprocess.run(["sqlite3", "-cmd", ".timeout 15000", self.db, "SELECT request_id FROM audit"],
                               capture_output=True, text=True)
            audit_ids = set(p.stdout.split())
            reached, missing, abandoned, abandoned_logged = 0, 0, 0, 0
            for meth, uri, st, rid in self._access_lines():
                if st in (502, 504) or (uri.startswith("/bench/trivial") and st == 200):
                    continue  # not answered by the application
                if st == 499:
                    abandoned += 1
                    abandoned_logged += rid in audit_ids
                    continue
                reached += 1
                missing += rid not in audit_ids
            if missing:
                problem(bench, "%s: %d of %d requests answered by the application have no audit row"
                        % (self.name, missing, reached))
            else:
                say("  %s: all %d requests answered by the application have their audit row (%d of %d abandoned "
                    "by the client too)" % (self.name, reached, abandoned_logged, abandoned))
            q = ("SELECT count(*), coalesce(sum(n), 0) FROM (SELECT request_id, count(*) AS n FROM audit "
                 "WHERE request_id IS NOT NULL GROUP BY request_id HAVING count(*) > 1)")
            p = subprocess.run(["sqlite3", "-cmd", ".timeout 15000", self.db, q], capture_output=True, text=True)
            dup_ids, dup_rows = (int(x) for x in p.stdout.strip().split("|"))
            if dup_ids:
                p = subprocess.run(["sqlite3", "-cmd", ".timeout 15000", self.db,
                                    "SELECT method, path, group_concat(status) FROM audit WHERE request_id IN "
                                    "(SELECT request_id FROM audit GROUP BY request_id HAVING count(*) > 1) "
                                    "GROUP BY request_id LIMIT 3"], capture_output=True, text=True)
                problem(bench, "%s: %d requests were handled more than once by the application (%d audit rows share "
                        "their nginx request id; nginx retried them on another worker: fastcgi_next_upstream); e.g. %s"
                        % (self.name, dup_ids, dup_rows, "; ".join(p.stdout.split())[:300]))
        except (OSError, ValueError) as e:
            say("  %s: audit check skipped: %r" % (self.name, e))
        noisy = re.compile(r"warn|error|fail|exited|restarting|signal|crash|abort|busy", re.I)
        lines = [ln for ln in self.log_text().splitlines() if noisy.search(ln)]
        for ln in lines[:12]:
            problem(bench, "%s log: %s" % (self.name, ln.strip()[:300]))
        if len(lines) > 12:
            problem(bench, "%s log: ... %d more such lines in %s" % (self.name, len(lines) - 12, self.logf))
        return counts

    def _access_lines(self):
        """(method, uri, status) of every line of nginx's access log, all clients included."""
        out = []
        try:
            with open(os.path.join(self.data, "log", "nginx-access.log"), errors="replace") as f:
                for line in f:
                    m = re.search(r'"(\S+) (\S+) [^"]*" (\d{3}) .* (\S+)$', line)
                    if m:
                        out.append((m.group(1), m.group(2), int(m.group(3)), m.group(4)))
        except OSError:
            pass
        return out


def start_stacks(*stacks):
    for s in stacks:
        s.start()
    for s in stacks:
        s.wait_ready()
        say("  stack %-10s http://127.0.0.1:%d  auth %-3s  workers %d  run dir %s"
            % (s.name, s.port, "on" if s.auth else "off", s.workers, s.run_dir))


def finish_stacks(bench, *stacks):
    for s in stacks:
        try:
            wal = os.path.getsize(s.db + "-wal")
        except OSError:
            wal = 0
        # once the load is over, can a checkpoint copy the whole WAL back (no reader pinning it)?
        p = subprocess.run(["sqlite3", "-cmd", ".timeout 15000", s.db, "PRAGMA wal_checkpoint(PASSIVE)"],
                           capture_output=True, text=True)
        ck = p.stdout.strip() or p.stderr.strip()
        if wal > 4 * 1000 * 4096:
            problem(bench, "%s: the SQLite WAL file reached %.1f MB (wal_autocheckpoint is 1000 pages, ~4 MB): "
                    "under load the WAL was not restarted for ~%d page writes; a passive checkpoint after the "
                    "load answers busy|wal pages|checkpointed = %s" % (s.name, wal / 1e6, wal // 4120, ck))
        else:
            say("  %s: SQLite WAL file %.1f MB (checkpoint after the load: %s)" % (s.name, wal / 1e6, ck))
    for s in stacks:
        s.stop()
    for s in stacks:
        s.report(bench)


def sweep_containers(root):
    """Force-removes every Docker container bind-mounting something under root (only the
    benchmark's own: managed ones of its stacks and the direct ones)."""
    st, lst = docker("GET", "/containers/json?all=1")
    n = 0
    for c in lst if st == 200 else []:
        if any((m.get("Source") or "").startswith(root + "/") for m in c.get("Mounts") or []):
            docker("DELETE", "/containers/%s?force=1&v=1" % c["Id"])
            n += 1
    return n


# ------------------------------------------------------------------------------ (a) create+start

def direct_body(name_cuid, bind_dir):
    """The Engine API create body equivalent to what the runner sends for
    {"image": IMAGE, "command": ["sleep","3600"]} with the default limits."""
    return {
        "Image": IMAGE,
        "Cmd": CMD,
        "Env": ["CONTAINER_UID=%s" % name_cuid, "TAGS="],
        "User": "1000:1000",
        "WorkingDir": "/app",
        "Labels": {
            "io.container-manager.cuid": name_cuid,
            "io.container-manager.instance": "cm-bench-direct",
            "io.container-manager.bench": "direct",
            "com.docker.compose.project": name_cuid,
            "com.docker.compose.service": "app",
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.container-number": "1",
            "com.docker.compose.project.working_dir": os.path.dirname(bind_dir),
            "com.docker.compose.project.config_files": os.path.join(os.path.dirname(bind_dir), "docker-compose.yml"),
        },
        "ExposedPorts": {},
        "HostConfig": {
            "Binds": ["%s:/app" % bind_dir],
            "Init": True,
            "Privileged": False,
            "SecurityOpt": ["no-new-privileges"],
            "CapDrop": ["ALL"],
            "CapAdd": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL", "NET_BIND_SERVICE"],
            "Memory": 1 << 30,
            "MemorySwap": 1 << 30,
            "PidsLimit": 512,
            "NetworkMode": "bridge",
            "RestartPolicy": {"Name": "no"},
            "PortBindings": {},
        },
    }


def compare_with_service(bench, docker_id, body):
    """Checks that the direct body matches what the service asked Docker for."""
    st, insp = docker("GET", "/containers/%s/json" % docker_id)
    if st != 200:
        return
    hc, cfg = insp["HostConfig"], insp["Config"]
    want = body["HostConfig"]
    diffs = []
    for k in ("Init", "Privileged", "Memory", "MemorySwap", "PidsLimit", "NetworkMode"):
        if hc.get(k) != want[k]:
            diffs.append("%s service=%r direct=%r" % (k, hc.get(k), want[k]))
    for k in ("SecurityOpt", "CapDrop", "CapAdd"):
        if sorted(hc.get(k) or []) != sorted(want[k]):
            diffs.append("%s service=%r direct=%r" % (k, hc.get(k), want[k]))
    if len(hc.get("Binds") or []) != 1:
        diffs.append("Binds service=%r" % hc.get("Binds"))
    if cfg.get("User") != body["User"] or cfg.get("Cmd") != body["Cmd"]:
        diffs.append("User/Cmd service=%r/%r" % (cfg.get("User"), cfg.get("Cmd")))
    svc_labels = set(k for k in (cfg.get("Labels") or {}) if k.startswith(("io.container-manager", "com.docker.compose")))
    if svc_labels - set(body["Labels"]):
        diffs.append("labels only the service sets: %s" % sorted(svc_labels - set(body["Labels"])))
    if diffs:
        say("  note: the direct body differs from the service's: " + "; ".join(diffs))
    else:
        say("  direct body checked against the service's container: same limits, Init, caps, bind, labels")


def bench_a(root):
    say("\n(a) create+start: API (POST /containers + /start) vs Engine API direct (/containers/create + /start)")
    say("    load average before: %s" % loadavg())
    st = Stack(root, "a")
    start_stacks(st)
    api = Http(lambda: http.client.HTTPConnection("127.0.0.1", st.port, timeout=150), st.authz)
    dck = docker_client()
    direct_root = os.path.join(root, "direct")
    os.makedirs(direct_root)
    direct_live = []

    def rm_direct():
        for cid in list(direct_live):
            docker("DELETE", "/containers/%s?force=1&v=1" % cid)
            direct_live.remove(cid)
    CLEANUPS.append(rm_direct)

    def via_api():
        t0 = time.perf_counter()
        s1, raw, _ = api.call("POST", "/containers", {"image": IMAGE, "command": CMD})
        t1 = time.perf_counter()
        if s1 != 201:
            raise RuntimeError("POST /containers -> %s %s" % (s1, raw[:300]))
        obj = json.loads(raw)
        cuid = obj["cuid"]
        st.cuids.append(cuid)
        s2, raw, _ = api.call("POST", "/containers/%s/start" % cuid)
        t2 = time.perf_counter()
        if s2 != 200:
            raise RuntimeError("POST /containers/%s/start -> %s %s" % (cuid, s2, raw[:300]))
        return (t2 - t0) * 1000, (t1 - t0) * 1000, (t2 - t1) * 1000, cuid

    def via_docker():
        fake = "c" + str(uuid.uuid4())
        name = "cm-bench-direct-" + fake[1:13]
        bind = os.path.join(direct_root, fake, "app")
        body = direct_body(fake, bind)
        t0 = time.perf_counter()
        os.makedirs(bind)  # the runner makes and chowns the /app directory too
        os.chown(bind, 1000, 1000)
        s1, raw, _ = dck.call("POST", DOCKER_API + "/containers/create?name=" + name, body)
        t1 = time.perf_counter()
        if s1 != 201:
            raise RuntimeError("Engine API create -> %s %s" % (s1, raw[:300]))
        cid = json.loads(raw)["Id"]
        direct_live.append(cid)
        s2, raw, _ = dck.call("POST", DOCKER_API + "/containers/%s/start" % cid)
        t2 = time.perf_counter()
        if s2 != 204:
            raise RuntimeError("Engine API start -> %s %s" % (s2, raw[:300]))
        return (t2 - t0) * 1000, (t1 - t0) * 1000, (t2 - t1) * 1000, cid

    def cleanup_api(cuid):
        s, raw, _ = api.call("DELETE", "/containers/%s" % cuid)
        if s != 204:
            problem("a", "DELETE /containers/%s -> %s %s" % (cuid, s, raw[:200]))
            docker("DELETE", "/containers/%s?force=1&v=1" % cuid)
        if cuid in st.cuids:
            st.cuids.remove(cuid)

    def cleanup_direct(cid):
        s, _ = docker("DELETE", "/containers/%s?force=1&v=1" % cid)
        if s not in (204, 404):
            say("  note: force-remove of direct container %s -> %s" % (cid[:12], s))
        direct_live.remove(cid)

    # warm-up (not counted); also checks that the direct body matches the service's
    _, _, _, cuid = via_api()
    _, _, _, cid = via_docker()
    st_, obj = docker("GET", "/containers/%s/json" % cuid)
    if st_ == 200:
        compare_with_service("a", obj["Id"], direct_body("c" + str(uuid.uuid4()), "/x/app"))
    cleanup_api(cuid)
    cleanup_direct(cid)

    api_t, dir_t, api_c, api_s, dir_c, dir_s = [], [], [], [], [], []
    for i in range(ROUNDS_A):
        order = ("api", "direct") if i % 2 == 0 else ("direct", "api")
        line = []
        for side in order:
            if side == "api":
                tot, c, s_, cuid = via_api()
                api_t.append(tot), api_c.append(c), api_s.append(s_)
                cleanup_api(cuid)
                line.append("api %6.1f ms" % tot)
            else:
                tot, c, s_, cid = via_docker()
                dir_t.append(tot), dir_c.append(c), dir_s.append(s_)
                cleanup_direct(cid)
                line.append("direct %6.1f ms" % tot)
        say("  round %2d: %s" % (i + 1, "  ".join(line)))
    api.close()
    dck.close()
    finish_stacks("a", st)
    ma, md = median(api_t), median(dir_t)
    ratio = ma / md
    say("  create: API %.1f ms vs direct %.1f ms;  start: API %.1f ms vs direct %.1f ms (medians)"
        % (median(api_c), median(dir_c), median(api_s), median(dir_s)))
    say("  RESULT (a) create+start median: API %.1f ms vs Engine API direct %.1f ms -> ratio %.2fx "
        "(target <= 1.10x: %s) [%d alternating rounds]"
        % (ma, md, ratio, "met" if ratio <= 1.10 else "not met", ROUNDS_A))
    RESULTS["a"] = {"api": ma, "direct": md, "ratio": ratio}


# ------------------------------------------------------------------------------ (b) GET one

def alternate(rounds, sides, bench):
    """sides: list of (name, url, headers, kwargs). Rounds alternate (rotate) the order.
    Returns {name: [results]}."""
    res = {n: [] for n, _, _, _ in sides}
    for i in range(rounds):
        order = sides[i % len(sides):] + sides[:i % len(sides)]
        for name, url, hdr, kw in order:
            kw = dict(kw)
            pre = kw.pop("pre", None)
            if pre:
                pre()
            r = wrk(url, hdr, **kw)
            check_wrk(bench, name, r)
            res[name].append(r)
            say("  round %d  %-24s %s" % (i + 1, name, wrk_line(r)))
    return res


def pool_connections(st):
    """(pool workers, established connections the workers hold on fcgi.sock)."""
    sock = os.path.join(st.run_dir, "fcgi.sock")
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True).stdout
    conns = sum(1 for ln in out.splitlines() if "ESTAB" in ln and sock in ln and '"cm-fcgi"' in ln)
    procs = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"cm-fcgi") and sock.encode() in cmd:
            procs += 1
    return max(procs - 1, 0), conns  # minus the supervisor


def unpin(st):
    """Reloads nginx so its old workers close their idle upstream connections, which frees the
    pool workers sitting on them; then the plain fastcgi_pass location can be measured."""
    st.reload_nginx()
    deadline = time.time() + 10
    while time.time() < deadline and pool_connections(st)[1]:
        time.sleep(0.1)
    held = pool_connections(st)[1]
    if held:
        say("  note: %d pool connections still held 10 s after the nginx reload" % held)


def fresh_connection_probe(st, cuid, bench, timeout=5):
    """One GET through a location that passes to the pool's socket without the upstream
    keepalive cache, i.e. on a new FastCGI connection, as an nginx worker with no idle cached
    connection must open. Shows whether the pool still accepts new connections."""
    workers, conns = pool_connections(st)
    t0 = time.time()
    try:
        r = requests.get(st.base + "/bench/cm-nokeep/containers/" + cuid,
                         headers=dict(st.authz, **{"User-Agent": CHECK_UA}), timeout=timeout)
        ms = (time.time() - t0) * 1000
        say("  new-connection probe: HTTP %d in %.1f ms (pool: %d workers, %d connections held on fcgi.sock)"
            % (r.status_code, ms, workers, conns))
        if ms > STALL_MS or r.status_code != 200:
            problem(bench, "%s: a GET on a new FastCGI connection took %.0f ms (HTTP %d)" % (st.name, ms, r.status_code))
    except requests.Timeout:
        why = ""
        if conns >= workers:
            why = (": each of the %d pool workers sits on one of the %d connections nginx keeps open to fcgi.sock "
                   "(fastcgi_keep_conn + upstream keepalive) and accepts no other" % (workers, conns))
        problem(bench, "%s: a GET on a new FastCGI connection to the pool was not answered within %d s after the "
                "load (pool: %d workers, %d connections held)%s" % (st.name, timeout, workers, conns, why))


def bench_b(root):
    say("\n(b) GET /containers/{cuid} vs GET /bench/trivial behind the same nginx "
        "(wrk -t%d -c%d -d%ds, keep-alive, authenticated)" % (THREADS, CONNS, DURATION))
    say("    load average before: %s" % loadavg())
    st = Stack(root, "b")
    start_stacks(st)
    cuid = st.create_container(start=True)
    st.add_trivial(st.workers, nokeep_cm=True)
    hdr = st.authz
    u_cm = st.base + "/containers/" + cuid
    u_tr = st.base + "/bench/trivial"
    chk = dict(hdr, **{"User-Agent": CHECK_UA})
    sizes = {}
    for name, u in (("service", u_cm), ("trivial", u_tr)):
        r = requests.get(u, headers=chk, timeout=10)
        if r.status_code != 200:
            raise RuntimeError("GET %s -> %s %s" % (u, r.status_code, r.text[:300]))
        sizes[name] = len(r.content)
    say("  body sizes: container object %d bytes, trivial %d bytes; %d pool workers, %d trivial processes; "
        "fastcgi_keep_conn %s (service's location: %s)" % (sizes["service"], sizes["trivial"], st.workers,
                                                            st.workers, st.keep_conn, st._location_params()[1]))
    for u in (u_cm, u_tr):  # warm-up: every worker has verified the credentials once
        wrk(u, hdr, duration=1)
    u_nk = st.base + "/bench/cm-nokeep/containers/" + cuid

    sides = [("GET /containers/{cuid}", u_cm, hdr, {}), ("GET /bench/trivial", u_tr, hdr, {})]
    like = st.keeps_fcgi_connections()
    if like:
        sides.append(("same, plain fastcgi_pass", u_nk, hdr, {"pre": lambda: unpin(st)}))
    else:
        say("  the service's location opens a new FastCGI connection per request (no upstream keepalive), as the "
            "trivial one does: the comparison is like-for-like as it stands")
    res = alternate(ROUNDS, sides, "b")
    fresh_connection_probe(st, cuid, "b")
    st.delete_container(cuid, "b")
    finish_stacks("b", st)
    cm = median([r["rps"] for r in res["GET /containers/{cuid}"]])
    tr = median([r["rps"] for r in res["GET /bench/trivial"]])
    nk = median([r["rps"] for r in res["same, plain fastcgi_pass"]]) if like else None
    ratio = cm / tr
    if like:
        say("  like-for-like: the same GET through a plain `fastcgi_pass unix:fcgi.sock` location (new FastCGI "
            "connection per request, exactly like the trivial location; measured after an nginx reload freed the "
            "pool): %s = %.0f%% of trivial" % (fmt_rps(nk), 100 * nk / tr))
    say("  RESULT (b) GET one container: %s vs trivial %s -> %.0f%% (target >= 70%%: %s) [median of %d rounds; "
        "p99 %.1f ms vs %.1f ms]"
        % (fmt_rps(cm), fmt_rps(tr), 100 * ratio, "met" if ratio >= 0.70 else "not met", ROUNDS,
           median([r["p99"] for r in res["GET /containers/{cuid}"]]),
           median([r["p99"] for r in res["GET /bench/trivial"]])))
    RESULTS["b"] = {"cm": cm, "trivial": tr, "ratio": ratio, "nokeep": nk,
                    "p99": median([r["p99"] for r in res["GET /containers/{cuid}"]]),
                    "p99t": median([r["p99"] for r in res["GET /bench/trivial"]])}


# ------------------------------------------------------------------------------ (c) list page

def insert_rows(st, n):
    """Inserts n exited containers straight into the stack's database (one transaction)."""
    now = int(time.time() * 1000)
    tag = int.from_bytes(os.urandom(4), "big")
    sql = """
BEGIN IMMEDIATE;
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
INSERT INTO containers(cuid, docker_id, image, command, env, tags, cpus, memory, pids, ports, ports_actual,
                       status, exit_code, started_at, finished_at, restart_count, created_at, updated_at,
                       version, owner)
SELECT printf('c%08x-%04x-4%03x-8%03x-%012x', {tag}, i >> 16, 0, 0, i), lower(hex(randomblob(32))),
       '{image}', '["sleep","3600"]', '{{}}', '[]', NULL, 1073741824, 512, '[]', '[]',
       'exited', 0, {now} - 60000, {now} - 30000, 0, {now} - 3600000 + i, {now} - 30000, 1, '{user}'
FROM k;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SELECT count(*) FROM containers;
""".format(n=n, tag=tag, image=IMAGE, now=now, user=st.user)
    t0 = time.time()
    p = subprocess.run(["sqlite3", "-cmd", ".timeout 30000", st.db], input=sql, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("sqlite3 insert into %s failed: %s" % (st.db, p.stderr))
    return int(p.stdout.strip().splitlines()[-1]), time.time() - t0


def row_count(st):
    p = subprocess.run(["sqlite3", "-cmd", ".timeout 30000", st.db, "SELECT count(*) FROM containers"],
                       capture_output=True, text=True)
    return int(p.stdout.strip() or -1)


def cursor_walk(st, pages):
    """Follows next_cursor for `pages` pages (python requests client); per-page ms."""
    s = st.session()
    s.headers["User-Agent"] = CHECK_UA
    url = st.base + "/containers?limit=50"
    out = []
    for _ in range(pages):
        t0 = time.perf_counter()
        r = s.get(url, timeout=30)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            problem("c", "%s: cursor walk: GET %s -> %s %s" % (st.name, url, r.status_code, r.text[:200]))
            break
        nxt = r.json().get("next_cursor")
        if not nxt:
            break
        url = st.base + "/containers?limit=50&cursor=" + nxt
    return out


def bench_c(root):
    say("\n(c) GET /containers?limit=50 (first page) with 10,000 rows vs GET /bench/trivial; "
        "page latency at 1,000 / 10,000 / 100,000 rows")
    say("    load average before: %s" % loadavg())
    sizes = (("c1k", 1000), ("c10k", 10000), ("c100k", 100000))
    stacks = {name: Stack(root, name) for name, _ in sizes}
    start_stacks(*stacks.values())
    # Rows go in after the stacks are up: the runner reconciles rows against Docker only when it
    # starts and after it reconnects to dockerd, so rows inserted now stay (counts are rechecked).
    for name, n in sizes:
        cnt, secs = insert_rows(stacks[name], n)
        say("  %s: inserted %d exited rows with sqlite3 in %.1f s (containers table: %d rows)" % (name, n, secs, cnt))
    big = stacks["c10k"]
    big.add_trivial(big.workers, nokeep_cm=True)
    hdr = big.authz
    page = "/containers?limit=50"
    chk = dict(hdr, **{"User-Agent": CHECK_UA})
    for name, st in stacks.items():
        r = requests.get(st.base + page, headers=dict(st.authz, **{"User-Agent": CHECK_UA}), timeout=30)
        body = r.json() if r.status_code == 200 else {}
        if r.status_code != 200 or len(body.get("containers", [])) != 50 or not body.get("next_cursor"):
            raise RuntimeError("%s: GET %s -> %s %s" % (name, page, r.status_code, r.text[:300]))
        if name == "c10k":
            say("  page body %d bytes (50 containers + next_cursor)" % len(r.content))
    u_pg = big.base + page
    u_tr = big.base + "/bench/trivial"
    u_nk = big.base + "/bench/cm-nokeep" + page
    for u in (u_pg, u_tr):
        wrk(u, hdr, duration=1)
    say("  throughput (wrk -t%d -c%d -d%ds):" % (THREADS, CONNS, DURATION))
    sides = [("page of 50 @ 10k rows", u_pg, hdr, {}), ("GET /bench/trivial", u_tr, hdr, {})]
    like = big.keeps_fcgi_connections()
    if like:
        sides.append(("same, plain fastcgi_pass", u_nk, hdr, {"pre": lambda: unpin(big)}))
    res = alternate(ROUNDS, sides, "c")
    if like:
        unpin(big)  # pool workers pinned by idle upstream connections would stall a lone new connection
    say("  latency (wrk -t1 -c1 -d%ds, one request at a time):" % LAT_DURATION)
    lat_kw = {"threads": 1, "conns": 1, "duration": LAT_DURATION}
    lat = alternate(ROUNDS_LAT, [("page @ %s rows" % name[1:], stacks[name].base + page, stacks[name].authz, lat_kw)
                             for name, _ in sizes], "c")
    walks = {}
    for name in ("c1k", "c100k"):
        w = cursor_walk(stacks[name], 20)
        walks[name] = median(w[1:]) if len(w) > 1 else float("nan")
    say("  cursor walk (20 pages of 50, python client, per page after the first): 1k %.2f ms, 100k %.2f ms"
        % (walks["c1k"], walks["c100k"]))
    for name, n in sizes:
        now = row_count(stacks[name])
        if now != n:
            problem("c", "%s: the containers table has %d rows after the benchmark, %d before" % (name, now, n))
    finish_stacks("c", *stacks.values())
    pg = median([r["rps"] for r in res["page of 50 @ 10k rows"]])
    nk = median([r["rps"] for r in res["same, plain fastcgi_pass"]]) if like else None
    tr = median([r["rps"] for r in res["GET /bench/trivial"]])
    l1 = median([r["p50"] for r in lat["page @ 1k rows"]])
    l10 = median([r["p50"] for r in lat["page @ 10k rows"]])
    l100 = median([r["p50"] for r in lat["page @ 100k rows"]])
    ratio = pg / tr
    if like:
        say("  like-for-like: the same page through a plain fastcgi_pass location (as trivial): %s = %.0f%% of "
            "trivial" % (fmt_rps(nk), 100 * nk / tr))
    say("  RESULT (c) first page of 50 @ 10,000 rows: %s vs trivial %s -> %.0f%% (target >= 40%%: %s) "
        "[median of %d rounds]" % (fmt_rps(pg), fmt_rps(tr), 100 * ratio, "met" if ratio >= 0.40 else "not met",
                                   ROUNDS))
    say("  RESULT (c) page latency p50: 1,000 rows %.2f ms, 10,000 rows %.2f ms, 100,000 rows %.2f ms "
        "-> 100k/1k = %.2fx (should be ~1.0x)" % (l1, l10, l100, l100 / l1))
    RESULTS["c"] = {"page": pg, "trivial": tr, "ratio": ratio, "nokeep": nk, "l1k": l1, "l10k": l10, "l100k": l100,
                    "walk1k": walks["c1k"], "walk100k": walks["c100k"]}


# ------------------------------------------------------------------------------ (d) auth cost

def bench_d(root):
    say("\n(d) GET /containers/{cuid} with basic auth vs the same on a CM_AUTH=off stack "
        "(wrk -t%d -c%d -d%ds, keep-alive)" % (THREADS, CONNS, DURATION))
    say("    load average before: %s" % loadavg())
    sa = Stack(root, "d-auth", auth=True)
    sn = Stack(root, "d-noauth", auth=False)
    start_stacks(sa, sn)
    with open(os.path.join(sa.data, "nginx", "htpasswd")) as f:
        line = f.readline().strip()
    user, _, hsh = line.partition(":")
    scheme = "sha512-crypt" if hsh.startswith("$6$") else "NOT sha512-crypt"
    rounds = re.match(r"\$6\$rounds=(\d+)\$", hsh)
    say("  htpasswd: user %s, hash starts with %s -> %s (%s rounds)"
        % (user, hsh[:3], scheme, rounds.group(1) if rounds else "default 5000"))
    if not hsh.startswith("$6$"):
        problem("d", "the htpasswd hash does not start with $6$ (sha512-crypt): %s..." % hsh[:8])
    ca = sa.create_container(start=True)
    cn = sn.create_container(start=True)
    ua = {"User-Agent": CHECK_UA}
    r1 = requests.get(sa.base + "/containers/" + ca, headers=ua, timeout=10)
    r2 = requests.get(sn.base + "/containers/" + cn, headers=ua, timeout=10)
    r3 = requests.get(sa.base + "/containers/" + ca, headers=dict(sa.authz, **ua), timeout=10)
    say("  checks: no credentials -> auth stack %d, CM_AUTH=off stack %d; with credentials -> %d"
        % (r1.status_code, r2.status_code, r3.status_code))
    if r1.status_code != 401 or r2.status_code != 200 or r3.status_code != 200:
        problem("d", "unexpected auth behaviour: %d/%d/%d (want 401/200/200)"
                % (r1.status_code, r2.status_code, r3.status_code))
    u_a = sa.base + "/containers/" + ca
    u_n = sn.base + "/containers/" + cn
    # the same request bytes on both (the CM_AUTH=off stack ignores the header)
    for u in (u_a, u_n):
        wrk(u, sa.authz, duration=1)
    res = alternate(ROUNDS, [("auth on", u_a, sa.authz, {}), ("CM_AUTH=off", u_n, sa.authz, {})], "d")
    sa.delete_container(ca, "d")
    sn.delete_container(cn, "d")
    finish_stacks("d", sa, sn)
    a = median([r["rps"] for r in res["auth on"]])
    n = median([r["rps"] for r in res["CM_AUTH=off"]])
    ratio = a / n
    say("  RESULT (d) authenticated %s vs unauthenticated %s -> %.0f%% (target >= 60%%: %s) "
        "[%s, median of %d rounds]" % (fmt_rps(a), fmt_rps(n), 100 * ratio, "met" if ratio >= 0.60 else "not met",
                                       scheme, ROUNDS))
    RESULTS["d"] = {"auth": a, "noauth": n, "ratio": ratio, "scheme": scheme}


# ------------------------------------------------------------------------------ main

# ------------------------------------------------------------------------------ (e)/(f) files

def descendants(pid):
    """pids below pid (the stack's processes)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k)
    return out


def worker_hwm_kb(st):
    """Peak RSS (VmHWM, kB) of each cm-fcgi worker of the stack."""
    out = {}
    for p in descendants(st.proc.pid):
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                if b"cm-fcgi" not in f.read():
                    continue
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        out[p] = int(line.split()[1])
        except OSError:
            pass
    return out


def make_source_zip(path, ndirs=100, per_dir=100, size=10000):
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for d in range(ndirs):
            for i in range(per_dir):
                zf.writestr("src/d%03d/f%03d.bin" % (d, i), os.urandom(size))
    return os.path.getsize(path)


def bench_e(root):
    say("\n(e) upload-zip of a 100 MB zip of 10,000 files vs `bsdtar -xf` of the same file on the same disk "
        "(alternating rounds, each after a sync)")
    if not shutil.which("bsdtar"):
        raise RuntimeError("bsdtar is missing (apt-get install libarchive-tools)")
    st = Stack(root, "e")
    start_stacks(st)
    cuid = st.create_container(start=False)
    z = os.path.join(st.dir, "src.zip")
    zsize = make_source_zip(z)
    say("  zip: %.1f MB, 10,000 files in 100 directories" % (zsize / 1e6))
    app = os.path.join(st.data, "containers", cuid, "app")
    scratch = os.path.join(st.data, "bsdtar-out")
    os.makedirs(scratch)
    ses = st.session()
    api_t, tar_t = [], []
    for rnd in range(max(ROUNDS, 5)):
        subprocess.run(["sync"])
        with open(z, "rb") as f:
            t0 = time.time()
            r = ses.post(st.base + "/containers/%s/upload-zip" % cuid, data=f,
                         headers={"Content-Type": "application/zip"}, params={"path": "r%d" % rnd}, timeout=600)
            api_t.append(time.time() - t0)
        if r.status_code != 200 or r.json().get("files") != 10000:
            raise RuntimeError("upload-zip -> %s %s" % (r.status_code, r.text[:300]))
        out = os.path.join(scratch, "r%d" % rnd)
        os.makedirs(out)
        subprocess.run(["sync"])
        t0 = time.time()
        p = subprocess.run(["bsdtar", "-xf", z, "-C", out])
        tar_t.append(time.time() - t0)
        if p.returncode != 0:
            raise RuntimeError("bsdtar failed")
        say("  round %d: upload-zip %.2f s (incl. the 100 MB HTTP transfer)   bsdtar -xf %.2f s" % (rnd + 1, api_t[-1], tar_t[-1]))
        shutil.rmtree(os.path.join(app, "r%d" % rnd), ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    st.delete_container(cuid, "e")
    finish_stacks("e", st)
    a, b = median(api_t), median(tar_t)
    say("  RESULT (e) upload-zip %.2f s vs bsdtar -xf %.2f s -> %.2fx (target <= 1.25x)" % (a, b, a / b))
    RESULTS["e"] = {"api": a, "tar": b, "ratio": a / b, "mb": zsize / 1e6}


def bench_f(root):
    say("\n(f) download-zip of a 1 GB directory: worker peak RSS, and throughput vs `bsdtar -cf - --format zip`")
    if not shutil.which("bsdtar"):
        raise RuntimeError("bsdtar is missing (apt-get install libarchive-tools)")
    st = Stack(root, "f")
    start_stacks(st)
    cuid = st.create_container(start=False)
    big = os.path.join(st.data, "containers", cuid, "app", "big")
    os.makedirs(big)
    chunk = os.urandom(1 << 20)
    for i in range(100):
        with open(os.path.join(big, "f%03d.bin" % i), "wb") as f:
            for k in range(10):
                f.write(chunk[k:] + chunk[:k])
    total = 100 * 10 * len(chunk)
    before = worker_hwm_kb(st)
    ses = st.session()
    api_t, tar_t, sizes = [], [], []
    for rnd in range(2):
        t0 = time.time()
        n = 0
        with ses.get(st.base + "/containers/%s/download-zip" % cuid, params={"path": "big"}, stream=True, timeout=600) as r:
            if r.status_code != 200:
                raise RuntimeError("download-zip -> %s" % r.status_code)
            for block in r.iter_content(1 << 20):
                n += len(block)
        api_t.append(time.time() - t0)
        sizes.append(n)
        t0 = time.time()
        with open(os.devnull, "wb") as devnull:
            p = subprocess.run(["bsdtar", "-cf", "-", "--format", "zip", "-C", os.path.dirname(big), "big"], stdout=devnull)
        tar_t.append(time.time() - t0)
        if p.returncode != 0:
            raise RuntimeError("bsdtar failed")
        say("  round %d: download-zip %.2f s (%.0f MB/s, %d bytes)   bsdtar %.2f s (%.0f MB/s)"
            % (rnd + 1, api_t[-1], total / api_t[-1] / 1e6, n, tar_t[-1], total / tar_t[-1] / 1e6))
    after = worker_hwm_kb(st)
    peak = max(after.values()) if after else 0
    grew = {p: (before.get(p, 0), kb) for p, kb in after.items() if kb > before.get(p, 0)}
    say("  worker peak RSS (VmHWM) after the downloads: max %.1f MB (per worker before/after, kB: %s)"
        % (peak / 1024, grew or after))
    st.delete_container(cuid, "f")
    finish_stacks("f", st)
    a, b = median(api_t), median(tar_t)
    RESULTS["f"] = {"api": total / a / 1e6, "tar": total / b / 1e6, "ratio": b / a, "rss": peak / 1024}
    say("  RESULT (f) download-zip %.0f MB/s vs bsdtar %.0f MB/s -> %.2fx (target >= 0.8x); worker peak RSS %.1f MB "
        "(target < 32 MB)" % (total / a / 1e6, total / b / 1e6, b / a, peak / 1024))


# ------------------------------------------------------------------------------ (g) WebSocket terminals

WS_RTT_N = env_int("BENCH_WS_RTT", 2000)             # 1-byte round trips per side
WS_RTT_ROUNDS = env_int("BENCH_WS_RTT_ROUNDS", 10)   # ... in this many alternating rounds
WS_BULK_MB = env_int("BENCH_WS_BULK_MB", 200)        # bytes of stdout per bulk transfer (MB)
WS_BULK_ROUNDS = env_int("BENCH_WS_BULK_ROUNDS", 3)  # bulk transfers per side
WS_SESSIONS = env_int("BENCH_WS_SESSIONS", 100)      # concurrent sessions
WS_ECHO_ROUNDS = env_int("BENCH_WS_ECHO_ROUNDS", 10)  # echo rounds of all sessions at once (after the first)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BULK_FILE_MB = 8  # the file in /app that the bulk command cats over and over


def make_build_context(d, rnd, nfiles=50, size=200000):
    """A build context: nfiles random files and a Dockerfile that copies and lists them; each
    round's content is new, so neither side reuses the other's (or an earlier round's) cache."""
    os.makedirs(d)
    for i in range(nfiles):
        with open(os.path.join(d, "f%03d.bin" % i), "wb") as f:
            f.write(os.urandom(size))
    with open(os.path.join(d, "round.txt"), "w") as f:
        f.write("%s %s\n" % (rnd, os.urandom(8).hex()))
    with open(os.path.join(d, "Dockerfile"), "w") as f:
        f.write("FROM %s\nCOPY . /ctx\nRUN ls /ctx | wc -l > /count\n" % IMAGE)


def bench_h(root):
    say("\n(h) image build through POST /images/build (zip body) vs `docker build` of the same context "
        "(10 MB in 51 files; fresh content each round, so no cache; alternating order)")
    st = Stack(root, "h")
    start_stacks(st)
    ses = st.session()
    api_t, cli_t = [], []
    tags = []
    for rnd in range(max(ROUNDS, 5)):
        sides = []
        for side in ("api", "cli"):
            d = os.path.join(st.dir, "ctx-%d-%s" % (rnd, side))
            make_build_context(d, "%d-%s" % (rnd, side))
            sides.append((side, d))
        if rnd % 2:
            sides.reverse()
        for side, d in sides:
            tag = "cm-bench-build:%s%d" % (side, rnd)
            tags.append(tag)
            subprocess.run(["sync"])
            if side == "api":
                zpath = d + ".zip"
                with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
                    for name in sorted(os.listdir(d)):
                        z.write(os.path.join(d, name), name)
                with open(zpath, "rb") as f:
                    t0 = time.time()
                    r = ses.post(st.base + "/images/build", params={"tag": tag}, data=f,
                                 headers={"Content-Type": "application/zip"}, timeout=900)
                    api_t.append(time.time() - t0)
                if r.status_code != 201:
                    raise RuntimeError("POST /images/build -> %s %s" % (r.status_code, r.text[:300]))
            else:
                t0 = time.time()
                p = subprocess.run(["docker", "build", "-q", "-t", tag, d], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
                cli_t.append(time.time() - t0)
                if p.returncode != 0:
                    raise RuntimeError("docker build failed: %s" % p.stderr.decode()[-300:])
        say("  round %d: API %.2f s   docker build %.2f s" % (rnd + 1, api_t[-1], cli_t[-1]))
    for tag in tags:
        subprocess.run(["docker", "rmi", "-f", tag], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finish_stacks("h", st)
    a, b = median(api_t), median(cli_t)
    say("  RESULT (h) image build through the API %.2f s vs docker build %.2f s -> %.2fx (target <= 1.10x)" % (a, b, a / b))
    RESULTS["h"] = {"api": a, "cli": b, "ratio": a / b}


# ------------------------------------------------------------------------------ (i) apps

APP_PAGE = 512  # bytes of the page the app serves


def bench_i(root):
    say("\n(i) GET through nginx /apps/{name}/ (auth_request gate + proxy to the container's bridge address) vs the "
        "same container's published port hit directly, and vs its bridge address hit directly "
        "(wrk -t%d -c%d -d%ds, %d rounds; busybox httpd closes each connection on every side)" % (THREADS, CONNS_I, DURATION, ROUNDS_I))
    say("    load average before: %s" % loadavg())
    st = Stack(root, "i")
    start_stacks(st)
    ses = st.session()
    name = "bench-" + base64.b16encode(os.urandom(3)).decode().lower()

    def rm_leftovers():
        code, lst = docker("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(
            json.dumps({"label": ["io.container-manager.app=%s" % name]})))
        for c in lst if code == 200 else []:
            docker("DELETE", "/containers/%s?force=1&v=1" % c["Id"])
    CLEANUPS.append(rm_leftovers)
    dockerfile = ("FROM %s\nRUN mkdir -p /www && head -c %d /dev/zero | tr '\\0' x > /www/index.html\n"
                  "EXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n" % (IMAGE, APP_PAGE))
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, "w") as z:
        z.writestr("Dockerfile", dockerfile)
    r = ses.post(st.base + "/apps", files={"spec": (None, json.dumps({"name": name}), "application/json"),
                                           "source": ("src.zip", zb.getvalue(), "application/zip")}, timeout=600)
    if r.status_code != 201:
        raise RuntimeError("POST /apps -> %s %s" % (r.status_code, r.text[:300]))
    deadline = time.time() + 120
    chk = {"User-Agent": CHECK_UA}  # 503 until the app is healthy: expected
    while time.time() < deadline and ses.get(st.base + "/apps/%s/" % name, headers=chk, timeout=10).status_code != 200:
        time.sleep(0.5)
    host_port = None
    con = sqlite3.connect("file:%s?mode=ro" % st.db, uri=True, timeout=15)
    try:
        row = con.execute("SELECT host_port, status, container_ip, container_port FROM apps WHERE name = ?",
                          (name,)).fetchone()
    finally:
        con.close()
    if not row or row[1] != "healthy":
        raise RuntimeError("the app did not become healthy: %r" % (row,))
    host_port, bridge_ip, cport = row[0], row[2], row[3]
    via = st.base + "/apps/%s/" % name
    direct = "http://127.0.0.1:%d/" % host_port
    kw = {"conns": CONNS_I}
    sides = [("via /apps/{name}/", via, st.authz, kw), ("direct port", direct, st.authz, kw)]
    if bridge_ip:
        sides.append(("direct bridge address", "http://%s:%d/" % (bridge_ip, cport), st.authz, kw))
    else:
        problem("i", "the app has no bridge address: the route goes through its published port")
    pages = []
    for label, u, _, _ in sides:
        rr = requests.get(u, headers=st.authz, timeout=10)
        pages.append(rr.content)
        say("  check: %-22s %d (%d bytes)" % (label, rr.status_code, len(rr.content)))
        if rr.status_code != 200:
            problem("i", "%s answered %d" % (label, rr.status_code))
    if len(set(pages)) != 1:
        problem("i", "the sides do not answer the same page")
    for _, u, _, _ in sides:
        wrk(u, st.authz, conns=CONNS_I, duration=1)
    res = alternate(ROUNDS_I, sides, "i")
    r = ses.delete(st.base + "/apps/" + name, timeout=120)
    if r.status_code != 204:
        problem("i", "DELETE /apps/%s -> %d" % (name, r.status_code))
    finish_stacks("i", st)
    v = median([x["rps"] for x in res["via /apps/{name}/"]])
    d = median([x["rps"] for x in res["direct port"]])
    b = median([x["rps"] for x in res["direct bridge address"]]) if bridge_ip else float("nan")
    ratio = v / d if d else float("nan")
    # each round runs its sides back to back, so a round's ratio compares like with like; the
    # median of those is the figure (the machine's load can change several-fold between rounds)
    pr = median([x["rps"] / y["rps"] for x, y in zip(res["via /apps/{name}/"], res["direct port"]) if y["rps"]])
    pb = (median([x["rps"] / y["rps"] for x, y in zip(res["via /apps/{name}/"], res["direct bridge address"]) if y["rps"]])
          if bridge_ip else float("nan"))
    say("  RESULT (i) through /apps/{name}/ vs the published port directly: median of the per-round ratios %.0f%% "
        "(target >= 70%%: %s) [%d rounds]" % (100 * pr, "met" if pr >= 0.70 else "not met", ROUNDS_I))
    say("    vs the container's bridge address directly (no docker-proxy: the route's own cost, nginx, the gate's "
        "FastCGI sub-request and audit row): %.0f%%" % (100 * pb))
    say("    medians of the rounds: route %s, published port %s (%.0f%%), bridge address %s (%.0f%%)"
        % (fmt_rps(v), fmt_rps(d), 100 * ratio, fmt_rps(b), 100 * v / b))
    RESULTS["i"] = {"via": v, "direct": d, "bridge": b, "ratio": ratio, "round_ratio": pr, "round_ratio_bridge": pb}


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


class BufSock:
    """A blocking socket with a receive buffer. Both clients of (g) (the WebSocket one and the
    Engine API one) read through this, so they do the same work per byte."""

    def __init__(self, sock, initial=b""):
        self.sock = sock
        self.buf = bytearray(max(1 << 22, len(initial)))
        self.mv = memoryview(self.buf)
        self.buf[:len(initial)] = initial
        self.start, self.end = 0, len(initial)

    def _compact(self):
        have = self.end - self.start
        if self.start:
            self.buf[:have] = bytes(self.mv[self.start:self.end])
            self.start, self.end = 0, have

    def _recv(self):
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):
            self._compact()
        k = self.sock.recv_into(self.mv[self.end:])
        if not k:
            return False
        self.end += k
        return True

    def read(self, n):
        """Exactly n bytes (a copy); EOFError if the peer closed first."""
        if n > len(self.buf):
            self._compact()
            nb = bytearray(n)
            nb[:self.end] = self.mv[:self.end]
            self.mv.release()
            self.buf, self.mv = nb, memoryview(nb)
        while self.end - self.start < n:
            if self.start + n > len(self.buf):
                self._compact()
            if not self._recv():
                raise EOFError("connection closed with %d of %d bytes read" % (self.end - self.start, n))
        out = bytes(self.mv[self.start:self.start + n])
        self.start += n
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def read_http_head(sock, limit=65536):
    """Reads up to the end of an HTTP response head; returns (status, head text, bytes after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("connection closed before the response head ended: %r" % data[:300])
        data += chunk
        if len(data) > limit:
            raise RuntimeError("response head too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    m = re.match(r"HTTP/1\.\d (\d{3})", text)
    if not m:
        raise RuntimeError("malformed response head: %r" % text[:300])
    return int(m.group(1)), text, rest


def ws_path(cuid, command, tty=0):
    from urllib.parse import quote
    cmd = command if isinstance(command, str) else json.dumps(command)
    return "/ws/%s?cols=80&rows=24&command=%s&tty=%d" % (cuid, quote(cmd, safe=""), tty)


class RawWS:
    """A minimal blocking RFC 6455 client over a plain TCP socket (TCP_NODELAY): text frames,
    masked with a fresh random key each as a client must; answers pings. (g) measures the round
    trip with it so that both sides are the same kind of blocking socket loop."""

    def __init__(self, port, path, headers, timeout=60):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        lines += ["%s: %s" % kv for kv in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, head, rest = read_http_head(sock)
        if status != 101:
            sock.settimeout(2)
            try:
                rest += sock.recv(4096)
            except OSError:
                pass
            sock.close()
            raise RuntimeError("WebSocket upgrade %s -> HTTP %d %s" % (path.split("?")[0], status,
                                                                     rest.decode(errors="replace")[:300]))
        import hashlib
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        m = re.search(r"(?im)^sec-websocket-accept:\s*(\S+)", head)
        if not m or m.group(1) != want:
            sock.close()
            raise RuntimeError("bad Sec-WebSocket-Accept in the 101 answer: %r" % head[:500])
        self.io = BufSock(sock, rest)
        self.close_code = None

    def _send(self, opcode, payload):
        n = len(payload)
        if n < 126:
            hdr = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            hdr = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            hdr = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        key = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self.io.sock.sendall(hdr + key + masked)

    def send_text(self, payload):
        self._send(0x1, payload)

    def recv_message(self):
        """("text", payload bytes) or ("close", payload) once the server closes."""
        parts = []
        while True:
            b0, b1 = self.io.read(2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if b1 & 0x80:
                raise RuntimeError("the server sent a masked frame")
            if n == 126:
                n = int.from_bytes(self.io.read(2), "big")
            elif n == 127:
                n = int.from_bytes(self.io.read(8), "big")
            data = self.io.read(n)
            if op == 0x9:
                self._send(0xA, data)
            elif op == 0xA:
                pass
            elif op == 0x8:
                self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                try:
                    self._send(0x8, data[:2])
                except OSError:
                    pass
                return "close", data
            else:
                parts.append(data)
                if b0 & 0x80:
                    return ("text" if op != 0x2 else "binary"), (parts[0] if len(parts) == 1 else b"".join(parts))

    def close(self):
        self.io.close()


class DirectExec:
    """An exec attached straight to the Engine API: POST /containers/{id}/exec, then
    /exec/{id}/start on a raw unix-socket connection with Connection: Upgrade / Upgrade: tcp
    (what the helper itself sends), read through the same BufSock as the WebSocket client."""

    def __init__(self, docker_id, cmd):
        st, r = docker("POST", "/containers/%s/exec" % docker_id,
                       {"AttachStdin": True, "AttachStdout": True, "AttachStderr": True, "Tty": False, "Cmd": cmd})
        if st != 201:
            raise RuntimeError("exec create -> %s %s" % (st, r))
        self.id = r["Id"]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(DOCKER_SOCK)
        body = b'{"Detach":false,"Tty":false}'
        sock.sendall(("POST %s/exec/%s/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                      "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %d\r\n\r\n"
                      % (DOCKER_API, self.id, len(body))).encode() + body)
        status, head, rest = read_http_head(sock)
        if status != 101:
            sock.close()
            raise RuntimeError("exec start -> HTTP %d (%s)" % (status, head.splitlines()[0]))
        self.io = BufSock(sock, rest)

    def inspect(self):
        st, r = docker("GET", "/exec/%s/json" % self.id)
        return r if st == 200 else {}

    def close(self):
        self.io.close()


def cat_processes(docker_id):
    """How many processes named cat run in the container (GET /containers/{id}/top)."""
    st, r = docker("GET", "/containers/%s/top" % docker_id)
    if st != 200 or not isinstance(r, dict):
        return -1
    titles = r.get("Titles") or []
    col = titles.index("CMD") if "CMD" in titles else len(titles) - 1
    return sum(1 for p in r.get("Processes") or [] if p[col].split()[0:1] in (["cat"], ["/bin/cat"]))


def g_rtt(st, cuid, docker_id):
    """1-byte echo round trips: one session through nginx + the helper vs one direct exec attach."""
    ws = RawWS(st.port, ws_path(cuid, ["cat"]), st.authz)
    dx = DirectExec(docker_id, ["cat"])
    chars = [bytes([c]) for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]
    ws_out = {c: b'{"type":"stdin","data":"%s","encoding":"utf8"}' % c for c in chars}
    ws_want = {c: b'{"type":"stdout","data":"%s","encoding":"utf8"}' % c for c in chars}
    dx_want = {c: b"\x01\x00\x00\x00\x00\x00\x00\x01" + c for c in chars}
    pc = time.perf_counter_ns

    def run_ws(n, out):
        for i in range(n):
            c = chars[i % len(chars)]
            t0 = pc()
            ws.send_text(ws_out[c])
            kind, got = ws.recv_message()
            t1 = pc()
            if got != ws_want[c]:
                raise RuntimeError("WebSocket echo %d: sent %r, got %s %r" % (i, c, kind, got[:300]))
            out.append((t1 - t0) / 1e6)

    def run_dx(n, out):
        s = dx.io.sock
        for i in range(n):
            c = chars[i % len(chars)]
            t0 = pc()
            s.sendall(c)
            got = dx.io.read(9)
            t1 = pc()
            if got != dx_want[c]:
                raise RuntimeError("direct echo %d: sent %r, got %r" % (i, c, got))
            out.append((t1 - t0) / 1e6)

    warm = []
    run_ws(200, warm)
    run_dx(200, warm)
    res = {"ws": [], "direct": []}
    per = max(1, WS_RTT_N // WS_RTT_ROUNDS)
    for r in range(WS_RTT_ROUNDS):
        order = [("ws", run_ws), ("direct", run_dx)]
        if r % 2:
            order.reverse()
        line = []
        for name, fn in order:
            got = []
            fn(per, got)
            res[name] += got
            line.append("%-9s median %.3f ms p99 %.3f ms" % ("WebSocket" if name == "ws" else "direct", median(got),
                                                             pct(got, 99)))
        say("  rtt round %2d (%d each): %s" % (r + 1, per, "   ".join(line)))
    # end both: stdin closed -> cat exits 0
    ws.send_text(b'{"type":"eof"}')
    tail = []
    while True:
        kind, p = ws.recv_message()
        if kind == "close":
            break
        tail.append(p)
    ws.close()
    exit_ok = tail == [b'{"type":"exit","code":0}'] and ws.close_code == 1000
    if not exit_ok:
        problem("g", "rtt session after {\"type\":\"eof\"}: frames %r, close code %s (want one exit frame with code 0, "
                "then 1000)" % ([t[:200] for t in tail], ws.close_code))
    dx.io.sock.shutdown(socket.SHUT_WR)
    rest = b""
    try:
        while True:
            rest += dx.io.read(1)
    except EOFError:
        pass
    dx.close()
    return res, exit_ok


def g_setup(st, cuid, docker_id, rounds=5):
    """Session start, one at a time: WebSocket upgrade -> first 1-byte echo, vs exec create +
    attached start -> first echo (alternating). Then stdin is closed and the end awaited."""
    res = {"ws": [], "direct": []}
    for r in range(rounds):
        for side in (("ws", "direct") if r % 2 == 0 else ("direct", "ws")):
            t0 = time.perf_counter()
            if side == "ws":
                ws = RawWS(st.port, ws_path(cuid, ["cat"]), st.authz)
                ws.send_text(b'{"type":"stdin","data":"x","encoding":"utf8"}')
                kind, got = ws.recv_message()
                res[side].append((time.perf_counter() - t0) * 1000)
                if got != b'{"type":"stdout","data":"x","encoding":"utf8"}':
                    raise RuntimeError("session start: sent x, got %s %r" % (kind, got[:300]))
                ws.send_text(b'{"type":"eof"}')
                while ws.recv_message()[0] != "close":
                    pass
                ws.close()
            else:
                dx = DirectExec(docker_id, ["cat"])
                dx.io.sock.sendall(b"x")
                got = dx.io.read(9)
                res[side].append((time.perf_counter() - t0) * 1000)
                if got != b"\x01\x00\x00\x00\x00\x00\x00\x01x":
                    raise RuntimeError("direct session start: sent x, got %r" % got)
                dx.io.sock.shutdown(socket.SHUT_WR)
                try:
                    while True:
                        dx.io.read(1)
                except EOFError:
                    pass
                dx.close()
    return median(res["ws"]), median(res["direct"])


def g_direct_concurrent(docker_id, n):
    """Reference for (3): n direct exec create + attached starts at once (one thread each, blocking
    clients), each echoing a token once. Returns (seconds until all echoed, correct, errors)."""
    from concurrent.futures import ThreadPoolExecutor
    t0 = time.perf_counter()

    def one(i):
        try:
            dx = DirectExec(docker_id, ["cat"])
        except Exception as e:
            return None, "%s: %s" % (type(e).__name__, str(e)[:150])
        try:
            tok = ("d%03d-%s" % (i, os.urandom(8).hex())).encode()
            dx.io.sock.sendall(tok)
            got = b""
            while len(got) < len(tok):
                h = dx.io.read(8)
                got += dx.io.read(int.from_bytes(h[4:8], "big"))
            return dx, None if got == tok else "sent %r, got %r" % (tok, got[:100])
        except Exception as e:
            return dx, "%s: %s" % (type(e).__name__, str(e)[:150])
    with ThreadPoolExecutor(n) as ex:
        res = list(ex.map(one, range(n)))
    secs = time.perf_counter() - t0
    for dx, _ in res:
        if dx:
            try:
                dx.io.sock.shutdown(socket.SHUT_WR)
                while True:
                    dx.io.read(1)
            except (EOFError, OSError):
                pass
            dx.close()
    errors = [e for _, e in res if e]
    return secs, n - len(errors), errors


BULK_PFX = b'{"type":"stdout","data":"'
BULK_SFX = b'","encoding":"utf8"}'


def g_bulk_ws(st, cuid, cmd, expect):
    ws = RawWS(st.port, ws_path(cuid, cmd), st.authz)
    total, frames, first, last, end, other = 0, 0, None, None, None, []
    exit_code = None
    cpu0 = time.process_time()
    lp, ls = len(BULK_PFX), len(BULK_SFX)
    pc = time.perf_counter
    while True:
        kind, p = ws.recv_message()
        if kind == "close":
            end = end or pc()
            break
        if p.startswith(BULK_PFX) and p.endswith(BULK_SFX):
            # all of the payload is 'a': the JSON string is the raw bytes, nothing escaped
            last = pc()
            if first is None:
                first = last
            total += len(p) - lp - ls
            frames += 1
            continue
        m = json.loads(p)
        if m.get("type") == "exit":
            end = pc()
            exit_code = m.get("code")
        else:
            other.append(p[:200])
    cpu = time.process_time() - cpu0
    ws.close()
    if total != expect or exit_code != 0 or ws.close_code != 1000 or other:
        problem("g", "bulk through the helper: %d of %d bytes, exit code %s, close code %s, other frames %r"
                % (total, expect, exit_code, ws.close_code, other[:3]))
    wall = (end or pc()) - (first or pc())
    return {"bytes": total, "secs": wall, "to_last": (last or 0) - (first or 0), "frames": frames,
            "cpu": cpu, "mbs": total / wall / 1e6 if wall > 0 else 0.0}


def g_bulk_direct(docker_id, cmd, expect):
    dx = DirectExec(docker_id, ["/bin/sh", "-c", cmd])
    total, frames, first, other = 0, 0, None, b""
    cpu0 = time.process_time()
    pc = time.perf_counter
    while True:
        try:
            h = dx.io.read(8)
        except EOFError:
            break
        n = int.from_bytes(h[4:8], "big")
        if first is None:
            first = pc()
        data = dx.io.read(n)  # copied, as the WebSocket side copies each frame
        if h[0] == 1:
            total += n
            frames += 1
        else:
            other += data[:200]
    end = pc()
    cpu = time.process_time() - cpu0
    dx.close()
    code = dx.inspect().get("ExitCode")
    if total != expect or code != 0 or other:
        problem("g", "bulk direct: %d of %d bytes, exit code %s, stderr %r" % (total, expect, code, other[:200]))
    wall = end - (first or end)
    return {"bytes": total, "secs": wall, "frames": frames, "cpu": cpu,
            "mbs": total / wall / 1e6 if wall > 0 else 0.0}


async def g_sessions_async(st, cuid, docker_id, n, rounds):
    import asyncio
    import websockets
    uri = "ws://127.0.0.1:%d%s" % (st.port, ws_path(cuid, ["cat"]))
    out = {"n": n, "opened": 0, "open_errors": [], "failed": {}, "lat": [], "first": None, "open_s": None,
           "cats_open": None, "close_msg": {}, "close_ws": {}, "cats_left": None, "gone_after": None}
    pc = time.perf_counter
    t0 = pc()

    async def connect(i):
        return await websockets.connect(uri, extra_headers=st.authz, open_timeout=60, ping_interval=None,
                                        max_size=None, compression=None, close_timeout=10)
    res = await asyncio.gather(*[connect(i) for i in range(n)], return_exceptions=True)
    out["open_s"] = pc() - t0
    socks = {}
    for i, r in enumerate(res):
        if isinstance(r, Exception):
            out["open_errors"].append("%s: %s" % (type(r).__name__, str(r)[:200]))
        else:
            socks[i] = r
    out["opened"] = len(socks)

    async def echo(i, ws, token):
        t = pc()
        await ws.send(json.dumps({"type": "stdin", "data": token, "encoding": "utf8"}))
        got = ""
        while len(got) < len(token):
            m = json.loads(await ws.recv())
            if m.get("type") == "stdout":
                d = m.get("data", "")
                got += d if m.get("encoding") == "utf8" else base64.b64decode(d).decode(errors="replace")
            else:
                raise RuntimeError("%s frame instead of the echo: %s" % (m.get("type"), json.dumps(m)[:200]))
        lat = (pc() - t) * 1000
        if got != token:
            raise RuntimeError("sent %r, got %r" % (token, got[:200]))
        return lat

    async def one_round(r):
        live = {i: ws for i, ws in socks.items() if i not in out["failed"]}
        toks = {i: "s%03d-r%02d-%s" % (i, r, os.urandom(8).hex()) for i in live}
        rs = await asyncio.gather(*[asyncio.wait_for(echo(i, ws, toks[i]), 30) for i, ws in live.items()],
                                  return_exceptions=True)
        lats = []
        for i, x in zip(live, rs):
            if isinstance(x, BaseException):
                out["failed"][i] = "round %d: %s: %s" % (r, type(x).__name__, str(x)[:200] or "timeout")
            else:
                lats.append(x)
        return lats

    await one_round(0)  # the first token also waits for the process to start
    out["first"] = pc() - t0
    out["cats_open"] = await asyncio.get_running_loop().run_in_executor(None, cat_processes, docker_id)
    for r in range(1, rounds + 1):
        out["lat"] += await one_round(r)

    async def close_msg(ws):
        await ws.send('{"type":"close"}')
        code = None
        async for m in ws:
            j = json.loads(m)
            if j.get("type") == "exit":
                code = j.get("code")
        return "exit %s, close %s" % (code, ws.close_code)

    async def close_ws(ws):
        await ws.close()
        return "close %s" % ws.close_code

    half = sorted(socks)[: len(socks) // 2]
    jobs = [(i, asyncio.wait_for(close_msg(ws) if i in half else close_ws(ws), 30)) for i, ws in socks.items()]
    rs = await asyncio.gather(*[j for _, j in jobs], return_exceptions=True)
    for (i, _), x in zip(jobs, rs):
        key = "close_msg" if i in half else "close_ws"
        x = "%s: %s" % (type(x).__name__, str(x)[:100]) if isinstance(x, BaseException) else x
        out[key][x] = out[key].get(x, 0) + 1
    t_closed = pc()
    while True:
        left = await asyncio.get_running_loop().run_in_executor(None, cat_processes, docker_id)
        if left == 0 or pc() - t_closed > 10:
            break
        await asyncio.sleep(0.25)
    out["cats_left"] = left
    out["gone_after"] = pc() - t_closed
    return out


def bench_g(root):
    say("\n(g) WebSocket terminal (ws://.../ws/{cuid}, nginx + cm-ws) vs an exec attached straight to the Engine API: "
        "1-byte echo round trip, bulk stdout, %d concurrent sessions" % WS_SESSIONS)
    say("    load average before: %s" % loadavg())
    try:
        import asyncio
        import websockets
    except ImportError:
        raise RuntimeError("python3-websockets is missing (apt-get install python3-websockets)")
    st = Stack(root, "g")
    start_stacks(st)
    cuid = st.create_container(start=True)
    r = st.session().get(st.base + "/containers/" + cuid, headers={"User-Agent": CHECK_UA}, timeout=30)
    docker_id = r.json().get("docker_id") if r.status_code == 200 else None
    if not docker_id:
        raise RuntimeError("GET /containers/%s -> %s %s (no docker_id)" % (cuid, r.status_code, r.text[:300]))
    say("  container %s (docker id %s), websockets %s, client: %s" % (cuid, docker_id[:12], websockets.__version__,
                                                                   "blocking sockets for (1) and (2)"))

    # (1) round trip of one byte
    say("  (1) 1-byte echo round trip, `cat` with tty=0: %d round trips per side in %d alternating rounds, after "
        "200 each of warm-up" % (WS_RTT_N, WS_RTT_ROUNDS))
    rtt, rtt_exit_ok = g_rtt(st, cuid, docker_id)
    mw, md = median(rtt["ws"]), median(rtt["direct"])
    pw, pd = pct(rtt["ws"], 99), pct(rtt["direct"], 99)
    rtt_ok = mw <= 1.2 * md + 1.0
    say("  RESULT (g1) echo round trip: WebSocket median %.3f ms (p99 %.3f) vs direct exec attach median %.3f ms "
        "(p99 %.3f) -> ratio %.2fx; median_ws <= 1.2 x median_direct + 1 ms = %.3f ms: meets target: %s"
        % (mw, pw, md, pd, mw / md, 1.2 * md + 1.0, "yes" if rtt_ok else "no"))

    # (2) bulk stdout
    app = os.path.join(st.data, "containers", cuid, "app")
    blob = os.path.join(app, "bench-g-%dm.txt" % BULK_FILE_MB)
    with open(blob, "wb") as f:
        f.write(b"a" * (BULK_FILE_MB * 1000000))
    os.chmod(blob, 0o644)
    reps = max(1, WS_BULK_MB // BULK_FILE_MB)
    expect = reps * BULK_FILE_MB * 1000000
    cmd = "i=0; while [ $i -lt %d ]; do cat /app/%s; i=$((i+1)); done" % (reps, os.path.basename(blob))
    say("  (2) bulk stdout, tty=0: `%s` (%d MB of 'a'), %d alternating rounds; MB/s = payload bytes from the first "
        "data frame to the exit frame (direct: to the end of the stream)" % (cmd, expect // 1000000, WS_BULK_ROUNDS))
    bulk = {"ws": [], "direct": []}
    for rnd in range(WS_BULK_ROUNDS):
        order = ["ws", "direct"] if rnd % 2 == 0 else ["direct", "ws"]
        line = []
        for side in order:
            if side == "ws":
                b = g_bulk_ws(st, cuid, cmd, expect)
                line.append("WebSocket %6.0f MB/s (%.2f s to the exit frame, %.2f s to the last data frame, %d frames, "
                            "client CPU %.0f%%)" % (b["mbs"], b["secs"], b["to_last"], b["frames"],
                                                    100 * b["cpu"] / max(b["secs"], 1e-9)))
            else:
                b = g_bulk_direct(docker_id, cmd, expect)
                line.append("direct %6.0f MB/s (%.2f s, %d frames, client CPU %.0f%%)"
                            % (b["mbs"], b["secs"], b["frames"], 100 * b["cpu"] / max(b["secs"], 1e-9)))
            bulk[side].append(b)
        say("  bulk round %d: %s" % (rnd + 1, "   ".join(line)))
    os.unlink(blob)
    bw = median([b["mbs"] for b in bulk["ws"]])
    bd = median([b["mbs"] for b in bulk["direct"]])
    bulk_ok = bw >= 50
    say("  RESULT (g2) bulk stdout: WebSocket %.0f MB/s vs direct exec attach %.0f MB/s -> %.2fx; "
        "target >= 50 MB/s: meets target: %s" % (bw, bd, bw / bd if bd else float("nan"), "yes" if bulk_ok else "no"))

    # (3) concurrent sessions
    sw, sd = g_setup(st, cuid, docker_id)
    say("  one session at a time (5 alternating rounds): WebSocket upgrade -> first echo %.1f ms vs direct exec create + "
        "attached start -> first echo %.1f ms (medians)" % (sw, sd))
    say("  (3) %d sessions opened at once (asyncio + websockets %s), `cat`, tty=0; each echoes a distinct random token, "
        "then %d more rounds with all sessions at once; then half send {\"type\":\"close\"}, half close the WebSocket"
        % (WS_SESSIONS, websockets.__version__, WS_ECHO_ROUNDS))
    cs = asyncio.run(g_sessions_async(st, cuid, docker_id, WS_SESSIONS, WS_ECHO_ROUNDS))
    good = cs["opened"] - len(cs["failed"])
    say("  opened %d of %d in %.2f s; all echoed their first token %.2f s after the start; `cat` processes while open: "
        "%d" % (cs["opened"], WS_SESSIONS, cs["open_s"], cs["first"], cs["cats_open"]))
    for e in cs["open_errors"][:5]:
        problem("g", "concurrent sessions: could not open: %s" % e)
    for i, why in sorted(cs["failed"].items())[:5]:
        problem("g", "concurrent session %d did not echo correctly: %s" % (i, why))
    if len(cs["failed"]) > 5:
        problem("g", "... %d more sessions did not echo correctly" % (len(cs["failed"]) - 5))
    say("  close with {\"type\":\"close\"}: %s;  WebSocket close: %s"
        % (", ".join("%d x %s" % (v, k) for k, v in cs["close_msg"].items()),
           ", ".join("%d x %s" % (v, k) for k, v in cs["close_ws"].items())))
    say("  `cat` processes in the container %.1f s after the last close: %d" % (cs["gone_after"], cs["cats_left"]))
    if cs["cats_left"]:
        problem("g", "%d `cat` processes still ran in the container %.0f s after every session was closed"
                % (cs["cats_left"], cs["gone_after"]))
    dsecs, dgood, derr = g_direct_concurrent(docker_id, WS_SESSIONS)
    say("  reference: %d direct exec create + attached starts at once (a thread each): all echoed a token %.2f s after "
        "the start, %d of %d correctly%s" % (WS_SESSIONS, dsecs, dgood, WS_SESSIONS,
                                              ("; e.g. " + derr[0]) if derr else ""))
    lp50, lp99 = pct(cs["lat"], 50), pct(cs["lat"], 99)
    sess_ok = good == WS_SESSIONS
    say("  RESULT (g3) %d concurrent sessions: %d of %d echoed correctly (every token of %d rounds); all open in %.2f s; "
        "echo latency with all at once p50 %.2f ms p99 %.2f ms (%d echoes); cat left after close: %d; "
        "meets target: %s" % (WS_SESSIONS, good, WS_SESSIONS, WS_ECHO_ROUNDS + 1, cs["open_s"], lp50, lp99,
                              len(cs["lat"]), cs["cats_left"], "yes" if sess_ok else "no"))
    st.delete_container(cuid, "g")
    finish_stacks("g", st)
    RESULTS["g"] = {"rtt_ws": mw, "rtt_dir": md, "p99_ws": pw, "p99_dir": pd, "rtt_ok": rtt_ok,
                    "bulk_ws": bw, "bulk_dir": bd, "bulk_ok": bulk_ok, "n": WS_SESSIONS, "good": good,
                    "open_s": cs["open_s"], "lat50": lp50, "lat99": lp99, "cats_left": cs["cats_left"],
                    "sess_ok": sess_ok, "first_s": cs["first"], "setup_ws": sw, "setup_dir": sd, "first_dir": dsecs}


def summary():
    say("\n==================== container-manager benchmark summary ====================")
    say("workers %d (WORKERS_MIN = WORKERS_MAX = trivial processes), %d cores, loopback only" % (WORKERS, os.cpu_count()))
    r = RESULTS.get("a")
    if r:
        say("(a) create+start          API %8.1f ms   direct Engine API %8.1f ms   ratio %5.2fx   (target <= 1.10x)"
            % (r["api"], r["direct"], r["ratio"]))
    r = RESULTS.get("b")
    if r:
        say("(b) GET one container     %15s   trivial %15s   ratio %4.0f%%   (target >= 70%%)"
            % (fmt_rps(r["cm"]), fmt_rps(r["trivial"]), 100 * r["ratio"]))
        if r["nokeep"]:
            say("    same GET, plain fastcgi_pass (no upstream keepalive, like trivial)  %s = %.0f%% of trivial"
                % (fmt_rps(r["nokeep"]), 100 * r["nokeep"] / r["trivial"]))
    r = RESULTS.get("c")
    if r:
        say("(c) page of 50 @ 10k rows %15s   trivial %15s   ratio %4.0f%%   (target >= 40%%)"
            % (fmt_rps(r["page"]), fmt_rps(r["trivial"]), 100 * r["ratio"]))
        if r["nokeep"]:
            say("    same page, plain fastcgi_pass (no upstream keepalive, like trivial)  %s = %.0f%% of trivial"
                % (fmt_rps(r["nokeep"]), 100 * r["nokeep"] / r["trivial"]))
        say("    page latency p50      1k %.2f ms   10k %.2f ms   100k %.2f ms   100k/1k %.2fx   (should be ~1.0x)"
            % (r["l1k"], r["l10k"], r["l100k"], r["l100k"] / r["l1k"]))
    r = RESULTS.get("d")
    if r:
        say("(d) auth vs CM_AUTH=off   %15s   no auth %15s   ratio %4.0f%%   (target >= 60%%; %s)"
            % (fmt_rps(r["auth"]), fmt_rps(r["noauth"]), 100 * r["ratio"], r["scheme"]))
    r = RESULTS.get("e")
    if r:
        say("(e) upload-zip %.0f MB/10k files %6.2f s   bsdtar -xf %6.2f s   ratio %5.2fx   (target <= 1.25x)"
            % (r["mb"], r["api"], r["tar"], r["ratio"]))
    r = RESULTS.get("f")
    if r:
        say("(f) download-zip 1 GB     %6.0f MB/s   bsdtar zip %6.0f MB/s   ratio %5.2fx   (target >= 0.8x); "
            "worker peak RSS %.1f MB (target < 32 MB)" % (r["api"], r["tar"], r["ratio"], r["rss"]))
    r = RESULTS.get("g")
    if r:
        yn = lambda ok: "yes" if ok else "no"
        say("(g) ws echo RTT median   %8.3f ms   direct exec attach %8.3f ms   ratio %5.2fx   (target <= 1.2x + 1 ms: "
            "meets target: %s; p99 %.3f vs %.3f ms)" % (r["rtt_ws"], r["rtt_dir"], r["rtt_ws"] / r["rtt_dir"],
                                                        yn(r["rtt_ok"]), r["p99_ws"], r["p99_dir"]))
        say("    ws bulk stdout        %6.0f MB/s   direct exec attach %6.0f MB/s   ratio %5.2fx   (target >= 50 MB/s: "
            "meets target: %s)" % (r["bulk_ws"], r["bulk_dir"], r["bulk_ws"] / r["bulk_dir"] if r["bulk_dir"] else
                                   float("nan"), yn(r["bulk_ok"])))
        say("    %d concurrent sessions: %d/%d echoed correctly (meets target: %s), all open in %.2f s, echo p50 %.2f ms "
            "p99 %.2f ms; cat left after close: %d" % (r["n"], r["good"], r["n"], yn(r["sess_ok"]), r["open_s"],
                                                       r["lat50"], r["lat99"], r["cats_left"]))
        say("    session start: one alone %.1f ms (direct exec %.1f ms); %d at once all echoing after %.2f s (direct "
            "execs %.2f s)" % (r["setup_ws"], r["setup_dir"], r["n"], r["first_s"], r["first_dir"]))
    r = RESULTS.get("h")
    if r:
        say("(h) image build (10 MB)   API %6.2f s   docker build %6.2f s   ratio %5.2fx   (target <= 1.10x)"
            % (r["api"], r["cli"], r["ratio"]))
    r = RESULTS.get("i")
    if r:
        say("(i) app route /apps/NAME/ vs published port: median per-round ratio %4.0f%%   (target >= 70%%)"
            % (100 * r["round_ratio"]))
        say("    vs the bridge address %.0f%%; medians: route %s, published port %s, bridge %s"
            % (100 * r["round_ratio_bridge"], fmt_rps(r["via"]), fmt_rps(r["direct"]), fmt_rps(r["bridge"])))
    if PROBLEMS:
        say("problems seen (%d):" % len(PROBLEMS))
        for b, t in PROBLEMS:
            say("  [%s] %s" % (b, t))
    else:
        say("problems seen: none (no non-2xx answers, socket errors or warnings in the stack logs)")
    say("Figures are informational; targets are not a pass/fail test.")


def snapshot_tree(root):
    """Copies the built programs and the nginx templates into root/tree and runs the stacks from
    there, so the whole run measures one build even if the tree is rebuilt meanwhile."""
    rels = BUILT
    deadline = time.time() + 120
    while True:  # do not copy a build in progress: wait for binaries untouched for 5 s
        before = binaries()
        if None in before.values():
            raise RuntimeError("the tree is not built: %s missing (run ./scripts/build)"
                               % ", ".join(k for k, v in before.items() if v is None))
        if time.time() - max(before.values()) > 5 or time.time() > deadline:
            break
        time.sleep(1)
    dst = os.path.join(root, "tree")
    for rel in rels:
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(dst, rel))
    shutil.copytree(os.path.join(ROOT, "nginx"), os.path.join(dst, "nginx"))
    if binaries() != before:
        raise RuntimeError("the tree was rebuilt while it was being copied; run again")
    cli = os.path.join(dst, "cli", "container-manager")
    out = subprocess.run([cli, "version"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("the copied launcher does not run: %s" % out.stderr)
    return cli, dst, out.stdout.strip()


# the programs `serve` starts (ws/cm-ws: the WebSocket helper, found next to the launcher's tree)
BUILT = ("cli/container-manager", "fcgi-app/cm-fcgi", "jobs/cm-runner", "ws/cm-ws")


def binaries():
    out = {}
    for rel in BUILT:
        try:
            out[rel] = os.stat(os.path.join(ROOT, rel)).st_mtime
        except OSError:
            out[rel] = None
    return out


def tree_state():
    try:
        head = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "tree: unknown"
    built = max((t for t in binaries().values() if t), default=0)
    return "tree: %s%s; binaries built %s" % (head, " (+ uncommitted changes)" if dirty else "",
                                              time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(built)))


def main(argv):
    which = [a for a in argv if a in "abcdefghi" and len(a) == 1] or list("abcdefghi")
    bad = [a for a in argv if not (a in "abcdefghi" and len(a) == 1)]
    if bad:
        say("usage: bench/run [a] [b] [c] [d] [e] [f] [g] [h] [i]")
        return 2
    root = tempfile.mkdtemp(prefix="cm-bench.", dir="/tmp")
    os.chmod(root, 0o755)
    say("container-manager benchmarks %s in %s (load average %s)" % (" ".join(which), root, loadavg()))
    global CLI, SHARE
    say(tree_state())
    try:
        CLI, SHARE, version = snapshot_tree(root)
    except Exception as e:
        say("cannot snapshot the build: %s" % e)
        shutil.rmtree(root, ignore_errors=True)
        return 1
    say("running %s from a copy of the build: %s" % (version, SHARE))
    bins_before = binaries()
    funcs = {"a": bench_a, "b": bench_b, "c": bench_c, "d": bench_d, "e": bench_e, "f": bench_f, "g": bench_g, "h": bench_h, "i": bench_i}
    rc = 0

    def on_signal(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)
    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.time()
    try:
        for w in which:
            try:
                funcs[w](root)
            except Exception as e:  # one benchmark failing must not stop the others
                rc = 1
                PROBLEMS.append((w, "benchmark could not run: %s" % str(e)[:1500]))
                say("  benchmark (%s) could not run: %s" % (w, e))
            finally:
                while CLEANUPS:
                    fn = CLEANUPS.pop()
                    try:
                        fn()
                    except Exception as e:
                        say("  cleanup error: %r" % (e,))
    except KeyboardInterrupt:
        rc = 130
        say("interrupted: cleaning up")
    finally:
        while CLEANUPS:
            fn = CLEANUPS.pop()
            try:
                fn()
            except Exception as e:
                say("  cleanup error: %r" % (e,))
        n = sweep_containers(root)
        if n:
            PROBLEMS.append(("cleanup", "%d container(s) of the benchmark were still there at the end; force-removed" % n))
        if not KEEP:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say("kept %s (BENCH_KEEP=1)" % root)
    stall_problems()
    if binaries() != bins_before:
        say("note: the tree was rebuilt while the benchmarks ran; they measured the copy taken at the start")
    summary()
    say("(%.0f s)" % (time.time() - t0))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

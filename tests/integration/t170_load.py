#!/usr/bin/python3
"""t170 mixed load: CM_LOAD_CLIENTS clients (default 16; the hardening figure uses 64) for
CM_LOAD_SECONDS seconds (default 15; the figure uses 60) each loop over create, get, list,
patch tags, start, pause/unpause, stop and delete on containers of their own. Afterwards:
zero 5xx, zero transport errors, and no lost write: every container whose create was
acknowledged and whose delete was not is in the database and in Docker with the tags of its
last acknowledged patch and the state of its last acknowledged action; every acknowledged
delete is gone from both. Prints the request count, throughput and the p50/p95/p99 latency
per kind of request.

    CM_LOAD_CLIENTS=64 CM_LOAD_SECONDS=60 tests/integration/run t170_load.py"""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

CLIENTS = int(os.environ.get("CM_LOAD_CLIENTS", "16"))
SECONDS = float(os.environ.get("CM_LOAD_SECONDS", "15"))
RUN_TAG = "load-" + rand_suffix(6)


class Client(threading.Thread):
    def __init__(self, n, stats, lock):
        super().__init__(daemon=True)
        self.n = n
        self.stats = stats
        self.lock = lock
        self.s = api(timeout=120)
        # what the service acknowledged, per container: tags, running/paused, deleted
        self.acked = {}
        self.rng = random.Random(n)

    def call(self, kind, method, path, **kw):
        t0 = time.monotonic()
        try:
            r = self.s.request(method, path, **kw)
            code = r.status_code
        except Exception as e:  # a transport error counts against the service
            r, code = None, "transport: %s" % type(e).__name__
        dt = time.monotonic() - t0
        with self.lock:
            self.stats.setdefault(kind, []).append((dt, code))
        return r

    def run(self):
        deadline = time.monotonic() + SECONDS
        mine = []
        while time.monotonic() < deadline:
            op = self.rng.random()
            if not mine or (op < 0.25 and len(mine) < 3):
                r = self.call("create", "POST", "/containers",
                              json={"image": IMAGE, "command": SLEEP_CMD, "tags": [RUN_TAG, "c%d" % self.n]})
                if r is not None and r.status_code == 201:
                    c = r.json()["cuid"]
                    mine.append(c)
                    self.acked[c] = {"tags": [RUN_TAG, "c%d" % self.n], "state": "created", "deleted": False}
                continue
            c = self.rng.choice(mine)
            a = self.acked[c]
            if op < 0.40:
                self.call("get", "GET", "/containers/%s" % c)
            elif op < 0.50:
                self.call("list", "GET", "/containers?limit=20&tag=%s" % RUN_TAG)
            elif op < 0.62:
                tags = [RUN_TAG, "c%d" % self.n, "v%d" % self.rng.randint(0, 10 ** 6)]
                r = self.call("patch tags", "PATCH", "/containers/%s" % c, json={"tags": tags})
                if r is not None and r.status_code == 200:
                    a["tags"] = tags
            elif op < 0.90:
                # the next action that is legal from the acknowledged state
                nxt = {"created": "start", "exited": "start", "running": self.rng.choice(["pause", "stop"]),
                       "paused": "unpause"}[a["state"]]
                r = self.call("action", "POST", "/containers/%s/%s" % (c, nxt),
                              json={"timeout": 1} if nxt == "stop" else None)
                if r is not None and r.status_code == 200:
                    a["state"] = {"start": "running", "unpause": "running", "pause": "paused",
                                  "stop": "exited"}[nxt]
            else:
                r = self.call("delete", "DELETE", "/containers/%s" % c)
                if r is not None and r.status_code == 204:
                    a["deleted"] = True
                    mine.remove(c)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else 0.0


def main(t):
    stats, lock = {}, threading.Lock()
    clients = [Client(i, stats, lock) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    for c in clients:
        c.join(SECONDS + 300)
    wall = time.monotonic() - t0
    s = api()
    for c in clients:
        for cuid, a in c.acked.items():
            if not a["deleted"]:
                t.add_cleanup(lambda x=cuid: destroy(s, x))
    t.ok(not any(c.is_alive() for c in clients), "every client finished")

    total = sum(len(v) for v in stats.values())
    t.diag("%d clients, %.0f s: %d requests, %.1f per second" % (CLIENTS, wall, total, total / wall))
    all_lat = []
    for kind in sorted(stats):
        lat = [d for d, _ in stats[kind]]
        all_lat += lat
        t.diag("  %-10s n=%-6d p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms  max %7.1f ms" % (
            kind, len(lat), pct(lat, 50) * 1000, pct(lat, 95) * 1000, pct(lat, 99) * 1000, max(lat) * 1000))
    t.diag("  %-10s n=%-6d p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms" % (
        "all", len(all_lat), pct(all_lat, 50) * 1000, pct(all_lat, 95) * 1000, pct(all_lat, 99) * 1000))
    bad = [(k, code) for k, v in stats.items() for _, code in v if not isinstance(code, int) or code >= 500]
    t.eq(bad[:20], [], "no 5xx and no transport error in %d requests" % total)
    odd = [(k, code) for k, v in stats.items() for _, code in v
           if isinstance(code, int) and code >= 400 and code not in (409, 422)]
    t.eq(odd[:20], [], "no 4xx other than the state conflicts an interleaving can cause")
    creates = sum(1 for _, code in stats.get("create", []) if code == 201)
    t.ok(creates >= CLIENTS, "%d containers created under load" % creates)

    # ---- no lost write: what was acknowledged is what the database and Docker hold
    lost = []
    for c in clients:
        for cuid, a in c.acked.items():
            row = db_query("SELECT tags, status FROM containers WHERE cuid = ?", (cuid,))
            info = docker_inspect(cuid)
            if a["deleted"]:
                if row or (info is not None and info.get("Name") == "/" + cuid):
                    lost.append((cuid, "deleted but still there", bool(row), info is not None))
                continue
            if not row:
                lost.append((cuid, "acknowledged create has no row"))
                continue
            if info is None:
                lost.append((cuid, "acknowledged create has no Docker container"))
                continue
            if json.loads(row[0]["tags"]) != a["tags"]:
                lost.append((cuid, "tags", row[0]["tags"], a["tags"]))
            st = info.get("State", {})
            docker_state_name = "paused" if st.get("Paused") else "running" if st.get("Running") else (
                "created" if st.get("Status") == "created" else "exited")
            if docker_state_name != a["state"]:
                lost.append((cuid, "state", docker_state_name, a["state"]))
    checked = sum(len(c.acked) for c in clients)
    t.eq(lost[:20], [], "no lost write: %d containers checked against the database and Docker" % checked)
    t.eq(list(db_query("PRAGMA integrity_check")[0].values())[0], "ok", "integrity_check")
    stuck = db_query("SELECT count(*) AS n FROM jobs WHERE status IN ('queued', 'running')")
    t.ok(stuck and stuck[0]["n"] == 0, "no job left queued or running", stuck)


if __name__ == "__main__":
    run(main)

"""loadgen: the mixed-traffic clients of t170 (load) and t180 (faults). Each client works on
containers of its own and remembers, per container, what the service acknowledged and what
it attempted since (an unanswered or failed change may still have happened, once; one answered
202 runs on as a job, when the request could not keep its worker waiting), so that the end state
can be checked against SQLite and Docker."""
import json
import random
import threading
import time

from cmtest import IMAGE, SLEEP_CMD, api, db_query, destroy, docker_inspect

NEXT_STATE = {"start": "running", "unpause": "running", "pause": "paused", "stop": "exited"}


class Client(threading.Thread):
    def __init__(self, n, seconds, run_tag, stats, lock):
        super().__init__(daemon=True)
        self.n, self.seconds, self.run_tag = n, seconds, run_tag
        self.stats, self.lock = stats, lock
        self.s = api(timeout=120)
        self.rng = random.Random(n)
        # cuid -> {"tags": set of possible tag lists (as JSON), "state": set of possible states,
        #          "deleted": acknowledged delete, "maybe_deleted": attempted delete}
        self.known = {}
        self.unacked_creates = 0

    def call(self, kind, method, path, **kw):
        t0 = time.monotonic()
        try:
            r = self.s.request(method, path, **kw)
            code = r.status_code
        except Exception as e:  # a transport error counts against the service
            r, code = None, "transport: %s" % type(e).__name__
        with self.lock:
            self.stats.setdefault(kind, []).append((time.monotonic() - t0, code))
        return r

    def run(self):
        deadline = time.monotonic() + self.seconds
        mine = []
        base_tags = [self.run_tag, "c%d" % self.n]
        while time.monotonic() < deadline:
            op = self.rng.random()
            if not mine or (op < 0.25 and len(mine) < 3):
                r = self.call("create", "POST", "/containers",
                              json={"image": IMAGE, "command": SLEEP_CMD, "tags": base_tags})
                if r is not None and r.status_code == 201:
                    c = r.json()["cuid"]
                    mine.append(c)
                    self.known[c] = {"tags": {json.dumps(base_tags)}, "state": {"created"}, "deleted": False,
                                     "maybe_deleted": False}
                elif r is None or r.status_code >= 500 or r.status_code == 202:
                    self.unacked_creates += 1
                continue
            c = self.rng.choice(mine)
            k = self.known[c]
            if op < 0.40:
                self.call("get", "GET", "/containers/%s" % c)
            elif op < 0.50:
                self.call("list", "GET", "/containers?limit=20&tag=%s" % self.run_tag)
            elif op < 0.62:
                tags = base_tags + ["v%d" % self.rng.randint(0, 10 ** 6)]
                r = self.call("patch tags", "PATCH", "/containers/%s" % c, json={"tags": tags})
                if r is not None and r.status_code == 200:
                    k["tags"] = {json.dumps(tags)}
                elif r is None or r.status_code >= 500 or r.status_code == 202:
                    k["tags"].add(json.dumps(tags))
            elif op < 0.90:
                cur = next(iter(k["state"]))
                if len(k["state"]) != 1:
                    # unsure where an unanswered action left it: ask, but only to choose the
                    # next action (a job of the unanswered request may still be running, so
                    # the answer does not narrow what the end state may be)
                    r = self.call("get", "GET", "/containers/%s" % c)
                    if r is None or r.status_code != 200:
                        continue
                    cur = r.json().get("status")
                nxt = {"created": "start", "exited": "start", "running": self.rng.choice(["pause", "stop"]),
                       "paused": "unpause"}.get(cur, "start")
                r = self.call("action", "POST", "/containers/%s/%s" % (c, nxt),
                              json={"timeout": 1} if nxt == "stop" else None)
                if r is not None and r.status_code == 200:
                    k["state"] = {NEXT_STATE[nxt]}
                elif r is None or r.status_code >= 500 or r.status_code == 202:
                    k["state"].add(NEXT_STATE[nxt])
            else:
                r = self.call("delete", "DELETE", "/containers/%s" % c)
                # 404: gone already (nginx may have retried this idempotent request on another
                # worker after the first one died having deleted it)
                if r is not None and r.status_code in (204, 404):
                    k["deleted"] = True
                    mine.remove(c)
                elif r is None or r.status_code >= 500 or r.status_code == 202:
                    k["maybe_deleted"] = True
                    mine.remove(c)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else 0.0


def report(t, stats, wall, clients):
    total = sum(len(v) for v in stats.values())
    t.diag("%d clients, %.0f s: %d requests, %.1f per second" % (clients, wall, total, total / wall))
    all_lat = []
    for kind in sorted(stats):
        lat = [d for d, _ in stats[kind]]
        all_lat += lat
        t.diag("  %-10s n=%-6d p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms  max %7.1f ms" % (
            kind, len(lat), pct(lat, 50) * 1000, pct(lat, 95) * 1000, pct(lat, 99) * 1000, max(lat) * 1000))
    t.diag("  %-10s n=%-6d p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms" % (
        "all", len(all_lat), pct(all_lat, 50) * 1000, pct(all_lat, 95) * 1000, pct(all_lat, 99) * 1000))
    return total


def docker_state_name(info):
    st = info.get("State", {})
    if st.get("Paused"):
        return "paused"
    if st.get("Running"):
        return "running"
    return "created" if st.get("Status") == "created" else "exited"


def lost_writes(clients):
    """Containers whose database row or Docker container disagrees with what was acknowledged
    (or attempted without an answer). Returns (problems, number checked)."""
    lost, checked = [], 0
    for c in clients:
        for cuid, k in c.known.items():
            checked += 1
            row = db_query("SELECT tags, status FROM containers WHERE cuid = ?", (cuid,))
            info = docker_inspect(cuid)
            there = info is not None and info.get("Name") == "/" + cuid
            if k["deleted"]:
                if row or there:
                    lost.append((cuid, "acknowledged delete, still there", bool(row), there))
                continue
            if not row and not there and k["maybe_deleted"]:
                continue  # the unanswered delete happened
            if not row or not there:
                lost.append((cuid, "acknowledged create: row %s, Docker %s" % (bool(row), there)))
                continue
            if json.dumps(json.loads(row[0]["tags"])) not in k["tags"]:
                lost.append((cuid, "tags", row[0]["tags"], sorted(k["tags"])))
            # a stopped container recreated by a PATCH is "created" in Docker: both mean stopped
            def norm(x):
                return "exited" if x == "created" else x
            if norm(docker_state_name(info)) not in {norm(x) for x in k["state"]}:
                lost.append((cuid, "state", docker_state_name(info), sorted(k["state"])))
    return lost, checked


def clean_up_after(t, clients):
    """Registers the removal of every container the clients made and did not delete."""
    s = api()
    for c in clients:
        for cuid, k in c.known.items():
            if not k["deleted"]:
                t.add_cleanup(lambda x=cuid: destroy(s, x))

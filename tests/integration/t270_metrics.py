#!/usr/bin/python3
"""t270 GET /metrics: behind authentication, valid Prometheus text (0.0.4): every sample of a
declared family, histograms cumulative with +Inf equal to their count; the counters move with
real traffic by exactly what was sent (requests by route, method and status, the duration
histogram of the route); jobs by kind and state, the queue depth and containers by state equal
the database; the WebSocket sessions gauge counts an open terminal and drops when it ends;
the Docker API error counters are there."""
import asyncio
import base64
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

import aiohttp  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*)?\})? (-?[0-9.e+]+|\+Inf|NaN)$')


def parse(text):
    """{(name, frozenset(labels)): value}, the declared types, and the lines that did not parse."""
    samples, types, bad = {}, {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            bad.append(line)
            continue
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(5))
    return samples, types, bad


def family(name):
    return re.sub(r"_(bucket|sum|count)$", "", name)


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(s, t=None):
    r = s.get("/metrics")
    if t:
        t.ok(r.status_code == 200 and r.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
             "GET /metrics -> 200 text/plain; version=0.0.4", {"status": r.status_code, "ct": r.headers.get("Content-Type")})
    return parse(r.text)


async def one_terminal(cuid, s, t):
    url = URL.replace("http://", "ws://") + "/ws/%s?tty=0&command=%%5B%%22sleep%%22%%2C%%2230%%22%%5D" % cuid
    auth = "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, headers={"Authorization": auth})
        await asyncio.sleep(0.5)
        during = value(scrape(s)[0], "cm_websocket_sessions_open")
        await ws.close()
    return during


def main(t):
    s = api()
    r = requests.get(URL + "/metrics", timeout=30)
    t.eq(r.status_code, 401, "GET /metrics without credentials -> 401")

    before, types, bad = scrape(s, t)
    t.ok(not bad, "every line is a sample, a HELP or a TYPE line", bad[:5])
    undeclared = sorted({n for (n, _) in before if family(n) not in types and n not in types})
    t.ok(not undeclared, "every sample belongs to a declared family", undeclared)
    for fam, typ in (("cm_http_requests_total", "counter"), ("cm_http_request_duration_seconds", "histogram"),
                     ("cm_jobs", "gauge"), ("cm_job_queue_depth", "gauge"), ("cm_containers", "gauge"),
                     ("cm_docker_api_errors_total", "counter"), ("cm_websocket_sessions_open", "gauge"),
                     ("cm_runner_up", "gauge"), ("cm_docker_up", "gauge")):
        t.eq(types.get(fam), typ, "%s is a %s" % (fam, typ))
    kinds = sorted(dict(l)["kind"] for (n, l) in before if n == "cm_docker_api_errors_total")
    t.eq(kinds, ["broken", "server_error", "timeout", "unreachable"], "Docker API errors by kind")
    t.eq(value(before, "cm_runner_up"), 1.0, "cm_runner_up 1")
    t.eq(value(before, "cm_docker_up"), 1.0, "cm_docker_up 1")

    # ---- traffic: exactly N of each
    n_ver, n_404 = 25, 7
    for _ in range(n_ver):
        s.get("/version")
    for _ in range(n_404):
        s.get("/containers/c00000000-0000-0000-0000-00000000dead")
    bad_login = requests.get(URL + "/version", auth=("admin", "wrong-" + rand_suffix()), timeout=30)
    c = must_create(s, t, name="a container for the gauges")["cuid"]
    s.post("/containers/%s/start" % c)
    after, _, _ = scrape(s)
    d_ver = value(after, "cm_http_requests_total", route="version", method="GET", status="200") - \
        value(before, "cm_http_requests_total", route="version", method="GET", status="200")
    t.eq(d_ver, float(n_ver), "requests_total{route=version,status=200} moved by the %d requests sent" % n_ver)
    get_404 = [(l, v) for (n, l), v in after.items() if n == "cm_http_requests_total" and dict(l).get("status") == "404"]
    d_404 = sum(v for _, v in get_404) - sum(v for (n, l), v in before.items()
                                             if n == "cm_http_requests_total" and dict(l).get("status") == "404")
    t.ok(d_404 >= n_404, "the 404s are counted (+%d)" % d_404, [dict(l) for l, _ in get_404])
    t.eq(bad_login.status_code, 401, "a wrong password to count")
    d_401 = sum(v for (n, l), v in after.items() if n == "cm_http_requests_total" and dict(l).get("status") == "401") - \
        sum(v for (n, l), v in before.items() if n == "cm_http_requests_total" and dict(l).get("status") == "401")
    t.ok(d_401 >= 1, "the wrong password is counted under 401 (+%d)" % d_401)
    created = value(after, "cm_http_requests_total", route="container.create", method="POST", status="201") - \
        value(before, "cm_http_requests_total", route="container.create", method="POST", status="201")
    t.eq(created, 1.0, "the create is counted under container.create, POST, 201")

    # ---- the histogram of a route
    cnt = value(after, "cm_http_request_duration_seconds_count", route="version")
    cnt0 = value(before, "cm_http_request_duration_seconds_count", route="version")
    t.eq(cnt - cnt0, float(n_ver), "duration_seconds_count{route=version} moved by %d" % n_ver)
    buckets = sorted(((float("inf") if dict(l)["le"] == "+Inf" else float(dict(l)["le"])), v)
                     for (n, l), v in after.items() if n == "cm_http_request_duration_seconds_bucket" and dict(l)["route"] == "version")
    t.ok(len(buckets) == 12 and all(buckets[i][1] <= buckets[i + 1][1] for i in range(len(buckets) - 1))
         and buckets[-1][1] == cnt, "the buckets are cumulative and +Inf equals the count", buckets)
    t.ok(0 < value(after, "cm_http_request_duration_seconds_sum", route="version") < cnt * 5,
         "the sum of durations is plausible")
    for (n, l), v in after.items():
        if n == "cm_http_request_duration_seconds_count":
            route = dict(l)["route"]
            total = sum(val for (m, ll), val in after.items() if m == "cm_http_requests_total" and dict(ll)["route"] == route)
            if total != v:
                t.ok(False, "histogram count of %s equals its requests_total (%s vs %s)" % (route, v, total))
                break
    else:
        t.ok(True, "every route's histogram count equals the sum of its requests_total")

    # ---- gauges from the database
    db_c = {r["status"]: r["n"] for r in db_query("SELECT status, count(*) AS n FROM containers GROUP BY status")}
    got_c = {dict(l)["state"]: int(v) for (n, l), v in after.items() if n == "cm_containers"}
    t.eq(got_c, db_c, "cm_containers by state equals the database")
    t.ok(got_c.get("running", 0) >= 1, "the started container is counted as running")
    db_j = {(r["kind"], r["status"]): r["n"] for r in db_query("SELECT kind, status, count(*) AS n FROM jobs GROUP BY kind, status")}
    got_j = {(dict(l)["kind"], dict(l)["state"]): int(v) for (n, l), v in after.items() if n == "cm_jobs"}
    t.ok(all(got_j.get(k, 0) <= v for k, v in db_j.items()) and set(got_j) <= set(db_j) and got_j,
         "cm_jobs by kind and state as in the database (jobs only ever added since)", {"metrics": got_j, "db": db_j})
    t.ok(value(after, "cm_job_queue_depth") >= 0 and ("cm_job_queue_depth", frozenset()) in after, "cm_job_queue_depth is there")

    # ---- WebSocket sessions open
    t.eq(value(after, "cm_websocket_sessions_open"), 0.0, "no WebSocket session open before")
    during = asyncio.run(one_terminal(c, s, t))
    t.eq(during, 1.0, "cm_websocket_sessions_open 1 while a terminal is open")
    t.ok(wait_until(lambda: value(scrape(s)[0], "cm_websocket_sessions_open") == 0.0, timeout=10),
         "cm_websocket_sessions_open back to 0 after it closed")


if __name__ == "__main__":
    run(main)

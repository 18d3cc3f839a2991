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
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403
from loadgen import Client, clean_up_after, lost_writes, report  # noqa: E402

CLIENTS = int(os.environ.get("CM_LOAD_CLIENTS", "16"))
SECONDS = float(os.environ.get("CM_LOAD_SECONDS", "15"))
RUN_TAG = "load-" + rand_suffix(6)


def main(t):
    stats, lock = {}, threading.Lock()
    clients = [Client(i, SECONDS, RUN_TAG, stats, lock) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    for c in clients:
        c.join(SECONDS + 300)
    wall = time.monotonic() - t0
    clean_up_after(t, clients)
    t.ok(not any(c.is_alive() for c in clients), "every client finished")
    total = report(t, stats, wall, CLIENTS)
    bad = [(k, code) for k, v in stats.items() for _, code in v if not isinstance(code, int) or code >= 500]
    t.eq(bad[:20], [], "no 5xx and no transport error in %d requests" % total)
    odd = [(k, code) for k, v in stats.items() for _, code in v
           if isinstance(code, int) and code >= 400 and code not in (409, 422)]
    t.eq(odd[:20], [], "no 4xx other than the state conflicts an interleaving can cause")
    creates = sum(1 for _, code in stats.get("create", []) if code == 201)
    t.ok(creates >= CLIENTS, "%d containers created under load" % creates)
    lost, checked = lost_writes(clients)
    t.eq(lost[:20], [], "no lost write: %d containers checked against the database and Docker" % checked)
    t.eq(list(db_query("PRAGMA integrity_check")[0].values())[0], "ok", "integrity_check")
    stuck = db_query("SELECT count(*) AS n FROM jobs WHERE status IN ('queued', 'running')")
    t.ok(stuck and stuck[0]["n"] == 0, "no job left queued or running", stuck)


if __name__ == "__main__":
    run(main)

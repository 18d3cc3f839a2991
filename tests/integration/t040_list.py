#!/usr/bin/python3
"""t040 list + pagination: newest first, cursors that neither skip nor repeat surviving rows
while rows are created and deleted between page fetches, status and tag filters, bad params."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

N = 12


def walk(t, s, params, label, max_pages=200):
    """Follow next_cursor to the end; returns (list of cuids, pages, ok)."""
    out, pages, cursor = [], 0, None
    while pages < max_pages:
        p = dict(params)
        if cursor:
            p["cursor"] = cursor
        r = s.get("/containers", params=p)
        if r.status_code != 200:
            t.ok(False, "%s: page %d answered 200" % (label, pages + 1), {"got": r.status_code, "body": body_text(r)})
            return out, pages, False
        b = r.json()
        pages += 1
        if not (isinstance(b, dict) and isinstance(b.get("containers"), list) and "next_cursor" in b):
            t.ok(False, "%s: page shape {containers, next_cursor}" % label, b)
            return out, pages, False
        if "limit" in params and len(b["containers"]) > int(params["limit"]):
            t.ok(False, "%s: page larger than limit" % label, {"n": len(b["containers"])})
        out.extend(x.get("cuid") for x in b["containers"])
        cursor = b["next_cursor"]
        if cursor is None:
            return out, pages, True
        if not b["containers"]:
            t.ok(False, "%s: empty page with a next_cursor" % label, b)
            return out, pages, False
    t.ok(False, "%s: more than %d pages" % (label, max_pages))
    return out, pages, False


def main(t):
    s = api()
    rs = rand_suffix()
    TAG, ODD = "t040-" + rs, "odd-" + rs
    made = []
    for i in range(N):
        tags = [TAG] + ([ODD] if i % 2 else [])
        c = must_create(s, t, "create #%d" % i, tags=tags)
        made.append(c["cuid"])
    newest_first = list(reversed(made))
    orig = list(made)

    # one filtered walk, limit 5: 5 + 5 + 2
    seen, pages, okw = walk(t, s, {"tag": TAG, "limit": 5}, "tag walk")
    t.ok(okw and pages == 3, "tag walk: 3 pages of <=5 ending with next_cursor null", {"pages": pages})
    t.eq(seen, newest_first, "tag walk: every container exactly once, newest first")

    # page shape: full container objects
    r = s.get("/containers", params={"tag": TAG, "limit": 1})
    b = jbody(r) or {}
    first = (b.get("containers") or [{}])[0]
    t.ok(first.get("cuid") == made[-1] and first.get("tags") == [TAG, ODD] and "status" in first and "image" in first,
         "list items are container objects", first)

    # unfiltered walk: ours appear once each, in order
    seen_all, _, okw = walk(t, s, {"limit": 5}, "full walk")
    ours = [x for x in seen_all if x in made]
    t.ok(okw and ours == newest_first, "full walk: our containers exactly once, newest first",
         {"ours": ours, "want": newest_first})
    t.ok(len(seen_all) == len(set(seen_all)), "full walk: no repeats at all")
    t.ok(set(db_container_cuids() or []) == set(seen_all), "full walk returns exactly the DB's containers")

    # default limit and max
    r = s.get("/containers", params={"tag": TAG})
    t.ok(r.status_code == 200 and len(r.json()["containers"]) == N and r.json()["next_cursor"] is None,
         "no limit: default 50 covers all 12, next_cursor null", {"status": r.status_code})
    r = s.get("/containers", params={"tag": TAG, "limit": 500})
    t.status(r, 200, "limit=500 (the maximum)")

    # create/delete between page fetches
    r = s.get("/containers", params={"tag": TAG, "limit": 5})
    b = r.json()
    page1 = [x["cuid"] for x in b["containers"]]
    t.eq(page1, newest_first[:5], "mutation walk: first page")
    cursor = b["next_cursor"]
    delete_seen = newest_first[2]        # already returned
    delete_anchor = newest_first[4]      # the last row of page 1 (what a cursor points at)
    delete_unseen = newest_first[6]      # not yet returned
    for x in (delete_seen, delete_anchor, delete_unseen):
        t.status(s.delete("/containers/" + x), 204, "delete between pages")
        made.remove(x)
    new1 = must_create(s, t, "create between pages (1)", tags=[TAG])["cuid"]
    new2 = must_create(s, t, "create between pages (2)", tags=[TAG])["cuid"]
    rest = []
    pages = 0
    while cursor and pages < 10:
        r = s.get("/containers", params={"tag": TAG, "limit": 5, "cursor": cursor})
        if not t.status(r, 200, "mutation walk: next page"):
            break
        b = r.json()
        rest.extend(x["cuid"] for x in b["containers"])
        cursor = b["next_cursor"]
        pages += 1
    want_rest = [x for x in newest_first[5:] if x != delete_unseen]
    got_old = [x for x in rest if x not in (new1, new2)]
    t.eq(got_old, want_rest, "mutation walk: the surviving unseen rows, once each, in order (no skip, no repeat)")
    t.ok(not (set(rest) & set(page1)), "mutation walk: nothing from page 1 repeated", {"repeated": sorted(set(rest) & set(page1))})
    t.ok(delete_unseen not in rest, "mutation walk: the deleted unseen row is not returned")
    if set(rest) & {new1, new2}:
        t.diag("rows created after the first page appeared in later pages: %s" % sorted(set(rest) & {new1, new2}))
    made += [new1, new2]

    # tag filter
    r = s.get("/containers", params={"tag": ODD, "limit": 50})
    odd_want = {orig[i] for i in range(N) if i % 2} & set(made)
    t.eq({x["cuid"] for x in r.json()["containers"]} if r.status_code == 200 else None, odd_want,
         "tag filter returns exactly the tagged containers")
    r = s.get("/containers", params={"tag": "no-such-tag-" + rs})
    t.ok(r.status_code == 200 and r.json() == {"containers": [], "next_cursor": None},
         "unknown tag: empty list, next_cursor null", {"body": body_text(r)})

    # status filters
    run_ids = made[:3]
    for x in run_ids:
        t.status(action(s, x, "start"), 200, "start for status filter")
    t.status(action(s, run_ids[0], "pause"), 200, "pause one for status filter")
    want = {"running": set(run_ids[1:]), "paused": {run_ids[0]}, "running,paused": set(run_ids),
            "created": set(made) - set(run_ids)}
    for st, exp in want.items():
        got = {}

        def fetch(st=st, exp=exp):
            r = s.get("/containers", params={"tag": TAG, "status": st, "limit": 100})
            got["v"] = {x["cuid"] for x in r.json()["containers"]} if r.status_code == 200 else r.status_code
            return got["v"] == exp

        wait_until(fetch, timeout=10)
        t.eq(got.get("v"), exp, "status=%s filter (with tag)" % st)
    dst = {x: (docker_state(x) or {}) for x in run_ids}
    t.ok(dst[run_ids[0]].get("Paused") and all(dst[x].get("Running") and not dst[x].get("Paused") for x in run_ids[1:]),
         "Docker agrees with the filter results", dst)
    # status filter + pagination
    seen, _, okw = walk(t, s, {"tag": TAG, "status": "running,paused", "limit": 1}, "status walk")
    t.ok(okw and seen == [x for x in reversed(made) if x in run_ids], "status walk limit=1: newest first, once each",
         {"seen": seen})

    # concurrent readers are served side by side (a pool of workers, not a queue)
    took = []

    def reader():
        t0 = time.monotonic()
        r = api(timeout=90).get("/containers", params={"limit": 5})
        took.append((round(time.monotonic() - t0, 2), r.status_code))

    ths = [threading.Thread(target=reader) for _ in range(6)]
    for x in ths:
        x.start()
    for x in ths:
        x.join(100)
    t.ok(len(took) == 6 and all(st == 200 and d < 5 for d, st in took),
         "6 concurrent GET /containers all answer 200 within 5 s", {"(seconds, status)": took})

    # bad parameters
    for lim in ("0", "501", "abc", "-1", "5.5"):
        check_error(t, s.get("/containers", params={"limit": lim}), 400, "validation_error", name="limit=%s" % lim)
    check_error(t, s.get("/containers", params={"cursor": "garbage!!"}), 400, "validation_error", "INVALID_CURSOR",
                name="cursor=garbage!!")
    r = s.get("/containers", params={"cursor": "eyJpZCI6OTk5OTk5fQ"})
    t.ok(r.status_code in (400, 410), "forged base64 cursor: 400 INVALID_CURSOR or 410 CURSOR_EXPIRED",
         {"got": r.status_code, "body": body_text(r)})
    check_error(t, s.get("/containers", params={"status": "bogus"}), 400, "validation_error", name="status=bogus")


if __name__ == "__main__":
    run(main)

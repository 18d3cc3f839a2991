#!/usr/bin/python3
"""t331 following a build's log past the 1 MiB tail (issue 15, item 17).

The builds row keeps only the last 1 MiB of a build's output; GET /jobs/{id}/log?follow=1 used
to compare the row's length with what it had sent, which never grows past 1 MiB, so a follower
stopped receiving once the tail was full.  Here a build prints ~2.5 MiB of numbered lines in a
burst, between two sleeps:
  - a follower connected before the burst gets every line, in order, once, through to the
    build's last line and "Successfully tagged";
  - a second follower connected after the burst (the build still running) also gets every line
    from the first;
  - without follow, the answer is the kept tail (at most 1 MiB, ending with the build's end);
  - the runner's spool file (DATA/builds/log.ID) is gone once the build ended."""
import io
import os
import re
import subprocess
import sys
import tarfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

TAR = {"Content-Type": "application/x-tar"}
PREFIX = "cm-it-blog-" + rand_suffix(6).lower()
LINES = 40000          # each line is 64 bytes: 2.4 MiB
PAD = "x" * 44


def follow(s, job, out, started=None):
    try:
        with s.get("/jobs/%s/log" % job, params={"follow": 1}, stream=True, timeout=300) as fr:
            out["status"] = fr.status_code
            if started:
                started.set()
            for ch in fr.iter_content(chunk_size=None):
                out.setdefault("chunks", []).append(ch)
    except Exception as e:  # noqa: BLE001
        out["error"] = repr(e)
    finally:
        if started:
            started.set()


def numbers(text):
    return [int(m.group(1)) for m in re.finditer(r"(?m)^L(\d{6}) " + PAD + "$", text)]


def check_follower(t, name, out):
    text = b"".join(out.get("chunks", [])).decode("utf-8", "replace")
    nums = numbers(text)
    t.eq(out.get("status"), 200, "%s: 200" % name)
    t.ok(not out.get("error"), "%s: no transport error" % name, out.get("error"))
    t.ok(nums == list(range(LINES)), "%s: every one of the %d lines, in order, once (got %d, first %s, last %s)"
         % (name, LINES, len(nums), nums[:1], nums[-1:]),
         {"missing_from": next((i for i, n in enumerate(nums) if n != i), None), "len": len(text)})
    t.ok("Successfully tagged" in text[-2000:] and "END-OF-BUILD" in text,
         "%s: through to the end of the build (%d bytes)" % (name, len(text)), text[-300:])


def main(t):
    s = api()
    tag = PREFIX + "/big:v1"
    t.add_cleanup(lambda: subprocess.run(["docker", "rmi", "-f", tag], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))
    # the prefix in the RUN lines keeps Docker's build cache out of it (a cached step prints nothing)
    burst = ('i=0; while [ $i -lt %d ]; do printf "L%%06d %s\\n" $i; i=$((i+1)); done' % (LINES, PAD))
    dockerfile = ("FROM %s\nRUN echo start %s && sleep 3\nRUN %s\nRUN sleep 6 && echo END-OF-BUILD %s\n"
                  % (IMAGE, PREFIX, burst, PREFIX))
    r = s.post("/images/build?async=true", params={"tag": tag}, data=mktar({"Dockerfile": dockerfile}), headers=TAR)
    t.status(r, 202, "async build of a step printing %d lines" % LINES)
    job = (jbody(r) or {}).get("job_id")
    if not job:
        return
    early, late = {}, {}
    started = threading.Event()
    th1 = threading.Thread(target=follow, args=(api(), job, early, started))
    th1.start()
    started.wait(30)

    # the second follower joins once the burst is over (the tail in the row has moved on)
    def past_burst():
        r2 = s.get("/jobs/%s/log" % job)
        return r2.status_code == 200 and ("L%06d" % (LINES - 1)) in r2.text
    t.ok(wait_until(past_burst, 120, 0.2), "the burst is over while the build still runs")
    r2 = s.get("/jobs/%s/log" % job)
    t.ok(len(r2.content) <= 1024 * 1024 and "L000000 " not in r2.text,
         "without follow: the kept tail (%d bytes, the first lines gone)" % len(r2.content))
    th2 = threading.Thread(target=follow, args=(api(), job, late))
    th2.start()
    th1.join(300)
    th2.join(300)
    j = s.get("/jobs/%s?wait=30" % job).json()
    t.eq(j.get("status"), "succeeded", "the build succeeded")
    check_follower(t, "follower from the start", early)
    check_follower(t, "follower joining after 2 MiB", late)

    r3 = s.get("/jobs/%s/log" % job)
    t.ok(r3.status_code == 200 and len(r3.content) <= 1024 * 1024 and "END-OF-BUILD" in r3.text,
         "after the build, without follow: the tail, at most 1 MiB, with the end (%d bytes)" % len(r3.content))
    bdir = os.path.join(DATA_DIR, "builds")
    left = [x for x in os.listdir(bdir) if x.startswith("log.")] if os.path.isdir(bdir) else []
    t.ok(not left, "no spool file left in DATA/builds", left)


run(main)

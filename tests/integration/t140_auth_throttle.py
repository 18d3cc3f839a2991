#!/usr/bin/python3
"""t140: a flood of wrong passwords from one address is answered 429 after a few failures
(before any password hash is computed), while another address's users are unaffected; the
attempts are in the audit table."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ATTACKER = "127.0.0.2"  # another loopback address: curl binds to it as its source


def curl_status(user, password, path="/containers"):
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", ATTACKER,
                        "-u", "%s:%s" % (user, password), URL + path], stdout=subprocess.PIPE, timeout=30)
    return int(p.stdout.decode() or 0)


def main(t):
    s = api()
    t.status(s.get("/containers?limit=1"), 200, "the legitimate user works before the flood")
    intruder = "flood-" + rand_suffix()
    t0 = time.time()
    codes = [curl_status(intruder, "wrong-%d" % i) for i in range(60)]
    took = time.time() - t0
    n401, n429 = codes.count(401), codes.count(429)
    t.ok(n401 + n429 == len(codes), "every flood request is refused (401 or 429)", codes)
    t.ok(n429 >= 30 and n401 <= 25, "most of the flood is answered 429 (%d x 401, %d x 429 in %.1f s)" % (n401, n429, took))
    t.ok(codes[0] == 401, "the first wrong password is a plain 401", codes[:3])
    r = api().get("/containers?limit=1")
    t.status(r, 200, "a user from another address is not throttled")
    r = requests.get(URL + "/containers", auth=(USER, "wrong"))
    t.ok(r.status_code == 401, "and a wrong password from that address is still a plain 401", r.status_code)
    # the 429 answer has the error schema and a Retry-After
    p = subprocess.run(["curl", "-s", "-D", "-", "--interface", ATTACKER, "-u", intruder + ":x", URL + "/containers"],
                       stdout=subprocess.PIPE, timeout=30)
    out = p.stdout.decode()
    t.ok("429" in out.split("\r\n")[0] and "Retry-After:" in out and '"code":"AUTH_RATE_LIMITED"' in out,
         "429 carries Retry-After and the JSON error body", out[:600])
    def flood_rows():
        n = db_query("SELECT COUNT(*) AS n FROM audit WHERE remote_addr = ? AND status IN (401, 429)", (ATTACKER,))[0]["n"]
        return n if n >= 61 else None
    t.ok(wait_until(flood_rows, timeout=5), "every flood request is in the audit table",
         db_query("SELECT status, COUNT(*) AS n FROM audit WHERE remote_addr = ? GROUP BY status", (ATTACKER,)))


if __name__ == "__main__":
    run(main)

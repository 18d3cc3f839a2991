#!/usr/bin/python3
"""t140: a flood of wrong passwords from one address is answered 429 after a few failures
(before any password hash is computed), while another address's users are unaffected; the
attempts are in the audit table."""
import os
import statistics
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


def legit_latencies(n):
    s = api()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = s.get("/containers?limit=1")
        out.append((time.perf_counter() - t0, r.status_code))
    return out


FLOOD = r"""
import base64, http.client, sys, time, urllib.parse
url, src, rate, seconds, user = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
u = urllib.parse.urlsplit(url)
hdr = {"Authorization": "Basic " + base64.b64encode((user + ":bad").encode()).decode()}
codes = []
t_end = time.time() + seconds
nxt = time.time()
while time.time() < t_end:
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=10, source_address=(src, 0))
        c.request("GET", "/containers", headers=hdr)
        codes.append(c.getresponse().status)
        c.close()
    except Exception:
        codes.append(0)
    nxt += 1.0 / rate
    time.sleep(max(0, nxt - time.time()))
print(" ".join(map(str, codes)))
"""


def flood(rate, seconds, user):
    """Wrong passwords from ATTACKER at rate per second for seconds, one new connection each, from
    a process of its own (so it does not share this one's interpreter lock with the measurement)."""
    return subprocess.Popen([sys.executable, "-c", FLOOD, URL, ATTACKER, str(rate), str(seconds), user],
                            stdout=subprocess.PIPE)


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
    # latency of another user while 100 wrong passwords a second arrive from one address
    base = legit_latencies(300)
    fp = flood(100, 4.0, "flood2-" + rand_suffix())
    time.sleep(0.3)
    during = legit_latencies(300)
    out, _ = fp.communicate(timeout=60)
    fcodes = [int(x) for x in out.decode().split()]
    t.ok(all(c == 200 for _, c in base + during), "the other user's requests all succeed during the flood")
    t.ok(fcodes and fcodes.count(429) >= 0.8 * len(fcodes),
         "100 wrong passwords/s: mostly 429 (%d x 429, %d x 401, %d other of %d)"
         % (fcodes.count(429), fcodes.count(401), len(fcodes) - fcodes.count(429) - fcodes.count(401), len(fcodes)))
    b50 = statistics.median(x for x, _ in base)
    d50 = statistics.median(x for x, _ in during)
    t.diag("other user's p50 latency: %.2f ms without the flood, %.2f ms during it (ratio %.2f)"
           % (b50 * 1000, d50 * 1000, d50 / b50 if b50 else 0))

    def flood_rows():
        n = db_query("SELECT COUNT(*) AS n FROM audit WHERE remote_addr = ? AND status IN (401, 429)", (ATTACKER,))[0]["n"]
        return n if n >= 61 else None
    t.ok(wait_until(flood_rows, timeout=5), "every flood request is in the audit table",
         db_query("SELECT status, COUNT(*) AS n FROM audit WHERE remote_addr = ? GROUP BY status", (ATTACKER,)))


if __name__ == "__main__":
    run(main)

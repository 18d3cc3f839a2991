#!/usr/bin/python3
"""t200 symlink race: a container keeps swapping /app/swap between a real directory and a
symlink that points at a canary directory on the host (the host path, as a hostile container
would write it), while uploads, downloads and directory downloads aimed at swap/ run:
CM_RACE_ATTEMPTS requests in all (default 1500; the hardening figure uses 10000). No answer
ever carries the canary's content, the canary is byte-for-byte unchanged, nothing answers 5xx,
and every write lands inside /app."""
import io
import os
import subprocess
import sys
import threading
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ATTEMPTS = int(os.environ.get("CM_RACE_ATTEMPTS", "1500"))
SECRET = b"CANARY-SECRET-" + rand_suffix(12).encode()
ZIP = {"Content-Type": "application/zip"}


def make_zip(name, data):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as zf:
        zf.writestr(name, data)
    return b.getvalue()


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    t.status(action(s, c, "start"), 200, "start")
    canary = os.path.join(DATA_DIR, "canary-race-" + rand_suffix())
    os.makedirs(canary)
    with open(os.path.join(canary, "secret"), "wb") as f:
        f.write(SECRET)
    os.chmod(canary, 0o777)  # writable by anyone: only the service's own checks protect it
    t.add_cleanup(lambda: subprocess.call(["rm", "-rf", canary]))
    before = tree_digest(canary)

    # the container flips /app/swap: a directory with a harmless file <-> a link to the canary
    script = ("while :; do rm -rf /app/swap; mkdir /app/swap; echo inside > /app/swap/secret; "
              "rm -rf /app/swap; ln -s %s /app/swap; done" % canary)
    flipper = subprocess.Popen(["docker", "exec", c, "sh", "-c", script], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    t.add_cleanup(lambda: docker_exec(c, ["sh", "-c", "pkill -f 'ln -s' ; true"]))
    time.sleep(0.5)

    counts = {}
    leaks, errors5 = [], []
    lock = threading.Lock()
    per_thread = ATTEMPTS // 4

    def worker(kind):
        ss = api()
        for i in range(per_thread):
            try:
                if kind == "download":
                    r = ss.get("/containers/%s/download" % c, params={"path": "swap/secret"})
                elif kind == "download-zip":
                    r = ss.get("/containers/%s/download-zip" % c, params={"path": "swap"})
                elif kind == "upload":
                    r = ss.post("/containers/%s/upload-zip" % c, params={"path": "swap"},
                                data=make_zip("secret", b"overwritten-%d" % i), headers=ZIP)
                else:
                    r = ss.get("/containers/%s/archive" % c, params={"path": "/app/swap/secret"})
                code, body = r.status_code, r.content
            except Exception as e:
                code, body = "transport: %r" % e, b""
            with lock:
                counts.setdefault(kind, {}).setdefault(code, 0)
                counts[kind][code] += 1
                if SECRET in body:
                    leaks.append((kind, code))
                if not isinstance(code, int) or code >= 500:
                    errors5.append((kind, code, body[:200]))

    threads = [threading.Thread(target=worker, args=(k,)) for k in ("download", "download-zip", "upload", "archive")]
    t0 = time.time()
    for th in threads:
        th.start()
    for th in threads:
        th.join(600)
    took = time.time() - t0
    flipper.kill()
    docker_exec(c, ["sh", "-c", "pkill -f 'rm -rf /app/swap' ; true"])
    t.diag("%d requests in %.0f s while /app/swap flipped: %s" % (per_thread * 4, took, counts))
    t.eq(leaks, [], "no answer carried the canary's secret (%d attempts)" % (per_thread * 4))
    t.eq(errors5[:10], [], "no 5xx and no broken connection")
    t.eq(tree_digest(canary), before, "the canary directory is byte-for-byte unchanged")
    with open(os.path.join(canary, "secret"), "rb") as f:
        t.eq(f.read(), SECRET, "the canary's file was never overwritten")
    ok_somewhere = sum(n for k in counts.values() for code, n in k.items() if code == 200)
    t.ok(ok_somewhere > 0, "some requests met the real directory and succeeded (%d), so the race was real" % ok_somewhere)


if __name__ == "__main__":
    run(main)

#!/usr/bin/python3
"""t332 long archive paths reach Docker whole (issue 15, item 12).

lib/docker.c built each Engine API URL in a 2048-byte buffer without checking truncation, while
?path= of /containers/{cuid}/archive takes 4096 bytes: a longer path made Docker act on a
shorter one.  ?path= is a query value (at most 1023 bytes decoded), and bytes that need escaping
take 3 in the URL: the path here (made of '@') is made so that the URL cut at 2047 bytes would
name an existing directory, with deeper directories after it (a ~3 KB URL):
  - PUT a tar to the full path: the file lands there, and nothing lands in the shorter one;
  - GET/HEAD the full path's file: its own content (the shorter path holds another file of
    the same name with other content, which must not come back);
  - a 1023-byte path that needs escaping (3 KB of URL) answers 404 PATH_NOT_FOUND (Docker
    saw the whole path), not a 5xx and not a different path."""
import io
import os
import sys
import tarfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

TAR = {"Content-Type": "application/x-tar"}


def esc_len(p):
    # libcurl's escape: unreserved bytes stay, every other byte becomes %XX
    return sum(1 if (c.isalnum() or c in "-._~") else 3 for c in p)


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    t.status(action(s, c, "start"), 200, "start")
    rows = db_query("SELECT docker_id FROM containers WHERE cuid = ?", (c,))
    did = rows[0]["docker_id"] if rows else ""
    t.ok(len(did) >= 12, "the container's Docker id is known (%s)" % did[:12])
    prefix = "http://localhost/v1.41/containers/%s/archive?path=" % did
    # ?path= is a query value (at most 1023 bytes decoded): bytes that need escaping (3 each in
    # the URL) make the URL pass 2048 bytes. The shorter path escapes to exactly what fitted.
    room = 2047 - len(prefix) - esc_len("/app")
    short = "/app"
    while room > 0:
        k = (room - 3) // 3
        name = "@" * k + "q" * (room - 3 - 3 * k) if k <= 200 else "@" * 200
        short += "/" + name
        room -= 3 + esc_len(name)
    t.eq(len(prefix) + esc_len(short), 2047, "the shorter path (%d bytes) is exactly what a 2048-byte URL buffer "
         "kept" % len(short))
    full = short
    while len(full) + 101 <= 1023:
        full += "/" + "@" * 100
    t.ok(900 < len(full) <= 1023 and len(prefix) + esc_len(full) > 2800,
         "the full path is %d bytes, %d in the URL" % (len(full), len(prefix) + esc_len(full)))
    rc, out = docker_exec(c, ["mkdir", "-p", full])
    t.eq(rc, 0, "mkdir -p of the full path in the container", out)
    rc, out = docker_exec(c, ["sh", "-c", 'echo shorter > "$1/f.txt"', "sh", short])
    t.eq(rc, 0, "a decoy f.txt in the shorter path", out)

    # PUT into the full path
    r = s.put("/containers/%s/archive" % c, params={"path": full}, data=mktar({"f.txt": b"the full path\n"}),
              headers=TAR)
    t.status(r, 200, "PUT archive to the %d-byte path" % len(full))
    rc, out = docker_exec(c, ["cat", full + "/f.txt"])
    t.eq((rc, out), (0, "the full path\n"), "the file is in the full path")
    rc, out = docker_exec(c, ["cat", short + "/f.txt"])
    t.eq((rc, out), (0, "shorter\n"), "the shorter path's file is untouched")

    # GET and HEAD of the full path's file
    r = s.get("/containers/%s/archive" % c, params={"path": full + "/f.txt"})
    t.status(r, 200, "GET archive of the long path's file")
    data = None
    try:
        tf = tarfile.open(fileobj=io.BytesIO(r.content))
        data = tf.extractfile(tf.getmember("f.txt")).read()
    except Exception as e:  # noqa: BLE001
        data = repr(e)
    t.eq(data, b"the full path\n", "the tar holds the full path's f.txt")
    r = s.head("/containers/%s/archive" % c, params={"path": full})
    t.status(r, 200, "HEAD archive of the long directory")
    st = json.loads(r.headers.get("X-Container-Path-Stat", "{}") or "{}")
    t.eq(st.get("name"), "@" * 100, "Docker's stat names the last component of the full path")

    # the longest path allowed, every byte escaped: 12 KB of URL reaches Docker whole
    longest = ("/" + "%" * 200) * 5 + "/" + "%" * 17
    t.eq(len(longest), 1023, "a 1023-byte path of % (the longest query value)")
    r = s.get("/containers/%s/archive" % c, params={"path": longest})
    check_error(t, r, 404, code="PATH_NOT_FOUND", name="GET archive of a 1023-byte path escaped to 3 KB")


run(main)

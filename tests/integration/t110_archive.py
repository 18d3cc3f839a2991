#!/usr/bin/python3
"""t110 archive: GET/HEAD/PUT /containers/{cuid}/archive go through Docker's archive
endpoints: any path of the container's filesystem, checked with docker exec."""
import io
import json
import os
import sys
import tarfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    t.status(action(s, c, "start"), 200, "start")
    r = s.head("/containers/%s/archive" % c, params={"path": "/bin/busybox"})
    t.status(r, 200, "HEAD archive of /bin/busybox")
    st = json.loads(r.headers.get("X-Container-Path-Stat", "{}"))
    t.eq((st.get("name"), st.get("size")), ("busybox", os.path.getsize("/bin/busybox")),
         "X-Container-Path-Stat carries Docker's stat as JSON")
    r = s.get("/containers/%s/archive" % c, params={"path": "/etc"})
    t.status(r, 200, "GET archive of /etc")
    names = tarfile.open(fileobj=io.BytesIO(r.content)).getnames()
    t.ok("etc/hostname" in names, "the tar stream holds the container's /etc/hostname", names[:10])
    payload = {"hello.txt": b"hello from a tar\n", "sub/dir/x.bin": os.urandom(5000)}
    r = s.put("/containers/%s/archive" % c, params={"path": "/app"}, data=mktar(payload),
              headers={"Content-Type": "application/x-tar"})
    t.status(r, 200, "PUT archive into /app")
    rc, out = docker_exec(c, ["cat", "/app/hello.txt"])
    t.eq((rc, out), (0, payload["hello.txt"].decode()), "the container sees the extracted file")
    with open(os.path.join(app_dir(c), "sub", "dir", "x.bin"), "rb") as f:
        t.ok(f.read() == payload["sub/dir/x.bin"], "binary content arrives intact on the host side")
    check_error(t, s.get("/containers/%s/archive" % c, params={"path": "/no/such/path"}), 404, code="PATH_NOT_FOUND")
    check_error(t, s.get("/containers/%s/archive" % c, params={"path": "relative"}), 400, code="INVALID_PATH")
    check_error(t, s.get("/containers/%s/archive" % c), 400, code="INVALID_PATH")
    check_error(t, s.put("/containers/%s/archive" % c, params={"path": "/app"}, data=b"x",
                         headers={"Content-Type": "text/plain"}), 400, code="INVALID_CONTENT_TYPE")
    check_error(t, s.put("/containers/%s/archive" % c, params={"path": "/nonexistent"}, data=mktar({"a": b"1"}),
                         headers={"Content-Type": "application/x-tar"}), 404, code="PATH_NOT_FOUND")
    check_error(t, s.get("/containers/%s/archive" % sibling_cuid(c), params={"path": "/etc"}), 404,
                code="CONTAINER_NOT_FOUND")


if __name__ == "__main__":
    run(main)

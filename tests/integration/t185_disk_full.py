#!/usr/bin/python3
"""t185 disk full: a private stack whose whole data directory (database, container files) is a
small tmpfs. Filled up: uploads fail with io_error and leave nothing partial, reads keep being
served, creates fail cleanly (no half-made row or container); once space returns, uploads and
creates work again and the database is intact."""
import io
import os
import subprocess
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ZIP = {"Content-Type": "application/zip"}


def make_zip(entries):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return b.getvalue()


def stack_cuids(st):
    """(cuids of the private stack's rows, cuids of its Docker containers that have a row)."""
    rows = {r[0] for r in st.db_query("SELECT cuid FROM containers")}
    ours = {(c.get("Labels") or {}).get(LABEL) for c in docker_list_labelled()} & rows
    return rows, ours


def main(t):
    base = tempfile.mkdtemp(prefix="t185.", dir=os.environ.get("CM_IT_TMP") or None)
    data = os.path.join(base, "data")
    os.makedirs(data)
    if subprocess.call(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0711", "tmpfs", data]) != 0:
        t.skip("disk full on the data directory", "cannot mount a tmpfs here")
        return
    t.add_cleanup(lambda: subprocess.call(["umount", "-l", data]))
    st = PrivateStack(base, ["DEFAULT_USER_UID=1000:1000", "BOOT_COMMAND=\"sleep 3600\"", "DEFAULT_MEMORY=64m"])
    t.add_cleanup(st.stop)
    if not t.ok(st.start(), "private stack with its data directory on a 48 MB tmpfs starts", st.stderr[-2000:]):
        return
    s = st.session()
    made = []

    def create():
        r = s.post(st.url + "/containers", json={"image": IMAGE, "tags": ["t185"]})
        if r.status_code == 201:
            made.append(r.json()["cuid"])
        return r

    def cleanup_containers():
        for c in made:
            s.delete(st.url + "/containers/%s" % c)
    t.add_cleanup(cleanup_containers)

    r = create()
    t.status(r, 201, "create a container")
    c = r.json().get("cuid") if r.status_code == 201 else None
    if not c:
        return
    t.status(s.post(st.url + "/containers/%s/start" % c), 200, "start it")
    r = s.post(st.url + "/containers/%s/upload-zip" % c, data=make_zip([("keep.txt", b"kept\n")]), headers=ZIP)
    t.status(r, 200, "upload while there is room")
    app = os.path.join(data, "containers", c, "app")
    cdir = os.path.dirname(app)

    # -- fill the filesystem, leaving a few hundred KiB
    filler = os.path.join(data, "filler")
    vfs = os.statvfs(data)
    free = vfs.f_bavail * vfs.f_frsize
    with open(filler, "wb") as f:
        left = max(0, free - 384 * 1024)
        chunk = b"\0" * (1 << 20)
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    vfs = os.statvfs(data)
    t.diag("filled: %d KiB left on the data directory" % (vfs.f_bavail * vfs.f_frsize // 1024))
    before = tree_digest(app)
    entries_before = sorted(os.listdir(cdir))

    # -- an upload that does not fit: io_error, nothing partial
    big = make_zip([("a.bin", os.urandom(1 << 20)), ("b.bin", os.urandom(2 << 20))])
    r = s.post(st.url + "/containers/%s/upload-zip" % c, data=big, headers=ZIP)
    check_error(t, r, (500, 507), error="io_error", name="upload on a full data directory")
    t.eq(tree_digest(app), before, "the failed upload left /app as it was")
    t.eq(sorted(os.listdir(cdir)), entries_before, "and no staging directory is left behind")

    # -- reads keep being served
    r = s.get(st.url + "/containers/%s" % c)
    t.ok(r.status_code == 200 and r.json().get("cuid") == c, "GET /containers/{cuid} answers on a full disk",
         body_text(r))
    r = s.get(st.url + "/containers", params={"limit": 10})
    t.ok(r.status_code == 200 and any(x.get("cuid") == c for x in r.json().get("containers", [])),
         "GET /containers answers on a full disk", body_text(r))
    r = s.get(st.url + "/containers/%s/download" % c, params={"path": "keep.txt"})
    t.ok(r.status_code == 200 and r.content == b"kept\n", "downloads still work on a full disk", body_text(r))
    r = s.get(st.url + "/version")
    t.ok(r.status_code == 200, "GET /version answers on a full disk")

    # -- a create on a full disk: a clean error or a success, never half of one
    n_before = len(made)
    r = create()
    if r.status_code == 201:
        t.ok(True, "create on a full disk succeeded (SQLite still had room)")
    else:
        b = check_error(t, r, (500, 507), name="create on a full disk fails with a clear error")
        t.diag("create on a full disk: %s %s" % (r.status_code, (b or {}).get("code")))
    rows, ours = stack_cuids(st)
    t.ok(len(made) - n_before <= 1 and all(x in rows for x in made),
         "every acknowledged create is in the database", {"made": made, "rows": sorted(rows)})

    # -- space returns: everything works again
    os.unlink(filler)
    r = s.post(st.url + "/containers/%s/upload-zip" % c, data=big, headers=ZIP)
    t.status(r, 200, "the same upload succeeds once space returns")
    t.ok(os.path.getsize(os.path.join(app, "b.bin")) == 2 << 20 and os.path.exists(os.path.join(app, "keep.txt")),
         "its files are in /app (and the old one is kept)")
    r = create()
    t.status(r, 201, "a create succeeds once space returns")
    if r.status_code == 201:
        t.status(s.post(st.url + "/containers/%s/start" % r.json()["cuid"]), 200, "and the new container starts")

    def agree():
        rows, ours = stack_cuids(st)
        return rows == ours and all(x in rows for x in made)
    t.ok(wait_until(agree, timeout=20, interval=0.5), "database rows and Docker containers agree",
         stack_cuids(st))
    t.eq(st.db_query("PRAGMA integrity_check"), [("ok",)], "PRAGMA integrity_check is ok")
    r = s.get(st.url + "/healthz")
    t.ok(wait_until(lambda: s.get(st.url + "/healthz").status_code == 200, timeout=15), "/healthz is 200",
         body_text(r))
    cleanup_containers()
    made.clear()
    t.ok(st.stop(), "the private stack stops")


if __name__ == "__main__":
    run(main)

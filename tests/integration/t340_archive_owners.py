#!/usr/bin/python3
"""t340 archive owners: PUT /containers/{cuid}/archive rewrites the tar before Docker (which
extracts as root) sees it: every entry DEFAULT_USER_UID's, no setuid/setgid/sticky bit, no
xattr (file capabilities), devices/FIFOs/sockets left out and reported, hard links refused;
a non-tar, corrupt, truncated or empty body is refused with nothing extracted; and no other
host user (nobody) can traverse into the containers' files. Checked on the bind source."""
import base64
import io
import os
import socket
import stat
import subprocess
import sys
import tarfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

TAR = {"Content-Type": "application/x-tar"}
UID, GID = (int(x) for x in (DEFAULT_UID.split(":") + [DEFAULT_UID.split(":")[0]])[:2])


def ti(name, typ=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, data=b"", **kw):
    i = tarfile.TarInfo(name)
    i.type, i.mode, i.uid, i.gid, i.uname, i.gname = typ, mode, uid, gid, "root", "root"
    i.size = len(data) if typ == tarfile.REGTYPE else 0
    for k, v in kw.items():
        setattr(i, k, v)
    return i, data


def make_tar(entries, fmt=tarfile.PAX_FORMAT):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as tf:
        for i, data in entries:
            tf.addfile(i, io.BytesIO(data) if i.type == tarfile.REGTYPE else None)
    return b.getvalue()


def evil_entries(prefix=""):
    cap = "\x01\x00\x00\x02\xc0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # cap_setuid/setgid, permitted+effective
    e = [
        ti(prefix + "suid", mode=0o4755, data=b"#!/bin/sh\nid\n"),
        ti(prefix + "sgid-file", mode=0o2755, uid=4242, gid=4242, data=b"x"),
        ti(prefix + "sgiddir", tarfile.DIRTYPE, mode=0o2775),
        ti(prefix + "sgiddir/inner", mode=0o6755, data=b"inner"),
        ti(prefix + "stickydir", tarfile.DIRTYPE, mode=0o1777),
        ti(prefix + "capfile", mode=0o755, data=b"cap",
           pax_headers={"SCHILY.xattr.security.capability": cap, "SCHILY.xattr.user.note": "planted"}),
        ti(prefix + "link", tarfile.SYMTYPE, mode=0o777, linkname="suid"),
        ti(prefix + "null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        ti(prefix + "loop", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=0),
        ti(prefix + "fifo", tarfile.FIFOTYPE, mode=0o644),
    ]
    return e


def check_tree(t, base, label):
    """Every entry under base: owned by DEFAULT_USER_UID, no s-bits, no special file, no xattr."""
    bad = []
    for root, dirs, files in os.walk(base):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            if st.st_uid != UID or st.st_gid != GID:
                bad.append("%s owner %d:%d" % (p, st.st_uid, st.st_gid))
            if st.st_mode & 0o7000:
                bad.append("%s mode %o" % (p, st.st_mode))
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                bad.append("%s is special (%o)" % (p, st.st_mode))
            if not stat.S_ISLNK(st.st_mode):
                try:
                    xs = os.listxattr(p, follow_symlinks=False)
                except OSError:
                    xs = []
                if xs:
                    bad.append("%s xattrs %s" % (p, xs))
    t.ok(not bad, "%s: every entry %d:%d, no setuid/setgid/sticky bit, no device/FIFO, no xattr" % (label, UID, GID),
         bad[:20])


def as_nobody(argv, pass_fds=()):
    return subprocess.run(argv, user=65534, group=65534, extra_groups=[], pass_fds=pass_fds,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    t.status(action(s, c, "start"), 200, "start")
    app = app_dir(c)
    cdir = os.path.dirname(app)

    r = s.put("/containers/%s/archive" % c, params={"path": "/app"}, headers=TAR,
              data=make_tar([ti("sub", tarfile.DIRTYPE, mode=0o755)] + evil_entries()))
    t.status(r, 200, "PUT a tar with a root-owned 04755 file, setgid/sticky dirs, xattrs, devices, a FIFO into /app")
    b = jbody(r) or {}
    t.eq(sorted(x.get("name") for x in b.get("skipped", [])), ["fifo", "loop", "null"],
         "the devices and the FIFO are left out and named in the answer", b)
    t.eq(b.get("skipped_count"), 3, "skipped_count")
    st = os.lstat(os.path.join(app, "suid"))
    t.eq((st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode))), (UID, GID, oct(0o755)),
         "the 04755 root file is DEFAULT_USER_UID's and 0755 on the host")
    st = os.lstat(os.path.join(app, "sgiddir"))
    t.eq((st.st_uid, bool(st.st_mode & stat.S_ISGID)), (UID, False), "the setgid directory lost its bit")
    t.ok(not os.path.lexists(os.path.join(app, "null")) and not os.path.lexists(os.path.join(app, "fifo")),
         "no device node or FIFO on the host")
    t.eq(os.readlink(os.path.join(app, "link")), "suid", "a symbolic link entry arrives as it was")
    with open(os.path.join(app, "sgiddir", "inner"), "rb") as f:
        t.eq(f.read(), b"inner", "content arrives intact")
    check_tree(t, app, "PUT ?path=/app")

    r = s.put("/containers/%s/archive" % c, params={"path": "/app/sub"}, headers=TAR,
              data=make_tar(evil_entries("deeper/")))
    t.status(r, 200, "PUT the same kind of tar into /app/sub")
    check_tree(t, os.path.join(app, "sub"), "PUT ?path=/app/sub")
    t.ok(os.path.isfile(os.path.join(app, "sub", "deeper", "suid")), "the nested entries arrived")

    # gzip is one of the compressions Docker's endpoint takes: the same rewrite applies
    gz = io.BytesIO()
    with tarfile.open(fileobj=gz, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        i, d = ti("gz-suid", mode=0o4711, data=b"z")
        tf.addfile(i, io.BytesIO(d))
    t.status(s.put("/containers/%s/archive" % c, params={"path": "/app"}, headers=TAR, data=gz.getvalue()), 200,
             "PUT a gzip-compressed tar")
    st = os.lstat(os.path.join(app, "gz-suid"))
    t.eq((st.st_uid, oct(stat.S_IMODE(st.st_mode))), (UID, oct(0o711)), "the compressed tar is rewritten the same way")

    # refused bodies extract nothing at all (the body is read to its end before Docker sees it)
    good = make_tar([ti("first.txt", data=b"first entry, complete")])
    full = make_tar([ti("first.txt", data=b"first entry, complete"), ti("second.bin", data=os.urandom(200000))])
    cases = [
        ("a truncated tar", full[: len(good) + 60000], 400, "INVALID_ARCHIVE"),
        ("a body that is not a tar", b"this is not a tar archive\n" * 100, 400, "NOT_A_TAR"),
        ("an empty body", b"", 400, "EMPTY_BODY"),
        ("a tar with a hard link", make_tar([ti("first.txt", data=b"1"),
                                             ti("hl", tarfile.LNKTYPE, linkname="first.txt")]), 400, "HARDLINK_ENTRY"),
        ("a hard link to a file of the container", make_tar([ti("first.txt", data=b"1"),
                                                            ti("hl", tarfile.LNKTYPE, linkname="suid")]), 400,
         "HARDLINK_ENTRY"),
    ]
    for label, body, status, code in cases:
        r = s.put("/containers/%s/archive" % c, params={"path": "/app"}, headers=TAR, data=body)
        check_error(t, r, status, code=code, name=label)
        t.ok(not os.path.lexists(os.path.join(app, "first.txt")) and not os.path.lexists(os.path.join(app, "hl")),
             "%s: nothing extracted" % label)
    # a client that hangs up right after a whole entry: libarchive would take that for the end
    # of the tar, but the body is shorter than its Content-Length, so nothing is extracted
    part = make_tar([ti("first.txt", data=b"1" * 1000)])[:1536]  # header + data, no end blocks
    u = urllib.parse.urlsplit(URL)
    raw = socket.create_connection((u.hostname, u.port), timeout=10)
    auth = base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()
    raw.sendall(("PUT /containers/%s/archive?path=/app HTTP/1.1\r\nHost: %s\r\nAuthorization: Basic %s\r\n"
                 "Content-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n"
                 % (c, u.netloc, auth, len(part) + 10240)).encode() + part)
    raw.shutdown(socket.SHUT_WR)
    try:
        while raw.recv(65536):
            pass
    except OSError:
        pass
    raw.close()
    time.sleep(1)
    t.ok(not os.path.lexists(os.path.join(app, "first.txt")),
         "a body cut short after a whole entry (the client hung up): nothing extracted")
    left = [n for n in os.listdir(cdir) if n.startswith((".upload-", ".trash-", ".mk-"))]
    t.ok(wait_until(lambda: not [n for n in os.listdir(cdir) if n.startswith((".upload-", ".trash-", ".mk-"))],
                    timeout=10, interval=0.2), "no working directory is left beside app/", left)

    # the data directories: no other host user traverses into the containers' files
    t.eq(oct(stat.S_IMODE(os.stat(os.path.join(DATA_DIR, "containers")).st_mode)), oct(0o700), "DATA/containers is 0700")
    t.eq(oct(stat.S_IMODE(os.stat(cdir).st_mode)), oct(0o700), "DATA/containers/<cuid> is 0700")
    # nobody is given a handle on DATA_DIR itself, so the temp dirs above it (the harness's) do
    # not hide what the service's own modes allow
    fd = os.open(DATA_DIR, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rel = os.path.relpath(os.path.join(app, "suid"), DATA_DIR)
        p = as_nobody(["stat", "-c", "%u", "/proc/self/fd/%d/%s" % (fd, rel)], pass_fds=(fd,))
        t.ok(p.returncode != 0 and b"ermission denied" in p.stderr,
             "nobody cannot reach a file in /app through the data directory", p.stderr.decode()[:300])
        p = as_nobody(["ls", "/proc/self/fd/%d/containers" % fd], pass_fds=(fd,))
        t.ok(p.returncode != 0, "nobody cannot list DATA/containers", p.stdout.decode()[:300])
    finally:
        os.close(fd)

    # the container's own view is unchanged: its user owns and runs what it was given
    rc, out = docker_exec(c, ["sh", "-c", "ls -ln /app/suid && /app/suid"])
    t.ok(rc == 0 and ("uid=%d" % UID) in out, "the container runs the file as its own user", out)
    # files of /app stay reachable through the API
    r = s.get("/containers/%s/download" % c, params={"path": "sgiddir/inner"})
    t.eq((r.status_code, r.content), (200, b"inner"), "download of an extracted file still works")


if __name__ == "__main__":
    run(main)

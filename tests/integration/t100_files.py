#!/usr/bin/python3
"""t100 files: upload-zip, download, download-zip through nginx against a real container.
Every refusal is checked twice: the error body, and that the container's /app tree and a
canary directory outside it are byte-for-byte unchanged."""
import io
import os
import sys
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ZIP = {"Content-Type": "application/zip"}


def make_zip(entries, compression=zipfile.ZIP_DEFLATED):
    """entries: list of (name, bytes) or (ZipInfo, bytes)."""
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return b.getvalue()


def link_info(name, mode=0o120777):
    zi = zipfile.ZipInfo(name)
    zi.create_system = 3
    zi.external_attr = mode << 16
    return zi


def main(t):
    s = api()
    c = must_create(s, t)["cuid"]
    t.status(action(s, c, "start"), 200, "start")
    app = app_dir(c)
    canary = os.path.join(DATA_DIR, "canary-" + rand_suffix())
    os.makedirs(canary)
    with open(os.path.join(canary, "secret"), "w") as f:
        f.write("do not touch")
    t.add_cleanup(lambda: subprocess.call(["rm", "-rf", canary]))

    # -- the seed's upload: boot.py, requirements.txt, data/config.json
    files = {
        "boot.py": b"import os\nprint('hi', os.environ.get('CONTAINER_UID'))\n",
        "requirements.txt": b"requests==2.31.0\nnumpy==1.24.0\n",
        "data/config.json": b'{"setting": "value"}',
        "deep/a/b/c/d.bin": os.urandom(200000),
        "unicode-\u00e9t\u00e9.txt": "caf\u00e9\n".encode(),
    }
    r = s.post("/containers/%s/upload-zip" % c, data=make_zip(list(files.items())), headers=ZIP)
    t.status(r, 200, "upload-zip (seed client shape)")
    body = jbody(r) or {}
    t.eq(body.get("files"), len(files), "upload reports the file count")
    t.eq(body.get("bytes"), sum(len(v) for v in files.values()), "upload reports the unpacked bytes")
    for name, data in files.items():
        p = os.path.join(app, name)
        with open(p, "rb") as f:
            t.ok(f.read() == data, "on disk: %s has the uploaded bytes" % name)
    rc, out = docker_exec(c, ["stat", "-c", "%u:%g", "/app/data/config.json"])
    t.eq((rc, out.strip()), (0, DEFAULT_UID), "inside the container the file belongs to DEFAULT_USER_UID")
    rc, out = docker_exec(c, ["cat", "/app/data/config.json"])
    t.eq(out, files["data/config.json"].decode(), "the container reads what was uploaded")
    leftovers = [n for n in os.listdir(os.path.dirname(app)) if n.startswith(".upload") or n.startswith(".trash")]
    t.eq(leftovers, [], "no staging directory is left behind")

    # -- download one file, with Range, and a safe Content-Disposition
    r = s.get("/containers/%s/download" % c, params={"path": "deep/a/b/c/d.bin"})
    t.status(r, 200, "download")
    t.ok(r.content == files["deep/a/b/c/d.bin"], "download returns the exact bytes")
    t.eq(r.headers.get("Content-Length"), str(len(files["deep/a/b/c/d.bin"])), "Content-Length")
    r = s.get("/containers/%s/download" % c, params={"path": "/app/requirements.txt"}, headers={"Range": "bytes=0-7"})
    t.status(r, 206, "ranged download")
    t.eq(r.content, files["requirements.txt"][:8], "range body")
    t.eq(r.headers.get("Content-Range"), "bytes 0-7/%d" % len(files["requirements.txt"]), "Content-Range")
    r = s.get("/containers/%s/download" % c, params={"path": "requirements.txt"}, headers={"Range": "bytes=9999-"})
    check_error(t, r, 416, code="RANGE_NOT_SATISFIABLE")
    r = s.get("/containers/%s/download" % c, params={"path": "unicode-\u00e9t\u00e9.txt"})
    cd = r.headers.get("Content-Disposition", "")
    t.ok(r.status_code == 200 and "filename*=UTF-8''unicode-%C3%A9t%C3%A9.txt" in cd and "\n" not in cd,
         "Content-Disposition carries the UTF-8 name encoded", cd)
    with open(os.path.join(app, 'evil"\r\nX-Injected: 1.txt'), "w") as f:
        f.write("x")
    r = s.get("/containers/%s/download" % c, params={"path": 'evil"\r\nX-Injected: 1.txt'})
    t.ok("X-Injected" not in r.headers, "a file name cannot inject a header", dict(r.headers))
    os.unlink(os.path.join(app, 'evil"\r\nX-Injected: 1.txt'))
    check_error(t, s.get("/containers/%s/download" % c, params={"path": "data"}), 400, code="IS_A_DIRECTORY")
    check_error(t, s.get("/containers/%s/download" % c, params={"path": "nope.txt"}), 404, code="FILE_NOT_FOUND")
    check_error(t, s.get("/containers/%s/download" % c), 400, code="MISSING_PATH")

    # -- download-zip round trip, byte for byte
    r = s.get("/containers/%s/download-zip" % c)
    t.status(r, 200, "download-zip of /app")
    z = zipfile.ZipFile(io.BytesIO(r.content))
    got = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
    t.eq(sorted(got), sorted(files), "download-zip lists every uploaded file")
    t.ok(all(got.get(n) == d for n, d in files.items()), "download-zip round trip is byte for byte")
    r = s.get("/containers/%s/download-zip" % c, params={"path": "deep/a"})
    z = zipfile.ZipFile(io.BytesIO(r.content))
    t.eq([n for n in z.namelist() if not n.endswith("/")], ["b/c/d.bin"], "download-zip of a sub-directory")
    check_error(t, s.get("/containers/%s/download-zip" % c, params={"path": "boot.py"}), 400, code="NOT_A_DIRECTORY")

    # -- symlinks planted by the container itself are never followed
    docker_exec(c, ["ln", "-s", "/etc", "/app/etclink"])
    docker_exec(c, ["ln", "-s", canary, "/app/canarylink"])
    check_error(t, s.get("/containers/%s/download" % c, params={"path": "etclink/passwd"}), 400, code="SYMLINK_IN_PATH")
    check_error(t, s.get("/containers/%s/download" % c, params={"path": "canarylink/secret"}), 400, code="SYMLINK_IN_PATH")
    check_error(t, s.get("/containers/%s/download-zip" % c, params={"path": "etclink"}), 400, code="SYMLINK_IN_PATH")
    check_error(t, s.get("/containers/%s/download" % c, params={"path": "../../../etc/passwd"}), 400, code="PATH_TRAVERSAL")
    check_error(t, s.get("/containers/%s/download" % c, params={"path": "/etc/passwd"}), 400, code="PATH_TRAVERSAL")
    r = s.get("/containers/%s/download-zip" % c)
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    t.ok(not any(n.startswith("etclink") or n.startswith("canarylink") for n in names), "download-zip skips symlinks", names)

    # -- refusals: each leaves /app and the canary exactly as they were
    before_app, before_canary = tree_digest(app), tree_digest(canary)
    ok_zip = make_zip([("fine.txt", b"x")])
    TRAVERSE = ("PATH_TRAVERSAL", "INVALID_ENTRY_NAME")
    bomb = make_zip([("bomb", b"\0" * (300 << 20))])
    cases = [
        ("dot-dot entry", make_zip([("../escape.txt", b"x")]), 400, "PATH_TRAVERSAL", ZIP, {}),
        ("deep dot-dot entry", make_zip([("a/../../escape.txt", b"x")]), 400, "PATH_TRAVERSAL", ZIP, {}),
        ("absolute entry", make_zip([("/tmp/escape.txt", b"x")]), 400, "ABSOLUTE_PATH", ZIP, {}),
        ("symlink entry", make_zip([(link_info("ln"), b"/etc/passwd")]), 400, "SYMLINK_ENTRY", ZIP, {}),
        ("symlink then write through it", make_zip([(link_info("ln2"), canary), ("ln2/secret", b"owned")]),
         400, "SYMLINK_ENTRY", ZIP, {}),
        ("relative symlink entry", make_zip([(link_info("up"), "../..")]), 400, "SYMLINK_ENTRY", ZIP, {}),
        ("fifo entry", make_zip([(link_info("fifo", 0o010644), b"")]), 400, "SPECIAL_ENTRY", ZIP, {}),
        ("device entry", make_zip([(link_info("dev", 0o020644), b"")]), 400, "SPECIAL_ENTRY", ZIP, {}),
        ("duplicate entries", make_zip([("dup.txt", b"1"), ("dup.txt", b"2")]), 400, "DUPLICATE_ENTRY", ZIP, {}),
        ("file then symlink of the same name", make_zip([("swap", b"1"), (link_info("swap"), "/etc")]),
         400, ("DUPLICATE_ENTRY", "SYMLINK_ENTRY"), ZIP, {}),
        ("backslash name", make_zip([("..\\..\\x", b"1")]), 400, ("INVALID_ENTRY_NAME", "PATH_TRAVERSAL"), ZIP, {}),
        ("not a zip", b"this is not a zip archive at all", 400, "NOT_A_ZIP", ZIP, {}),
        ("empty body", b"", 400, "EMPTY_BODY", ZIP, {}),
        ("truncated zip", ok_zip[: len(ok_zip) // 2], 400, ("CORRUPT_ZIP", "NOT_A_ZIP"), ZIP, {}),
        ("wrong content type", ok_zip, 400, "INVALID_CONTENT_TYPE", {"Content-Type": "text/plain"}, {}),
        ("zip bomb", bomb, 413, "ZIP_BOMB", ZIP, {}),
        ("path= escaping /app", ok_zip, 400, "PATH_TRAVERSAL", ZIP, {"path": "../x"}),
        ("path= through a planted symlink", ok_zip, 400, "SYMLINK_IN_PATH", ZIP, {"path": "canarylink"}),
        ("path= absolute outside /app", ok_zip, 400, "PATH_TRAVERSAL", ZIP, {"path": "/etc"}),
        # more spellings of the way out, and links that point out from deeper inside
        ("dot-slash dot-dot entry", make_zip([("./../escape.txt", b"x")]), 400, TRAVERSE, ZIP, {}),
        ("dot inside a dot-dot path", make_zip([("a/./../../escape.txt", b"x")]), 400, TRAVERSE, ZIP, {}),
        ("double slash dot-dot", make_zip([("a//../../escape.txt", b"x")]), 400, TRAVERSE, ZIP, {}),
        ("bare .. entry", make_zip([("..", b"x")]), 400, TRAVERSE, ZIP, {}),
        ("trailing .. entry", make_zip([("x/..", b"x")]), 400, TRAVERSE, ZIP, {}),
        ("dot-dot directory entry", make_zip([("../evil/", b"")]), 400, TRAVERSE, ZIP, {}),
        ("nested symlink out", make_zip([("d/f", b"1"), (link_info("d/l"), "../../..")]), 400, "SYMLINK_ENTRY", ZIP, {}),
        ("symlink to /", make_zip([(link_info("root"), "/")]), 400, "SYMLINK_ENTRY", ZIP, {}),
        ("symlink to the canary, then a file under it",
         make_zip([(link_info("c"), canary), ("c/new", b"owned")]), 400, "SYMLINK_ENTRY", ZIP, {}),
        ("path= with an encoded dot-dot", ok_zip, 400, "PATH_TRAVERSAL", ZIP, {"path": "a/../../x"}),
    ]
    def patched(name, placeholder, raw):
        z = make_zip([(name, b"x")])
        return z.replace(placeholder.encode("utf-8"), raw)
    cases += [
        ("NUL in a name", patched("aQQb", "QQ", b"\0\0"), 400, "INVALID_ENTRY_NAME", ZIP, {}),
        ("invalid UTF-8 name", patched("a\u00e9b", "\u00e9", b"\xff\xfe"), 400, "INVALID_ENTRY_NAME", ZIP, {}),
    ]
    many = make_zip([("m/%05d" % i, b"") for i in range(5001)], zipfile.ZIP_STORED)
    big = make_zip([("big%d.bin" % i, os.urandom(17 << 20)) for i in range(4)], zipfile.ZIP_STORED)
    cases += [
        ("more entries than UPLOAD_MAX_ENTRIES", many, 413, "TOO_MANY_ENTRIES", ZIP, {}),
        ("unpacks past UPLOAD_MAX_UNPACKED", big, 413, "ZIP_TOO_LARGE", ZIP, {}),
    ]
    for name, data, status, code, headers, params in cases:
        r = s.post("/containers/%s/upload-zip" % c, data=data, headers=headers, params=params)
        check_error(t, r, status, code=code, name="upload refused: " + name)
        if status == 413:
            det = (jbody(r) or {}).get("details") or {}
            t.ok(isinstance(det.get("limit"), int), "413 names the limit in details", det)
        t.ok(tree_digest(app) == before_app and tree_digest(canary) == before_canary,
             "after '%s' /app and the canary are unchanged" % name)
    t.ok(not os.path.exists("/tmp/escape.txt"), "nothing was written to /tmp")
    leftovers = [n for n in os.listdir(os.path.dirname(app)) if n.startswith(".upload") or n.startswith(".trash")]
    t.eq(leftovers, [], "no staging directory is left behind after refusals")

    # -- replace=true empties the target first; path= puts files in a sub-directory
    r = s.post("/containers/%s/upload-zip" % c, data=make_zip([("only.txt", b"1")]), headers=ZIP,
               params={"path": "data", "replace": "true"})
    t.status(r, 200, "upload with replace=true into data/")
    t.eq(sorted(os.listdir(os.path.join(app, "data"))), ["only.txt"], "replace=true left only the new files")
    t.ok(os.path.exists(os.path.join(app, "boot.py")), "files outside the target are kept")
    r = s.post("/containers/%s/upload-zip" % c, data=make_zip([("x.txt", b"1")]), headers=ZIP, params={"path": "new/sub"})
    t.status(r, 200, "upload into a new sub-directory")
    t.ok(os.path.isfile(os.path.join(app, "new", "sub", "x.txt")), "sub-directory created")
    t.eq(os.stat(os.path.join(app, "new")).st_uid, int(DEFAULT_UID.split(":")[0]), "created directories belong to DEFAULT_USER_UID")

    # -- curl, the other client people use
    zpath = os.path.join(DATA_DIR, "curl-%s.zip" % rand_suffix())
    with open(zpath, "wb") as f:
        f.write(make_zip([("from-curl/hello.txt", b"hello from curl\n")]))
    t.add_cleanup(lambda: os.path.exists(zpath) and os.unlink(zpath))
    p = subprocess.run(["curl", "-sS", "-u", "%s:%s" % (USER, PASS), "-H", "Content-Type: application/zip",
                        "--data-binary", "@" + zpath, "-w", "\n%{http_code}", URL + "/containers/%s/upload-zip" % c],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    t.ok(p.stdout.decode().rstrip().endswith("200"), "curl --data-binary upload-zip -> 200", p.stdout.decode())
    p = subprocess.run(["curl", "-sS", "-f", "-u", "%s:%s" % (USER, PASS), "-G", "--data-urlencode", "path=from-curl/hello.txt",
                        URL + "/containers/%s/download" % c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    t.eq(p.stdout, b"hello from curl\n", "curl download returns the file")
    p = subprocess.run(["curl", "-sS", "-f", "-u", "%s:%s" % (USER, PASS), URL + "/containers/%s/download-zip" % c],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    t.ok(zipfile.ZipFile(io.BytesIO(p.stdout)).read("from-curl/hello.txt") == b"hello from curl\n",
         "curl download-zip unpacks to the same bytes")

    # -- the container stopped: files still work
    t.status(action(s, c, "stop", json={"timeout": 1}), 200, "stop")
    r = s.post("/containers/%s/upload-zip" % c, data=make_zip([("stopped.txt", b"s")]), headers=ZIP)
    t.status(r, 200, "upload while stopped")
    r = s.get("/containers/%s/download" % c, params={"path": "stopped.txt"})
    t.eq(r.content, b"s", "download while stopped")

    # -- disk full while unpacking: io_error, and nothing partial left
    d2 = must_create(s, t)["cuid"]
    cdir = os.path.join(DATA_DIR, "containers", d2)
    if subprocess.call(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", cdir]) == 0:
        t.add_cleanup(lambda: subprocess.call(["umount", "-l", cdir]))
        os.makedirs(os.path.join(cdir, "app"))
        os.chown(os.path.join(cdir, "app"), *[int(x) for x in DEFAULT_UID.split(":")])
        with open(os.path.join(cdir, "app", "keep.txt"), "w") as f:
            f.write("kept")
        before = tree_digest(os.path.join(cdir, "app"))
        r = s.post("/containers/%s/upload-zip" % d2, data=make_zip([("a.bin", os.urandom(1 << 20)),
                                                                    ("b.bin", os.urandom(3 << 20))], zipfile.ZIP_STORED),
                   headers=ZIP)
        check_error(t, r, 500, error="io_error", code="DISK_FULL", name="upload on a full disk")
        t.eq(tree_digest(os.path.join(cdir, "app")), before, "a failed upload on a full disk leaves /app as it was")
        t.eq(sorted(os.listdir(cdir)), ["app"], "and no staging files are left on the full disk")
        subprocess.call(["umount", cdir])
    else:
        t.skip("upload on a full disk", "cannot mount a tmpfs here")

    # -- unknown container
    other = sibling_cuid(c)
    check_error(t, s.post("/containers/%s/upload-zip" % other, data=ok_zip, headers=ZIP), 404, code="CONTAINER_NOT_FOUND")
    check_error(t, s.get("/containers/%s/download" % other, params={"path": "x"}), 404, code="CONTAINER_NOT_FOUND")


if __name__ == "__main__":
    run(main)

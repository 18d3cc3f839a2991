#!/usr/bin/python3
"""t230 images: POST /images/build from zip and tar(.gz) contexts (Containerfile before
Dockerfile, ?dockerfile=, ?build_dir=), the build's output in GET /jobs/{id}/log (streamed with
?follow=1 while it runs) and its step in the job's progress, failed builds (the build's own
error, no image, no staged context left), bad contexts refused before any job is queued,
GET /images, GET /images/{ref}, DELETE /images/{ref} (409 while a managed container uses it),
POST /containers/{cuid}/commit, and a build job that survives a kill -9 of the runner."""
import io
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ZIP = {"Content-Type": "application/zip"}
TAR = {"Content-Type": "application/x-tar"}
PREFIX = "cm-it-img-" + rand_suffix(6).lower()


def mkzip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return b.getvalue()


def image_id(ref):
    st, body = docker_request("GET", "/images/%s/json" % urllib.parse.quote(ref, safe=""))
    return body.get("Id") if st == 200 and isinstance(body, dict) else None


def run_in(ref, *argv):
    p = subprocess.run(["docker", "run", "--rm", "--user", "0", ref] + list(argv), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    return p.stdout.decode().strip()


def builds_dir_empty():
    d = os.path.join(DATA_DIR, "builds")
    return not os.path.isdir(d) or not [x for x in os.listdir(d) if not x.startswith(".")]


def main(t):
    s = api()
    made = []
    t.add_cleanup(lambda: [subprocess.run(["docker", "rmi", "-f", x], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL) for x in made])

    # -- zip with both files: Containerfile wins; build_dir picks the sub-directory
    tag = PREFIX + ":v1"
    made.append(tag)
    ctx = mkzip({"svc/Containerfile": "FROM %s\nCOPY msg.txt /msg.txt\nRUN echo from-containerfile > /which\n" % IMAGE,
                 "svc/Dockerfile": "FROM %s\nRUN echo from-dockerfile > /which\n" % IMAGE,
                 "svc/msg.txt": "hello image\n", "other/Dockerfile": "FROM nothing-here\n"})
    r = s.post("/images/build", params={"tag": tag, "build_dir": "svc"}, data=ctx, headers=ZIP, timeout=300)
    b = jbody(r) or {}
    t.status(r, 201, "POST /images/build (zip, build_dir=svc)")
    iid = image_id(tag)
    t.ok(iid and b.get("image_id") == iid and b.get("tag") == tag, "the answer's image_id is Docker's image", b)
    t.eq(b.get("dockerfile"), "Containerfile", "Containerfile is found before Dockerfile")
    t.eq(run_in(tag, "cat", "/which", "/msg.txt"), "from-containerfile\nhello image", "the image holds what it built")
    jid = r.headers.get("X-Request-Id") and (db_query("SELECT id FROM jobs WHERE kind = 'image.build' ORDER BY id DESC LIMIT 1")
                                               or [{"id": None}])[0]["id"]
    log = s.get("/jobs/%s/log" % jid)
    t.ok(log.status_code == 200 and "Step 1/3 : FROM" in log.text and "Successfully tagged %s" % tag in log.text,
         "GET /jobs/{id}/log has the build's output", log.text[-600:])
    j = s.get("/jobs/%s" % jid).json()
    t.ok(j.get("status") == "succeeded" and "Step 3/3" in ((j.get("progress") or {}).get("step") or ""),
         "the job's progress names the last step", j.get("progress"))
    t.ok(builds_dir_empty(), "no staged context is left after the build")

    # -- ?dockerfile= and a gzipped tar
    tag2 = PREFIX + ":v2"
    made.append(tag2)
    ctx = mktar({"build/Special.df": "FROM %s\nRUN echo special > /which\n" % IMAGE, "Dockerfile": "FROM nothing\n"},
                mode="w:gz")
    r = s.post("/images/build", params={"tag": tag2, "dockerfile": "build/Special.df"}, data=ctx,
               headers={"Content-Type": "application/gzip"}, timeout=300)
    t.status(r, 201, "POST /images/build (tar.gz, dockerfile=build/Special.df)")
    t.eq(run_in(tag2, "cat", "/which"), "special", "the named Dockerfile was used")

    # -- multipart/form-data, as browsers and `curl -F` send it
    tagm = PREFIX + ":multipart"
    made.append(tagm)
    ctxm = mktar({"Dockerfile": "FROM %s\nRUN echo multipart > /which\n" % IMAGE})
    # a form field the build does not take is refused, not ignored (a misspelt dockerfile= would
    # otherwise build with the defaults)
    r = s.post("/images/build", params={"tag": tagm}, files={"note": (None, "ignored"),
                                                              "context": ("ctx.tar", ctxm, "application/x-tar")}, timeout=300)
    check_error(t, r, 400, code="UNKNOWN_FIELD", field="note", name="a multipart body with an unknown form field")
    r = s.post("/images/build", params={"tag": tagm}, files={"context": ("ctx.tar", ctxm, "application/x-tar")}, timeout=300)
    t.status(r, 201, "POST /images/build with a multipart body (context field)")
    t.eq(run_in(tagm, "cat", "/which"), "multipart", "the multipart context was built")
    with tempfile.NamedTemporaryFile(suffix=".zip") as zf:
        zf.write(mkzip({"Dockerfile": "FROM %s\nRUN echo curl-f > /which\n" % IMAGE}))
        zf.flush()
        p = subprocess.run(["curl", "-s", "-u", "%s:%s" % (USER, PASS), "-o", "/dev/null", "-w", "%{http_code}",
                            "-F", "file=@%s;type=application/zip" % zf.name, URL + "/images/build?tag=" + tagm + "2"],
                           stdout=subprocess.PIPE, timeout=300)
        made.append(tagm + "2")
        t.ok(p.stdout.decode() == "201" and run_in(tagm + "2", "cat", "/which") == "curl-f",
             "curl -F file=@ctx.zip builds (the first file part)", p.stdout.decode())
    r = s.post("/images/build", params={"tag": tagm}, files={"note": (None, "no file here")})
    check_error(t, r, 400, code="INVALID_MULTIPART", name="a multipart body without a file part")
    r = s.post("/images/build", params={"tag": tagm}, data=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
    check_error(t, r, 400, code="INVALID_CONTENT_TYPE", name="multipart without a boundary")
    t.ok(builds_dir_empty(), "no staged context is left after the multipart uploads")

    # -- async build streamed with follow=1 while it runs
    tag3 = PREFIX + "/nested:v3"
    made.append(tag3)
    # (the run's prefix keeps Docker's build cache, shared by every stack on this dockerd, out of it)
    ctx = mktar({"Dockerfile": "FROM %s\nRUN echo one %s\nRUN sleep 2\nRUN echo two > /two\n" % (IMAGE, PREFIX)})
    r = s.post("/images/build?async=true", params={"tag": tag3}, data=ctx, headers=TAR)
    t.status(r, 202, "async build")
    ja = (jbody(r) or {}).get("job_id")
    chunks = []
    t_first = [None]
    t0 = time.monotonic()
    with s.get("/jobs/%s/log" % ja, params={"follow": 1}, stream=True, timeout=120) as fr:
        for ch in fr.iter_content(chunk_size=None):
            if ch:
                if t_first[0] is None:
                    t_first[0] = time.monotonic() - t0
                chunks.append(ch)
    total = time.monotonic() - t0
    text = b"".join(chunks).decode("utf-8", "replace")
    t.ok("Step 1/4" in text and "Successfully tagged" in text and len(chunks) >= 2,
         "follow=1 streamed the whole log in %d pieces" % len(chunks), text[-500:])
    t.ok(t_first[0] is not None and t_first[0] < total - 1.0,
         "the first output arrived while the build ran (%.2f s of %.2f s)" % (t_first[0] or -1, total))
    j = s.get("/jobs/%s?wait=30" % ja).json()
    t.eq(j.get("status"), "succeeded", "the async build succeeded")

    # -- followers hold a worker each: at most WORKERS_MAX/4 (16/4) at once, the rest of the API stays free
    tag5 = PREFIX + "/follow:v5"
    made.append(tag5)
    ctx = mktar({"Dockerfile": "FROM %s\nRUN sleep 6\n" % IMAGE})
    r = s.post("/images/build?async=true", params={"tag": tag5}, data=ctx, headers=TAR)
    jf = (jbody(r) or {}).get("job_id")
    got = []
    opened = threading.Barrier(5, timeout=60)

    def follower():
        fs = api()
        try:
            with fs.get("/jobs/%s/log" % jf, params={"follow": 1}, stream=True, timeout=120) as fr:
                got.append(fr.status_code)
                opened.wait()
                for _ in fr.iter_content(chunk_size=None):
                    pass
        except Exception as e:  # noqa: BLE001
            got.append(repr(e))
    ths = [threading.Thread(target=follower) for _ in range(4)]
    for th in ths:
        th.start()
    try:
        opened.wait()
        r = s.get("/jobs/%s/log" % jf, params={"follow": 1}, timeout=30)
        check_error(t, r, 503, code="TOO_MANY_FOLLOWERS", name="a fifth follower")
        t.ok(r.headers.get("Retry-After") == "5", "it carries Retry-After")
        t0 = time.monotonic()
        ok_all = all(s.get("/version", timeout=10).status_code == 200 for _ in range(20))
        t.ok(ok_all and time.monotonic() - t0 < 5, "20 other requests answer while 4 follow (%.2f s)" % (time.monotonic() - t0))
        r = s.get("/jobs/%s/log" % jf, timeout=30)
        t.status(r, 200, "reading the log without follow still works")
    except threading.BrokenBarrierError:
        t.ok(False, "four followers opened their streams", got)
    for th in ths:
        th.join(90)
    t.ok(got.count(200) == 4, "the four followers got 200 and read to the end", got)
    r = s.get("/jobs/%s/log" % jf, params={"follow": 1}, timeout=30)
    t.status(r, 200, "once they are gone a follower is let in again")
    r = s.get("/images/" + tag3)
    t.ok(r.status_code == 200 and tag3 in r.json().get("tags", []), "GET /images/{ref} with a '/' in the name", body_text(r))

    # -- a failing build: 422 with the build's own error, job failed, no image, nothing staged
    tagf = PREFIX + ":fails"
    before = db_query("SELECT COUNT(*) AS n FROM jobs WHERE kind = 'image.build'")[0]["n"]
    r = s.post("/images/build", params={"tag": tagf}, data=mktar({"Dockerfile": "FROM %s\nRUN exit 3\n" % IMAGE}),
               headers=TAR, timeout=300)
    bf = check_error(t, r, 422, "build_error", "BUILD_FAILED", name="a build whose RUN fails")
    t.ok(bf and "returned a non-zero code: 3" in bf.get("message", ""), "the message is the build's own error", bf)
    jf = (bf or {}).get("details", {}).get("job_id")
    j = s.get("/jobs/%s" % jf).json() if jf else {}
    t.ok(j.get("status") == "failed" and "non-zero code: 3" in (j.get("error") or {}).get("message", ""),
         "the job ended failed with the same text", j)
    t.ok(image_id(tagf) is None, "no image was tagged")
    t.ok(builds_dir_empty(), "no staged context is left after the failed build")
    t.eq(db_query("SELECT COUNT(*) AS n FROM jobs WHERE kind = 'image.build'")[0]["n"], before + 1, "one job for it")

    # -- bad requests: refused before any job, nothing staged
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("Dockerfile", "FROM %s\n" % IMAGE)
        z.writestr("../evil.txt", "x")
    absz = io.BytesIO()
    with zipfile.ZipFile(absz, "w") as z:
        z.writestr("Dockerfile", "FROM %s\n" % IMAGE)
        z.writestr("/abs.txt", "x")
    good = mktar({"Dockerfile": "FROM %s\n" % IMAGE})
    cases = [
        ({}, good, TAR, 400, "MISSING_FIELD", "no tag"),
        ({"tag": "Upper/Case:x"}, good, TAR, 400, "INVALID_IMAGE_REF", "an upper-case tag"),
        ({"tag": "x@sha256:" + "0" * 64}, good, TAR, 400, "INVALID_IMAGE_REF", "a digest as the tag"),
        ({"tag": PREFIX + ":bad"}, good, {"Content-Type": "application/json"}, 400, "INVALID_CONTENT_TYPE", "a JSON body"),
        ({"tag": PREFIX + ":bad"}, b"this is not an archive at all", ZIP, 400, "NOT_AN_ARCHIVE", "not an archive"),
        ({"tag": PREFIX + ":bad"}, b"", ZIP, 400, "EMPTY_BODY", "an empty body"),
        ({"tag": PREFIX + ":bad"}, mkzip({"README": "no dockerfile"}), ZIP, 400, "NO_DOCKERFILE", "no Dockerfile"),
        ({"tag": PREFIX + ":bad", "dockerfile": "Nope"}, good, TAR, 400, "NO_DOCKERFILE", "a named Dockerfile that is absent"),
        ({"tag": PREFIX + ":bad", "dockerfile": "../x"}, good, TAR, 400, "INVALID_VALUE", "dockerfile=../x"),
        ({"tag": PREFIX + ":bad", "build_dir": "missing"}, good, TAR, 400, "NO_BUILD_DIR", "a build_dir that is absent"),
        ({"tag": PREFIX + ":bad", "build_dir": "../.."}, good, TAR, 400, None, "build_dir=../.."),
        ({"tag": PREFIX + ":bad"}, evil.getvalue(), ZIP, 400, "PATH_TRAVERSAL", "a ../ entry (zip slip)"),
        ({"tag": PREFIX + ":bad"}, absz.getvalue(), ZIP, 400, "INVALID_ENTRY_NAME", "an absolute entry"),
        ({"tag": PREFIX + ":bad"}, mktar({"Dockerfile": "FROM %s\n" % IMAGE}, special=[fifo]), TAR, 400, "SPECIAL_ENTRY",
         "a FIFO entry"),
        ({"tag": PREFIX + ":bad", "bogus": "1"}, good, TAR, 400, "UNKNOWN_PARAMETER", "an unknown parameter"),
    ]
    before = db_query("SELECT COUNT(*) AS n FROM jobs WHERE kind = 'image.build'")[0]["n"]
    for params, body, hdr, status, code, name in cases:
        r = s.post("/images/build", params=params, data=body, headers=hdr, timeout=60)
        check_error(t, r, status, code=code, name="build with %s" % name)
    t.eq(db_query("SELECT COUNT(*) AS n FROM jobs WHERE kind = 'image.build'")[0]["n"], before, "none of them queued a job")
    t.ok(builds_dir_empty(), "and none left a staged context")
    t.ok(image_id(PREFIX + ":bad") is None, "and no image")

    # -- list, inspect
    r = s.get("/images")
    ims = (jbody(r) or {}).get("images", [])
    t.ok(r.status_code == 200 and any(tag in i.get("tags", []) and i.get("id") == iid for i in ims),
         "GET /images lists the built image with its id", body_text(r, 300))
    for ref in (tag, iid, iid[7:19]):
        r = s.get("/images/" + ref)
        t.ok(r.status_code == 200 and r.json().get("id") == iid, "GET /images/%s" % ref[:24], body_text(r, 300))
    r = s.get("/images/" + tag)
    t.ok((r.json().get("config") or {}).get("cmd") is not None and r.json().get("os") == "linux", "inspect has config and os")
    check_error(t, s.get("/images/%s:nope" % PREFIX), 404, code="IMAGE_NOT_FOUND", name="GET an unknown image")
    check_error(t, s.get("/images/NOT VALID"), 400, code="INVALID_IMAGE_REF", name="GET /images/<bad ref>")

    # -- delete: 409 while a managed container uses it (even stopped), then 204
    c = must_create(s, t, image=tag)["cuid"]
    r = s.delete("/images/" + tag)
    b = check_error(t, r, 409, "conflict", "IMAGE_IN_USE", name="DELETE an image a managed container uses")
    t.ok(b and c in b.get("message", ""), "the message names the container", b)
    t.ok(image_id(tag) == iid, "the image is still there")
    destroy(s, c)
    t.status(s.delete("/images/" + tag), 204, "DELETE it once the container is gone")
    t.ok(image_id(tag) is None, "Docker no longer has it")
    check_error(t, s.delete("/images/" + tag), 404, code="IMAGE_NOT_FOUND", name="DELETE it again")
    check_error(t, s.delete("/images/Bad%20Ref"), 400, code="INVALID_IMAGE_REF", name="DELETE /images/<bad ref>")

    # -- commit
    c = must_create(s, t, command=SLEEP_CMD)["cuid"]
    action(s, c, "start")
    p = subprocess.run(["docker", "exec", "-u", "0", c, "sh", "-c", "mkdir -p /data && echo committed > /data/marker"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    rc, out = p.returncode, p.stdout.decode()
    t.ok(rc == 0, "write a file outside /app in the running container", out)
    rep = PREFIX + "-commit"
    made.append(rep + ":snap")
    r = s.post("/containers/%s/commit" % c, json={"repository": rep, "tag": "snap", "comment": "t230"})
    b = jbody(r) or {}
    t.status(r, 201, "POST /containers/{cuid}/commit")
    t.ok(b.get("image_id") and b.get("image_id") == image_id(rep + ":snap"), "the answer's image_id is Docker's", b)
    t.eq(run_in(rep + ":snap", "cat", "/data/marker"), "committed", "the image holds the container's file")
    for body, code, name in [({}, "MISSING_FIELD", "no repository"), ({"repository": "Bad Name"}, "INVALID_IMAGE_REF", "a bad repository"),
                             ({"repository": rep, "tag": "no spaces"}, "INVALID_IMAGE_REF", "a bad tag"),
                             ({"repository": rep, "extra": 1}, "UNKNOWN_FIELD", "an unknown field"),
                             ({"repository": 5}, "INVALID_TYPE", "a number")]:
        check_error(t, s.post("/containers/%s/commit" % c, json=body), 400, code=code, name="commit with %s" % name)
    check_error(t, s.post("/containers/%s/commit" % sibling_cuid(c), json={"repository": rep}), 404,
                code="CONTAINER_NOT_FOUND", name="commit of an unknown container")
    destroy(s, c)

    # -- a build job survives kill -9 of the runner: re-run after the restart, succeeds
    tagk = PREFIX + ":killed"
    made.append(tagk)
    r = s.post("/images/build?async=true", params={"tag": tagk},
               data=mktar({"Dockerfile": "FROM %s\nRUN echo %s\nRUN sleep 2\nRUN echo survived > /ok\n" % (IMAGE, PREFIX)}),
               headers=TAR)
    jk = (jbody(r) or {}).get("job_id")
    ps = find_procs("cm-runner")
    ids = {p[0] for p in ps}
    rp = [p[0] for p in ps if p[1] not in ids]
    running = wait_until(lambda: s.get("/jobs/%s" % jk).json().get("status") == "running", timeout=15, interval=0.05)
    time.sleep(0.5)
    if t.ok(running and rp, "the build is running"):
        os.kill(rp[0], signal.SIGKILL)
    j = s.get("/jobs/%s?wait=60" % jk).json()
    if j.get("status") not in ("succeeded", "failed"):
        j = s.get("/jobs/%s?wait=60" % jk).json()
    t.ok(j.get("status") == "succeeded" and j.get("attempts", 0) >= 2,
         "the build job ran again after the runner's restart and succeeded", j)
    t.eq(run_in(tagk, "cat", "/ok"), "survived", "its image is complete")
    t.ok(builds_dir_empty(), "no staged context is left")


if __name__ == "__main__":
    run(main)

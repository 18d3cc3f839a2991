#!/usr/bin/python3
"""t342 upload sweep: the working directories of uploads (.upload-*, .trash-*) that a crash or a
kill leaves beside a container's app/ are dealt with when the stack starts: a worker SIGKILLed
in the middle of a replace=true upload-zip leaves /app with exactly the old or exactly the new
files after the restart, never a mix and never the old files stranded; interrupted replaces
found on disk are undone (old files going aside) or finished (new files going in) by their
journal; plain leftovers are removed; an upload whose owner is alive (its lock held) is left
alone. A private stack (serve) is started, killed into and restarted."""
import fcntl
import io
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

N = int(os.environ.get("CM_SWEEP_FILES", "20000"))
WORK = (".upload-", ".trash-", ".mk-")


def mkzip(prefix, n):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            z.writestr("%s-%05d" % (prefix, i), prefix)
    return b.getvalue()


def holder_pid(path):
    """The cm-fcgi process with an open fd on path (the worker that owns the upload)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                if f.read().strip() != "cm-fcgi":
                    continue
            for fd in os.listdir("/proc/%s/fd" % pid):
                try:
                    if os.readlink("/proc/%s/fd/%s" % (pid, fd)).startswith(path):
                        return int(pid)
                except OSError:
                    pass
        except OSError:
            pass
    return None


def mkdirs(*parts):
    p = os.path.join(*parts)
    os.makedirs(p, exist_ok=True)
    return p


def touch(*parts):
    with open(os.path.join(*parts), "w") as f:
        f.write("x")


def nonempty(d):
    try:
        with os.scandir(d) as it:
            return next(it, None) is not None
    except OSError:
        return False


def kill_replace(t, st, ps, cuid, cdir, prefix, when):
    """Starts a replace=true upload-zip of N files into /app/data and SIGKILLs its worker once
    its journal says `when` (aside: as soon as some old files are in the trash; merge: as soon
    as the new files start going in). Returns the phase the journal had and what was left."""
    body = mkzip(prefix, N)
    res = {}

    def upload():
        try:
            res["r"] = ps.post(st.url + "/containers/%s/upload-zip" % cuid, params={"path": "data", "replace": "true"},
                               data=body, headers={"Content-Type": "application/zip"}, timeout=300)
        except Exception as e:  # the connection breaks with the worker
            res["e"] = e
    before = set(os.listdir(cdir))
    th = threading.Thread(target=upload)
    th.start()
    stg = wait_until(lambda: [n for n in os.listdir(cdir) if n.startswith(".upload-") and n not in before], timeout=60,
                     interval=0.005)
    pid = holder_pid(os.path.join(cdir, stg[0])) if stg else None
    phase = "(none)"
    if t.ok(pid, "the worker that owns the upload is found", stg):
        journal = os.path.join(cdir, stg[0], "journal")
        trash = os.path.join(cdir, stg[0].replace(".upload-", ".trash-"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with open(journal) as f:
                    phase = f.read().split("\n")[0]
            except OSError:
                phase = "(none)"
            if phase == when and (when != "aside" or nonempty(trash)):
                break
            if not os.path.isdir(os.path.join(cdir, stg[0])):
                break
        os.kill(pid, signal.SIGKILL)
        t.eq(phase, when, "the worker was killed with its journal at %s" % when)
    th.join(timeout=120)
    t.ok("r" not in res or res["r"].status_code != 200, "the killed upload was not acknowledged",
         res.get("r") is not None and res["r"].status_code)
    return phase, sorted(n for n in os.listdir(cdir) if n.startswith(WORK))


def main(t):
    if os.environ.get("CM_IT_NO_SERVE") == "1":
        t.skip("private stack restarted over interrupted uploads", "no serve launcher (the installed units)")
        return
    base = tempfile.mkdtemp(prefix="t342.", dir=os.environ.get("CM_IT_TMP") or None)
    st = PrivateStack(base, ["BOOT_COMMAND=\"sleep 3600\"", "DEFAULT_USER_UID=1000:1000"])
    t.add_cleanup(lambda: shutil.rmtree(base, ignore_errors=True))
    t.add_cleanup(st.stop)
    if not t.ok(st.start(), "a private stack", st.stderr[-1500:]):
        return
    ps = st.session()
    r = ps.post(st.url + "/containers", json={"image": IMAGE, "command": ["sleep", "3600"]})
    cuid = (jbody(r) or {}).get("cuid")
    if not t.ok(r.status_code == 201 and cuid, "a container", body_text(r)):
        return
    t.add_cleanup(lambda: (docker_request("DELETE", "/containers/%s?force=1&v=1" % cuid)))
    cdir = os.path.join(st.data, "containers", cuid)
    app = os.path.join(cdir, "app")
    old = {"old-%05d" % i for i in range(N)}
    new = {"new-%05d" % i for i in range(N)}
    r = ps.post(st.url + "/containers/%s/upload-zip" % cuid, params={"path": "data"}, data=mkzip("old", N),
                headers={"Content-Type": "application/zip"}, timeout=300)
    t.status(r, 200, "%d old files uploaded into /app/data" % N)

    # -- a worker SIGKILLed in the middle of a replace: while the old files go aside
    phase1, left1 = kill_replace(t, st, ps, cuid, cdir, "new", "aside")
    t.diag("first kill: journal phase %s; left %s" % (phase1, left1))

    # -- interrupted states on disk, as a crash at each point leaves them
    mkdirs(cdir, ".upload-t342aside", "root")
    touch(cdir, ".upload-t342aside", "root", "new-a")
    with open(os.path.join(cdir, ".upload-t342aside", "journal"), "w") as f:
        f.write("aside\ncrafted\n")
    mkdirs(cdir, ".trash-t342aside")
    touch(cdir, ".trash-t342aside", "old-1")
    touch(mkdirs(app, "crafted"), "old-2")
    mkdirs(cdir, ".upload-t342merge", "root")
    touch(cdir, ".upload-t342merge", "root", "new-1")
    touch(cdir, ".upload-t342merge", "root", "new-2")
    with open(os.path.join(cdir, ".upload-t342merge", "journal"), "w") as f:
        f.write("merge\ncrafted2\n")
    mkdirs(cdir, ".trash-t342merge")
    touch(cdir, ".trash-t342merge", "old-x")
    touch(mkdirs(app, "crafted2"), "new-0")
    mkdirs(cdir, ".upload-t342plain")
    touch(cdir, ".upload-t342plain", "body.zip")
    mkdirs(cdir, ".trash-t342orphan")
    touch(cdir, ".trash-t342orphan", "old-y")
    mk = mkdirs(cdir, ".mk-t342old")
    os.utime(mk, (time.time() - 7200, time.time() - 7200))
    live = mkdirs(cdir, ".upload-t342live")
    touch(live, "body.zip")
    lfd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lfd, fcntl.LOCK_EX)  # as its worker would: an upload in progress

    # -- restart the stack: the sweep runs at start
    t.ok(st.stop(), "the private stack stops")
    if not t.ok(st.start(), "and starts again", st.stderr[-1500:]):
        return

    def swept():
        return sorted(n for n in os.listdir(cdir) if n.startswith(WORK)) == [".upload-t342live"]
    t.ok(wait_until(swept, timeout=30), "every dead working directory is gone, the live one is kept",
         sorted(n for n in os.listdir(cdir) if n.startswith(WORK)))
    got = set(os.listdir(os.path.join(app, "data")))
    t.ok(got == old, "killed while the old files went aside (%s): /app/data holds exactly the old files again" % phase1,
         "old %d, new %d, other %d" % (len(got & old), len(got & new), len(got - old - new)))
    t.eq(sorted(os.listdir(os.path.join(app, "crafted"))), ["old-1", "old-2"],
         "an interrupted replace that was putting the old files aside is undone")
    t.eq(sorted(os.listdir(os.path.join(app, "crafted2"))), ["new-0", "new-1", "new-2"],
         "an interrupted replace that was moving the new files in is finished")
    os.close(lfd)

    # -- killed again, this time while the new files go in: finished at the next start
    phase2, left2 = kill_replace(t, st, ps, cuid, cdir, "new", "merge")
    t.diag("second kill: journal phase %s; left %s" % (phase2, left2))
    t.ok(st.stop(), "the private stack stops")
    if not t.ok(st.start(), "and starts again", st.stderr[-1500:]):
        return
    t.ok(wait_until(lambda: not [n for n in os.listdir(cdir) if n.startswith(WORK)], timeout=30),
         "no working directory is left (the formerly live one included, its lock released)", os.listdir(cdir))
    got = set(os.listdir(os.path.join(app, "data")))
    t.ok(got == new, "killed while the new files went in (%s): /app/data holds exactly the new files" % phase2,
         "old %d, new %d, other %d" % (len(got & old), len(got & new), len(got - old - new)))
    # the service still works on the container after the restart
    r = ps.post(st.url + "/containers/%s/upload-zip" % cuid, params={"path": "data", "replace": "true"},
                data=mkzip("after", 3), headers={"Content-Type": "application/zip"}, timeout=120)
    t.status(r, 200, "a replace after the restart")
    t.eq(sorted(os.listdir(os.path.join(app, "data"))), ["after-00000", "after-00001", "after-00002"],
         "it replaced the files")
    ps.delete(st.url + "/containers/%s" % cuid, timeout=60)
    t.ok(st.stop(), "the private stack stops")


if __name__ == "__main__":
    run(main)

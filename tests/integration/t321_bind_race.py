#!/usr/bin/python3
"""t321 bind race: Docker resolves a bind's source path again at every start and recreate, so the
path must not be swappable between the service's check and Docker's use. A host canary directory
outside ALLOWED_BIND_ROOTS holds a secret; victim containers bind a directory under the root.
(1) The issue's attack: a container with a writable bind of a directory above another's source
    is refused (409 BIND_OVERLAP, in both orders and by PATCH, nothing created or changed); a
    flipper inside the would-be attacker swaps the source for a link to the canary while the
    victim is restarted and recreated (PATCH) in a loop.
(2) The tree changes after validation: a directory above the source is handed to an unprivileged
    host user whose process flips the source between a directory and a link to the canary while
    the victim is restarted and recreated CM_BIND_RACE_LOOPS times (60): every attempt is
    refused 409 BIND_SOURCE_CHANGED, whatever the flipper's timing.
(3) Root swaps the source for a link between starts: restart and PATCH are refused 409
    BIND_SOURCE_CHANGED; once swapped back they work again.
After every attempt the victim must not see the canary: not through docker exec, not through
the archive API, and Docker's Mounts name the checked path."""
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ROOT = os.environ.get("CM_BIND_ROOT", "")
LOOPS = int(os.environ.get("CM_BIND_RACE_LOOPS", "60"))
SECRET = "BIND-CANARY-" + rand_suffix(12)
FLIP_UID = 4242

FLIPPER = r"""
import os, sys, time
fd, canary = int(sys.argv[1]), sys.argv[2]  # the directory above the source, opened for us
while True:
    try:
        os.rename("victim", "victim.real", src_dir_fd=fd, dst_dir_fd=fd)
        os.symlink(canary, "victim", dir_fd=fd)
        time.sleep(0.002)
        os.unlink("victim", dir_fd=fd)
        os.rename("victim.real", "victim", src_dir_fd=fd, dst_dir_fd=fd)
        time.sleep(0.002)
    except OSError:
        time.sleep(0.001)
"""


def seen(cuid):
    """What the victim sees at /v: (leaked?, detail) through docker exec and the archive API."""
    rc, out = docker_exec(cuid, ["sh", "-c", "cat /v/secret; ls /v"])
    leak = SECRET in out
    r = api().get("/containers/%s/archive" % cuid, params={"path": "/v/secret"})
    leak = leak or SECRET.encode() in r.content
    return leak, out[:200]


def mount_source(cuid):
    for m in (docker_inspect(cuid) or {}).get("Mounts") or []:
        if m.get("Destination") == "/v":
            return m.get("Source")
    return None


def make_victim(base):
    d = os.path.join(ROOT, base + "-" + rand_suffix())
    os.makedirs(os.path.join(d, "victim"))
    os.chmod(d, 0o755)
    with open(os.path.join(d, "victim", "secret"), "w") as f:
        f.write("inside\n")
    return d


def restore(d):
    v, real = os.path.join(d, "victim"), os.path.join(d, "victim.real")
    if os.path.islink(v):
        os.unlink(v)
    if os.path.isdir(real):
        if os.path.isdir(v):
            shutil.rmtree(v)
        os.rename(real, v)


def hammer(t, s, cuid, n, label, expect=None):
    """Restarts and PATCH-recreates cuid n times; returns {status: count} and the leaks seen."""
    codes, leaks, wrong = {}, [], []
    for i in range(n):
        if i % 2 == 0:
            r = action(s, cuid, "restart")
        else:
            r = s.patch("/containers/%s" % cuid, json={"env": {"ROUND": str(i)}})
        code = r.status_code
        if code >= 400:
            code = "%d %s" % (code, (jbody(r) or {}).get("code"))
        codes[code] = codes.get(code, 0) + 1
        if expect is not None and code not in expect:
            wrong.append((i, code, body_text(r, 300)))
        st = docker_state(cuid) or {}
        if st.get("Running"):
            leak, out = seen(cuid)
            if leak:
                leaks.append((i, code, out))
    t.ok(not leaks, "%s: the victim never sees the canary in %d restarts/recreates" % (label, n),
         {"leaks": leaks[:5], "codes": codes})
    if expect is not None:
        t.ok(not wrong, "%s: every attempt answers %s" % (label, sorted(map(str, expect))), {"codes": codes, "wrong": wrong[:3]})
    return codes


def main(t):
    s = api()
    if not t.ok(ROOT and os.path.isdir(ROOT), "the stack has an ALLOWED_BIND_ROOTS directory", ROOT):
        return
    canary = os.path.join(os.path.dirname(os.path.realpath(ROOT)), "bind-canary-" + rand_suffix())
    os.makedirs(canary)
    with open(os.path.join(canary, "secret"), "w") as f:
        f.write(SECRET + "\n")
    os.chmod(canary, 0o755)
    made = []
    t.add_cleanup(lambda: [subprocess.call(["rm", "-rf", d]) for d in made + [canary]])

    # ---- (1) an attacker container above the victim's source
    d1 = make_victim("t321a")
    made.append(d1)
    victim_src = os.path.realpath(os.path.join(d1, "victim"))
    b = must_create(s, t, name="the victim binds a directory under the root",
                    volumes=[{"source": victim_src, "target": "/v"}])["cuid"]
    t.status(action(s, b, "start"), 200, "start the victim")
    before = (sorted(db_container_cuids() or []), sorted(ours_managed()))
    r = create_container(s, t, volumes=[{"source": d1, "target": "/t"}])
    check_error(t, r, 409, "conflict", "BIND_OVERLAP", "volumes", name="a writable bind above the victim's source")
    attacker = (jbody(r) or {}).get("cuid") if r.status_code == 201 else None
    r = create_container(s, t, volumes=[{"source": ROOT, "target": "/t"}])
    check_error(t, r, 409, "conflict", "BIND_OVERLAP", "volumes", name="a writable bind of the whole root")
    if r.status_code == 201 and not attacker:
        attacker = jbody(r).get("cuid")
    r = create_container(s, t, volumes=[{"source": d1, "target": "/t", "read_only": True}])
    t.status(r, 201, "a read-only bind above it is fine")
    ro_cuid = (jbody(r) or {}).get("cuid")
    if not attacker:
        t.eq((sorted(x for x in db_container_cuids() or [] if x != ro_cuid), sorted(x for x in ours_managed() if x != ro_cuid)),
             before, "the refused ones made no row and no Docker container")
    if ro_cuid:
        destroy(s, ro_cuid)

    # the other order: the writable one first, then a bind beneath it
    d1b = make_victim("t321b")
    made.append(d1b)
    w = must_create(s, t, name="a container with a writable bind", volumes=[{"source": d1b, "target": "/t"}])["cuid"]
    r = create_container(s, t, volumes=[{"source": os.path.join(d1b, "victim"), "target": "/v"}])
    check_error(t, r, 409, "conflict", "BIND_OVERLAP", "volumes", name="then a bind beneath it")
    if r.status_code == 201 and not attacker:
        attacker = w
    # and by PATCH: a container without binds asks for the writable one above the victim
    p = must_create(s, t, name="a plain container")["cuid"]
    ver = db_query("SELECT version, volumes FROM containers WHERE cuid = ?", (p,))
    r = s.patch("/containers/%s" % p, json={"volumes": [{"source": d1, "target": "/t"}]})
    check_error(t, r, 409, "conflict", "BIND_OVERLAP", "volumes", name="PATCH asking for a writable bind above it")
    if r.status_code == 200 and not attacker:
        attacker = p
    else:
        t.eq(db_query("SELECT version, volumes FROM containers WHERE cuid = ?", (p,)), ver, "the patched row is unchanged")
    r = s.patch("/containers/%s" % p, json={"volumes": [{"source": d1, "target": "/t"}, {"source": victim_src, "target": "/v",
                                                                                         "read_only": True}]})
    check_error(t, r, 400, "validation_error", "BIND_OVERLAP", "volumes[1].source",
                name="one request with a writable bind above its own other bind")

    flip = None
    if attacker:  # the code as found: the attacker exists; it flips the victim's source
        t.status(action(s, attacker, "start"), 200, "(the attacker exists: start it)")
        script = ("cd /t; while :; do mv victim victim.real; ln -s %s victim; usleep 2000; rm victim; "
                  "mv victim.real victim; usleep 2000; done" % canary)
        flip = subprocess.Popen(["docker", "exec", "-u", "0", attacker, "sh", "-c", script],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hammer(t, s, b, max(LOOPS // 10, 4), "an attacker container above the source")
    finally:
        if flip:
            flip.kill()
            flip.wait()
            docker_exec(attacker, ["sh", "-c", "pkill sh; true"])
            time.sleep(0.3)
            restore(d1)

    # ---- (2) an unprivileged host user gets a directory above the source and flips it
    d2 = make_victim("t321c")
    made.append(d2)
    v2 = must_create(s, t, name="a second victim", volumes=[{"source": os.path.join(d2, "victim"), "target": "/v"}])["cuid"]
    t.status(action(s, v2, "start"), 200, "start it")
    os.chown(d2, FLIP_UID, FLIP_UID)
    os.chown(os.path.join(d2, "victim"), FLIP_UID, FLIP_UID)

    def drop():
        os.setgid(FLIP_UID)
        os.setuid(FLIP_UID)

    # the test's temp directory is closed to other users: the flipper gets the directory open
    dfd = os.open(d2, os.O_RDONLY | os.O_DIRECTORY)
    flip = subprocess.Popen(["/usr/bin/python3", "-c", FLIPPER, str(dfd), canary], preexec_fn=drop, pass_fds=(dfd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(dfd)
    try:
        time.sleep(0.2)
        t.ok(flip.poll() is None, "the flipper runs as uid %d" % FLIP_UID)
        t.ok(wait_until(lambda: os.path.islink(os.path.join(d2, "victim")), timeout=5, interval=0.0005),
             "and flips the source to a link now and then")
        codes = hammer(t, s, v2, LOOPS, "a host user's flipper racing the starts",
                       expect={"409 BIND_SOURCE_CHANGED"})
    finally:
        flip.kill()
        flip.wait()
        restore(d2)
    t.diag("codes: %r" % codes)
    st = docker_state(v2) or {}
    t.ok(st.get("Running") and mount_source(v2) == os.path.realpath(os.path.join(d2, "victim")),
         "the victim still runs on the checked path", st.get("Status"))
    os.chown(d2, 0, 0)
    os.chown(os.path.join(d2, "victim"), 0, 0)
    t.status(action(s, v2, "restart"), 200, "restart works again once only root can change the path")
    t.eq(docker_exec(v2, ["cat", "/v/secret"])[1].strip(), "inside", "and mounts the real directory")

    # ---- (3) root swaps the source for a link between starts
    d3 = make_victim("t321d")
    made.append(d3)
    v3 = must_create(s, t, name="a third victim", volumes=[{"source": os.path.join(d3, "victim"), "target": "/v"}])["cuid"]
    t.status(action(s, v3, "start"), 200, "start it")
    n3, bad = max(LOOPS // 10, 4), []
    for i in range(n3):
        os.rename(os.path.join(d3, "victim"), os.path.join(d3, "victim.real"))
        os.symlink(canary, os.path.join(d3, "victim"))
        r = action(s, v3, "restart") if i % 2 == 0 else s.patch("/containers/%s" % v3, json={"env": {"R": str(i)}})
        code = (r.status_code, (jbody(r) or {}).get("code"))
        leak, out = seen(v3) if (docker_state(v3) or {}).get("Running") else (False, "")
        restore(d3)
        if code != (409, "BIND_SOURCE_CHANGED") or leak:
            bad.append((i, code, leak, out))
    t.ok(not bad, "root's swap between starts: %d restarts/recreates refused 409 BIND_SOURCE_CHANGED, no leak" % n3, bad[:5])
    t.ok((docker_state(v3) or {}).get("Running"), "the victim kept running on its original mount")
    t.status(action(s, v3, "restart"), 200, "swapped back: restart works")
    r = s.patch("/containers/%s" % v3, json={"env": {"R": "back"}})
    t.status(r, 200, "and PATCH recreates it")
    t.eq(docker_exec(v3, ["cat", "/v/secret"])[1].strip(), "inside", "on the real directory")
    for c, d in ((b, d1), (v2, d2), (v3, d3)):
        t.eq(mount_source(c), os.path.realpath(os.path.join(d, "victim")), "Docker's Mounts of %s name the checked path" % c)


if __name__ == "__main__":
    run(main)

#!/usr/bin/python3
"""t351 capacity limits (private stack: MAX_CONTAINERS=5, BUILD_MEMORY=96m, BUILD_PIDS=40):
  - bad BUILD_MEMORY / BUILD_PIDS / MAX_CONTAINERS / SYNC_WAIT_GRACE refuse to start, naming it
  - every image build is confined: a RUN step of POST /images/build and of a harpoon
    definition's build reads its cgroup's memory limit (96m); a RUN step that forks 80
    processes fails with "can't fork" while one that forks 10 builds
  - MAX_CONTAINERS counts REST containers and start_container's (harpoon) together: exactly at
    the limit is 201, one over is 429 CONTAINER_LIMIT_REACHED with details {limit, used} and
    nothing queued or created; harpoon start_container and POST /apps are refused the same way;
    reusing a running definition is not a new container; 10 concurrent creates racing for the
    last 2 slots: exactly 2 succeed, and SQLite and Docker hold exactly 5 containers."""
import io
import json
import os
import sys
import tarfile
import tempfile
import threading
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

NONCE = rand_suffix(10)
LIMIT = 5
MEM = 96 << 20
TAR = {"Content-Type": "application/x-tar"}
INSTANCE_LABEL = "io.container-manager.instance"
SLEEPER_CMD = 'CMD ["sleep", "3600"]'


def instance_containers(st):
    rows = st.db_query("SELECT lower(hex(value)) FROM settings WHERE key = 'instance_id'")
    inst = rows[0][0][:16] if rows and rows[0][0] else "none"
    flt = urllib.parse.quote(json.dumps({"label": ["%s=%s" % (INSTANCE_LABEL, inst)]}))
    code, body = docker_request("GET", "/containers/json?all=1&filters=%s" % flt)
    return body if code == 200 else []


def managed_in_db(st):
    return st.db_query("SELECT (SELECT count(*) FROM containers) + (SELECT count(*) FROM harpoon WHERE state IN "
                       "('starting', 'running', 'stopping')) + (SELECT count(*) FROM apps)")[0][0]


def main(t):
    if os.environ.get("CM_IT_NO_SERVE") == "1":
        t.skip("private stack with MAX_CONTAINERS=5", "no serve launcher (the installed units)")
        return
    root = tempfile.mkdtemp(prefix="t351.", dir=os.environ.get("CM_IT_TMP") or None)

    # -- settings are validated at start
    for i, (line, key) in enumerate((("BUILD_MEMORY=lots", "BUILD_MEMORY"), ("BUILD_MEMORY=1m", "BUILD_MEMORY"),
                                     ("BUILD_PIDS=abc", "BUILD_PIDS"), ("MAX_CONTAINERS=0", "MAX_CONTAINERS"),
                                     ("SYNC_WAIT_GRACE=0", "SYNC_WAIT_GRACE"))):
        d = os.path.join(root, "bad%d" % i)
        os.makedirs(d)
        bad = PrivateStack(d, [line, "BOOT_COMMAND=\"sleep 3600\""])
        t.add_cleanup(bad.stop)
        started = bad.start(timeout=60)
        t.ok(not started and key in bad.stderr, "%s refuses to start, naming %s" % (line, key), bad.stderr[-600:])
        bad.stop()

    defs = {
        "hmem": {"context": False, "commands": ["FROM " + IMAGE,
                                                "RUN echo HMEM=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) " + NONCE,
                                                SLEEPER_CMD]},
        "hother": {"context": False, "commands": ["FROM " + IMAGE, "RUN echo other " + NONCE, SLEEPER_CMD]},
    }
    base = os.path.join(root, "stack")
    os.makedirs(base)
    defs_path = os.path.join(base, "defs.json")
    with open(defs_path, "w") as f:
        json.dump({"images": defs}, f)
    st = PrivateStack(base, ["MAX_CONTAINERS=%d" % LIMIT, "BUILD_MEMORY=96m", "BUILD_PIDS=40", "RUNNER_THREADS=12",
                             "CM_IMAGES=%s" % defs_path, "BOOT_COMMAND=\"sleep 3600\"", "DEFAULT_USER_UID=1000:1000"])
    t.add_cleanup(st.stop)
    if not t.ok(st.start(), "private stack with MAX_CONTAINERS=5, BUILD_MEMORY=96m, BUILD_PIDS=40", st.stderr[-1500:]):
        return
    ps = st.session()
    tags = []

    def purge():  # whatever a failed run left (runs before the stack stops)
        if st.pid and not proc_gone(st.pid):
            for (c,) in st.db_query("SELECT cuid FROM containers"):
                ps.delete(st.url + "/containers/%s" % c, timeout=60)
            for (a,) in st.db_query("SELECT name FROM apps"):
                ps.delete(st.url + "/apps/%s" % a, timeout=60)
    t.add_cleanup(purge)

    def rm_images():
        for tag in tags + [r[0] for r in st.db_query("SELECT DISTINCT tag FROM builds")]:
            docker_request("DELETE", "/images/%s?force=1" % urllib.parse.quote(tag, safe=""))
    t.add_cleanup(rm_images)

    def build(name, dockerfile):
        tag = "cm-it-t351-%s:%s" % (name, NONCE.lower())
        tags.append(tag)
        r = ps.post(st.url + "/images/build?async=true", params={"tag": tag}, data=mktar({"Dockerfile": dockerfile}),
                    headers=TAR, timeout=120)
        jid = (jbody(r) or {}).get("job_id")
        if not jid:
            return None, "", body_text(r)
        j = {}
        for _ in range(30):
            j = ps.get(st.url + "/jobs/%s?wait=5" % jid, timeout=30).json()
            if j.get("status") not in ("queued", "running"):
                break
        log = ps.get(st.url + "/jobs/%s/log" % jid, timeout=30).text
        return j.get("status"), log, j

    # -- builds are confined
    status, log, j = build("mem", "FROM %s\nRUN echo MEM=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) %s\n"
                           % (IMAGE, NONCE))
    t.ok(status == "succeeded" and ("MEM=%d" % MEM) in log,
         "a RUN step of POST /images/build sees the memory limit BUILD_MEMORY (%d)" % MEM, log[-800:])
    fork = "RUN i=0; while [ $i -lt %d ]; do sleep 5 & i=$((i+1)); done; echo ALL-FORKED-%s\n"
    status, log, j = build("pids", "FROM %s\n%s" % (IMAGE, fork % (80, NONCE)))
    t.ok(status == "failed" and "can't fork" in log and ("ALL-FORKED-" + NONCE) not in log.replace("echo ALL-FORKED", ""),
         "a RUN step forking 80 processes fails (BUILD_PIDS=40): can't fork", log[-800:])
    t.eq((j.get("error") or {}).get("code") if isinstance(j, dict) else None, "BUILD_FAILED", "... as BUILD_FAILED")
    status, log, j = build("pids-ok", "FROM %s\n%s" % (IMAGE, fork % (10, NONCE + "x")))
    t.ok(status == "succeeded", "a RUN step forking 10 processes builds", log[-800:])

    # -- harpoon's build is confined too; its container counts against MAX_CONTAINERS
    r = ps.post(st.url + "/start_container", json={"image": "hmem", "ports": []}, timeout=300)
    t.status(r, 200, "start_container hmem")
    hlog = "".join(x[0] or "" for x in st.db_query("SELECT log FROM builds WHERE image = 'hmem'"))
    t.ok(("HMEM=%d" % MEM) in hlog, "its definition's RUN step saw the memory limit BUILD_MEMORY", hlog[-800:])

    made = []

    def create():
        return ps.post(st.url + "/containers", json={"image": IMAGE, "command": SLEEP_CMD, "tags": ["t351"]}, timeout=120)

    for i in range(LIMIT - 1):
        r = create()
        if r.status_code == 201:
            made.append(r.json()["cuid"])
    t.eq(len(made), LIMIT - 1, "%d REST containers next to the harpoon one: exactly at the limit" % (LIMIT - 1))
    t.eq(managed_in_db(st), LIMIT, "SQLite holds %d managed containers" % LIMIT)
    jobs_before = st.db_query("SELECT count(*) FROM jobs")[0][0]
    r = create()
    b = check_error(t, r, 429, "limit_reached", "CONTAINER_LIMIT_REACHED", name="one container over MAX_CONTAINERS")
    det = (b or {}).get("details") or {}
    t.ok(det.get("limit") == LIMIT and det.get("used") == LIMIT and "cuid" not in det,
         "details name the limit and the count used", det)
    r = ps.post(st.url + "/start_container", json={"image": "hother", "ports": []}, timeout=120)
    check_error(t, r, 429, "limit_reached", "CONTAINER_LIMIT_REACHED", name="harpoon start_container of a new definition")
    r = ps.post(st.url + "/apps", json={"name": "t351app", "src": "image:" + IMAGE, "lifetime": "command"}, timeout=60)
    check_error(t, r, 429, "limit_reached", "CONTAINER_LIMIT_REACHED", name="POST /apps")
    t.eq(st.db_query("SELECT count(*) FROM jobs")[0][0], jobs_before, "nothing was queued for the refused ones")
    t.eq(managed_in_db(st), LIMIT, "SQLite still holds %d" % LIMIT)
    t.eq(len(instance_containers(st)), LIMIT, "Docker holds %d containers of this instance" % LIMIT)
    r = ps.post(st.url + "/start_container", json={"image": "hmem", "ports": []}, timeout=60)
    t.ok(r.status_code == 200 and (jbody(r) or {}).get("just_created") is False,
         "start_container of the running definition reuses it (not a new container)", body_text(r))

    # -- 10 concurrent creates race for the last 2 slots
    for c in made[:2]:
        ps.delete(st.url + "/containers/%s" % c, timeout=60)
    made = made[2:]
    results = []
    lock = threading.Lock()
    go = threading.Barrier(10, timeout=30)

    def racer():
        s = st.session()
        go.wait()
        r = s.post(st.url + "/containers", json={"image": IMAGE, "command": SLEEP_CMD, "tags": ["t351-race"]}, timeout=120)
        with lock:
            results.append((r.status_code, jbody(r) or {}))
    ths = [threading.Thread(target=racer) for _ in range(10)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(150)
    won = [b["cuid"] for code, b in results if code == 201]
    made += won
    codes = sorted(code for code, _ in results)
    t.eq(codes, [201] * 2 + [429] * 8, "10 creates racing for 2 slots: exactly 2 created, 8 refused with 429")
    t.ok(all(b.get("code") == "CONTAINER_LIMIT_REACHED" for code, b in results if code == 429), "... CONTAINER_LIMIT_REACHED")
    t.eq(managed_in_db(st), LIMIT, "SQLite holds exactly %d managed containers" % LIMIT)
    t.eq(len(instance_containers(st)), LIMIT, "Docker holds exactly %d containers of this instance" % LIMIT)
    t.ok(all(docker_inspect(c) is not None for c in won), "the two winners exist in Docker")

    for c in made:
        ps.delete(st.url + "/containers/%s" % c, timeout=60)
    r = create()
    t.status(r, 201, "with room again, a create succeeds")
    if r.status_code == 201:
        ps.delete(st.url + "/containers/%s" % r.json()["cuid"], timeout=60)
    t.ok(st.stop(), "the private stack stops")
    rm_images()


if __name__ == "__main__":
    run(main)

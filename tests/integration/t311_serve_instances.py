#!/usr/bin/python3
"""t311: stacks started from one directory do not destroy each other. In one directory with one
.env (no CM_DATA_DIR: ./var, as the quick start): a foreground REST stack (`serve`, as
scripts/quickstart runs it), then two harpoon stacks (`serve FILE --images defs.json`, as two
test suites at once). The second and third move to data directories of their own
(var/instances/N, said on stderr) with run directories of their own; each hands out a
start_container container. Stopping one harpoon stack, then the other (both orders, with a third
one started in between) leaves the others answering through nginx (/healthz, the REST API,
harpoon's endpoints), their sockets in place and their start_container containers running. A
second foreground `serve` on the same data directory refuses with a clear reason and leaves the
first untouched; a stack's processes are never signalled by another's stop."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

NONCE = rand_suffix(10)


def clean_env():
    return {k: v for k, v in os.environ.items() if not re.match(r"^(CM_|APP_|WS_)", k)}


class Harpoon:
    """`serve FILE --images defs.json` from directory d (the directory's .env)."""

    def __init__(self, d, name):
        self.d, self.name = d, name
        self.info = os.path.join(d, name)
        self.pid = self.port = None
        self.stderr = ""

    def start(self):
        p = subprocess.run([CLI, "serve", self.info, "--images", "defs.json"], cwd=self.d, env=clean_env(),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                           start_new_session=True)
        self.stderr = p.stderr.decode("utf-8", "replace")
        if p.returncode != 0:
            return False
        port, pid = open(self.info).read().split()
        self.port, self.pid = int(port), int(pid)
        return True

    def stop(self):
        if not self.pid or proc_gone(self.pid):
            return True
        os.kill(self.pid, signal.SIGTERM)
        if wait_until(lambda: proc_gone(self.pid), timeout=40, interval=0.05):
            return True
        os.killpg(self.pid, signal.SIGKILL)
        return False


def run_dir_of(pid):
    for p in find_procs("cm-ws", root=pid):
        m = re.search(r"--socket (\S+)/ws\.sock", p[3])
        if m:
            return m.group(1)
    return None


def tree(pid):
    return {p[0] for p in find_procs("", root=pid)} | {pid}


def main(t):
    if os.environ.get("CM_IT_NO_SERVE") == "1":
        t.skip("stacks of their own started with serve from one directory", "no serve launcher (the installed units)")
        return
    d = tempfile.mkdtemp(prefix="t311.", dir=os.environ.get("CM_IT_TMP", "/tmp"))
    os.chmod(d, 0o755)
    password = rand_suffix(16)
    rest_port = free_port()
    with open(os.path.join(d, ".env"), "w") as f:
        f.write("APP_USER=admin\nAPP_PASS=%s\nCM_HTTP_LISTEN=127.0.0.1:%d\nCM_HTTPS_LISTEN=off\n"
                "DEFAULT_USER_UID=1000:1000\nBOOT_COMMAND=\"sleep 3600\"\n" % (password, rest_port))
    with open(os.path.join(d, "defs.json"), "w") as f:
        json.dump({"images": {"sleeper": {"context": False, "commands": [
            "FROM " + IMAGE, ["ADD", {"dest": "/nonce", "content": "t311 " + NONCE}], 'CMD ["sleep", "3600"]']}}}, f)
    sess = requests.Session()
    sess.auth = ("admin", password)
    rest = None
    harpoons = []
    rest_cuid = None
    tags = set()

    def url(port, path):
        return "http://127.0.0.1:%d%s" % (port, path)

    def answers(port, label):
        try:
            r = sess.get(url(port, "/healthz"), timeout=10)
            return r.status_code == 200, "%s: %d %s" % (label, r.status_code, r.text[:200])
        except requests.RequestException as e:
            return False, "%s: %s" % (label, e)

    def check_alive(port, label, sockets_dir=None):
        good, why = answers(port, label)
        t.ok(good, "%s answers /healthz 200 through nginx" % label, why)
        if sockets_dir:
            missing = [n for n in ("fcgi.sock", "ws.sock", "harpoon.sock", "runner.sock")
                       if not os.path.exists(os.path.join(sockets_dir, n))]
            t.ok(not missing, "%s: its sockets are all in place in %s" % (label, sockets_dir), missing)

    def start_sleeper(h):
        r = sess.post(url(h.port, "/start_container"), json={"image": "sleeper", "ports": []}, timeout=120)
        b = jbody(r)
        ok = r.status_code == 200 and b.get("container_id")
        t.ok(ok, "%s: start_container sleeper" % h.name, body_text(r))
        if ok:
            info = docker_inspect(b["container_id"])
            tags.add(((info or {}).get("Config") or {}).get("Image", ""))
        return b.get("container_id") if ok else None

    def running(cid):
        info = docker_inspect(cid) if cid else None
        return bool(info and info["State"]["Running"])

    try:
        # ---------------------------------------------------------------- the quick start's stack
        rest = subprocess.Popen([CLI, "serve", "--env-file", ".env"], cwd=d, env=clean_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "rest.log"), "w"),
                                start_new_session=True)
        up = wait_until(lambda: answers(rest_port, "rest")[0], timeout=90, interval=0.2)
        t.ok(up, "the REST stack (foreground serve, ./var) answers", open(os.path.join(d, "rest.log")).read()[-800:])
        if not up:
            return
        rest_rd = run_dir_of(rest.pid)
        r = sess.post(url(rest_port, "/containers"), json={"image": IMAGE}, timeout=60)
        rest_cuid = jbody(r).get("cuid")
        t.ok(r.status_code == 201 and rest_cuid, "the REST stack creates a container", body_text(r))
        sess.post(url(rest_port, "/containers/%s/start" % rest_cuid), timeout=60)

        # ---------------------------------------------------------------- two harpoon stacks
        a, b = Harpoon(d, "info-a"), Harpoon(d, "info-b")
        for h in (a, b):
            started = h.start()
            harpoons.append(h)
            t.ok(started, "serve %s from the same directory starts" % h.name, h.stderr[-800:])
            if not started:
                return
        t.ok("keeps its state in %s/var/instances/1" % d in a.stderr, "the first harpoon stack says it moved to var/instances/1",
             a.stderr[-400:])
        t.ok("keeps its state in %s/var/instances/2" % d in b.stderr, "the second to var/instances/2", b.stderr[-400:])
        rds = [rest_rd, run_dir_of(a.pid), run_dir_of(b.pid)]
        t.ok(None not in rds and len(set(rds)) == 3, "three run directories, one per stack", rds)
        ca, cb = start_sleeper(a), start_sleeper(b)
        a_tree, rest_tree = tree(a.pid), tree(rest.pid)

        # ---------------------------------------------------------------- stop the second first
        t.ok(b.stop(), "the second harpoon stack stops")
        t.ok(not running(cb), "its start_container container is removed")
        check_alive(rest_port, "the REST stack after the second stopped", rest_rd)
        check_alive(a.port, "the first harpoon stack after the second stopped", rds[1])
        t.ok(running(ca), "the first harpoon stack's start_container container still runs")
        t.ok(all(not proc_gone(p) for p in a_tree | rest_tree), "no process of the other stacks was stopped",
             [p for p in a_tree | rest_tree if proc_gone(p)])
        r = sess.post(url(a.port, "/start_container"), json={"image": "sleeper", "ports": []}, timeout=60)
        t.ok(r.status_code == 200 and jbody(r).get("container_id") == ca and jbody(r).get("just_created") is False,
             "the first harpoon stack still hands out its container (helper socket reached)", body_text(r))
        r = sess.get(url(rest_port, "/containers/%s" % rest_cuid), timeout=30)
        t.ok(r.status_code == 200, "the REST stack still serves its container", body_text(r))
        r = sess.get(url(rest_port, "/containers/%s/logs" % rest_cuid), timeout=30)
        t.ok(r.status_code == 200, "the REST stack's log stream (its helper) answers", body_text(r))

        # ---------------------------------------------------------------- the other order
        c3 = Harpoon(d, "info-c")
        started = c3.start()
        harpoons.append(c3)
        t.ok(started and "var/instances/2" in c3.stderr, "a third harpoon stack starts (var/instances/2 is free again)",
             c3.stderr[-600:])
        if not started:
            return
        cc = start_sleeper(c3)
        c_tree = tree(c3.pid)
        t.ok(a.stop(), "the first harpoon stack stops (the older one first this time)")
        t.ok(not running(ca), "its start_container container is removed")
        check_alive(rest_port, "the REST stack after the first stopped", rest_rd)
        check_alive(c3.port, "the third harpoon stack after the first stopped", run_dir_of(c3.pid))
        t.ok(running(cc), "the third harpoon stack's start_container container still runs")
        t.ok(all(not proc_gone(p) for p in c_tree | rest_tree), "no process of the other stacks was stopped",
             [p for p in c_tree | rest_tree if proc_gone(p)])
        t.ok(c3.stop(), "the third harpoon stack stops")
        check_alive(rest_port, "the REST stack after every harpoon stack stopped", rest_rd)
        r = sess.get(url(rest_port, "/containers/%s/status" % rest_cuid), timeout=30)
        t.ok(r.status_code == 200, "the REST stack answers for its container at the end", body_text(r))
        # ---------------------------------------------------------------- a killed supervisor's processes
        # keep their directories: a new stack moves aside instead of taking over their sockets
        dd = Harpoon(d, "info-d")
        started = dd.start()
        harpoons.append(dd)
        t.ok(started, "a fourth harpoon stack starts", dd.stderr[-600:])
        if started:
            m = re.search(r"keeps its state in (\S+)", dd.stderr)
            d_slot, d_rd = m.group(1) if m else None, run_dir_of(dd.pid)
            d_inodes = {n: os.stat(os.path.join(d_rd, n)).st_ino for n in ("ws.sock", "fcgi.sock", "harpoon.sock")}
            os.kill(dd.pid, signal.SIGKILL)
            wait_until(lambda: proc_gone(dd.pid), timeout=10)
            ee = Harpoon(d, "info-e")
            started = ee.start()
            harpoons.append(ee)
            t.ok(started and d_slot and "keeps its state in %s\n" % d_slot not in ee.stderr,
                 "after SIGKILL to a stack's supervisor, a new stack does not take the directory its processes hold",
                 (d_slot, ee.stderr[-600:]))
            now = {n: os.stat(os.path.join(d_rd, n)).st_ino if os.path.exists(os.path.join(d_rd, n)) else None
                   for n in d_inodes}
            t.ok(now == d_inodes, "the orphaned processes' sockets were not replaced", (d_inodes, now))
            ee.stop()
            try:
                os.killpg(dd.pid, signal.SIGTERM)  # the orphans: serve FILE made them a session of their own
            except OSError:
                pass
            wait_until(lambda: not find_procs(d_rd), timeout=40)
            check_alive(rest_port, "the REST stack after that", rest_rd)

        # ---------------------------------------------------------------- a second foreground serve refuses
        p = subprocess.Popen([CLI, "serve", ":%d" % free_port(), "--env-file", ".env"], cwd=d, env=clean_env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=60)
            err = b"(still running after 60 s) " + err
        err = err.decode()
        t.ok(p.returncode != 0 and "in use by another running stack" in err and "pid %d" % rest.pid in err,
             "a second foreground serve on ./var refuses, naming the stack that holds it", (p.returncode, err[-600:]))
        check_alive(rest_port, "the REST stack after the refused serve", rest_rd)
    finally:
        for h in harpoons:
            h.stop()
        if rest and rest.poll() is None:
            rest.send_signal(signal.SIGTERM)
            try:
                rest.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(rest.pid, signal.SIGKILL)
                rest.wait()
        if rest_cuid:
            docker_request("DELETE", "/containers/%s?force=true" % rest_cuid)
        for c in docker_list_labelled():
            srcs = [m.get("Source", "") for m in c.get("Mounts") or []]
            if any(s.startswith(d + "/") for s in srcs):
                docker_request("DELETE", "/containers/%s?force=true" % c["Id"])
        for tag in tags:
            if tag and NONCE:
                docker_request("DELETE", "/images/%s?force=true" % tag)
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    run(main)

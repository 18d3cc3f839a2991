#!/usr/bin/python3
"""t322 container users: app and harpoon containers no longer run as the image's user (root for
the test image): by default they run as APP_USER_UID (65534:65534), an app's `user` or a
definition's `user:` picks another uid, and root is refused 400 ROOT_NOT_ALLOWED (with nothing
built or created) unless the operator sets ALLOW_ROOT_CONTAINERS=true. Checked in Docker
(Config.User) and inside (`id -u`); busybox httpd serves as the unprivileged uid."""
import json
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cmtest import *  # noqa: E402,F403
import t210_harpoon as h  # noqa: E402  (its private-stack harness)

SUFFIX = rand_suffix(6).lower()
DEFAULT = "65534:65534"


def mkzip(files):
    import io
    import zipfile
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for fname, data in files.items():
            z.writestr(fname, data)
    return b.getvalue()


def web_files(text):
    return {"Dockerfile": "FROM %s\nRUN mkdir -p /www && echo %s > /www/index.html\nEXPOSE 8080\n"
                          'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n' % (IMAGE, text)}


def create_app(s, spec, files):
    parts = {"spec": (None, json.dumps(spec), "application/json"),
             "source": ("src.zip", mkzip(files), "application/zip")}
    return s.post("/apps", files=parts, timeout=600)


def inside_uid(cid):
    rc, out = docker_exec(cid, ["id", "-u"])
    return out.strip() if rc == 0 else "exec failed: " + out


def app_images(name):
    st, body = docker_request("GET", "/images/json")
    return [t for i in (body or []) for t in (i.get("RepoTags") or []) if t.startswith("cm-app-%s:" % name)]


def section_apps(t, s):
    made = []

    def cleanup():
        for a in made:
            s.delete("/apps/" + a, timeout=120)
    t.add_cleanup(cleanup)

    # the default: APP_USER_UID
    web = "t322-web-" + SUFFIX
    r = create_app(s, {"name": web}, web_files("hello"))
    made.append(web)
    t.status(r, 201, "POST /apps (no user)")
    b = jbody(s.get("/apps/" + web)) or {}
    cid = b.get("container_id")
    info = docker_inspect(cid) if cid else {}
    t.eq((info or {}).get("Config", {}).get("User"), DEFAULT, "the app's container runs as APP_USER_UID in Docker")
    t.eq(inside_uid(cid), "65534", "id -u inside says 65534")
    st = wait_until(lambda: (jbody(s.get("/apps/" + web)) or {}).get("status") == "healthy", timeout=60, interval=0.5)
    t.ok(st, "busybox httpd serves on 8080 as that uid (the health check passes)",
         (jbody(s.get("/apps/" + web)) or {}).get("health_check"))
    t.ok(b.get("user") is None, "the app object's user is null (the setting)", b.get("user"))
    r = s.post("/apps/%s/run" % web, json={"command": "id", "args": ["-u"]})
    t.ok(r.status_code == 200 and (jbody(r) or {}).get("stdout") == "65534\n", "a run of the app runs as 65534 too",
         body_text(r))

    # a chosen uid
    web2 = "t322-uid-" + SUFFIX
    r = create_app(s, {"name": web2, "user": "1234:2345"}, web_files("chosen"))
    made.append(web2)
    t.status(r, 201, "POST /apps with user 1234:2345")
    b = jbody(s.get("/apps/" + web2)) or {}
    t.eq((docker_inspect(b.get("container_id")) or {}).get("Config", {}).get("User"), "1234:2345",
         "Config.User is the app's user")
    t.eq(inside_uid(b.get("container_id")), "1234", "id -u inside says 1234")
    t.eq(b.get("user"), "1234:2345", "the app object shows it")

    # root and bad values: refused before any job, nothing built or recorded
    jobs_before = db_query("SELECT count(*) FROM jobs")
    for user, code in (("0", "ROOT_NOT_ALLOWED"), ("0:0", "ROOT_NOT_ALLOWED"), ("00", "ROOT_NOT_ALLOWED"),
                       ("root", "INVALID_VALUE"), ("-1", "INVALID_VALUE"), ("1000:", "INVALID_VALUE"),
                       ("1:2:3", "INVALID_VALUE")):
        bad = "t322-bad-" + SUFFIX
        r = create_app(s, {"name": bad, "user": user}, web_files("bad"))
        check_error(t, r, 400, "validation_error", code, "user", name="POST /apps with user %r" % user)
        r = s.post("/apps", params={"name": bad, "user": user}, data=mkzip(web_files("bad")),
                   headers={"Content-Type": "application/zip"}, timeout=120)
        check_error(t, r, 400, "validation_error", code, "user", name="raw zip with ?user=%s" % user)
        t.ok(s.get("/apps/" + bad).status_code == 404 and not app_images(bad), "no app and no image %s" % bad)
    t.eq(db_query("SELECT count(*) FROM jobs"), jobs_before, "and no job was queued")
    r = s.put("/apps/" + web2, files={"spec": (None, json.dumps({"user": "0"}), "application/json"),
                                      "source": ("src.zip", mkzip(web_files("again")), "application/zip")}, timeout=600)
    check_error(t, r, 400, "validation_error", "ROOT_NOT_ALLOWED", "user", name="PUT /apps/{name} asking for root")
    b2 = jbody(s.get("/apps/" + web2)) or {}
    t.ok(b2.get("container_id") == b.get("container_id") and b2.get("generation") == b.get("generation"),
         "the app is unchanged", b2)


def section_harpoon(t):
    defs = {
        "web": h.WEB,
        "chosen": dict(h.sleeper("t322-chosen"), user="4321:4321"),
        "asroot": dict(h.sleeper("t322-root"), user="0"),
    }
    for allow in (False, True):
        port = free_port()
        env = ["ALLOW_ROOT_CONTAINERS=true"] if allow else []
        S = h.Stack(t, "t322%s" % ("r" if allow else "n"), defs=defs, extra_env=env)
        why = S.start_fg("%s:%d" % (S.defs_path, port), port=port)
        if not t.ok(why is None, "a private serve stack (ALLOW_ROOT_CONTAINERS=%s)" % allow, why):
            continue
        try:
            if not allow:
                r = S.start("web", ports=[4545])
                b = jbody(r) or {}
                t.status(r, 200, "start_container web")
                cid = b.get("container_id")
                t.eq((docker_inspect(cid) or {}).get("Config", {}).get("User"), DEFAULT,
                     "the harpoon container runs as APP_USER_UID")
                t.eq(inside_uid(cid), "65534", "id -u inside says 65534")
                hp = (h.host_binding(docker_inspect(cid) or {}) or {}).get("HostPort")
                try:
                    got = requests.get("http://127.0.0.1:%s/example_file" % hp, timeout=10).text if hp else None
                except requests.RequestException as e:
                    got = repr(e)
                t.eq(got, "hello there", "and busybox httpd serves its file as that uid")
                r = S.start("chosen")
                cid = (jbody(r) or {}).get("container_id")
                t.eq((docker_inspect(cid) or {}).get("Config", {}).get("User"), "4321:4321",
                     "a definition's user: is Config.User")
                t.eq(inside_uid(cid), "4321", "id -u inside says 4321")
                before = S.harpoon_containers()
                r = S.start("asroot")
                check_error(t, r, 400, "validation_error", "ROOT_NOT_ALLOWED", "user",
                            name="a definition asking for root without ALLOW_ROOT_CONTAINERS")
                t.eq(len(S.harpoon_containers()), len(before), "no container was made for it")
                t.eq(S.builds("asroot"), [], "and nothing was built")
            else:
                r = S.start("asroot")
                cid = (jbody(r) or {}).get("container_id")
                t.status(r, 200, "with ALLOW_ROOT_CONTAINERS=true the root definition starts")
                t.eq((docker_inspect(cid) or {}).get("Config", {}).get("User"), "0:0", "as root, as asked")
        finally:
            if S.pid:
                S.signal_and_time(signal.SIGTERM, list(S.cids))


def main(t):
    s = api()
    section_apps(t, s)
    if os.environ.get("CM_IT_NO_SERVE") == "1":
        t.skip("harpoon containers of private serve stacks", "no serve launcher (the installed units)")
    else:
        section_harpoon(t)
    # a bad setting refuses to start
    import subprocess
    import tempfile
    d = tempfile.mkdtemp(prefix="t322.")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CM_", "APP_"))}
    for lines, field in ((["APP_USER_UID=0"], "APP_USER_UID"), (["APP_USER_UID=nobody"], "APP_USER_UID"),
                         (["ALLOW_ROOT_CONTAINERS=maybe"], "ALLOW_ROOT_CONTAINERS")):
        envf = os.path.join(d, ".env")
        with open(envf, "w") as f:
            f.write("\n".join(["CM_DATA_DIR=%s/data" % d, "CM_AUTH=off"] + lines) + "\n")
        p = subprocess.run([h.CLI, "migrate", "--env-file", envf], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, timeout=60)
        t.ok(p.returncode != 0 and field in p.stderr.decode(), "%s: the launcher refuses to start, naming %s" % (lines[0], field),
             p.stderr.decode()[-300:])
    subprocess.call(["rm", "-rf", d])


if __name__ == "__main__":
    run(main)

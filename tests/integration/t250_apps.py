#!/usr/bin/python3
"""t250 apps: POST /apps from a zip source (multipart spec + source, or a raw zip with query
fields; Containerfile before Dockerfile, src naming the file, build_dir), image:REF apps with no
build, health gating observed through nginx (503 + Retry-After while starting, 200 once healthy;
a health path that never answers ends unhealthy with the last error and the route stays 503),
GET /apps and /apps/{name}, POST /apps/{name}/run with and without json (non-JSON stdout, a
failing command), a PUT rebuild while a client polls the route (no failed request), a killed
container restarted, DELETE removing route, container and image, every bad input (no container
file, an image that is not local, no port, a name clash, bad fields) leaving nothing behind,
and 401 on the /apps routes without credentials. The apps themselves are reached on their own
listeners (APPS_LISTEN: CM_APPS_URL, CM_APPS_HTTPS_URL), never on the API's."""
import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

SUFFIX = rand_suffix(6).lower()
ZIP = {"Content-Type": "application/zip"}
WAIT = 180
# apps are served on their own origin (APPS_LISTEN), /apps/{name}/... there
APPS_URL = os.environ.get("CM_APPS_URL", "http://127.0.0.1:18081").rstrip("/")
APPS_HTTPS_URL = os.environ.get("CM_APPS_HTTPS_URL", "https://127.0.0.1:18444").rstrip("/")


def name(n):
    return "t250-%s-%s" % (n, SUFFIX)


def mkzip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for fname, data in files.items():
            z.writestr(fname, data)
    return b.getvalue()


def service_files(text, port=8080, expose=True, extra="", fname="Dockerfile"):
    df = "FROM %s\nRUN mkdir -p /www/ok && echo %s > /www/index.html && echo ok > /www/ok/index.html%s\n" % (
        IMAGE, text, extra)
    if expose:
        df += "EXPOSE %d\n" % port
    df += 'CMD ["httpd", "-f", "-p", "%d", "-h", "/www"]\n' % port
    return {fname: df}


def app_containers(app):
    st, body = docker_request("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(
        json.dumps({"label": ["io.container-manager.app=%s" % app]})))
    return body if st == 200 and isinstance(body, list) else []


def app_images(app):
    st, body = docker_request("GET", "/images/json?filters=" + urllib.parse.quote(
        json.dumps({"reference": ["cm-app-%s" % app]})))
    return body if st == 200 and isinstance(body, list) else []


def image_exists(ref):
    st, _ = docker_request("GET", "/images/%s/json" % urllib.parse.quote(ref, safe=""))
    return st == 200


def db_app(app):
    rows = db_query("SELECT * FROM apps WHERE name = ?", (app,))
    return rows[0] if rows else None


def cleanup(apps):
    # through the API first: while the app's row exists the runner's health checker starts a
    # removed container again (it would outlive the run); then whatever is left, by hand
    s = api()
    for a in apps:
        try:
            s.delete("/apps/" + a, timeout=120)
        except Exception:
            pass
    for a in apps:
        for c in app_containers(a):
            docker_request("DELETE", "/containers/%s?force=1&v=1" % c["Id"])
        for im in app_images(a):
            docker_request("DELETE", "/images/%s?force=1" % im["Id"])


def wait_status(s, app, want, timeout=WAIT):
    def f():
        r = s.get("/apps/" + app)
        b = jbody(r) or {}
        return b if b.get("status") in want else None
    return wait_until(f, timeout=timeout, interval=0.5) or (jbody(s.get("/apps/" + app)) or {})


def create_multipart(s, spec, files, **kw):
    parts = {"spec": (None, json.dumps(spec), "application/json")}
    if files is not None:
        parts["source"] = ("src.zip", mkzip(files), "application/zip")
    return s.post("/apps", files=parts, timeout=kw.get("timeout", 600))


def main(t):
    s = api()
    anon = api(auth=False)
    A = api(base=APPS_URL)  # the apps' own listener (APPS_LISTEN)
    made = []
    t.add_cleanup(lambda: cleanup(made))

    # -- bad input: refused before any job, nothing left behind
    bad = name("bad")
    made.append(bad)
    jobs_before = db_query("SELECT COUNT(*) AS n FROM jobs")[0]["n"]
    r = create_multipart(s, {"name": bad}, {"README": "no container file here\n"})
    check_error(t, r, 400, code="NO_DOCKERFILE", name="a source with neither Containerfile nor Dockerfile")
    r = create_multipart(s, {"name": bad, "src": "Missing.df"}, service_files("x"))
    check_error(t, r, 400, code="NO_DOCKERFILE", field="src", name="src naming a file the source does not have")
    r = s.post("/apps", json={"name": bad, "src": "image:cm-it-no-such-image-%s:latest" % SUFFIX})
    check_error(t, r, 404, code="IMAGE_NOT_FOUND", field="src", name="src=image:REF that is not local")
    r = s.post("/apps", json={"name": bad, "src": "image:" + IMAGE})
    check_error(t, r, 400, code="PORT_REQUIRED", field="port", name="an image with no EXPOSE and no port given")
    r = create_multipart(s, {"name": bad}, None)
    check_error(t, r, 400, code="MISSING_SOURCE", field="source", name="no source and no image:REF")
    for spec, field in (({"name": "Bad_Name"}, "name"), ({"name": "-x"}, "name"), ({"name": "a" * 64}, "name"),
                        ({}, "name"), ({"name": bad, "scheme": "ftp"}, "scheme"),
                        ({"name": bad, "lifetime": "forever"}, "lifetime"), ({"name": bad, "health": "ok"}, "health"),
                        ({"name": bad, "port": 70000}, "port"), ({"name": bad, "port": "80"}, "port"),
                        ({"name": bad, "colour": "red"}, "colour"), ({"name": bad, "src": "image:Not A Ref"}, "src")):
        r = create_multipart(s, spec, service_files("x"))
        check_error(t, r, 400, field=field, name="POST /apps %s" % json.dumps(spec)[:60])
    r = s.post("/apps", params={"name": bad, "port": "x"}, data=mkzip(service_files("x")), headers=ZIP)
    check_error(t, r, 400, field="port", name="a raw zip with ?port=x")
    r = s.post("/apps", params={"name": bad, "nope": "1"}, data=mkzip(service_files("x")), headers=ZIP)
    check_error(t, r, 400, code="UNKNOWN_PARAMETER", name="an unknown query parameter")
    r = s.post("/apps", params={"name": bad}, data="hello", headers={"Content-Type": "text/plain"})
    check_error(t, r, 400, code="INVALID_CONTENT_TYPE", name="a body that is no archive")
    t.eq(db_query("SELECT COUNT(*) AS n FROM jobs")[0]["n"], jobs_before, "no job was queued for any of them")
    # a port that is neither exposed nor given is found after the build: the job fails, and
    # neither the image nor a row nor a container is left
    r = create_multipart(s, {"name": bad}, service_files("x", expose=False))
    check_error(t, r, 400, code="PORT_REQUIRED", field="port", name="a built image that exposes no port (none given)")
    t.ok(db_app(bad) is None and not app_containers(bad) and not app_images(bad),
         "nothing is left of the refused app (row, container, image)", (db_app(bad), app_images(bad)))
    builds = os.path.join(DATA_DIR, "builds")
    t.ok(not [x for x in os.listdir(builds) if not x.startswith(".")] if os.path.isdir(builds) else True,
         "no staged source is left")

    # -- health gating through nginx: 503 + Retry-After while starting, 200 once healthy
    slow = name("slow")
    made.append(slow)
    files = service_files("slow-ok")
    files["Dockerfile"] = files["Dockerfile"].replace(
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]', 'CMD ["sh", "-c", "sleep 8; exec httpd -f -p 8080 -h /www"]')
    r = create_multipart(s, {"name": slow}, files)
    t.status(r, 201, "POST /apps (a service that takes 8 s to listen)")
    r = A.get("/apps/%s/" % slow)
    b = check_error(t, r, 503, code="APP_NOT_READY", name="GET /apps/{starting}/")
    t.ok(r.headers.get("Retry-After", "").isdigit(), "the 503 carries Retry-After", dict(r.headers))
    t.eq(((b or {}).get("details") or {}).get("state"), "starting", "the 503 names the state")
    t.eq((jbody(s.get("/apps/" + slow)) or {}).get("status"), "starting", "GET /apps/{name} says starting")
    ok = wait_until(lambda: A.get("/apps/%s/" % slow).status_code == 200, timeout=WAIT, interval=0.5)
    r = A.get("/apps/%s/" % slow)
    t.ok(ok and r.text.strip() == "slow-ok", "the route answers 200 once the health check passes", body_text(r))

    # -- a health path that never answers: unhealthy with the last error, the route stays 503
    sick = name("sick")
    made.append(sick)
    r = create_multipart(s, {"name": sick, "health": "/no-such-page"}, service_files("sick"))
    t.status(r, 201, "POST /apps (health path that answers 404)")
    # scheme https against a plain-HTTP server: the checks speak TLS, so it never gets healthy
    tls = name("tls")
    made.append(tls)
    r = create_multipart(s, {"name": tls, "scheme": "https"}, service_files("tls"))
    t.status(r, 201, "POST /apps (scheme https)")

    # -- a raw zip body with the fields as query parameters; src names the file, build_dir, a
    #    port given wins over EXPOSE
    raw = name("raw")
    made.append(raw)
    files = {"svc/Special.df": service_files("raw-ok", port=8080)["Dockerfile"].replace("EXPOSE 8080", "EXPOSE 9090"),
             "svc/Dockerfile": "FROM nothing-here\n", "Dockerfile": "FROM nothing-here\n"}
    r = s.post("/apps", params={"name": raw, "src": "Special.df", "build_dir": "/svc", "port": "8080"},
               data=mkzip(files), headers=ZIP, timeout=600)
    b = jbody(r) or {}
    t.status(r, 201, "POST /apps (raw zip, fields as query parameters)")
    t.ok(b.get("port") == 8080 and b.get("port_requested") == 8080 and b.get("src") == "Special.df"
         and b.get("build_dir") == "/svc", "the given port wins over EXPOSE; src and build_dir recorded", b)
    ok = wait_until(lambda: A.get("/apps/%s/" % raw).status_code == 200, timeout=WAIT, interval=0.5)
    t.ok(ok and A.get("/apps/%s/" % raw).text.strip() == "raw-ok", "the app built from the named file answers")

    # -- Containerfile is found before Dockerfile
    cf = name("cf")
    made.append(cf)
    files = service_files("from-containerfile", fname="Containerfile")
    files.update(service_files("from-dockerfile"))
    r = create_multipart(s, {"name": cf}, files)
    t.status(r, 201, "POST /apps (source with Containerfile and Dockerfile)")
    ok = wait_until(lambda: A.get("/apps/%s/" % cf).status_code == 200, timeout=WAIT, interval=0.5)
    t.ok(ok and A.get("/apps/%s/" % cf).text.strip() == "from-containerfile", "Containerfile wins over Dockerfile")

    # -- an app's build survives a kill -9 of the runner: the job runs again and the app comes up
    kil = name("killed")
    made.append(kil)
    files = service_files("survived", extra=" && echo %s > /www/run-id && sleep 2" % SUFFIX)
    parts = {"spec": (None, json.dumps({"name": kil}), "application/json"),
             "source": ("src.zip", mkzip(files), "application/zip")}
    r = s.post("/apps?async=true", files=parts)
    jk = (jbody(r) or {}).get("job_id")
    t.status(r, 202, "POST /apps?async=true")
    ps = find_procs("cm-runner")
    ids = {p[0] for p in ps}
    rp = [p[0] for p in ps if p[1] not in ids]
    running = wait_until(lambda: (jbody(s.get("/jobs/%s" % jk)) or {}).get("status") == "running", timeout=30, interval=0.05)
    time.sleep(0.5)
    if t.ok(running and rp, "the app's build is running"):
        os.kill(rp[0], signal.SIGKILL)
    j = jbody(s.get("/jobs/%s?wait=60" % jk)) or {}
    for _ in range(5):
        if j.get("status") in ("succeeded", "failed"):
            break
        j = jbody(s.get("/jobs/%s?wait=60" % jk)) or {}
    t.ok(j.get("status") == "succeeded" and j.get("attempts", 0) >= 2,
         "the app.create job ran again after the runner's restart and succeeded", j)
    ok = wait_until(lambda: A.get("/apps/%s/" % kil).status_code == 200, timeout=WAIT, interval=0.5)
    t.ok(ok and A.get("/apps/%s/" % kil).text.strip() == "survived", "the app serves after the interrupted create")
    t.eq(len(app_containers(kil)), 1, "one container for it (the interrupted attempt left none)")
    t.ok(not [x for x in os.listdir(builds) if not x.startswith(".")] if os.path.isdir(builds) else True,
         "the staged source is removed once the job has ended")

    # -- a command app from an existing image: no build, no service, commands run
    cmd = name("cmd")
    made.append(cmd)
    r = s.post("/apps", json={"name": cmd, "src": "image:" + IMAGE, "lifetime": "command"})
    b = jbody(r) or {}
    t.status(r, 201, "POST /apps (image:REF, lifetime command, JSON body)")
    t.ok(b.get("image") == IMAGE and b.get("status") == "ready" and b.get("url") is None,
         "a command app uses the image as it is and has no route", b)
    t.ok(not app_containers(cmd), "no service container is started for a command app")
    r = A.get("/apps/%s/" % cmd)
    check_error(t, r, 404, code="APP_NOT_FOUND", name="a command app is not routed")
    r = s.post("/apps/%s/run" % cmd, json={"command": "sh", "args": ["-c", 'echo \'{"n": 42}\''], "json": True})
    b = jbody(r) or {}
    t.ok(r.status_code == 200 and b.get("value") == {"n": 42} and b.get("exit_code") == 0,
         "run in a command app with json", b)
    r = s.post("/apps/%s/run" % cmd, json={"command": "sh", "args": ["-c", "echo bad >&2; exit 5"]})
    b = jbody(r) or {}
    t.ok(r.status_code == 200 and b.get("exit_code") == 5 and b.get("stderr") == "bad\n",
         "a failing command in a command app: its exit code and stderr", b)
    t.ok(not app_containers(cmd), "the command's container is removed afterwards", app_containers(cmd))

    # -- a service app from a multipart spec + zip source
    web = name("web")
    made.append(web)
    r = create_multipart(s, {"name": web, "health": "/ok/"}, service_files("hello-v1"))
    b = jbody(r) or {}
    t.status(r, 201, "POST /apps (multipart spec + zip source)")
    t.ok(b.get("name") == web and b.get("url") == "/apps/%s/" % web and b.get("port") == 8080
         and b.get("lifetime") == "service" and b.get("scheme") == "http" and b.get("health") == "/ok/",
         "the answer describes the app (port from EXPOSE, defaults)", b)
    t.ok(b.get("status") in ("starting", "healthy"), "a new service app is starting (or already healthy)", b.get("status"))
    row = db_app(web)
    t.ok(row and row["image"].startswith("cm-app-%s:1-" % web) and row["docker_id"], "the app's row names its image and container", row)
    info = docker_inspect(row["docker_id"]) if row else None
    hc = (info or {}).get("HostConfig") or {}
    t.ok(info and info["State"]["Running"], "its container runs", (info or {}).get("State"))
    t.ok("no-new-privileges" in (hc.get("SecurityOpt") or []) and hc.get("CapDrop") == ["ALL"] and hc.get("Memory"),
         "the container is confined like every container the service makes", hc.get("SecurityOpt"))
    binds = (hc.get("PortBindings") or {}).get("8080/tcp") or [{}]
    t.ok(binds[0].get("HostIp") == "127.0.0.1", "the app port is published on 127.0.0.1 only", binds)
    t.ok(row and row["container_ip"] and row["container_ip"] == ((info or {}).get("NetworkSettings") or {}).get("IPAddress")
         and row["container_port"] == 8080, "the row names the container's bridge address (the route's upstream)", row)
    b = wait_status(s, web, ("healthy",))
    t.eq(b.get("status"), "healthy", "the app becomes healthy")
    hcheck = b.get("health_check") or {}
    t.ok(hcheck.get("last_check") and hcheck.get("failures") == 0 and hcheck.get("last_error") is None,
         "GET /apps/{name} shows the last check and no failures", hcheck)
    r = A.get("/apps/%s/" % web)
    t.ok(r.status_code == 200 and r.text.strip() == "hello-v1", "GET /apps/{name}/ is proxied to the container",
         (r.status_code, body_text(r)))
    r = A.get("/apps/%s/ok/" % web)
    t.ok(r.status_code == 200 and r.text.strip() == "ok", "a sub-path is proxied with the prefix stripped",
         (r.status_code, body_text(r)))
    r = A.get("/apps/%s/run" % web)
    t.ok(r.status_code == 404 and "request_id" not in r.text, "GET /apps/{name}/run goes to the app (only POST is the API)",
         (r.status_code, body_text(r, 300)))
    r = api(base=APPS_URL, auth=False).get("/apps/%s/" % web)
    check_error(t, r, 401, code="AUTH_REQUIRED", name="GET /apps/{name}/ without credentials")
    # apps have an origin of their own: the API's listeners do not serve them
    r = s.get("/apps/%s/ok/" % web)
    check_error(t, r, 404, code="ROUTE_NOT_FOUND", name="GET /apps/{name}/ok/ on the API's listener")
    r = s.get("/apps/%s/" % web)
    t.ok(r.status_code == 200 and (jbody(r) or {}).get("name") == web and "hello" not in r.text,
         "GET /apps/{name}/ on the API's listener is the API's app resource, not the app", body_text(r, 300))
    r = A.get(APPS_HTTPS_URL + "/apps/%s/" % web, verify=False)
    t.ok(r.status_code == 200 and r.text.strip() == "hello-v1", "the app answers on the TLS apps listener too",
         (r.status_code, body_text(r, 300)))
    r = anon.post("/apps/%s/run" % web, json={"command": "id"})
    check_error(t, r, 401, name="POST /apps/{name}/run without credentials")
    r = anon.get("/apps")
    check_error(t, r, 401, name="GET /apps without credentials")
    r = A.get("/apps/no-such-app-%s/" % SUFFIX)
    check_error(t, r, 404, code="APP_NOT_FOUND", name="GET /apps/{unknown}/")
    r = A.get('/apps/Not%22An%22App/x')
    check_error(t, r, 404, name="GET /apps/{not an app name}/x (a JSON error, nothing echoed raw)")

    # -- GET /apps lists it
    r = s.get("/apps")
    lst = (jbody(r) or {}).get("apps") or []
    mine = [a for a in lst if a.get("name") == web]
    t.ok(r.status_code == 200 and mine and mine[0].get("url") == "/apps/%s/" % web and mine[0].get("status") == "healthy"
         and mine[0].get("image", "").startswith("cm-app-"), "GET /apps lists the app with its URL, status and image", mine)

    # -- run: with and without json, failing command, non-JSON stdout
    r = s.post("/apps/%s/run" % web, json={"command": "echo", "args": ["hello", "world"]})
    b = jbody(r) or {}
    t.ok(r.status_code == 200 and b.get("stdout") == "hello world\n" and b.get("exit_code") == 0 and b.get("stderr") == ""
         and "value" not in b, "run echo: stdout and exit code 0", b)
    r = s.post("/apps/%s/run" % web, json={"command": "echo", "args": ['{"a": [1, 2]}'], "json": True})
    b = jbody(r) or {}
    t.ok(r.status_code == 200 and b.get("value") == {"a": [1, 2]}, "run with json: value is the parsed stdout", b)
    r = s.post("/apps/%s/run" % web, json={"command": "sh", "args": ["-c", "echo oops >&2; exit 3"]})
    b = jbody(r) or {}
    t.ok(r.status_code == 200 and b.get("exit_code") == 3 and b.get("stderr") == "oops\n",
         "a failing command: 200 with its exit code and stderr", b)
    r = s.post("/apps/%s/run" % web, json={"command": "echo", "args": ["not json"], "json": True})
    check_error(t, r, 422, code="OUTPUT_NOT_JSON", name="run json:true with non-JSON stdout")
    r = s.post("/apps/%s/run" % web, json={"command": "echo", "args": ["$HOME;", "`id`"]})
    t.eq((jbody(r) or {}).get("stdout"), "$HOME; `id`\n", "args are an argv vector (no shell)")
    r = s.post("/apps/%s/run" % web, json={"args": ["x"]})
    check_error(t, r, 400, code="MISSING_FIELD", field="command", name="run without command")
    r = s.post("/apps/%s/run" % web, json={"command": "echo", "args": "x"})
    check_error(t, r, 400, field="args", name="run with args not an array")

    # -- a name clash
    r = create_multipart(s, {"name": web}, service_files("again"))
    check_error(t, r, 409, code="APP_EXISTS", field="name", name="POST /apps with an existing name")

    # -- a killed container is restarted
    row = db_app(web)
    old_id = row["docker_id"]
    docker_request("POST", "/containers/%s/kill" % old_id)

    def restarted():
        rw = db_app(web)
        return rw if rw and rw["restarts"] >= 1 and rw["status"] == "healthy" else None
    rw = wait_until(restarted, timeout=WAIT, interval=0.5)
    t.ok(rw, "a killed service container is restarted and healthy again", db_app(web))
    r = A.get("/apps/%s/" % web)
    t.ok(r.status_code == 200 and r.text.strip() == "hello-v1", "the route answers again after the restart",
         (r.status_code, body_text(r)))

    # -- PUT rebuild while a client polls the route: no failed request
    stop = threading.Event()
    seen = {"ok": 0, "bad": [], "texts": set()}

    def poll():
        ps = api(base=APPS_URL)
        while not stop.is_set():
            try:
                pr = ps.get("/apps/%s/" % web, timeout=30)
                if pr.status_code == 200:
                    seen["ok"] += 1
                    seen["texts"].add(pr.text.strip())
                else:
                    seen["bad"].append((pr.status_code, body_text(pr, 200)))
            except Exception as e:  # noqa: BLE001
                seen["bad"].append(repr(e))
            time.sleep(0.02)
    th = threading.Thread(target=poll)
    th.start()
    try:
        time.sleep(1)
        r = s.put("/apps/" + web, files={"source": ("src.zip", mkzip(service_files("hello-v2")), "application/zip")},
                  timeout=600)
        b = jbody(r) or {}
        t.status(r, 200, "PUT /apps/{name} with a new source")
        t.ok(b.get("generation") == 2 and b.get("status") == "healthy", "the new generation is healthy when PUT answers", b)
        time.sleep(2)
    finally:
        stop.set()
        th.join()
    t.ok(not seen["bad"] and seen["ok"] > 10, "no failed request while the app was rebuilt and swapped",
         {"ok": seen["ok"], "bad": seen["bad"][:5]})
    t.ok({"hello-v1", "hello-v2"} <= seen["texts"], "the poller saw the old then the new version", seen["texts"])
    r = A.get("/apps/%s/" % web)
    t.eq(r.text.strip(), "hello-v2", "the route serves the new container")
    t.ok(docker_inspect(old_id) is None, "the old container is removed after the swap")
    conts = app_containers(web)
    t.ok(len(conts) == 1 and conts[0]["Id"] == db_app(web)["docker_id"], "only the new container is left",
         [c["Names"] for c in conts])
    imgs = [tag for im in app_images(web) for tag in (im.get("RepoTags") or [])]
    t.ok(len(imgs) == 1 and ":2-" in imgs[0], "the old image is removed", imgs)

    # -- the unhealthy app (created above) ended unhealthy with the last error; route stays 503
    b = wait_status(s, sick, ("unhealthy",))
    hcheck = b.get("health_check") or {}
    t.eq(b.get("status"), "unhealthy", "a health path that never answers ends unhealthy")
    t.ok("404" in (hcheck.get("last_error") or "") and hcheck.get("failures", 0) >= 3,
         "the last error and the failure count are recorded", hcheck)
    r = A.get("/apps/%s/" % sick)
    b = check_error(t, r, 503, code="APP_NOT_READY", name="GET /apps/{unhealthy}/")
    t.eq(((b or {}).get("details") or {}).get("state"), "unhealthy", "the 503 says unhealthy")

    b = wait_status(s, tls, ("unhealthy",))
    err_text = ((b.get("health_check") or {}).get("last_error") or "")
    t.ok(b.get("status") == "unhealthy" and ("SSL" in err_text or "TLS" in err_text),
         "scheme https: the checks use TLS (a plain-HTTP server stays unhealthy)", b.get("health_check"))

    # -- DELETE of an image:REF app keeps the image (it is not the app's)
    r = s.delete("/apps/" + cmd)
    t.status(r, 204, "DELETE /apps/{command app}")
    t.ok(image_exists(IMAGE), "the image:REF image is kept")
    r = s.delete("/apps/" + cmd)
    check_error(t, r, 404, code="APP_NOT_FOUND", name="DELETE /apps/{deleted}")

    # -- a rebuild whose new container never becomes healthy: 422, the old one serves on
    before = db_app(web)
    files = service_files("never")
    files["Dockerfile"] = files["Dockerfile"].replace('CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]',
                                                      'CMD ["sh", "-c", "sleep 2; exit 1"]')
    r = s.put("/apps/" + web, files={"source": ("src.zip", mkzip(files), "application/zip")}, timeout=600)
    check_error(t, r, 422, code="APP_UNHEALTHY", name="PUT with a new version that dies before it is healthy")
    after = db_app(web)
    t.ok(after["docker_id"] == before["docker_id"] and after["generation"] == before["generation"],
         "the app still names the old container", after)
    t.eq(A.get("/apps/%s/" % web).text.strip(), "hello-v2", "the old container still serves the route")
    t.ok(len(app_containers(web)) == 1 and len(app_images(web)) == 1, "the failed generation's container and image are removed",
         ([c["Names"] for c in app_containers(web)], [i.get("RepoTags") for i in app_images(web)]))

    # -- the runner is killed: it comes back and goes on checking; the app keeps serving
    rp = [p for p in find_procs("cm-runner")]
    if rp:
        last = db_app(web)["last_check"]
        # what a crash mid-delete would leave: a container of this stack's app with no row
        orphan = name("orphan")
        made.append(orphan)
        labels = (docker_inspect(db_app(web)["docker_id"])["Config"]["Labels"])
        st, ob = docker_request("POST", "/containers/create", {
            "Image": IMAGE, "Cmd": ["sleep", "600"], "Labels": {
                "io.container-manager.instance": labels["io.container-manager.instance"],
                "io.container-manager.app": orphan}})
        os.kill(rp[0][0], signal.SIGKILL)
        t.ok(wait_until(lambda: (db_app(web) or {}).get("last_check", 0) > last + 2000, timeout=WAIT, interval=0.5),
             "after a kill -9 of the runner the health checks go on (state is in SQLite)")
        r = A.get("/apps/%s/" % web)
        t.ok(r.status_code == 200 and r.text.strip() == "hello-v2", "the app served throughout", (r.status_code, body_text(r)))
        t.ok(st == 201 and wait_until(lambda: not app_containers(orphan), timeout=60, interval=0.5),
             "the restarted runner removes a container of an app that has no row", (st, ob))
    else:
        t.skip("runner kill", "the stack's runner was not found")

    # -- DELETE removes route, container and image
    r = s.delete("/apps/" + web)
    t.status(r, 204, "DELETE /apps/{name}")
    t.ok(db_app(web) is None, "the row is gone")
    t.ok(not app_containers(web), "the container is gone", app_containers(web))
    t.ok(not app_images(web), "the image is gone", app_images(web))
    r = A.get("/apps/%s/" % web)
    check_error(t, r, 404, code="APP_NOT_FOUND", name="the route of a deleted app")
    r = s.get("/apps/" + web)
    check_error(t, r, 404, code="APP_NOT_FOUND", name="GET /apps/{deleted}")


if __name__ == "__main__":
    run(main)

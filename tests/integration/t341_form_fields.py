#!/usr/bin/python3
"""t341 form fields: POST /apps and POST /images/build take their parameters as plain
multipart form fields (curl -F name=web -F source=@src.zip), typed like the JSON spec / the
query: a real app built and healthy from plain fields, an image built from plain fields; a
field given twice (two parts, a part and the spec, a part and the query) is 400
DUPLICATE_FIELD naming it, an unknown part 400 UNKNOWN_FIELD naming it, each with no job, row,
container, image or staged upload left behind."""
import io
import os
import sys
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

SUFFIX = rand_suffix(6).lower()
APPS_URL = os.environ.get("CM_APPS_URL", "http://127.0.0.1:18081").rstrip("/")
WAIT = 180


def mkzip(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for fname, data in files.items():
            z.writestr(fname, data)
    return b.getvalue()


def service_zip(text, port=8080):
    return mkzip({"Dockerfile": "FROM %s\nRUN mkdir -p /www/ok && echo %s > /www/index.html && echo ok > /www/ok/index.html\n"
                                "CMD [\"httpd\", \"-f\", \"-p\", \"%d\", \"-h\", \"/www\"]\n" % (IMAGE, text, port)})


def counts(app=None, tag=None):
    """What a refused request must not have changed (Docker: only what this test could make)."""
    builds = os.path.join(DATA_DIR, "builds")
    return {
        "jobs": db_query("SELECT COUNT(*) AS n FROM jobs")[0]["n"],
        "apps": db_query("SELECT COUNT(*) AS n FROM apps")[0]["n"],
        "staged": sorted(os.listdir(builds)) if os.path.isdir(builds) else [],
        "containers": len(docker_request("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(
            json.dumps({"label": ["io.container-manager.app=%s" % app]})))[1] or []) if app else 0,
        "image": tag and docker_request("GET", "/images/%s/json" % urllib.parse.quote(tag, safe=""))[0] == 200,
    }


def cleanup_app(s, app):
    s.delete("/apps/" + app, timeout=120)
    st, body = docker_request("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(
        json.dumps({"label": ["io.container-manager.app=%s" % app]})))
    for c in (body if st == 200 and isinstance(body, list) else []):
        docker_request("DELETE", "/containers/%s?force=1&v=1" % c["Id"])


def main(t):
    s = api()
    app = "t341-web-%s" % SUFFIX
    bad = "t341-bad-%s" % SUFFIX
    tag = "cm-it-t341-%s:1" % SUFFIX
    t.add_cleanup(lambda: cleanup_app(s, app))
    t.add_cleanup(lambda: docker_request("DELETE", "/images/%s?force=1" % urllib.parse.quote(tag, safe="")))
    src = ("src.zip", service_zip("from-plain-fields"), "application/zip")

    # -- refused: duplicates and unknown fields, nothing created
    before = counts(bad, tag)
    cases = [
        ("a plain field and the same field in the spec part",
         [("name", bad), ("spec", json.dumps({"name": bad}))], {}, "DUPLICATE_FIELD", "name"),
        ("the same plain field twice", [("port", "8080"), ("port", "8081"), ("name", bad)], {}, "DUPLICATE_FIELD", "port"),
        ("a plain field and the same query parameter", [("health", "/ok/"), ("name", bad)], {"health": "/"},
         "DUPLICATE_FIELD", "health"),
        ("an unknown plain field", [("name", bad), ("colour", "blue")], {}, "UNKNOWN_FIELD", "colour"),
        ("port that is not a number", [("name", bad), ("port", "eighty")], {}, "INVALID_VALUE", "port"),
    ]
    for label, data, params, code, field in cases:
        r = s.post("/apps", params=params, data=data, files={"source": src}, timeout=120)
        check_error(t, r, 400, code=code, field=field, name="POST /apps: " + label)
    # a spec sent as a file part (curl -F spec=@spec.json -F source=@src.zip) is still the spec,
    # not a second source: its bad port is what gets refused
    r = s.post("/apps", files={"spec": ("spec.json", json.dumps({"name": bad, "port": "eighty"}), "application/json"),
                               "source": src}, timeout=120)
    check_error(t, r, 400, code="INVALID_TYPE", field="port", name="POST /apps: a spec part with a filename is read as the spec")
    t.eq(counts(bad, tag), before, "POST /apps refusals: no job, app row, container or staged upload left")
    check_error(t, s.get("/apps/" + bad), 404, name="the refused app does not exist")

    # -- an app from plain form fields, built and healthy through nginx
    r = s.post("/apps", data={"name": app, "port": "8080", "health": "/ok/", "lifetime": "service"},
               files={"source": src}, timeout=600)
    b = jbody(r) or {}
    t.status(r, 201, "POST /apps with plain form fields name, port, health, lifetime and a source file")
    t.ok(b.get("name") == app and b.get("port") == 8080 and b.get("health") == "/ok/", "the fields took effect, port typed", b)
    row = (db_query("SELECT name, port, health FROM apps WHERE name = ?", (app,)) or [None])[0]
    t.ok(row and row["port"] == 8080 and row["health"] == "/ok/", "the row holds the fields", row and dict(row))

    def healthy():
        return (jbody(s.get("/apps/" + app)) or {}).get("status") == "healthy"
    t.ok(wait_until(healthy, timeout=WAIT, interval=0.5), "the app becomes healthy", jbody(s.get("/apps/" + app)))
    r = api(base=APPS_URL).get("/apps/%s/" % app)  # apps are served on their own listener (APPS_LISTEN)
    t.eq((r.status_code, r.text.strip()), (200, "from-plain-fields"), "its route answers through nginx")

    # -- PUT /apps/{name} takes plain fields as well
    r = s.put("/apps/" + app, data={"health": "/"}, files={"source": ("src.zip", service_zip("v2"), "application/zip")},
              timeout=600)
    t.status(r, 200, "PUT /apps/{name} with a plain field")
    t.eq((jbody(r) or {}).get("health"), "/", "the plain field took effect on update")

    # -- /images/build: tag, dockerfile, build_dir as plain fields
    ctx = ("ctx.zip", mkzip({"img/Build.df": "FROM %s\nRUN echo built > /built\n" % IMAGE}), "application/zip")
    before = counts(tag=tag)
    bcases = [
        ("tag as a query parameter and a field", {"tag": tag}, [("tag", tag), ("dockerfile", "Build.df"), ("build_dir", "img")],
         "DUPLICATE_FIELD", "tag"),
        ("tag twice", {}, [("tag", tag), ("tag", tag)], "DUPLICATE_FIELD", "tag"),
        ("an unknown field", {}, [("tag", tag), ("platform", "arm")], "UNKNOWN_FIELD", "platform"),
        ("no tag at all", {}, [("dockerfile", "Build.df"), ("build_dir", "img")], "MISSING_FIELD", "tag"),
        ("a tag that is not an image name", {}, [("tag", "Not An Image")], "INVALID_IMAGE_REF", "tag"),
    ]
    for label, params, data, code, field in bcases:
        r = s.post("/images/build", params=params, data=data, files={"context": ctx}, timeout=120)
        check_error(t, r, 400, code=code, field=field, name="POST /images/build: " + label)
    t.eq(counts(tag=tag), before, "POST /images/build refusals: no job, image or staged context left")
    r = s.post("/images/build", data={"tag": tag, "dockerfile": "Build.df", "build_dir": "img"}, files={"context": ctx},
               timeout=600)
    t.status(r, 201, "POST /images/build with tag, dockerfile and build_dir as plain fields")
    t.ok(counts(tag=tag)["image"], "the image exists in Docker")
    # the query form keeps working
    r = s.post("/images/build", params={"tag": tag, "dockerfile": "Build.df", "build_dir": "img"}, files={"context": ctx},
               timeout=600)
    t.status(r, 201, "POST /images/build with the parameters in the query (unchanged)")


if __name__ == "__main__":
    run(main)

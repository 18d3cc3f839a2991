#!/usr/bin/python3
"""t240 volumes: POST/GET/DELETE /volumes against Docker's own state; containers mounting named
volumes and host directories under ALLOWED_BIND_ROOTS (read-only honoured, data surviving a
recreate), binds outside the roots or through symbolic links out of them refused with Docker
unchanged, a missing volume refused without leaving a row, and 409 for a volume in use."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ROOT = os.environ.get("CM_BIND_ROOT", "")
PREFIX = "cm-it-vol-" + rand_suffix(6).lower()


def docker_volume(name):
    st, body = docker_request("GET", "/volumes/%s" % name)
    return body if st == 200 else None


def sh(c, script, user="0"):
    p = subprocess.run(["docker", "exec", "-u", user, c, "sh", "-c", script], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    return p.returncode, p.stdout.decode().strip()


def main(t):
    s = api()
    v1, v2 = PREFIX + "-a", PREFIX + "-b"
    t.add_cleanup(lambda: [docker_request("DELETE", "/volumes/%s?force=1" % v) for v in (v1, v2)])

    # -- create, read, list
    r = s.post("/volumes", json={"name": v1, "labels": {"team": "blue"}})
    b = jbody(r) or {}
    t.status(r, 201, "POST /volumes")
    t.ok(b.get("name") == v1 and b.get("labels") == {"team": "blue"} and b.get("managed") is True
         and r.headers.get("Location") == "/volumes/" + v1, "the answer describes it", b)
    dv = docker_volume(v1)
    t.ok(dv and (dv.get("Labels") or {}).get("team") == "blue" and (dv.get("Labels") or {}).get("io.container-manager.instance"),
         "Docker has it, with its labels and this instance's", dv)
    check_error(t, s.post("/volumes", json={"name": v1}), 409, "conflict", "VOLUME_EXISTS", name="create it again")
    r = s.get("/volumes/" + v1)
    t.ok(r.status_code == 200 and r.json().get("mountpoint") == dv.get("Mountpoint"), "GET /volumes/{name}", body_text(r))
    r = s.get("/volumes")
    t.ok(r.status_code == 200 and any(x.get("name") == v1 for x in r.json().get("volumes", [])), "GET /volumes lists it")
    t.status(s.post("/volumes?async=true", json={"name": v2}), 202, "POST /volumes?async=true")
    t.ok(wait_until(lambda: docker_volume(v2) is not None, timeout=10), "the async create made it")

    # -- bad volume requests: nothing made
    before = {v["Name"] for v in (docker_request("GET", "/volumes")[1].get("Volumes") or [])}
    for body, status, code, field, name in [
        ({}, 400, "MISSING_FIELD", "name", "no name"),
        ({"name": "x"}, 400, "INVALID_VOLUME_NAME", "name", "a one-letter name"),
        ({"name": "../etc"}, 400, "INVALID_VOLUME_NAME", "name", "a path as the name"),
        ({"name": 5}, 400, "INVALID_TYPE", "name", "a number"),
        ({"name": PREFIX + "-c", "driver": "nfs"}, 400, "FORBIDDEN_OPTION", "driver", "a driver"),
        ({"name": PREFIX + "-c", "driver_opts": {"device": "/"}}, 400, "FORBIDDEN_OPTION", "driver_opts", "driver options"),
        ({"name": PREFIX + "-c", "labels": {"io.container-manager.instance": "x"}}, 400, "INVALID_VALUE",
         "labels.io.container-manager.instance", "a reserved label"),
        ({"name": PREFIX + "-c", "labels": {"k": 1}}, 400, "INVALID_VALUE", "labels.k", "a label that is not a string"),
        ({"name": PREFIX + "-c", "size": 5}, 400, "UNKNOWN_FIELD", "size", "an unknown field"),
    ]:
        check_error(t, s.post("/volumes", json=body), status, code=code, field=field, name="POST /volumes with %s" % name)
    after = {v["Name"] for v in (docker_request("GET", "/volumes")[1].get("Volumes") or [])}
    t.eq(sorted(after - before), [], "none of them made a volume")
    check_error(t, s.get("/volumes/" + PREFIX + "-none"), 404, code="VOLUME_NOT_FOUND", name="GET an unknown volume")
    check_error(t, s.get("/volumes/bad%20name"), 400, code="INVALID_VOLUME_NAME", name="GET /volumes/<bad name>")

    # -- a container with a named volume and a read-only bind from an allowed root
    if not t.ok(ROOT and os.path.isdir(ROOT), "the stack has an ALLOWED_BIND_ROOTS directory", ROOT):
        return
    shared = os.path.join(ROOT, "shared")
    os.makedirs(shared, exist_ok=True)
    with open(os.path.join(shared, "from-host.txt"), "w") as f:
        f.write("host data\n")
    c = must_create(s, t, command=SLEEP_CMD, volumes=[{"name": v1, "target": "/data"},
                                                      {"source": shared, "target": "/shared", "read_only": True}])
    cuid = c.get("cuid")
    t.eq(c.get("volumes"), [{"type": "volume", "source": v1, "target": "/data", "read_only": False},
                            {"type": "bind", "source": os.path.realpath(shared), "target": "/shared", "read_only": True}],
         "the container object lists its volumes")
    t.status(action(s, cuid, "start"), 200, "start it")
    mounts = {m.get("Destination"): m for m in (docker_inspect(cuid) or {}).get("Mounts", [])}
    t.ok(mounts.get("/data", {}).get("Name") == v1 and mounts["/data"].get("RW") is True, "Docker mounts the volume at /data",
         mounts)
    t.ok(mounts.get("/shared", {}).get("Source") == os.path.realpath(shared) and mounts["/shared"].get("RW") is False,
         "and the host directory read-only at /shared", mounts)
    t.eq(sh(cuid, "cat /shared/from-host.txt"), (0, "host data"), "the container reads the host file")
    rc, out = sh(cuid, "echo x > /shared/new.txt")
    t.ok(rc != 0 and not os.path.exists(os.path.join(shared, "new.txt")), "and cannot write there", out)
    t.eq(sh(cuid, "echo kept > /data/v.txt && cat /data/v.txt"), (0, "kept"), "the volume is writable")

    # -- the volume's data survives a recreate (PATCH image), and PATCH can change volumes
    r = s.patch("/containers/%s" % cuid, json={"image": IMAGE_ALT})
    t.status(r, 200, "PATCH image (recreates the container)")
    t.eq(sh(cuid, "cat /data/v.txt"), (0, "kept"), "the volume's file is still there after the recreate")
    r = s.patch("/containers/%s" % cuid, json={"volumes": [{"name": v2, "target": "/other"}]})
    t.ok(r.status_code == 200 and [v["target"] for v in r.json().get("volumes", [])] == ["/other"], "PATCH volumes",
         body_text(r))
    mounts = {m.get("Destination"): m for m in (docker_inspect(cuid) or {}).get("Mounts", [])}
    t.ok(set(mounts) == {"/other", "/app"} and mounts["/other"].get("Name") == v2, "Docker mounts only the new volume",
         sorted(mounts))

    # -- delete: 409 while a managed container mounts it; 204 once it does not
    check_error(t, s.delete("/volumes/" + v2), 409, "conflict", "VOLUME_IN_USE", name="DELETE a mounted volume")
    t.ok(docker_volume(v2) is not None, "it is still there")
    t.status(s.delete("/volumes/" + v1), 204, "DELETE the volume no container mounts any more")
    t.ok(docker_volume(v1) is None, "Docker no longer has it")
    check_error(t, s.delete("/volumes/" + v1), 404, code="VOLUME_NOT_FOUND", name="DELETE it again")

    # -- refused mounts: Docker unchanged, no row
    outside = os.path.join(os.path.dirname(ROOT), "outside-" + rand_suffix())
    os.makedirs(outside)
    os.symlink(outside, os.path.join(ROOT, "link-out"))
    before = snapshot_rows()
    cases = [
        ([{"source": "/etc", "target": "/x"}], "FORBIDDEN_OPTION", "volumes[0].source", "a bind outside the roots"),
        ([{"source": os.path.join(ROOT, "link-out"), "target": "/x"}], "FORBIDDEN_OPTION", "volumes[0].source",
         "a link that leaves the root"),
        ([{"source": ROOT + "/../" + os.path.basename(outside), "target": "/x"}], "FORBIDDEN_OPTION", "volumes[0].source",
         "a .. that leaves the root"),
        ([{"source": "/var/run/docker.sock", "target": "/s"}], "FORBIDDEN_OPTION", "volumes[0].source", "the Docker socket"),
        ([{"source": os.path.join(ROOT, "missing"), "target": "/x"}], "INVALID_VALUE", "volumes[0].source", "a missing source"),
        ([{"name": v2, "target": "/app"}], "INVALID_VALUE", "volumes[0].target", "a target over /app"),
        ([{"name": v2, "target": "/etc"}], "FORBIDDEN_OPTION", "volumes[0].target", "a target over /etc"),
        ([{"name": v2, "target": "relative"}], "INVALID_VALUE", "volumes[0].target", "a relative target"),
        ([{"name": v2, "target": "/x"}, {"name": v2, "target": "/x/"}], "DUPLICATE_TARGET", "volumes[1].target",
         "the same target twice"),
        ([{"name": v2, "source": shared, "target": "/x"}], "INVALID_VALUE", "volumes[0]", "both name and source"),
        ([{"name": v2}], "MISSING_FIELD", "volumes[0].target", "no target"),
        ([{"name": v2, "target": "/x", "propagation": "shared"}], "UNKNOWN_FIELD", "volumes[0].propagation",
         "an unknown key"),
        ("/etc:/etc", "INVALID_TYPE", "volumes", "a string"),
        (["/etc:/etc"], "FORBIDDEN_OPTION", "volumes", "Docker's src:dst form"),
    ]
    for vols, code, field, name in cases:
        r = s.post("/containers", json={"image": IMAGE, "volumes": vols})
        check_error(t, r, 400, code=code, field=field, name="create with %s" % name)
    r = s.post("/containers", json={"image": IMAGE, "volumes": [{"name": PREFIX + "-missing", "target": "/x"}]})
    check_error(t, r, 404, "not_found", "VOLUME_NOT_FOUND", name="create with a volume that does not exist")
    t.eq(snapshot_rows(), before, "no row or Docker container was made by any of them")
    t.ok(docker_volume(PREFIX + "-missing") is None, "and no volume was made on the fly")
    destroy(s, cuid)
    t.status(s.delete("/volumes/" + v2), 204, "DELETE the other volume once its container is gone")


def snapshot_rows():
    return sorted(db_container_cuids() or []), sorted(ours_managed())


if __name__ == "__main__":
    run(main)

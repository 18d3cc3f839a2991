#!/usr/bin/python3
"""t320 foreign volumes: volumes this stack did not create (a plain one and a local-driver bind of
a host canary directory, both made straight through Docker's API, and one that carries another
stack's instance label) do not exist for the API: POST /containers and PATCH mounting them answer
404 VOLUME_NOT_FOUND with no row, no Docker container and the patched container unchanged;
GET /volumes does not list them, GET and DELETE /volumes/{name} answer 404 and Docker still has
them. The stack's own volumes keep working."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

PREFIX = "cm-it-fvol-" + rand_suffix(6).lower()
SECRET = "FOREIGN-CANARY-" + rand_suffix(10)


def docker_volume(name):
    st, body = docker_request("GET", "/volumes/%s" % name)
    return body if st == 200 else None


def snapshot():
    return sorted(db_container_cuids() or []), sorted(ours_managed())


def main(t):
    s = api()
    canary = os.path.join(os.path.dirname(os.path.realpath(DATA_DIR)), "fvol-canary-" + rand_suffix())
    os.makedirs(canary)
    with open(os.path.join(canary, "secret"), "w") as f:
        f.write(SECRET)
    t.add_cleanup(lambda: subprocess.call(["rm", "-rf", canary]))

    plain, bindv, other, mine = PREFIX + "-plain", PREFIX + "-bind", PREFIX + "-other", PREFIX + "-mine"
    t.add_cleanup(lambda: [docker_request("DELETE", "/volumes/%s?force=1" % v) for v in (plain, bindv, other, mine)])
    st, _ = docker_request("POST", "/volumes/create", {"Name": plain, "Labels": {"team": "someone-else"}})
    t.ok(st == 201, "a plain volume made with Docker's API", st)
    st, _ = docker_request("POST", "/volumes/create", {"Name": bindv, "Driver": "local",
                                                      "DriverOpts": {"type": "none", "o": "bind", "device": canary}})
    t.ok(st == 201, "a local-driver bind volume of a host canary directory made with Docker's API", st)
    st, _ = docker_request("POST", "/volumes/create", {"Name": other, "Labels": {"io.container-manager.instance": "0123456789abcdef"}})
    t.ok(st == 201, "a volume carrying another stack's instance label", st)
    t.status(s.post("/volumes", json={"name": mine}), 201, "POST /volumes makes one of our own")
    foreign = (plain, bindv, other)

    # -- mounting one at create: 404, nothing made
    before = snapshot()
    for v in foreign:
        for ro in (False, True):
            r = create_container(s, t, volumes=[{"name": v, "target": "/data", "read_only": ro}])
            check_error(t, r, 404, "not_found", "VOLUME_NOT_FOUND", "volumes",
                        name="POST /containers mounting %s%s" % (v, " read-only" if ro else ""))
        r = create_container(s, t, volumes=[{"name": mine, "target": "/ok"}, {"name": v, "target": "/data"}])
        check_error(t, r, 404, "not_found", "VOLUME_NOT_FOUND", "volumes", name="POST /containers with ours and %s" % v)
    t.eq(snapshot(), before, "no row and no Docker container was made")

    # -- PATCH a container of ours to mount one: 404, the container unchanged
    c = must_create(s, t, volumes=[{"name": mine, "target": "/mine"}])
    cuid = c["cuid"]
    t.status(action(s, cuid, "start"), 200, "start a container with our volume")
    info = docker_inspect(cuid) or {}
    did, mounts = info.get("Id"), sorted(m.get("Destination") for m in info.get("Mounts") or [])
    row = db_query("SELECT volumes, version FROM containers WHERE cuid = ?", (cuid,))
    for v in foreign:
        r = s.patch("/containers/%s" % cuid, json={"volumes": [{"name": v, "target": "/data"}]})
        check_error(t, r, 404, "not_found", "VOLUME_NOT_FOUND", "volumes", name="PATCH volumes to %s" % v)
        r = s.patch("/containers/%s" % cuid, json={"volumes": [{"name": mine, "target": "/mine"},
                                                               {"name": v, "target": "/data", "read_only": True}]})
        check_error(t, r, 404, "not_found", "VOLUME_NOT_FOUND", "volumes", name="PATCH adding %s" % v)
    info = docker_inspect(cuid) or {}
    t.ok(info.get("Id") == did and sorted(m.get("Destination") for m in info.get("Mounts") or []) == mounts
         and (info.get("State") or {}).get("Running") is True, "the Docker container is the same, running, same mounts",
         info.get("Mounts"))
    t.eq(db_query("SELECT volumes, version FROM containers WHERE cuid = ?", (cuid,)), row, "its row is unchanged")
    rc, out = docker_exec(cuid, ["sh", "-c", "cat /data/secret 2>&1; ls / "])
    t.ok(SECRET not in out, "the container cannot read the canary", out[:200])
    r = s.get("/containers/%s/archive" % cuid, params={"path": "/data/secret"})
    t.ok(r.status_code == 404 and SECRET.encode() not in r.content, "nor through the archive API", r.status_code)
    for v in foreign:
        t.ok(docker_volume(v) is not None, "Docker still has %s at the end" % v)

    # -- reads and deletes
    r = s.get("/volumes")
    names = {v.get("name") for v in (jbody(r) or {}).get("volumes", [])}
    t.ok(r.status_code == 200 and mine in names, "GET /volumes lists our volume", sorted(names)[:20])
    t.ok(not names & set(foreign), "and none of the foreign ones", sorted(names & set(foreign)))
    t.ok(all(v.get("managed") is True for v in (jbody(r) or {}).get("volumes", [])), "every listed volume is managed")
    for v in foreign:
        check_error(t, s.get("/volumes/" + v), 404, "not_found", "VOLUME_NOT_FOUND", "name", name="GET /volumes/%s" % v)
        check_error(t, s.delete("/volumes/" + v), 404, "not_found", "VOLUME_NOT_FOUND", "name", name="DELETE /volumes/%s" % v)
        t.ok(docker_volume(v) is not None, "Docker still has %s" % v)
    t.ok(os.path.exists(os.path.join(canary, "secret")), "the canary directory is untouched")

    # -- our own volume is as before
    destroy(s, cuid)
    t.status(s.delete("/volumes/" + mine), 204, "DELETE our own volume")
    t.ok(docker_volume(mine) is None, "Docker no longer has it")


if __name__ == "__main__":
    run(main)

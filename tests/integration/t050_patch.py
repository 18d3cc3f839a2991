#!/usr/bin/python3
"""t050 patch: env merge (null removes) recreates the Docker container but keeps /app files and
the running state; tags replace (TAGS env); resources merge (HostConfig updated); image replace;
ETag / If-Match."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403


def patch(s, cuid, body, etag=None):
    h = {"If-Match": etag} if etag else {}
    return s.patch("/containers/" + cuid, json=body, headers=h)


def main(t):
    s = api()
    c = must_create(s, t, "create container to patch",
                    env={"KEEP": "1", "OLD_VAR": "x", "CHANGE": "a"}, tags=["a", "b"],
                    resources={"memory": "128m", "pids": 100, "cpus": 0.5})
    cuid = c["cuid"]
    t.status(action(s, cuid, "start"), 200, "start it")
    with open(os.path.join(app_dir(cuid), "survive.txt"), "w") as f:
        f.write("still here\n")
    old_id = docker_inspect(cuid)["Id"]

    g = s.get("/containers/" + cuid)
    e1 = g.headers.get("ETag")
    t.ok(bool(e1), "GET gives an ETag", dict(g.headers))

    # stale If-Match -> 412, nothing changes
    r = patch(s, cuid, {"env": {"NEW_VAR": "v"}}, etag='"definitely-stale"')
    check_error(t, r, 412, "precondition_failed", name="PATCH with a stale If-Match")
    info = docker_inspect(cuid)
    t.ok(info["Id"] == old_id and "NEW_VAR" not in docker_env(info)[0], "412: Docker container untouched")

    # env merge with null removal, with the current ETag
    r = patch(s, cuid, {"env": {"NEW_VAR": "v", "OLD_VAR": None, "CHANGE": "b"}}, etag=e1)
    t.status(r, 200, "PATCH env with the current If-Match")
    b = jbody(r) or {}
    t.eq(b.get("env"), {"KEEP": "1", "NEW_VAR": "v", "CHANGE": "b"}, "env merged, null removed (answer)")
    new_id = b.get("docker_id")
    t.ok(new_id and not old_id.startswith(new_id), "env change: new docker_id", {"old": old_id, "new": new_id})
    info = docker_inspect(cuid)
    t.ok(info is not None and info["Id"].startswith(new_id or "-"), "Docker: container named cuid has the new id",
         {"Id": (info or {}).get("Id"), "docker_id": new_id})
    t.ok(docker_inspect(old_id) is None, "Docker: the old container is gone")
    env, raw = docker_env(info)
    t.ok(env.get("KEEP") == "1" and env.get("NEW_VAR") == "v" and env.get("CHANGE") == "b" and "OLD_VAR" not in env,
         "Docker Config.Env merged: KEEP, NEW_VAR, CHANGE=b, no OLD_VAR", {"Env": raw})
    t.ok(env.get("CONTAINER_UID") == cuid and env.get("TAGS") == "a,b", "Docker env keeps CONTAINER_UID and TAGS",
         {"Env": raw})
    t.ok(info["State"]["Running"] is True, "Docker: still running after recreate", info["State"])
    t.eq(b.get("status"), "running", "answer status running")
    p = os.path.join(app_dir(cuid), "survive.txt")
    t.ok(os.path.exists(p) and open(p).read() == "still here\n", "host app dir file survived the recreate")
    rc, out = docker_exec(cuid, ["cat", "/app/survive.txt"])
    t.ok(rc == 0 and out == "still here\n", "the new container sees /app/survive.txt", {"rc": rc, "out": out})
    hc = info["HostConfig"]
    t.ok(hc.get("Memory") == 128 * 1024 * 1024 and hc.get("PidsLimit") == 100 and hc.get("NanoCpus") == 500000000,
         "recreate kept the resources", {"Memory": hc.get("Memory"), "PidsLimit": hc.get("PidsLimit"),
                                          "NanoCpus": hc.get("NanoCpus")})
    t.ok(hc.get("Init") is True and hc.get("CapDrop") in (["ALL"], ["CAP_ALL"]) and hc.get("Binds"),
         "recreate kept the hardening and the bind", {"Init": hc.get("Init"), "CapDrop": hc.get("CapDrop"),
                                                    "Binds": hc.get("Binds")})
    g = s.get("/containers/" + cuid)
    e2 = g.headers.get("ETag")
    t.ok(e2 and e2 != e1, "ETag changed after PATCH", {"e1": e1, "e2": e2})
    t.eq((jbody(g) or {}).get("env"), {"KEEP": "1", "NEW_VAR": "v", "CHANGE": "b"}, "GET shows the merged env")
    r = patch(s, cuid, {"env": {"X": "1"}}, etag=e1)
    check_error(t, r, 412, "precondition_failed", name="PATCH with the pre-change ETag")

    # tags replace -> TAGS env
    id_before = docker_inspect(cuid)["Id"]
    r = patch(s, cuid, {"tags": ["x", "y"]}, etag=e2)
    t.status(r, 200, "PATCH tags")
    b = jbody(r) or {}
    t.eq(b.get("tags"), ["x", "y"], "tags replaced (answer)")
    info = docker_inspect(cuid)
    t.eq(docker_env(info)[0].get("TAGS"), "x,y", "Docker env TAGS=x,y")
    t.eq(docker_env(info)[0].get("NEW_VAR"), "v", "tags change kept env")
    t.ok(info["State"]["Running"] is True, "Docker: still running after tags change")
    r = s.get("/containers", params={"tag": "x"})
    t.ok(cuid in [x["cuid"] for x in (jbody(r) or {}).get("containers", [])], "list ?tag=x finds it")
    r = s.get("/containers", params={"tag": "a"})
    t.ok(cuid not in [x["cuid"] for x in (jbody(r) or {}).get("containers", [])], "list ?tag=a no longer finds it")
    if info["Id"] == id_before:
        t.diag("tags change did not recreate the container (TAGS env updated in place?)")

    # resources merge
    r = patch(s, cuid, {"resources": {"memory": "256m"}})
    t.status(r, 200, "PATCH resources.memory (no If-Match: allowed)")
    b = jbody(r) or {}
    t.eq(b.get("resources"), {"cpus": 0.5, "memory": 256 * 1024 * 1024, "pids": 100}, "resources merged (answer)")
    info = docker_inspect(cuid)
    hc = info["HostConfig"]
    t.eq(hc.get("Memory"), 256 * 1024 * 1024, "Docker HostConfig.Memory updated")
    t.eq(hc.get("PidsLimit"), 100, "Docker PidsLimit kept")
    t.eq(hc.get("NanoCpus"), 500000000, "Docker NanoCpus kept")
    t.ok(info["State"]["Running"] is True, "Docker: still running after resources change")
    r = patch(s, cuid, {"resources": {"pids": 200, "cpus": 1}})
    t.status(r, 200, "PATCH resources.pids + cpus")
    hc = docker_inspect(cuid)["HostConfig"]
    t.ok(hc.get("PidsLimit") == 200 and hc.get("NanoCpus") == 1000000000 and hc.get("Memory") == 256 * 1024 * 1024,
         "Docker PidsLimit 200, NanoCpus 1e9, Memory kept",
         {"PidsLimit": hc.get("PidsLimit"), "NanoCpus": hc.get("NanoCpus"), "Memory": hc.get("Memory")})

    # bad patches change nothing
    id_before = docker_inspect(cuid)["Id"]
    for name, body, code, field in [
        ("unknown field", {"colour": "red"}, "UNKNOWN_FIELD", "colour"),
        ("privileged", {"privileged": True}, "FORBIDDEN_OPTION", "privileged"),
        ("env key 1BAD", {"env": {"1BAD": "x"}}, "INVALID_ENV_NAME", "env.1BAD"),
        ("memory 12xb", {"resources": {"memory": "12xb"}}, "INVALID_SIZE", "resources.memory"),
        ("unknown nested", {"resources": {"gpus": 1}}, "UNKNOWN_FIELD", "resources.gpus"),
        ("tags not a list", {"tags": "x"}, "INVALID_TYPE", "tags"),
    ]:
        check_error(t, patch(s, cuid, body), 400, "validation_error", code, field, name="PATCH bad: " + name)
    r = s.patch("/containers/" + cuid, data=b'{"env": ', headers={"Content-Type": "application/json"})
    check_error(t, r, 400, "validation_error", "INVALID_JSON", name="PATCH malformed JSON")
    info = docker_inspect(cuid)
    t.ok(info["Id"] == id_before and info["State"]["Running"], "bad PATCHes left the Docker container alone")

    # image replace; image that does not exist
    r = patch(s, cuid, {"image": "cm-test-does-not-exist:latest"})
    check_error(t, r, 404, "not_found", "IMAGE_NOT_FOUND", name="PATCH image that does not exist")
    info = docker_inspect(cuid)
    t.ok(info["Id"] == id_before and info["State"]["Running"], "missing image: container unchanged and running")
    r = patch(s, cuid, {"image": IMAGE_ALT})
    t.status(r, 200, "PATCH image")
    b = jbody(r) or {}
    info = docker_inspect(cuid)
    t.ok(b.get("image") == IMAGE_ALT and info["Config"]["Image"] == IMAGE_ALT and info["Id"] != id_before,
         "image replaced: new container from the new image", {"answer": b.get("image"), "Config.Image": info["Config"]["Image"]})
    t.ok(info["State"]["Running"] is True, "image replaced: still running")
    t.eq(docker_env(info)[0].get("NEW_VAR"), "v", "image replaced: env kept")

    # a stopped container stays stopped through a recreate
    t.status(action(s, cuid, "stop", json={"timeout": 1}), 200, "stop it")
    r = patch(s, cuid, {"env": {"AFTER_STOP": "1"}})
    t.status(r, 200, "PATCH env on a stopped container")
    info = docker_inspect(cuid)
    t.ok(info and info["State"]["Running"] is False and docker_env(info)[0].get("AFTER_STOP") == "1",
         "stopped container: recreated with the env and still not running", (info or {}).get("State"))
    t.ok((jbody(r) or {}).get("status") in ("exited", "stopped", "created"), "answer status is not running",
         {"status": (jbody(r) or {}).get("status")})

    # a cuid of the right shape that does not exist
    check_error(t, patch(s, sibling_cuid(cuid), {"tags": []}), 404, "not_found", "CONTAINER_NOT_FOUND",
                name="PATCH a cuid that does not exist")


if __name__ == "__main__":
    run(main)

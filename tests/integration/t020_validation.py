#!/usr/bin/python3
"""t020 validation: every bad POST /containers input gets the right status and error body,
and bad input changes nothing: no DB row, no Docker container, no app dir."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

V = "validation_error"


def good(**extra):
    d = {"image": IMAGE, "command": ["sleep", "3600"]}
    d.update(extra)
    return d


def field_starts(prefix):
    def f(got):
        return isinstance(got, str) and (got == prefix or got.startswith(prefix + ".") or got.startswith(prefix + "["))
    f.__name__ = "startswith %s" % prefix
    return f


# (name, body: dict (JSON-encoded) or bytes (sent raw), status, error, code(s), details.field or None)
CASES = [
    ("malformed JSON", b'{"image": }', 400, V, "INVALID_JSON", None),
    ("truncated JSON", ('{"image": "%s", "env": {"A": "b"' % IMAGE).encode(), 400, V, "INVALID_JSON", None),
    ("trailing garbage", ('{"image": "%s"} xyz' % IMAGE).encode(), 400, V, "INVALID_JSON", None),
    ("empty body", b"", 400, V, {"INVALID_JSON", "MISSING_IMAGE", "EMPTY_BODY"}, None),
    ("top level is an array", b'[{"image": "x"}]', 400, V, {"INVALID_JSON", "INVALID_TYPE"}, None),
    ("top level is a string", b'"hello"', 400, V, {"INVALID_JSON", "INVALID_TYPE"}, None),
    ("missing image", {"env": {"A": "b"}}, 400, V, "MISSING_IMAGE", "image"),
    ("empty object", {}, 400, V, "MISSING_IMAGE", "image"),
    ("image is a number", {"image": 123}, 400, V, "INVALID_TYPE", "image"),
    ("image is null", {"image": None}, 400, V, {"INVALID_TYPE", "MISSING_IMAGE"}, "image"),
    ("image is empty", {"image": ""}, 400, V, {"INVALID_VALUE", "MISSING_IMAGE"}, "image"),
    ("env is a string", good(env="A=b"), 400, V, "INVALID_TYPE", "env"),
    ("env is a list", good(env=["A=b"]), 400, V, "INVALID_TYPE", "env"),
    ("env value is a number", good(env={"A": 1}), 400, V, "INVALID_TYPE", field_starts("env")),
    ("env value is an object", good(env={"A": {"b": 1}}), 400, V, "INVALID_TYPE", field_starts("env")),
    ("env key 1BAD", good(env={"1BAD": "x"}), 400, V, "INVALID_ENV_NAME", field_starts("env")),
    ("env key A=B", good(env={"A=B": "x"}), 400, V, "INVALID_ENV_NAME", field_starts("env")),
    ("env key empty", good(env={"": "x"}), 400, V, "INVALID_ENV_NAME", field_starts("env")),
    ("env value with NUL", good(env={"A": "x\u0000y"}), 400, V, "INVALID_VALUE", None),
    ("tags is a string", good(tags="web"), 400, V, "INVALID_TYPE", "tags"),
    ("tags element is a number", good(tags=["web", 1]), 400, V, "INVALID_TYPE", field_starts("tags")),
    ("resources is a list", good(resources=[1]), 400, V, "INVALID_TYPE", "resources"),
    ("cpus is a string", good(resources={"cpus": "lots"}), 400, V, "INVALID_TYPE", "resources.cpus"),
    ("cpus negative", good(resources={"cpus": -1}), 400, V, "INVALID_VALUE", "resources.cpus"),
    ("memory 12xb", good(resources={"memory": "12xb"}), 400, V, "INVALID_SIZE", "resources.memory"),
    ("memory negative", good(resources={"memory": -5}), 400, V, "INVALID_VALUE", "resources.memory"),
    ("memory is a bool", good(resources={"memory": True}), 400, V, "INVALID_TYPE", "resources.memory"),
    ("pids is a string", good(resources={"pids": "many"}), 400, V, "INVALID_TYPE", "resources.pids"),
    ("pids zero", good(resources={"pids": 0}), 400, V, "INVALID_VALUE", "resources.pids"),
    ("pids fractional", good(resources={"pids": 1.5}), 400, V, {"INVALID_TYPE", "INVALID_VALUE"}, "resources.pids"),
    ("unknown top-level field", good(colour="blue"), 400, V, "UNKNOWN_FIELD", "colour"),
    ("unknown nested field resources.gpus", good(resources={"gpus": 1}), 400, V, "UNKNOWN_FIELD", "resources.gpus"),
    ("unknown field in a port", good(ports=[{"container": 80, "bind": "0.0.0.0"}]), 400, V, "UNKNOWN_FIELD",
     field_starts("ports")),
    ("ports is an object", good(ports={"80": 80}), 400, V, "INVALID_TYPE", "ports"),
    ("port entry is a number", good(ports=[80]), 400, V, "INVALID_TYPE", field_starts("ports")),
    ("port container missing", good(ports=[{"host": 8080}]), 400, V, {"INVALID_VALUE", "MISSING_FIELD", "INVALID_TYPE"},
     field_starts("ports")),
    ("port container 0", good(ports=[{"container": 0}]), 400, V, "INVALID_PORT", field_starts("ports")),
    ("port container 65536", good(ports=[{"container": 65536}]), 400, V, "INVALID_PORT", field_starts("ports")),
    ("port host 70000", good(ports=[{"host": 70000, "container": 80}]), 400, V, "INVALID_PORT", field_starts("ports")),
    ("port host negative", good(ports=[{"host": -1, "container": 80}]), 400, V, "INVALID_PORT", field_starts("ports")),
    ("port as a string", good(ports=[{"container": "80"}]), 400, V, "INVALID_TYPE", field_starts("ports")),
    ("protocol sctp", good(ports=[{"container": 80, "protocol": "sctp"}]), 400, V, "INVALID_VALUE",
     field_starts("ports")),
    ("duplicated container port", good(ports=[{"container": 80, "protocol": "tcp"}, {"container": 80, "protocol": "tcp"}]),
     400, V, "DUPLICATE_PORT", field_starts("ports")),
    ("duplicated host port", good(ports=[{"host": 40001, "container": 80}, {"host": 40001, "container": 81}]),
     400, V, "DUPLICATE_PORT", field_starts("ports")),
    ("command is a number", good(command=5), 400, V, "INVALID_TYPE", "command"),
    ("command list with a number", good(command=["sleep", 5]), 400, V, "INVALID_TYPE", field_starts("command")),
]

F = "FORBIDDEN_OPTION"
FORBIDDEN = [
    ("privileged", good(privileged=True), F, "privileged"),
    ("cap_add", good(cap_add=["SYS_ADMIN"]), F, "cap_add"),
    ("cap_add ALL", good(cap_add=["ALL"]), F, "cap_add"),
    ("network_mode host", good(network_mode="host"), F, "network_mode"),
    ("network_mode container:", good(network_mode="container:abc"), F, "network_mode"),
    ("pid_mode host", good(pid_mode="host"), F, "pid_mode"),
    ("ipc_mode host", good(ipc_mode="host"), F, "ipc_mode"),
    ("userns_mode host", good(userns_mode="host"), F, "userns_mode"),
    ("uts_mode host", good(uts_mode="host"), F, "uts_mode"),
    ("devices", good(devices=["/dev/sda:/dev/sda:rwm"]), F, "devices"),
    ("security_opt", good(security_opt=["seccomp=unconfined"]), F, "security_opt"),
    ("sysctls", good(sysctls={"net.ipv4.ip_forward": "1"}), F, "sysctls"),
    ("cgroup_parent", good(cgroup_parent="/"), F, "cgroup_parent"),
    ("runtime", good(runtime="runc"), F, "runtime"),
    ("binds host path", good(binds=["/:/host"]), F, "binds"),
    ("volumes host path", good(volumes=["/etc:/etc"]), F, "volumes"),
    ("volumes docker.sock", good(volumes=["/var/run/docker.sock:/var/run/docker.sock"]), F, "volumes"),
    ("volumes source /etc", good(volumes=[{"source": "/etc", "target": "/host-etc"}]), F, "volumes[0].source"),
    ("volumes source docker.sock", good(volumes=[{"source": "/var/run/docker.sock", "target": "/s"}]), F,
     "volumes[0].source"),
    ("volumes source /", good(volumes=[{"source": "/", "target": "/host"}]), F, "volumes[0].source"),
    ("volumes over /proc", good(volumes=[{"name": "vol1", "target": "/proc"}]), F, "volumes[0].target"),
    ("binds docker.sock", good(binds=["/var/run/docker.sock:/var/run/docker.sock"]), F, "binds"),
    # not in the contract's named list: must still be refused (FORBIDDEN_OPTION or UNKNOWN_FIELD)
    ("mounts", good(mounts=[{"type": "bind", "source": "/", "target": "/host"}]), {F, "UNKNOWN_FIELD"}, "mounts"),
    ("Privileged (Docker spelling)", good(Privileged=True), {F, "UNKNOWN_FIELD"}, "Privileged"),
    ("host_config", good(host_config={"Privileged": True}), {F, "UNKNOWN_FIELD"}, field_starts("host_config")),
    ("user root", good(user="0:0"), {F, "UNKNOWN_FIELD"}, "user"),
    ("device_requests", good(device_requests=[{"Count": -1}]), {F, "UNKNOWN_FIELD"}, "device_requests"),
    ("resources.privileged", good(resources={"privileged": True}), {F, "UNKNOWN_FIELD"}, "resources.privileged"),
]


def snapshot():
    ours = ours_managed()
    dirs = set(os.listdir(os.path.join(DATA_DIR, "containers"))) if os.path.isdir(
        os.path.join(DATA_DIR, "containers")) else set()
    return sorted(db_container_cuids() or []), sorted(ours), dirs


def main(t):
    s = api()
    # a real container so that "unchanged" is about a non-empty set
    base = must_create(s, t, "create one good container first")
    before = snapshot()

    def send(body):
        if isinstance(body, bytes):
            return s.post("/containers", data=body, headers={"Content-Type": "application/json"})
        return s.post("/containers", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    for name, body, status, err, code, field in CASES:
        r = send(body)
        if r.status_code == 201:  # clean up what should never have been created
            c = jbody(r) or {}
            if c.get("cuid"):
                t.add_cleanup(lambda x=c["cuid"]: destroy(s, x))
        check_error(t, r, status, err, code, field, name="bad input: " + name)

    n = 0
    for name, body, code, field in FORBIDDEN:
        r = send(body)
        if r.status_code == 201:
            c = jbody(r) or {}
            if c.get("cuid"):
                t.add_cleanup(lambda x=c["cuid"]: destroy(s, x))
        check_error(t, r, 400, V, code, field, name="forbidden option: " + name)
        n += 1
    t.ok(n >= 15, "at least 15 dangerous options tried (%d)" % n)

    # non-UTF-8 bytes, in a value and in a key
    raw = b'{"image":"' + IMAGE.encode() + b'","env":{"A":"\xff\xfe"}}'
    check_error(t, send(raw), 400, V, "INVALID_UTF8", name="non-UTF-8 bytes in a value")
    raw = b'{"image":"' + IMAGE.encode() + b'","env":{"\xc3\x28":"x"}}'
    check_error(t, send(raw), 400, V, "INVALID_UTF8", name="non-UTF-8 bytes in a key")
    raw = b'{"image":"' + IMAGE.encode() + b'\xed\xa0\x80"}'  # encoded UTF-16 surrogate
    check_error(t, send(raw), 400, V, "INVALID_UTF8", name="surrogate code point bytes")

    # over MAX_BODY_BYTES (1 MiB default)
    big = json.dumps(good(env={"BIG": "x" * (1024 * 1024 + 4096)})).encode()
    r = send(big)
    check_error(t, r, 413, "payload_too_large", name="body over MAX_BODY_BYTES")

    # wrong content type still parsed as JSON or refused, but never creates anything bad
    r = s.post("/containers", data=b"image=busybox", headers={"Content-Type": "application/x-www-form-urlencoded"})
    t.ok(r.status_code in (400, 415), "form-encoded body refused (400/415)", {"got": r.status_code, "body": body_text(r)})

    # image that is not present locally (nothing can be pulled here)
    r = s.post("/containers", json=good(image="cm-test-does-not-exist:latest"))
    if r.status_code == 201:
        c = jbody(r) or {}
        if c.get("cuid"):
            t.add_cleanup(lambda x=c["cuid"]: destroy(s, x))
    check_error(t, r, 404, "not_found", "IMAGE_NOT_FOUND", name="image missing locally")
    r = s.post("/containers", json=good(image="cm-test-does-not-exist@sha256:" + "0" * 64))
    t.ok(r.status_code in (400, 404), "unknown digest reference refused (400/404)", {"got": r.status_code})

    after = snapshot()
    t.eq(after[0], before[0], "containers table unchanged after all bad inputs")
    t.eq(after[1], before[1], "managed Docker containers (docker ps -a) unchanged after all bad inputs")
    t.eq(sorted(after[2]), sorted(before[2]), "no app dir left behind under CM_DATA_DIR/containers")
    t.ok(base["cuid"] in after[0] and base["cuid"] in after[1], "the good container is still there")
    # the good container was untouched
    g = s.get("/containers/" + base["cuid"])
    t.ok(g.status_code == 200 and (jbody(g) or {}).get("docker_id") == base.get("docker_id"),
         "the good container's object is unchanged", {"status": g.status_code})


if __name__ == "__main__":
    run(main)

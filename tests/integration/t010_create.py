#!/usr/bin/python3
"""t010 create: POST /containers answers 201 + Location + the container object, and the REAL
Docker container carries everything the contract promises for a managed container."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

ALLOWED_CAPS = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL", "NET_BIND_SERVICE"}
OBJ_KEYS = {"cuid", "image", "command", "env", "tags", "resources", "ports", "status", "docker_id",
            "exit_code", "started_at", "finished_at", "restart_count", "created_at", "updated_at"}


def norm_cap(c):
    c = c.upper()
    return c[4:] if c.startswith("CAP_") else c


def check_managed(t, info, cuid, what, uid=DEFAULT_UID):
    """Every item of the contract's 'Every managed Docker container' paragraph."""
    hc = info.get("HostConfig") or {}
    cfg = info.get("Config") or {}
    t.eq(info.get("Name"), "/" + cuid, "%s: Docker name is the cuid" % what)
    labels = cfg.get("Labels") or {}
    t.eq({k: labels.get(k) for k in (LABEL, "com.docker.compose.project", "com.docker.compose.service")},
         {LABEL: cuid, "com.docker.compose.project": cuid, "com.docker.compose.service": "app"},
         "%s: labels cuid / compose project / compose service" % what)
    t.eq(hc.get("Init"), True, "%s: HostConfig.Init is true" % what)
    secopt = hc.get("SecurityOpt") or []
    t.ok(any(s in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true") for s in secopt),
         "%s: SecurityOpt has no-new-privileges" % what, {"SecurityOpt": secopt})
    t.ok([norm_cap(c) for c in (hc.get("CapDrop") or [])] == ["ALL"], "%s: CapDrop is [ALL]" % what,
         {"CapDrop": hc.get("CapDrop")})
    caps = {norm_cap(c) for c in (hc.get("CapAdd") or [])}
    t.ok(caps <= ALLOWED_CAPS, "%s: CapAdd within the small allowed set" % what,
         {"CapAdd": hc.get("CapAdd"), "extra": sorted(caps - ALLOWED_CAPS)})
    t.eq(hc.get("Privileged"), False, "%s: not privileged" % what)
    t.ok(hc.get("NetworkMode") in ("bridge", "default"), "%s: NetworkMode bridge/default" % what,
         {"NetworkMode": hc.get("NetworkMode")})
    for k in ("PidMode", "IpcMode", "UsernsMode", "UTSMode", "CgroupParent"):
        v = hc.get(k) or ""
        t.ok(v in ("", "private", "shareable"), "%s: HostConfig.%s not host-shared" % (what, k), {k: v})
    t.ok(not hc.get("Devices"), "%s: no devices" % what, {"Devices": hc.get("Devices")})
    t.ok(not hc.get("Sysctls"), "%s: no sysctls" % what, {"Sysctls": hc.get("Sysctls")})
    t.ok((hc.get("PidsLimit") or 0) > 0, "%s: PidsLimit > 0" % what, {"PidsLimit": hc.get("PidsLimit")})
    t.ok((hc.get("Memory") or 0) > 0, "%s: Memory > 0" % what, {"Memory": hc.get("Memory")})
    want_bind = "%s/containers/%s/app:/app" % (DATA_DIR, cuid)
    binds = hc.get("Binds") or []
    t.ok(binds in ([want_bind], [want_bind + ":rw"]), "%s: Binds is exactly the app dir on /app" % what,
         {"Binds": binds, "want": want_bind, "Mounts": hc.get("Mounts")})
    mounts = [m for m in (info.get("Mounts") or [])]
    t.ok(len(mounts) == 1 and mounts[0].get("Destination") == "/app"
         and os.path.realpath(mounts[0].get("Source", "")) == os.path.realpath(app_dir(cuid))
         and mounts[0].get("RW") is True,
         "%s: the only mount is <data>/containers/<cuid>/app -> /app (rw)" % what, {"Mounts": mounts})
    t.eq(cfg.get("User"), uid, "%s: Config.User is DEFAULT_USER_UID" % what)
    env, raw = docker_env(info)
    t.eq([e for e in raw if e.startswith("CONTAINER_UID=")], ["CONTAINER_UID=" + cuid],
         "%s: env has exactly one CONTAINER_UID=<cuid>" % what)
    return env


def main(t):
    s = api()
    nport = free_port()

    # ---------------------------------------------------------------- full spec
    spec = {
        "image": IMAGE,
        "command": ["sleep", "3600"],
        "env": {"APP_ENV": "production", "DEBUG": "false", "WITH_SPACE": "a b=c"},
        "tags": ["web", "production"],
        "resources": {"cpus": 0.5, "memory": "256m", "pids": 64},
        "ports": [{"host": nport, "container": 80, "protocol": "tcp"},
                  {"host": 0, "container": 53, "protocol": "udp"}],
    }
    t0 = time.time()
    r = create_container(s, t, **spec)
    t.status(r, 201, "POST /containers full spec")
    c = jbody(r) or {}
    cuid = c.get("cuid", "")
    t.ok(isinstance(cuid, str) and CUID_RE.match(cuid), "cuid is a Docker-name/compose-project safe id",
         {"cuid": cuid})
    loc = r.headers.get("Location", "")
    t.ok(loc == "/containers/" + cuid or loc.endswith("/containers/" + cuid),
         "Location: /containers/<cuid>", {"Location": loc})
    t.ok(r.headers.get("X-Request-Id"), "X-Request-Id on a 201")
    t.ok("application/json" in r.headers.get("Content-Type", ""), "201 is application/json",
         {"Content-Type": r.headers.get("Content-Type")})
    t.ok(OBJ_KEYS <= set(c), "container object has every contract key",
         {"missing": sorted(OBJ_KEYS - set(c))})
    t.eq(c.get("image"), IMAGE, "body.image")
    t.eq(c.get("command"), ["sleep", "3600"], "body.command")
    t.ok(isinstance(c.get("env"), dict) and all(c["env"].get(k) == v for k, v in spec["env"].items()),
         "body.env holds the requested env", {"env": c.get("env")})
    t.eq(c.get("tags"), ["web", "production"], "body.tags")
    t.eq(c.get("resources"), {"cpus": 0.5, "memory": 256 * 1024 * 1024, "pids": 64},
         "body.resources (memory in bytes)")
    ports = sorted((p.get("container"), p.get("protocol"), p.get("host")) for p in (c.get("ports") or []))
    t.ok(len(ports) == 2 and ports[1] == (80, "tcp", nport) and ports[0][:2] == (53, "udp"),
         "body.ports", {"ports": c.get("ports")})
    t.eq(c.get("status"), "created", "body.status is created")
    t.ok(c.get("exit_code") is None and c.get("started_at") is None and c.get("finished_at") is None,
         "exit_code/started_at/finished_at are null", c)
    t.eq(c.get("restart_count"), 0, "restart_count 0")
    for k in ("created_at", "updated_at"):
        v = c.get(k)
        good = isinstance(v, str) and RFC3339_Z.match(v) is not None
        if good:
            good = abs(parse_time(v).timestamp() - t0) < 120
        t.ok(good, "%s is RFC 3339 UTC 'Z' and now-ish" % k, {k: v})

    info = docker_inspect(cuid) if cuid else None
    if not t.ok(info is not None, "Docker has a container named after the cuid"):
        return
    t.ok(c.get("docker_id") and info["Id"].startswith(c["docker_id"]) and len(c["docker_id"]) >= 12,
         "body.docker_id is the Docker container id", {"docker_id": c.get("docker_id"), "Id": info["Id"]})
    t.eq(info["State"].get("Status"), "created", "Docker state is created (not started)")
    hc = info["HostConfig"]
    env = check_managed(t, info, cuid, "full spec")
    t.eq(env.get("TAGS"), "web,production", "env TAGS is the comma-joined tags")
    t.ok(all(env.get(k) == v for k, v in spec["env"].items()), "requested env reaches Docker Config.Env",
         {"Env": info["Config"].get("Env")})
    t.eq(info["Config"].get("Image"), IMAGE, "Config.Image")
    t.eq(info["Config"].get("Cmd"), ["sleep", "3600"], "Config.Cmd is the command")
    t.eq(hc.get("Memory"), 256 * 1024 * 1024, "HostConfig.Memory from resources.memory")
    t.eq(hc.get("PidsLimit"), 64, "HostConfig.PidsLimit from resources.pids")
    t.eq(hc.get("NanoCpus"), 500000000, "HostConfig.NanoCpus from resources.cpus")
    pb = hc.get("PortBindings") or {}
    t.eq(pb.get("80/tcp"), [{"HostIp": "127.0.0.1", "HostPort": str(nport)}],
         "PortBindings 80/tcp -> 127.0.0.1:<host>")
    udp = pb.get("53/udp") or [{}]
    t.ok(len(udp) == 1 and udp[0].get("HostIp") == "127.0.0.1" and udp[0].get("HostPort") in ("", "0", None),
         "PortBindings 53/udp -> 127.0.0.1:<ephemeral>", {"53/udp": pb.get("53/udp")})
    t.ok(set(pb) == {"80/tcp", "53/udp"}, "no other port bindings", {"PortBindings": pb})
    t.ok({"80/tcp", "53/udp"} <= set((info["Config"].get("ExposedPorts") or {}).keys()),
         "ExposedPorts has the container ports", {"ExposedPorts": info["Config"].get("ExposedPorts")})
    d = app_dir(cuid)
    t.ok(os.path.isdir(d), "app dir exists on disk: CM_DATA_DIR/containers/<cuid>/app", {"path": d})

    # GET returns the same object, with an ETag
    g = s.get("/containers/" + cuid)
    t.status(g, 200, "GET /containers/<cuid>")
    gb = jbody(g) or {}
    t.ok(g.headers.get("ETag"), "GET has an ETag header", dict(g.headers))
    t.ok(all(gb.get(k) == c.get(k) for k in ("cuid", "image", "command", "env", "tags", "resources",
                                              "docker_id", "created_at")),
         "GET object matches the 201 body", {"post": c, "get": gb})

    # the app dir is writable by the container user and the container really runs
    st = action(s, cuid, "start")
    t.status(st, 200, "start the full-spec container")
    info = wait_docker(cuid, lambda i: i["State"].get("Running"))
    t.ok(info and info["State"].get("Running"), "Docker says running after start")
    rc, out = docker_exec(cuid, ["sh", "-c", "id -u; id -g; echo hi > /app/probe && cat /app/probe"])
    t.ok(rc == 0 and out.split() == [DEFAULT_UID.split(":")[0], DEFAULT_UID.split(":")[1], "hi"],
         "inside: runs as DEFAULT_USER_UID and can write /app", {"rc": rc, "out": out})
    t.ok(os.path.exists(os.path.join(d, "probe")), "a file written in /app appears in the host app dir")
    rc, out = docker_exec(cuid, ["sh", "-c", "grep NoNewPrivs /proc/self/status; grep CapEff /proc/self/status"])
    t.ok(rc == 0 and "NoNewPrivs:\t1" in out, "inside: NoNewPrivs is 1", out)
    info = docker_inspect(cuid)
    udp_actual = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get("53/udp") or []
    t.ok(len(udp_actual) >= 1 and all(b.get("HostIp") == "127.0.0.1" for b in udp_actual)
         and int(udp_actual[0].get("HostPort") or 0) > 0,
         "running: 53/udp published on 127.0.0.1 with a real port", {"53/udp": udp_actual})
    t.ok(tcp_connect_ok(nport), "running: 127.0.0.1:<host> accepts TCP connections")

    # ---------------------------------------------------------------- defaults
    r = create_container(s, t, image=IMAGE, command=None)
    t.status(r, 201, "POST /containers with only image")
    c2 = jbody(r) or {}
    cuid2 = c2.get("cuid", "")
    t.ok(cuid2 and cuid2 != cuid, "a second, different cuid")
    info2 = docker_inspect(cuid2) if cuid2 else None
    if t.ok(info2 is not None, "Docker has the minimal container"):
        env2 = check_managed(t, info2, cuid2, "minimal spec")
        t.eq(env2.get("TAGS"), "", "minimal: TAGS is empty")
        hc2 = info2["HostConfig"]
        t.eq(hc2.get("Memory"), 1024 ** 3, "minimal: default memory 1g")
        t.eq(hc2.get("PidsLimit"), 512, "minimal: default pids 512")
        t.ok(not hc2.get("NanoCpus"), "minimal: no cpu limit", {"NanoCpus": hc2.get("NanoCpus")})
        t.ok(not (hc2.get("PortBindings") or {}), "minimal: no port bindings", {"PortBindings": hc2.get("PortBindings")})
        cmd = " ".join((info2["Config"].get("Entrypoint") or []) + (info2["Config"].get("Cmd") or []))
        t.ok("sleep 3600" in cmd, "minimal: BOOT_COMMAND is the command", {"cmd": cmd})
        t.eq(c2.get("resources"), {"cpus": None, "memory": 1024 ** 3, "pids": 512}, "minimal: body.resources defaults")
        t.eq(c2.get("tags"), [], "minimal: tags []")
        t.eq(c2.get("ports"), [], "minimal: ports []")
        t.ok(os.path.isdir(app_dir(cuid2)), "minimal: app dir exists")
        t.status(action(s, cuid2, "start"), 200, "start the BOOT_COMMAND container")
        time.sleep(0.5)
        st2 = docker_state(cuid2) or {}
        t.ok(st2.get("Running") is True, "BOOT_COMMAND container keeps running", st2)

    # ---------------------------------------------------------------- command as a string, memory units
    r = create_container(s, t, command="sleep 3600", resources={"memory": "1g", "pids": 100})
    t.status(r, 201, "POST /containers with command as a string and memory '1g'")
    c3 = jbody(r) or {}
    if c3.get("cuid"):
        info3 = docker_inspect(c3["cuid"])
        t.eq((info3 or {}).get("HostConfig", {}).get("Memory"), 1024 ** 3, "memory '1g' -> 1073741824 bytes")
        t.status(action(s, c3["cuid"], "start"), 200, "start the string-command container")
        time.sleep(0.3)
        st3 = docker_state(c3["cuid"]) or {}
        t.ok(st3.get("Running") is True, "string command runs", {"State": st3,
                                                                  "Cmd": (info3 or {}).get("Config", {}).get("Cmd")})
    r = create_container(s, t, resources={"memory": 134217728})
    t.status(r, 201, "POST /containers with memory as integer bytes")
    c4 = jbody(r) or {}
    if c4.get("cuid"):
        info4 = docker_inspect(c4["cuid"]) or {}
        t.eq(info4.get("HostConfig", {}).get("Memory"), 134217728, "integer memory is bytes")

    # CONTAINER_UID / TAGS cannot be spoofed through env
    r = create_container(s, t, env={"CONTAINER_UID": "evil", "TAGS": "evil"}, tags=["a", "b"])
    if r.status_code == 400:
        check_error(t, r, 400, "validation_error", name="env overriding CONTAINER_UID/TAGS rejected")
    else:
        t.status(r, 201, "env with CONTAINER_UID/TAGS: 201 or 400")
        c5 = jbody(r) or {}
        info5 = docker_inspect(c5.get("cuid", "-")) or {}
        env5, raw5 = docker_env(info5)
        t.ok([e for e in raw5 if e.startswith("CONTAINER_UID=")] == ["CONTAINER_UID=" + c5.get("cuid", "?")]
             and [e for e in raw5 if e.startswith("TAGS=")] == ["TAGS=a,b"],
             "the service's CONTAINER_UID and TAGS win over user env", {"Env": raw5})

    # concurrent creates are served side by side
    res = []

    def one(i):
        t1 = time.monotonic()
        r = create_container(api(timeout=120), t, tags=["conc%d" % i])
        res.append((round(time.monotonic() - t1, 2), r.status_code, (jbody(r) or {}).get("cuid")))

    ths = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for x in ths:
        x.start()
    for x in ths:
        x.join(130)
    t.ok(len(res) == 3 and all(st == 201 for _, st, _ in res) and len({c for _, _, c in res}) == 3,
         "3 concurrent creates: three 201s with distinct cuids", res)
    t.ok(len(res) == 3 and all(d < 10 for d, _, _ in res), "3 concurrent creates all answered within 10 s", res)
    t.ok(all(docker_inspect(c) is not None for _, _, c in res if c), "3 concurrent creates: all in Docker")

    # the DB knows every container we made
    cuids = set(db_container_cuids() or [])
    mine = [x for x in (cuid, cuid2, c3.get("cuid"), c4.get("cuid")) if x]
    t.ok(set(mine) <= cuids, "every created cuid has a row in the containers table",
         {"missing": sorted(set(mine) - cuids)})


if __name__ == "__main__":
    run(main)

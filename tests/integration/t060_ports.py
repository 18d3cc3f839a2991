#!/usr/bin/python3
"""t060 ports: PATCH /containers/<cuid>/ports changes what Docker publishes (on 127.0.0.1),
answers the actual host ports, and a busy host port is 409 PORT_IN_USE with nothing changed."""
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403


def docker_ports(info):
    """{"3000/tcp": [(ip, port)], ...} from HostConfig.PortBindings and NetworkSettings.Ports."""
    hc = {k: [(b.get("HostIp"), b.get("HostPort")) for b in (v or [])]
          for k, v in ((info.get("HostConfig") or {}).get("PortBindings") or {}).items()}
    ns = {k: [(b.get("HostIp"), b.get("HostPort")) for b in (v or [])]
          for k, v in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items() if v}
    return hc, ns


def answer_ports(b):
    return sorted((p.get("container"), p.get("protocol"), p.get("host")) for p in (b.get("ports") or []))


def check_read(t, s, path, want, label, settle=5.0):
    """Read-your-writes: the first GET must already agree; if it does not, also tell whether
    the row converges (transient staleness) or stays wrong (a lost update)."""
    first = answer_ports(jbody(s.get(path)) or {})
    t.eq(first, want, label + " (right after the change)")
    if first != want:
        last = {}

        def f():
            last["v"] = answer_ports(jbody(s.get(path)) or {})
            return last["v"] == want

        t.ok(wait_until(f, timeout=settle, interval=0.2), label + " (within %.0f s: not a lost update)" % settle,
             {"want": want, "still": last.get("v")})


def main(t):
    s = api()
    c = must_create(s, t, "create container with an ephemeral port",
                    ports=[{"host": 0, "container": 80, "protocol": "tcp"}])
    cuid = c["cuid"]
    t.status(action(s, cuid, "start"), 200, "start it")
    info = wait_docker(cuid, lambda i: i["State"]["Running"])
    hc, ns = docker_ports(info)
    eph = ns.get("80/tcp") or []
    t.ok(len(eph) >= 1 and all(ip == "127.0.0.1" for ip, _ in eph) and int(eph[0][1] or 0) > 0,
         "ephemeral 80/tcp published on 127.0.0.1:<port>", {"NetworkSettings.Ports": ns})

    # PATCH to fixed ports (tcp + udp)
    p1, p2 = free_port(), free_port()
    while p2 == p1:
        p2 = free_port()
    r = s.patch("/containers/%s/ports" % cuid, json={"ports": [{"host": p1, "container": 3000, "protocol": "tcp"},
                                                             {"host": p2, "container": 9000, "protocol": "udp"}]})
    t.status(r, 200, "PATCH ports tcp+udp")
    b = jbody(r) or {}
    t.eq(b.get("cuid"), cuid, "answer has the cuid")
    t.eq(answer_ports(b), [(3000, "tcp", p1), (9000, "udp", p2)], "answer lists the new ports with host ports")
    info = docker_inspect(cuid)
    hc, ns = docker_ports(info)
    t.eq(hc, {"3000/tcp": [("127.0.0.1", str(p1))], "9000/udp": [("127.0.0.1", str(p2))]},
         "Docker HostConfig.PortBindings == the answer (old 80/tcp gone)")
    t.ok(info["State"]["Running"] is True, "still running after the ports change", info["State"])
    t.eq({k: v[:1] for k, v in ns.items()}, {"3000/tcp": [("127.0.0.1", str(p1))], "9000/udp": [("127.0.0.1", str(p2))]},
         "Docker NetworkSettings.Ports == the answer")
    t.ok(tcp_connect_ok(p1), "127.0.0.1:%d accepts TCP (docker-proxy)" % p1)
    t.ok(eph and not tcp_connect_ok(int(eph[0][1])), "the old ephemeral port is closed")
    check_read(t, s, "/containers/" + cuid, [(3000, "tcp", p1), (9000, "udp", p2)], "GET object shows the new ports")
    check_read(t, s, "/containers/%s/status" % cuid, [(3000, "tcp", p1), (9000, "udp", p2)],
               "GET /status shows the new ports")

    # ephemeral in PATCH: the answer carries the actual port
    r = s.patch("/containers/%s/ports" % cuid, json={"ports": [{"container": 81}]})
    t.status(r, 200, "PATCH ports with an ephemeral host port")
    b = jbody(r) or {}
    ap = answer_ports(b)
    info = docker_inspect(cuid)
    hc, ns = docker_ports(info)
    actual = (ns.get("81/tcp") or [(None, "0")])[0]
    t.ok(len(ap) == 1 and ap[0][0] == 81 and ap[0][1] == "tcp" and isinstance(ap[0][2], int) and ap[0][2] > 0
         and str(ap[0][2]) == actual[1] and actual[0] == "127.0.0.1",
         "answer's host port is the actual ephemeral port Docker published", {"answer": ap, "docker": ns})
    t.ok(set(hc) == {"81/tcp"}, "only 81/tcp is bound now", hc)
    check_read(t, s, "/containers/" + cuid, ap, "GET object shows the ephemeral PATCH's ports")

    # busy host port: a python socket listening on 127.0.0.1
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    bport = busy.getsockname()[1]
    id_before = info["Id"]
    hc_before = hc
    try:
        r = s.patch("/containers/%s/ports" % cuid, json={"ports": [{"host": bport, "container": 80, "protocol": "tcp"}]})
        check_error(t, r, 409, "conflict", "PORT_IN_USE", name="PATCH ports onto a busy host port")
        info = docker_inspect(cuid)
        hc, ns = docker_ports(info)
        t.eq(hc, hc_before, "409: Docker PortBindings unchanged")
        t.ok(info["Id"] == id_before, "409: same Docker container (docker_id unchanged)",
             {"before": id_before, "after": info["Id"]})
        t.ok(info["State"]["Running"] is True, "409: still running", info["State"])
        check_read(t, s, "/containers/" + cuid, ap, "409: GET object ports unchanged")
    finally:
        busy.close()

    # a host port held by another managed container
    p3 = free_port()
    c2 = must_create(s, t, "create a second container holding a fixed port",
                     ports=[{"host": p3, "container": 80, "protocol": "tcp"}])
    t.status(action(s, c2["cuid"], "start"), 200, "start the second container")
    t.ok(tcp_connect_ok(p3), "second container publishes 127.0.0.1:%d" % p3)
    r = s.patch("/containers/%s/ports" % cuid, json={"ports": [{"host": p3, "container": 80, "protocol": "tcp"}]})
    check_error(t, r, 409, "conflict", "PORT_IN_USE", name="PATCH onto a port another container publishes")
    t.eq(docker_ports(docker_inspect(cuid))[0], hc_before, "PortBindings unchanged after that 409")
    t.ok((docker_state(c2["cuid"]) or {}).get("Running") is True, "the other container still runs")

    # bad input
    for name, body in [("protocol sctp", {"ports": [{"container": 80, "protocol": "sctp"}]}),
                       ("container 0", {"ports": [{"container": 0}]}),
                       ("ports not a list", {"ports": "80:80"}),
                       ("missing ports", {}),
                       ("unknown field", {"ports": [], "extra": 1})]:
        r = s.patch("/containers/%s/ports" % cuid, json=body)
        check_error(t, r, 400, "validation_error", name="PATCH ports bad: " + name)
    t.eq(docker_ports(docker_inspect(cuid))[0], hc_before, "PortBindings unchanged after bad input")

    # clearing all ports; on a stopped container
    t.status(action(s, cuid, "stop", json={"timeout": 1}), 200, "stop it")
    p4 = free_port()
    r = s.patch("/containers/%s/ports" % cuid, json={"ports": [{"host": p4, "container": 8080}]})
    t.status(r, 200, "PATCH ports on a stopped container")
    info = docker_inspect(cuid)
    t.eq(docker_ports(info)[0], {"8080/tcp": [("127.0.0.1", str(p4))]}, "stopped: PortBindings updated")
    t.ok(info["State"]["Running"] is False, "stopped: still stopped", info["State"])
    r = s.patch("/containers/%s/ports" % cuid, json={"ports": []})
    t.status(r, 200, "PATCH ports []")
    t.eq(docker_ports(docker_inspect(cuid))[0], {}, "no PortBindings after ports []")


if __name__ == "__main__":
    run(main)

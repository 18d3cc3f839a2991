#!/usr/bin/python3
"""t151 WebSocket helper with Node's `ws` package: the seed's ContainerExecutor as written
(tests/clients/ws_executor.js), effects checked in Docker, and protocol checks
(tests/clients/ws_node_checks.js): exit code, stderr apart without a TTY, a signal, base64 for
non-UTF-8 bytes, an error frame for a bad frame, 404 and 401 before the upgrade."""
import base64
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

CLIENT_ENV = dict(os.environ, CM_URL=URL, CM_USER=USER, CM_PASS=PASS)


def run_client(t, argv, label, timeout=120):
    """Run a client program in tests/clients; returns (rc, output, parsed RESULT line)."""
    try:
        p = subprocess.run(argv, cwd=CLIENTS_DIR, env=CLIENT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except FileNotFoundError as e:
        t.ok(False, "%s: interpreter present" % label, str(e))
        return None, "", None
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace") + (e.stderr or b"").decode("utf-8", "replace")
        t.ok(False, "%s: finished within %d s" % (label, timeout), out[-2000:])
        return None, out, None
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    result = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            try:
                result = json.loads(line[7:])
            except ValueError:
                pass
    return p.returncode, out + err, result


def short(obs):
    """An observation without the bulky parts, for diagnostics."""
    if not isinstance(obs, dict):
        return obs
    d = dict(obs)
    d["frames"] = (d.get("frames") or [])[:20]
    return d


def main(t):
    if not shutil.which("node"):
        t.ok(False, "node is installed (CI must install it)")
        return
    if not os.path.isdir(os.path.join(CLIENTS_DIR, "node_modules", "ws")):
        t.ok(False, "tests/clients/node_modules/ws installed (npm ci in tests/clients)")
        return
    s = api()
    c = must_create(s, t, "create a container for the node clients")
    cuid = c["cuid"]
    t.status(action(s, cuid, "start"), 200, "start it")

    # ------------------------------------------------------------ seed ContainerExecutor
    rc, out, res = run_client(t, ["node", "ws_executor.js", cuid, "echo hello-from-node"], "seed ContainerExecutor")
    r = (res or {}).get("result") or {}
    t.ok(rc == 0 and res and res.get("ok") is True, "seed ContainerExecutor.execute('echo hello-from-node') resolved",
         {"rc": rc, "output": out[-2000:]})
    t.eq(r.get("exitCode"), 0, "seed ContainerExecutor: exitCode 0 (the seed sends 'exit\\n')")
    stdout = r.get("stdout") or ""
    # the TTY echoes the typed line too ("echo hello-from-node"): look for the command's own output
    t.ok(re.search(r"(?<!echo )hello-from-node", stdout) is not None,
         "seed ContainerExecutor: stdout holds the output line 'hello-from-node'", {"stdout": stdout[-1500:]})
    t.eq(r.get("stderr"), "", "seed ContainerExecutor: no stderr (a TTY merges it into stdout)")

    rc, out, res = run_client(t, ["node", "ws_executor.js", cuid, "echo node-$((6*7)) > /app/from-node.txt"],
                              "seed ContainerExecutor (file)")
    t.ok(rc == 0 and res and res.get("ok") is True and (res.get("result") or {}).get("exitCode") == 0,
         "seed ContainerExecutor: a command writing /app/from-node.txt exits 0", {"rc": rc, "output": out[-2000:]})
    rc2, cat = docker_exec(cuid, ["cat", "/app/from-node.txt"])
    t.ok(rc2 == 0 and cat == "node-42\n", "seed ContainerExecutor: Docker sees /app/from-node.txt = 'node-42' "
         "(the shell ran the command)", {"rc": rc2, "cat": cat})
    host = os.path.join(app_dir(cuid), "from-node.txt")
    t.ok(os.path.isfile(host) and open(host).read() == "node-42\n",
         "seed ContainerExecutor: the file is in the bind-mounted app dir on the host", {"path": host})

    bad = sibling_cuid(cuid)
    rc, out, res = run_client(t, ["node", "ws_executor.js", bad, "echo x"], "seed ContainerExecutor (404)")
    t.ok(rc != 0 and res and res.get("ok") is False and "404" in (res.get("message") or ""),
         "seed ContainerExecutor on an unknown cuid rejects with the 'Unexpected server response: 404' error",
         {"rc": rc, "output": out[-1500:]})

    # ------------------------------------------------------------ protocol checks (ws_node_checks.js)
    rc, out, R = run_client(t, ["node", "ws_node_checks.js", cuid, bad], "node ws checks", timeout=150)
    t.ok(rc == 0 and isinstance(R, dict) and "fatal" not in R, "node ws checks ran",
         {"rc": rc, "output": out[-3000:]})
    R = R if isinstance(R, dict) else {}

    x = R.get("exit") or {}
    t.ok(x.get("exitCode") == 5 and x.get("closeCode") == 1000 and not x.get("timedOut"),
         "node: 'exit 5' in the shell -> exit frame code 5, then close 1000", short(x))
    frames = x.get("frames") or []
    types = [f.get("type") for f in frames]
    t.ok("exit" in types and types.index("exit") == len(types) - 1,
         "node: the exit frame is the last frame", {"types": types[-10:]})
    t.ok(all(f.get("encoding") in ("utf8", "base64") and isinstance(f.get("data"), str)
             for f in frames if f.get("type") in ("stdout", "stderr")),
         "node: every stdout/stderr frame has data and encoding utf8|base64", frames[:10])

    x = R.get("stderr") or {}
    t.ok(x.get("stdout") == "out\n" and x.get("stderr") == "err\n" and x.get("exitCode") == 0
         and x.get("closeCode") == 1000,
         "node: tty=0 'echo out; echo err >&2' -> stdout 'out\\n', stderr 'err\\n', exit 0, close 1000", short(x))

    for tty in (1, 0):
        x = R.get("term_tty%d" % tty) or {}
        t.ok(x.get("ready") is True, "node: tty=%d sleep session printed 'ready'" % tty, short(x))
        t.ok(x.get("exitCode") == 143 and x.get("closeCode") == 1000,
             "node: tty=%d signal TERM to sleep -> exit 143, close 1000" % tty, short(x))

    x = R.get("binary") or {}
    raw = base64.b64decode(x.get("stdout_b64") or "")
    t.eq(raw, b"\xff\xfeabc", "node: printf '\\377\\376abc' -> exactly those bytes", short(x))
    t.ok(any(f.get("type") == "stdout" and f.get("encoding") == "base64" for f in x.get("frames") or []),
         "node: the non-UTF-8 output came in a base64 frame", x.get("frames"))
    t.eq(x.get("exitCode"), 0, "node: printf exits 0")

    x = R.get("badframe") or {}
    errs = x.get("errors") or []
    t.ok(x.get("gotError") is True and errs and errs[0].get("code") == "BAD_FRAME"
         and isinstance(errs[0].get("message"), str) and errs[0].get("message"),
         "node: a text frame that is not JSON -> error frame {code: BAD_FRAME, message}", short(x))
    t.ok(x.get("echoed") is True and x.get("stdout") == "still-alive\n",
         "node: the session still works after the bad frame (cat echoes exactly 'still-alive')", short(x))
    t.ok(x.get("exitCode") == 0 and x.get("closeCode") == 1000,
         "node: eof ends cat -> exit 0, close 1000", short(x))

    x = R.get("notfound") or {}
    j = x.get("httpJson") or {}
    t.ok(x.get("httpStatus") == 404 and j.get("code") == "CONTAINER_NOT_FOUND" and j.get("status") == 404
         and j.get("error") == "not_found",
         "node: unknown cuid -> 'unexpected-response' 404 with JSON code CONTAINER_NOT_FOUND", short(x))
    x = R.get("noauth") or {}
    j = x.get("httpJson") or {}
    t.ok(x.get("httpStatus") == 401 and j.get("error") == "auth_error" and j.get("status") == 401,
         "node: no Authorization header -> 'unexpected-response' 401 with a JSON auth_error body", short(x))

    # nothing of these sessions is left running in the container
    def leftovers():
        rc_, ps = docker_exec(cuid, ["ps"])
        return [ln for ln in ps.splitlines()[1:] if "sleep 1000" in ln or ln.rstrip().endswith(" cat")]

    left = wait_until(lambda: not leftovers(), timeout=5)
    t.ok(left, "node: no 'sleep 1000' or 'cat' of the sessions left in the container", {"left": leftovers()})


if __name__ == "__main__":
    run(main)

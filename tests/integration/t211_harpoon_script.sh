#!/usr/bin/env bash
# t211 harpoon script: the bash script at the end of seed 000 (harpoon's container manager), run
# as written with two substitutions: `harpoon container_manager` -> `<build>/cli/container-manager
# serve`, `bazel test` -> a small test suite (below) that uses $HARPOON_CONTAINER_MANAGER the way
# the seed shows: start_container with curl, fetch example_file on the mapped port, start again
# (same container, just_created false), /version.
#
# It runs in a directory whose .env sets CM_AUTH=off, CM_HTTPS_LISTEN=off, CM_DATA_DIR and CM_IMAGES
# (the seed's definitions, busybox instead of python), with a clean environment. Three runs:
#   1. the tests pass: the script exits 0; then the stack is gone (supervisor, processes, port),
#      the container removed from Docker (Engine API over the unix socket), the info file removed
#   2. the tests fail: the script exits non-zero, and its EXIT trap still shuts the stack down
#   3. the manager cannot start (broken definitions): `serve $info` exits non-zero, `set -e` ends the
#      script before the tests, nothing is left running
# TAP on stdout.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLI="${CM_IT_CLI:-$ROOT/cli/container-manager}"
IMAGE="${CM_TEST_IMAGE:-cm-test-busybox:latest}"
TMPROOT="${CM_IT_TMP:-/tmp}"
DOCKER_SOCK=/var/run/docker.sock
W=$(mktemp -d "$TMPROOT/t211.XXXXXX")

N=0
FAILED=0
ok() { N=$((N + 1)); printf 'ok %d - %s\n' "$N" "$*"; }
nok() { N=$((N + 1)); FAILED=$((FAILED + 1)); printf 'not ok %d - %s\n' "$N" "$*"; }
diag() { sed 's/^/#   /'; }
# check DESCRIPTION COMMAND...: one test point from a command's status
check() {
    local d=$1
    shift
    if "$@"; then ok "$d"; else nok "$d"; fi
}

docker_status() { # docker_status PATH -> HTTP status of GET /v1.41PATH on the Engine API socket
    curl -s -o /dev/null -w '%{http_code}' --unix-socket "$DOCKER_SOCK" "http://localhost/v1.41$1"
}

alive() { # alive PID: exists and is not a zombie
    local st
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# processes of the stacks still running: the ones the tests saw below the supervisor (pid and start
# time in <run>/state/procs), and any whose command line names this test's directory (the daemon's
# `serve <W>/<run>/tmp/tmp.X`)
leftovers() {
    local p st out="" f
    for f in "$W"/*/state/procs; do
        [ -f "$f" ] || continue
        while read -r p st; do
            alive "$p" && [ "$(starttime "$p")" = "$st" ] && out="$out $p"
        done <"$f"
    done
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = $$ ] && continue
        alive "$p" || continue
        case " $out " in *" $p "*) continue ;; esac
        if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$W/"; then
            out="$out $p"
        fi
    done
    printf '%s' "${out# }"
}

CIDS=()
PIDS=()
DATAS=()
cleanup_all() {
    local p c d tag
    for p in "${PIDS[@]}"; do
        if alive "$p"; then
            kill -TERM "$p" 2>/dev/null
            for _ in $(seq 1 50); do alive "$p" || break; sleep 0.2; done
            alive "$p" && kill -KILL -- "-$p" 2>/dev/null
            alive "$p" && kill -KILL "$p" 2>/dev/null
        fi
    done
    for p in $(leftovers); do kill -KILL "$p" 2>/dev/null; done
    for c in "${CIDS[@]}"; do
        curl -s -o /dev/null --unix-socket "$DOCKER_SOCK" -X DELETE "http://localhost/v1.41/containers/$c?force=1&v=1"
    done
    for d in "${DATAS[@]}"; do
        [ -f "$d/db/cm.sqlite" ] || continue
        for tag in $(sqlite3 -readonly "$d/db/cm.sqlite" "SELECT DISTINCT tag FROM builds" 2>/dev/null); do
            curl -s -o /dev/null --unix-socket "$DOCKER_SOCK" -X DELETE "http://localhost/v1.41/images/$tag"
        done
    done
    if [ "$FAILED" = 0 ] && [ "${CM_IT_KEEP:-0}" != 1 ]; then
        rm -rf "$W"
    else
        echo "# kept $W"
    fi
    echo "1..$N"
}
trap cleanup_all EXIT

if [ ! -x "$CLI" ]; then
    nok "the launcher $CLI exists"
    exit 1
fi

# ------------------------------------------------------------------ the seed's script, as written
IFS= read -r -d '' SEED_SCRIPT <<'SEED'
#!/bin/bash

set -e

info=$(mktemp)
cleanup() { rm $info; }
trap cleanup EXIT

# container_manager will exit with an error status if we couldn't start
# The container manager. But because we gave it just a file, it'll run the
# web server in the background and the script will continue
harpoon container_manager $info --non-interactive

PORT=$(head -n1 $info)
export HARPOON_CONTAINER_MANAGER="http://localhost:$PORT"

cleanup() {
    if ! rm $info; then
        echo "Failed to remove temporary file at $info"
    fi
    curl "$HARPOON_CONTAINER_MANAGER/shutdown"
}
trap cleanup EXIT

# Run tests
bazel test
SEED

# the seed's definitions (python:3 / `python -m http.server 4545` replaced by busybox httpd serving /)
IFS= read -r -d '' SEED_DEFS <<DEFS
---

images:
   server:
      context: false

      commands:
         - FROM $IMAGE
         - - ADD
           - dest: /example_file
             content: "hello there"
         - CMD httpd -f -p 4545 -h /
DEFS

# the stand-in for `bazel test`: a test suite using the manager the script started. It records what
# it saw in $T211_STATE for the checks below; T211_TEST_EXIT makes it fail on purpose.
IFS= read -r -d '' FAKE_TESTS <<'TESTS'
#!/bin/sh
set -u
S="$T211_STATE"
# the script's $info (mktemp in TMPDIR): copied for the checks, the script removes it itself
for f in "$TMPDIR"/tmp.*; do [ -f "$f" ] && cp "$f" "$S/info" && echo "$f" >"$S/info.path"; done
echo "$HARPOON_CONTAINER_MANAGER" >"$S/url"
fail=0
curl -sS -o "$S/start1.json" -w '%{http_code}' -XPOST "$HARPOON_CONTAINER_MANAGER/start_container" \
   -HContent-Type:application/json \
   -d '{"image": "server", "ports": [[0, 4545]]}' >"$S/start1.code" 2>"$S/start1.err" || fail=1
hostport=$(sed -n 's/.*"4545"[^0-9]*\([0-9][0-9]*\).*/\1/p' "$S/start1.json")
echo "$hostport" >"$S/hostport"
# the seed's `curl http://localhost:32772/example_file` (retried: its definition has no wait_condition)
i=0
while [ $i -lt 50 ]; do
    if curl -sS "http://localhost:$hostport/example_file" >"$S/example_file" 2>"$S/example_file.err"; then
        break
    fi
    i=$((i + 1))
    sleep 0.1
done
[ "$(cat "$S/example_file")" = "hello there" ] || fail=1
curl -sS -o "$S/start2.json" -w '%{http_code}' -XPOST "$HARPOON_CONTAINER_MANAGER/start_container" \
   -HContent-Type:application/json \
   -d '{"image": "server", "ports": [[0, 4545]]}' >"$S/start2.code" 2>>"$S/start1.err" || fail=1
curl -sS "$HARPOON_CONTAINER_MANAGER/version" >"$S/version" 2>>"$S/start1.err" || fail=1
# what Docker says about the container, and the stack's processes (pid ppid starttime below PID)
cid=$(sed -n 's/.*"container_id" *: *"\([0-9a-f]*\)".*/\1/p' "$S/start1.json")
curl -s --unix-socket /var/run/docker.sock "http://localhost/v1.41/containers/$cid/json" >"$S/inspect.json"
for f in /proc/[0-9]*/stat; do
    line=$(cat "$f" 2>/dev/null) || continue
    pid=${line%% *}
    rest=${line##*) }
    set -- $rest
    echo "$pid $2 ${20}"
done >"$S/ps"
awk -v root="$(sed -n 2p "$S/info")" '{ pp[$1] = $2; st[$1] = $3 }
    END { keep[root] = 1; ch = 1
          while (ch) { ch = 0; for (p in pp) if ((pp[p] in keep) && !(p in keep)) { keep[p] = 1; ch = 1 } }
          for (p in keep) if (p in st) print p, st[p] }' "$S/ps" >"$S/procs"
echo "$fail" >"$S/fail"
[ "$fail" = 0 ] || exit 1
exit "${T211_TEST_EXIT:-0}"
TESTS

# run_script NAME [DEFS_TEXT] [TEST_EXIT]: prepares <W>/NAME (.env, definitions, the script) and runs
# the script there with a clean environment. Sets RUN_DIR, RUN_RC, RUN_SECS.
run_script() {
    local name=$1 defs=${2:-$SEED_DEFS} texit=${3:-0}
    RUN_DIR="$W/$name"
    mkdir -p "$RUN_DIR/tmp" "$RUN_DIR/state" "$RUN_DIR/data"
    printf '%s\n' "$defs" >"$RUN_DIR/harpoon.yml"
    cat >"$RUN_DIR/.env" <<EOF
CM_AUTH=off
CM_HTTPS_LISTEN=off
CM_DATA_DIR=$RUN_DIR/data
CM_IMAGES=$RUN_DIR/harpoon.yml
EOF
    printf '%s\n' "$FAKE_TESTS" >"$RUN_DIR/fake-tests"
    chmod +x "$RUN_DIR/fake-tests"
    local s=$SEED_SCRIPT
    s=${s//harpoon container_manager/$CLI serve}
    s=${s//bazel test/$RUN_DIR/fake-tests}
    printf '%s\n' "$s" >"$RUN_DIR/script.sh"
    chmod +x "$RUN_DIR/script.sh"
    DATAS+=("$RUN_DIR/data")
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$RUN_DIR" && exec env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 TMPDIR="$RUN_DIR/tmp" \
        T211_STATE="$RUN_DIR/state" T211_TEST_EXIT="$texit" \
        timeout -k 5 120 setsid bash ./script.sh) </dev/null >"$RUN_DIR/script.out" 2>"$RUN_DIR/script.err"
    RUN_RC=$?
    t1=$(date +%s.%N)
    RUN_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
}

show_run() { # diagnostics of the last run
    echo "# script.sh exit status $RUN_RC; stdout:"
    diag <"$RUN_DIR/script.out"
    echo "# stderr:"
    tail -n 40 "$RUN_DIR/script.err" | diag
}

json_get() { # json_get FILE KEY -> value (python3)
    /usr/bin/python3 -c '
import json, sys
try:
    v = json.load(open(sys.argv[1]))[sys.argv[2]]
    print(json.dumps(v) if not isinstance(v, str) else v)
except Exception:
    pass' "$1" "$2"
}

instance_of() { # the instance id (16 hex) the data dir's runner labels containers with
    sqlite3 -readonly "$1/db/cm.sqlite" "SELECT substr(lower(hex(value)), 1, 16) FROM settings WHERE key = 'instance_id'" 2>/dev/null
}

labelled_containers() { # labelled_containers INSTANCE -> JSON list of its start_container containers
    curl -s -G --unix-socket "$DOCKER_SOCK" "http://localhost/v1.41/containers/json" --data-urlencode all=1 \
        --data-urlencode "filters={\"label\":[\"io.container-manager.instance=$1\",\"io.container-manager.harpoon\"]}"
}

# checks after a run in which the manager started: it and its container must be gone
check_stopped() {
    local label=$1 pid=$2 port=$3 cid=$4 gone=0 left inst
    for _ in $(seq 1 50); do
        alive "$pid" || { gone=1; break; }
        sleep 0.1
    done
    if [ "$gone" = 1 ]; then ok "$label: the supervisor (pid $pid) is gone"; else
        nok "$label: the supervisor (pid $pid) is gone"
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | diag
    fi
    for _ in $(seq 1 20); do
        left=$(leftovers)
        [ -z "$left" ] && break
        sleep 0.1
    done
    if [ -z "$left" ]; then ok "$label: no process of the stack is left"; else
        nok "$label: no process of the stack is left"
        for p in $left; do printf '%s: %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; done | diag
    fi
    if [ -n "$port" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        nok "$label: nothing listens on port $port any more"
    else
        ok "$label: nothing listens on port $port any more"
    fi
    if [ -n "$cid" ]; then
        local st
        st=$(docker_status "/containers/$cid/json")
        if [ "$st" = 404 ]; then ok "$label: container ${cid:0:12} removed from Docker (inspect 404)"; else
            nok "$label: container ${cid:0:12} removed from Docker (inspect $st)"
        fi
    fi
    inst=$(instance_of "$RUN_DIR/data")
    if [ -n "$inst" ]; then
        local lst
        lst=$(labelled_containers "$inst")
        if [ "$lst" = "[]" ]; then ok "$label: no start_container container of the instance in Docker"; else
            nok "$label: no start_container container of the instance in Docker"
            printf '%s\n' "$lst" | head -c 2000 | diag
        fi
    else
        nok "$label: the data dir has an instance id"
    fi
    if compgen -G "$RUN_DIR/tmp/tmp.*" >/dev/null; then
        nok "$label: the script's cleanup removed the info file"
    else
        ok "$label: the script's cleanup removed the info file"
    fi
}

# ------------------------------------------------------------------ run 1: tests pass
run_script pass
S="$RUN_DIR/state"
echo "# run 1 (tests pass): exit status $RUN_RC after ${RUN_SECS}s"
if [ "$RUN_RC" = 0 ]; then ok "the seed's script exits 0 when the tests pass"; else
    nok "the seed's script exits 0 when the tests pass"
    show_run
fi
INFO=$(cat "$S/info" 2>/dev/null)
PORT=$(printf '%s\n' "$INFO" | sed -n 1p)
PID=$(printf '%s\n' "$INFO" | sed -n 2p)
[ -n "$PID" ] && PIDS+=("$PID")
if printf '%s\n' "$INFO" | /usr/bin/python3 -c 'import re,sys; sys.exit(0 if re.fullmatch(r"\d+\n\d+\n", sys.stdin.read()) else 1)'; then
    ok "serve \$info wrote 'PORT\\nPID\\n' ($PORT, $PID)"
else
    nok "serve \$info wrote 'PORT\\nPID\\n'"
    printf '%s\n' "$INFO" | diag
fi
if [ "$(cat "$S/url" 2>/dev/null)" = "http://localhost:$PORT" ]; then
    ok "the tests saw HARPOON_CONTAINER_MANAGER=http://localhost:$PORT"
else
    nok "the tests saw HARPOON_CONTAINER_MANAGER=http://localhost:$PORT"
    diag <"$S/url" 2>/dev/null
fi
CODE1=$(cat "$S/start1.code" 2>/dev/null)
CID=$(json_get "$S/start1.json" container_id)
[ -n "$CID" ] && CIDS+=("$CID")
if [ "$CODE1" = 200 ] && [ "$(json_get "$S/start1.json" just_created)" = true ] &&
    [[ "$CID" =~ ^[0-9a-f]{64}$ ]] && [ -n "$(cat "$S/hostport" 2>/dev/null)" ]; then
    ok "curl start_container {image: server, ports: [[0, 4545]]} -> 200 {ports, just_created: true, container_id}"
else
    nok "curl start_container {image: server, ports: [[0, 4545]]} -> 200 {ports, just_created: true, container_id}"
    { echo "status $CODE1"; cat "$S/start1.json" "$S/start1.err"; } 2>/dev/null | diag
fi
if [ "$(cat "$S/example_file" 2>/dev/null)" = "hello there" ]; then
    ok "curl http://localhost:$(cat "$S/hostport")/example_file -> hello there"
else
    nok "curl http://localhost:<hostport>/example_file -> hello there"
    cat "$S/example_file" "$S/example_file.err" 2>/dev/null | diag
fi
if [ "$(cat "$S/start2.code" 2>/dev/null)" = 200 ] && [ "$(json_get "$S/start2.json" container_id)" = "$CID" ] &&
    [ "$(json_get "$S/start2.json" just_created)" = false ] &&
    [ "$(json_get "$S/start2.json" ports)" = "$(json_get "$S/start1.json" ports)" ]; then
    ok "start_container again: same container and ports, just_created false"
else
    nok "start_container again: same container and ports, just_created false"
    cat "$S/start2.json" 2>/dev/null | diag
fi
if grep -Eq '^container-manager [0-9]+\.[0-9]+\.[0-9]+$' "$S/version" 2>/dev/null; then
    ok "curl /version -> container-manager X.Y.Z"
else
    nok "curl /version -> container-manager X.Y.Z"
    diag <"$S/version" 2>/dev/null
fi
# what Docker said while the tests ran (the tests saved the Engine API's inspect)
if /usr/bin/python3 - "$S/inspect.json" "$CID" "$(cat "$S/hostport" 2>/dev/null)" <<'EOF'; then
import json, re, sys
try:
    info = json.load(open(sys.argv[1]))
except Exception as e:
    print("# no inspect: %r" % (e,))
    sys.exit(1)
problems = []
if info.get("Id") != sys.argv[2]:
    problems.append("Id %r" % info.get("Id"))
if not info.get("State", {}).get("Running"):
    problems.append("not running")
if not re.match(r"^cm-def-server:[0-9a-f]{16}$", info.get("Config", {}).get("Image", "")):
    problems.append("image %r" % info.get("Config", {}).get("Image"))
b = (info.get("NetworkSettings", {}).get("Ports") or {}).get("4545/tcp") or [{}]
if str(b[0].get("HostPort")) != sys.argv[3]:
    problems.append("binding %r vs %s" % (b, sys.argv[3]))
print("# " + "; ".join(problems) if problems else "# docker: running %s" % info["Config"]["Image"])
sys.exit(1 if problems else 0)
EOF
    ok "Docker ran the container from cm-def-server:<16 hex>, 4545/tcp published on the answer's port"
else
    nok "Docker ran the container from cm-def-server:<16 hex>, 4545/tcp published on the answer's port"
    head -c 1500 "$S/inspect.json" 2>/dev/null | diag
fi
if [ -s "$S/procs" ]; then ok "the tests saw $(wc -l <"$S/procs") processes below the supervisor"; else
    nok "the tests saw the processes below the supervisor"
fi
check_stopped "run 1" "$PID" "$PORT" "$CID"
if [ -s "$RUN_DIR/script.err" ]; then
    echo "# stderr of the script (run 1):"
    tail -n 10 "$RUN_DIR/script.err" | diag
fi

# ------------------------------------------------------------------ run 2: tests fail
run_script fail "$SEED_DEFS" 3
S="$RUN_DIR/state"
echo "# run 2 (tests fail): exit status $RUN_RC after ${RUN_SECS}s"
if [ "$RUN_RC" != 0 ] && [ "$RUN_RC" != 124 ] && [ "$RUN_RC" != 137 ]; then
    ok "the seed's script exits non-zero when the tests fail ($RUN_RC)"
else
    nok "the seed's script exits non-zero when the tests fail ($RUN_RC)"
    show_run
fi
INFO=$(cat "$S/info" 2>/dev/null)
PORT=$(printf '%s\n' "$INFO" | sed -n 1p)
PID=$(printf '%s\n' "$INFO" | sed -n 2p)
[ -n "$PID" ] && PIDS+=("$PID")
CID=$(json_get "$S/start1.json" container_id)
[ -n "$CID" ] && CIDS+=("$CID")
if [ -n "$PID" ] && [ -n "$CID" ] && [ "$(cat "$S/fail" 2>/dev/null)" = 0 ]; then
    ok "run 2: the manager started and handed out a container"
else
    nok "run 2: the manager started and handed out a container"
    show_run
fi
check_stopped "run 2 (EXIT trap after failing tests)" "$PID" "$PORT" "$CID"

# ------------------------------------------------------------------ run 3: the manager cannot start
BROKEN=$'images:\n   server:\n      context: false\n      commands: 5\n'
run_script nostart "$BROKEN"
S="$RUN_DIR/state"
echo "# run 3 (broken definitions): exit status $RUN_RC after ${RUN_SECS}s"
if [ "$RUN_RC" != 0 ] && [ "$RUN_RC" != 124 ] && [ "$RUN_RC" != 137 ]; then
    ok "the seed's script exits non-zero when the manager cannot start ($RUN_RC)"
else
    nok "the seed's script exits non-zero when the manager cannot start ($RUN_RC)"
    show_run
fi
if [ ! -e "$S/url" ]; then ok "run 3: the tests did not run"; else nok "run 3: the tests did not run"; fi
if [ -s "$RUN_DIR/script.err" ]; then
    ok "run 3: serve said why on stderr"
    head -n 5 "$RUN_DIR/script.err" | diag
else
    nok "run 3: serve said why on stderr"
fi
left=""
for _ in $(seq 1 30); do
    left=$(leftovers)
    [ -z "$left" ] && break
    sleep 0.1
done
if [ -z "$left" ]; then ok "run 3: no process left behind"; else
    nok "run 3: no process left behind"
    for p in $left; do printf '%s: %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; done | diag
fi
if compgen -G "$RUN_DIR/tmp/tmp.*" >/dev/null; then
    nok "run 3: the script's first cleanup removed the info file"
else
    ok "run 3: the script's first cleanup removed the info file"
fi

[ "$FAILED" = 0 ]

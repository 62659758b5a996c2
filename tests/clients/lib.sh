# shellcheck shell=bash
# Helpers for Strand client tests. Source this file, then:
#
#   start_broker [strand serve args...]   # e.g. start_broker --set num.partitions=3
#
# start_broker picks a free loopback port and a fresh temporary data dir,
# starts `$STRAND_BIN serve ...`, waits until the port accepts TCP and exports
#   BOOTSTRAP   host:port to give clients
#   BROKER_PID, BROKER_PORT, BROKER_LOG, BROKER_DATA
# kill9_broker SIGKILLs it (a crash); restart_broker starts it again on the same port and data
# dir with the same args.
# An EXIT trap stops the broker; if the script exits non-zero (including a
# failed start), the tail of the broker log is printed once. Temp dirs are removed unless KEEP_BROKER_DATA=1.
#
# Environment:
#   STRAND_BIN            broker binary (default: $REPO/target/release/strand)
#   STRAND_ARGS           extra args appended to every `strand serve` (word-split)
#   BROKER_READY_TIMEOUT  seconds to wait for the port (default 30)
#   BROKER_LOG_LINES      log lines to print on failure (default 80)

CLIENTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$CLIENTS_DIR/../.." && pwd)"
export REPO CLIENTS_DIR
STRAND_BIN="${STRAND_BIN:-$REPO/target/release/strand}"
export STRAND_BIN

BROKER_PID=""
BROKER_TMP=""
_BROKER_ARGS=()
_BROKER_RC=0
_ON_EXIT=()

# on_exit CMD: run CMD (a string, eval'd) when the script exits, before the
# broker is stopped. Use this instead of `trap ... EXIT`, which would replace
# the broker cleanup.
on_exit() { _ON_EXIT+=("$1"); }

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# free_port: print a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# port_open PORT: true if 127.0.0.1:PORT accepts a TCP connection.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

print_broker_log() {
    local n="${BROKER_LOG_LINES:-80}"
    if [ -n "${BROKER_LOG:-}" ] && [ -f "$BROKER_LOG" ]; then
        echo "----- broker log ($BROKER_LOG), last $n lines -----" >&2
        tail -n "$n" "$BROKER_LOG" >&2 || true
        echo "----- end of broker log -----" >&2
    fi
}

# stop_process PID SECONDS WHAT: SIGTERM, then SIGKILL if PID is still there after SECONDS;
# waits for it either way.
stop_process() {
    local pid="$1" secs="$2" what="$3"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local _
        for _ in $(seq 1 $((secs * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$what $pid did not stop on SIGTERM within ${secs}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
}

stop_broker() {
    stop_process "$BROKER_PID" 5 broker
    BROKER_PID=""
}

_broker_exit_trap() {
    local rc=$?
    set +e
    local c
    for c in "${_ON_EXIT[@]}"; do eval "$c"; done
    if [ "$rc" -ne 0 ]; then
        print_broker_log
    fi
    stop_broker
    if [ -n "$BROKER_TMP" ] && [ -d "$BROKER_TMP" ]; then
        if [ "${KEEP_BROKER_DATA:-0}" = 1 ]; then
            log "kept broker data/log in $BROKER_TMP"
        else
            rm -rf "$BROKER_TMP"
        fi
    fi
    exit "$rc"
}

trap _broker_exit_trap EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_broker [args...]: start a fresh broker; see header.
start_broker() {
    [ -x "$STRAND_BIN" ] || fail "broker binary not found or not executable: $STRAND_BIN (build with 'cargo build --release' or set STRAND_BIN)"
    if [ -z "$BROKER_TMP" ]; then
        BROKER_TMP="$(mktemp -d "${TMPDIR:-/tmp}/strand-test.XXXXXX")"
    fi
    _BROKER_ARGS=("$@")
    local attempt
    for attempt in 1 2 3; do
        BROKER_PORT="$(free_port)"
        BROKER_DATA="$BROKER_TMP/data-$attempt"
        BROKER_LOG="$BROKER_TMP/broker-$attempt.log"
        mkdir -p "$BROKER_DATA"
        _launch_broker
        _wait_broker_ready "${BROKER_READY_TIMEOUT:-30}" && return 0
        if grep -qi 'address already in use\|AddrInUse\|EADDRINUSE' "$BROKER_LOG"; then
            log "port $BROKER_PORT was taken (attempt $attempt); retrying on another port"
            continue
        fi
        fail "broker exited with status $_BROKER_RC before becoming ready"
    done
    fail "could not start broker after 3 attempts"
}

# _launch_broker: start `strand serve` on $BROKER_PORT / $BROKER_DATA with the args of
# start_broker, appending to $BROKER_LOG; sets BROKER_PID.
_launch_broker() {
    # shellcheck disable=SC2206
    local cmd=("$STRAND_BIN" serve --listen "127.0.0.1:$BROKER_PORT" --data-dir "$BROKER_DATA" "${_BROKER_ARGS[@]}" ${STRAND_ARGS:-})
    log "starting broker: ${cmd[*]}"
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "${cmd[@]}" >>"$BROKER_LOG" 2>&1 </dev/null &
    BROKER_PID=$!
}

# _wait_broker_ready TIMEOUT_S: 0 once the port accepts TCP (exports BOOTSTRAP...); 1 if the
# process exited first (its status in _BROKER_RC); fails the test on timeout.
_wait_broker_ready() {
    local deadline=$((SECONDS + $1))
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        if port_open "$BROKER_PORT"; then
            BOOTSTRAP="127.0.0.1:$BROKER_PORT"
            export BOOTSTRAP BROKER_PID BROKER_PORT BROKER_LOG BROKER_DATA
            log "broker pid $BROKER_PID ready at $BOOTSTRAP (data $BROKER_DATA)"
            return 0
        fi
        sleep 0.1
    done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        stop_broker
        fail "broker did not accept TCP on 127.0.0.1:$BROKER_PORT within ${1}s"
    fi
    wait "$BROKER_PID" 2>/dev/null && _BROKER_RC=0 || _BROKER_RC=$?
    BROKER_PID=""
    return 1
}

# kill9_broker: SIGKILL the broker (a crash) and reap it; port and data dir stay for
# restart_broker.
kill9_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        log "broker pid $BROKER_PID killed (SIGKILL)"
    fi
    BROKER_PID=""
}

# restart_broker: start the broker again on the same port and data dir with the same args
# (SIGKILLs it first if it still runs). Retries while the port is still held, for up to
# BROKER_REBIND_TIMEOUT seconds (default 90).
restart_broker() {
    kill9_broker
    echo "===== restart on port $BROKER_PORT at $(date +%H:%M:%S.%N) =====" >>"$BROKER_LOG"
    local deadline=$((SECONDS + ${BROKER_REBIND_TIMEOUT:-90}))
    while :; do
        _launch_broker
        _wait_broker_ready "${BROKER_READY_TIMEOUT:-30}" && return 0
        if ! tail -n 5 "$BROKER_LOG" | grep -qi 'address already in use\|AddrInUse\|EADDRINUSE'; then
            fail "broker exited with status $_BROKER_RC on restart"
        fi
        [ "$SECONDS" -lt "$deadline" ] || fail "broker could not bind 127.0.0.1:$BROKER_PORT again within ${BROKER_REBIND_TIMEOUT:-90}s"
        log "port $BROKER_PORT still in use after the kill; retrying"
        sleep 0.5
    done
}

# broker_alive: fail the test if the broker process has died.
broker_alive() {
    if [ -z "$BROKER_PID" ] || ! kill -0 "$BROKER_PID" 2>/dev/null; then
        fail "broker process is no longer running"
    fi
}

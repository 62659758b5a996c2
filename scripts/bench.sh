#!/usr/bin/env bash
# End-to-end benchmark of Strand against this machine's ceilings: one command, results into
# docs/benchmarks-strand.md (the detailed tables; BENCHMARKS.md carries the Strand vs Kafka page).
#
#   bash scripts/bench.sh [--quick] [--out FILE] [--data-dir DIR] [--no-rdkafka] [--no-install]
#   bash scripts/bench.sh --peer [--quick] [--cases PATTERNS] ...   Strand against Apache Kafka
#                          (scripts/bench/peer.py; its options: --peer --help)
#
# In one run it
#   1. measures this machine's ceilings: loopback TCP throughput (iperf3, 1 MiB writes, one stream;
#      a Python sink if iperf3 cannot be had), O_DIRECT sequential write throughput and 4 KiB
#      append+fdatasync latency on the data directory's filesystem (tuning/probe-disk.sh, fio);
#   2. builds librdkafka's rdkafka_performance from the sources rdkafka-sys vendors (once, cached
#      under target/bench-rdkafka/);
#   3. measures the load generators' own ceilings: strand perf produce and rdkafka_performance
#      against strand perf sink (answers at once, discards);
#   4. for 100 B and 1 KiB records, acks=1 and acks=all, 1, 8 and 64 partitions: a fresh broker
#      (release build, fresh data directory on the real disk), a short sizing run, unthrottled runs
#      of ~T_MAX seconds (the best of REPEAT_MAX is the maximum), then a run throttled to half that
#      many records/sec for the latency percentiles (measured from the intended send time);
#   5. rdkafka_performance for the 1 KiB cases (maximum, and latency at half load);
#   6. strand perf consume from the tail (right after producing, same broker) and from cold
#      segments (broker restarted, page cache dropped);
#   7. produce and consume together (issue 6's CPU target is per GiB produced and consumed): a
#      fresh broker with its default tail cache, a warm-up that fills it, then a consumer tails a
#      topic while 1 KiB records are produced to it (acks=1, 8 partitions); broker CPU per GiB;
#   8. writes the tables between <!-- bench:begin --> and <!-- bench:end --> of
#      docs/benchmarks-strand.md (or --out FILE), with the date, the machine, the load average and every command run.
#
# The machine may be shared: before each case the script waits (up to QUIET_WAIT s) for other work
# to use under half a core, and every row reports the CPU other processes used during its run.
# Broker CPU is utime+stime of the broker process (/proc/PID/stat) before and after each run,
# divided by the payload GiB moved (records x record size). MB/MiB/GiB are powers of 2 throughout.
#
# Options:
#   --quick        a few cases, short runs (smoke test, ~1 minute plus a first rdkafka build)
#   --out FILE     write the results section into FILE instead of docs/benchmarks-strand.md (created
#                  if missing)
#   --data-dir DIR where the brokers' data directories and the fio file go (default
#                  target/bench-data; must be a real disk filesystem, not tmpfs)
#   --no-rdkafka   skip building and running rdkafka_performance
#   --no-install   do not apt-get install iperf3/fio (fall back to the Python sink; fio is required)
# Environment: STRAND_BIN (default target/release/strand; built with cargo if missing).
#   STRAND_BEFORE_BIN: another broker build (e.g. one from before a change) that step 7 also runs,
#   alternating with STRAND_BIN round by round (the load generator is STRAND_BIN's in both).
# Logs of every run: target/bench-logs/<timestamp>/ (printed at the end).
# Exit status: 0 if every case ran, 1 if some case failed (the tables are still written), 2 on a
# setup error.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
USAGE="usage: bash scripts/bench.sh [--quick] [--out FILE] [--data-dir DIR] [--no-rdkafka] [--no-install] | --peer [peer.py options]"

# --peer: Strand against Apache Kafka (scripts/bench/peer.py, which takes the remaining options).
if [ "${1:-}" = --peer ]; then
    shift
    exec python3 "$REPO/scripts/bench/peer.py" "$@"
fi

MODE=full
OUT_FILE="$REPO/docs/benchmarks-strand.md"
DATA_ROOT="$REPO/target/bench-data"
RDKAFKA=1
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --out) OUT_FILE="${2:?--out needs a file}"; shift ;;
        --data-dir) DATA_ROOT="${2:?--data-dir needs a directory}"; shift ;;
        --no-rdkafka) RDKAFKA=0 ;;
        --no-install) INSTALL=0 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench: unknown argument: $1 ($USAGE)" >&2; exit 2 ;;
    esac
    shift
done

T_START=$SECONDS
say() { printf '[bench %3ds] %s\n' "$((SECONDS - T_START))" "$*"; }
warn() { printf '[bench %3ds] WARNING: %s\n' "$((SECONDS - T_START))" "$*" >&2; WARNINGS+=("$*"); }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 2; }
WARNINGS=()
FAILED=0

# --- sizes of the runs ------------------------------------------------------------------------
if [ "$MODE" = full ]; then
    T_MAX=6                         # seconds of each unthrottled run (best of REPEAT_MAX)
    T_HALF=6                        # seconds of the half-load run
    SIZING_BYTES=$((256 << 20))     # sizing run before each case
    MAX_RUN_BYTES=$((8 << 30))      # cap of one run (disk space)
    REPEAT_MAX=2                    # unthrottled runs per case; the best is reported
    QUIET_WAIT=20                   # seconds to wait, before a case, for other load to settle
    CONSUME_BYTES=$((2 << 30))      # data set consumed from the tail and cold
    IPERF_SECS=5
    FIO_RUNTIME=5
    FIO_SIZE=1G
    SIZES=(100 1024)
    ACKS_LIST=(1 all)
    PARTS_LIST=(1 8 64)
    RK_PARTS=(1 8 64)
    CONSUME_CASES=("1024 1" "1024 8" "1024 64" "100 8")
    TOGETHER_ROUNDS=3               # produce-and-consume-together runs (each on a fresh broker)
    SINK_SIZES=(100 1024)
    DEFAULT_BATCH_ROW=1
else
    T_MAX=2
    T_HALF=2
    SIZING_BYTES=$((32 << 20))
    MAX_RUN_BYTES=$((1 << 30))
    REPEAT_MAX=1
    QUIET_WAIT=0
    CONSUME_BYTES=$((256 << 20))
    IPERF_SECS=2
    FIO_RUNTIME=1
    FIO_SIZE=256M
    SIZES=(1024)
    ACKS_LIST=(1 all)
    PARTS_LIST=(8)
    RK_PARTS=(8)
    CONSUME_CASES=("1024 8")
    TOGETHER_ROUNDS=1
    SINK_SIZES=(1024)
    DEFAULT_BATCH_ROW=0
fi
# Producer settings of every strand perf run: kafka-producer-perf-test's defaults (16 KiB batches)
# measure per-request cost more than the broker's throughput; 256 KiB batches with linger.ms=5 are
# what a throughput-minded producer uses (librdkafka's own default batch is ~1 MB). One row with
# the default batch.size is kept for comparison.
BATCH_SIZE=262144
LINGER_MS=5
# rdkafka_performance's sizing run must outlast its first once-a-second report (its rate is read
# from there: the end of a short run is dominated by librdkafka's final drain).
RK_SIZING_BYTES=$((512 << 20))
CONSUME_CONNS=2

# --- preflight --------------------------------------------------------------------------------
STAMP="$(date -u +%Y%m%d-%H%M%S)"
LOG_DIR="$REPO/target/bench-logs/$STAMP-$$"
mkdir -p "$LOG_DIR" || die "cannot create $LOG_DIR"
# Keep the logs of the last 10 runs.
ls -1dt "$REPO/target/bench-logs"/*/ 2>/dev/null | tail -n +11 | while read -r old; do rm -rf "$old"; done
: >"$LOG_DIR/commands.txt"
for t in awk sed python3 timeout getconf; do
    command -v "$t" >/dev/null 2>&1 || die "$t is required"
done
CLK_TCK="$(getconf CLK_TCK)"

SRC_BIN="${STRAND_BIN:-$REPO/target/release/strand}"
if [ ! -x "$SRC_BIN" ]; then
    [ -z "${STRAND_BIN:-}" ] || die "STRAND_BIN=$SRC_BIN is not an executable"
    command -v cargo >/dev/null 2>&1 || die "no release build at $SRC_BIN and no cargo to build it"
    say "no release build: cargo build --release"
    (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
fi
# A private copy, so a rebuild during the run does not change the binary under us.
BIN="$LOG_DIR/strand"
cp "$SRC_BIN" "$BIN" || die "cannot copy $SRC_BIN"
BEFORE_BIN=""
if [ -n "${STRAND_BEFORE_BIN:-}" ]; then
    [ -x "$STRAND_BEFORE_BIN" ] || die "STRAND_BEFORE_BIN=$STRAND_BEFORE_BIN is not an executable"
    BEFORE_BIN="$LOG_DIR/strand-before"
    cp "$STRAND_BEFORE_BIN" "$BEFORE_BIN" || die "cannot copy $STRAND_BEFORE_BIN"
fi
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    COMMIT="$COMMIT (+ uncommitted changes in src/)"
fi

mkdir -p "$DATA_ROOT" || die "cannot create $DATA_ROOT"
DATA_ROOT="$(cd "$DATA_ROOT" && pwd)"
FSKIND="$(stat -f -c %T "$DATA_ROOT" 2>/dev/null || echo unknown)"
FSTYPE="$(findmnt -n -o FSTYPE -T "$DATA_ROOT" 2>/dev/null | tail -n 1)"
FSTYPE="${FSTYPE:-$FSKIND}"
FSDEV="$(df -P "$DATA_ROOT" 2>/dev/null | awk 'NR==2 {print $1}')"
case "$FSKIND" in
    tmpfs|ramfs) die "$DATA_ROOT is on $FSTYPE: the benchmark needs a real disk (use --data-dir on one)" ;;
esac
AVAIL_GB="$(df -Pk "$DATA_ROOT" | awk 'NR==2 {printf "%d", $4 / 1048576}')"
[ "$MODE" = full ] && NEED_GB=24 || NEED_GB=3
[ "$AVAIL_GB" -ge "$NEED_GB" ] || die "only $AVAIL_GB GiB free under $DATA_ROOT; the $MODE run needs about $NEED_GB GiB"
RUN_ROOT="$DATA_ROOT/run-$STAMP-$$"

# --- cleanup ----------------------------------------------------------------------------------
BROKER_PID=""
SINK_PID=""
IPERF_PID=""
cleanup() {
    local p
    for p in "$BROKER_PID" "$SINK_PID" "$IPERF_PID"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$RUN_ROOT"
    rm -f "$LOG_DIR/strand" "$LOG_DIR/strand-before"
}
trap cleanup EXIT
trap 'echo "[bench] interrupted" >&2; exit 130' INT TERM

# --- helpers ----------------------------------------------------------------------------------
calc() { awk "BEGIN { printf \"%s\", $* }"; }            # calc 'expr' -> number (awk syntax)
fmt() { awk -v v="$2" "BEGIN { printf \"$1\", v }"; }    # fmt '%.1f' value

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Shows a command as it can be re-run: our copies named by what they are.
show_cmd() {
    local out="" a
    for a in "$@"; do
        case "$a" in
            "$BIN") a=strand ;;
            "${RK_BIN:-//}") a=rdkafka_performance ;;
        esac
        case "$a" in *[!A-Za-z0-9_./:=,+@%-]*) a="'$a'" ;; esac
        a="${a//$RUN_ROOT/\$DATA}"
        out+="$a "
    done
    printf '%s' "${out% }"
}
record_cmd() { show_cmd "$@" >>"$LOG_DIR/commands.txt"; echo >>"$LOG_DIR/commands.txt"; }

# run_timed LOG LIMIT_SECONDS CMD...: runs CMD with output in LOG, its user+sys CPU seconds in
# RUN_CPU and wall seconds in RUN_WALL; returns CMD's exit status (124 on timeout).
run_timed() {
    local log="$1" limit="$2" rc tf="$LOG_DIR/.time"
    shift 2
    record_cmd "$@"
    local TIMEFORMAT='%U %S %R'
    { time timeout -k 5 "$limit" "$@" >"$log" 2>&1; } 2>"$tf"
    rc=$?
    RUN_CPU="$(awk 'END { printf "%.2f", $1 + $2 }' "$tf")"
    RUN_WALL="$(awk 'END { printf "%.2f", $3 }' "$tf")"
    return $rc
}

cpu_ticks() { # PID -> "utime stime" in ticks (whole process, all threads); "0 0" without PID
    if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then
        sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
    else
        echo "0 0"
    fi
}
busy_ticks() { # all CPUs' non-idle ticks (user nice system irq softirq steal)
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}
# meter_start / meter_stop around a run_timed client run: M_BCPU broker CPU s, M_BSYS of which
# kernel s, M_OTHER cores used meanwhile by everything else on the machine (other work, not the
# broker nor the client).
# The metered server is the broker, or METER_PID (the sink) when set.
meter_start() { M_B0="$(cpu_ticks "${METER_PID:-$BROKER_PID}")"; M_T0="$(busy_ticks)"; }
meter_stop() {
    local b1 t1
    b1="$(cpu_ticks "${METER_PID:-$BROKER_PID}")"
    t1="$(busy_ticks)"
    read -r M_BCPU M_BSYS M_OTHER < <(awk -v a="$M_B0" -v b="$b1" -v t0="$M_T0" -v t1="$t1" -v hz="$CLK_TCK" \
        -v c="$RUN_CPU" -v w="$RUN_WALL" 'BEGIN {
            split(a, x, " "); split(b, y, " ")
            bc = (y[1] + y[2] - x[1] - x[2]) / hz; bs = (y[2] - x[2]) / hz
            o = (w > 0) ? ((t1 - t0) / hz - bc - c) / w : 0; if (o < 0) o = 0
            printf "%.2f %.2f %.2f\n", bc, bs, o }')
}

LOAD_MIN=""
LOAD_MAX=""
sample_load() {
    local l
    l="$(cut -d' ' -f1 /proc/loadavg)"
    if [ -z "$LOAD_MIN" ] || awk -v a="$l" -v b="$LOAD_MIN" 'BEGIN { exit !(a < b) }'; then LOAD_MIN="$l"; fi
    if [ -z "$LOAD_MAX" ] || awk -v a="$l" -v b="$LOAD_MAX" 'BEGIN { exit !(a > b) }'; then LOAD_MAX="$l"; fi
}

BROKER_SEQ=0
BROKER_PORT=""
BROKER_LOG=""
# start_broker DATA_DIR PARTITIONS: a broker on a free port; sets BROKER_PID, BROKER_PORT.
start_broker() { # DIR PARTITIONS [extra serve arguments...]
    local dir="$1" parts="$2" attempt i
    local extra=("${@:3}")
    mkdir -p "$dir"
    for attempt in 1 2 3; do
        BROKER_SEQ=$((BROKER_SEQ + 1))
        BROKER_LOG="$LOG_DIR/broker-$BROKER_SEQ.log"
        BROKER_PORT="$(free_port)"
        local cmd=("${SERVE_BIN:-$BIN}" serve --listen "127.0.0.1:$BROKER_PORT" --data-dir "$dir" --set "num.partitions=$parts" "${extra[@]}")
        record_cmd "${cmd[@]}"
        STRAND_LOG=warn "${cmd[@]}" >"$BROKER_LOG" 2>&1 &
        BROKER_PID=$!
        for i in $(seq 1 600); do
            if grep -q "strand listening on" "$BROKER_LOG" 2>/dev/null; then
                return 0
            fi
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
        BROKER_PID=""
        if grep -q "already in use" "$BROKER_LOG"; then
            continue # another process took the port between the check and the bind
        fi
        echo "---- $BROKER_LOG:" >&2
        tail -n 20 "$BROKER_LOG" >&2
        die "the broker did not start (log above)"
    done
    die "the broker could not bind a free port three times"
}
stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    local i
    kill -TERM "$BROKER_PID" 2>/dev/null
    for i in $(seq 1 100); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=""
}

DROPPED_CACHES=no
drop_caches() {
    sync
    if { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then DROPPED_CACHES=yes; else DROPPED_CACHES=no; fi
}

# records_for BYTES_PER_SEC_RECS... helpers
clamp_records() { # RECORDS SIZE -> records within [1000, MAX_RUN_BYTES/SIZE]
    awk -v n="$1" -v s="$2" -v cap="$MAX_RUN_BYTES" 'BEGIN { m = int(cap / s); n = int(n); if (n > m) n = m; if (n < 1000) n = 1000; print n }'
}

# perf_produce LOG PORT TOPIC SIZE RECORDS THROUGHPUT ACKS BATCH
# Sets P_RECS P_RPS P_MIBS P_P50 P_P99 P_P999 (ms) P_RT999 (request round trip p99.9, ms: from the
# request's write to its response, i.e. without the time records waited in a batch)
# P_BCPU (broker CPU s, if a broker runs)
# P_CCPU (client CPU s) P_WALL; returns 1 on failure.
perf_produce() {
    local log="$1" port="$2" topic="$3" size="$4" n="$5" tput="$6" acks="$7" batch="$8"
    local limit line us
    # Generous limit: the expected time at 1/10 of the rate it is sized for, plus a minute.
    limit=$(( (T_MAX > T_HALF ? T_MAX : T_HALF) * 10 + 60 ))
    meter_start
    run_timed "$log" "$limit" "$BIN" perf produce --topic "$topic" --num-records "$n" --throughput "$tput" \
        --record-size "$size" --producer-props "bootstrap.servers=127.0.0.1:$port" "acks=$acks" \
        "batch.size=$batch" "linger.ms=$LINGER_MS" --latency-us --reporting-interval 100000
    local rc=$?
    meter_stop
    P_BCPU="$M_BCPU" P_BSYS="$M_BSYS" P_OTHER="$M_OTHER"
    P_CCPU="$RUN_CPU"
    P_WALL="$RUN_WALL"
    line="$(grep -E '^[0-9]+ records sent, [0-9.]+ records/sec .* 99\.9th\.$' "$log" | head -n 1)"
    us="$(grep -E ' us 99\.9th\.$' "$log" | head -n 1)"
    if [ "$rc" -ne 0 ] || [ -z "$line" ] || [ -z "$us" ] || grep -q '^error' "$log"; then
        warn "strand perf produce failed (exit $rc), see $log: $(grep -m1 -i error "$log")"
        P_RECS=0 P_RPS=0 P_MIBS=0 P_P50=0 P_P99=0 P_P999=0 P_RT999=0
        return 1
    fi
    P_RECS="$(awk '{ print $1 }' <<<"$line")"
    P_RPS="$(awk '{ printf "%.0f", $4 }' <<<"$line")"
    P_MIBS="$(calc "$P_RPS * $size / 1048576")"
    P_P50="$(sed -E 's/.* ([0-9.]+) us 50th.*/\1/' <<<"$us")"
    P_P99="$(sed -E 's/.* ([0-9.]+) us 99th.*/\1/' <<<"$us")"
    P_P999="$(sed -E 's/.* ([0-9.]+) us 99\.9th.*/\1/' <<<"$us")"
    P_P50="$(calc "$P_P50 / 1000")" P_P99="$(calc "$P_P99 / 1000")" P_P999="$(calc "$P_P999 / 1000")"
    P_RT999="$(grep -E '^[0-9]+ requests, round trip .* us 99\.9th, [0-9]+ us max\.$' "$log" | head -n 1 \
        | sed -E 's/.* ([0-9]+) us 99\.9th.*/\1/')"
    P_RT999="$(calc "${P_RT999:-0} / 1000")"
    return 0
}

# sized_max LOGPREFIX PORT TOPIC SIZE ACKS BATCH: sizing run, then the unthrottled run of ~T_MAX s.
# With REPEAT_MAX > 1 the unthrottled run is repeated and the fastest one kept (the machine is
# shared: the slower run is the more disturbed one).
P_VARS="P_RECS P_RPS P_MIBS P_P50 P_P99 P_P999 P_RT999 P_BCPU P_BSYS P_OTHER P_CCPU P_WALL"
K_VARS="K_RECS K_RPS K_RPS_END K_MIBS K_P50 K_P99 K_P999 K_BCPU K_BSYS K_OTHER K_CCPU"
stash() { local v; for v in $1; do printf -v "S_$v" '%s' "${!v:-}"; done; }
unstash() { local v s; for v in $1; do s="S_$v"; printf -v "$v" '%s' "${!s:-}"; done; }
sized_max() {
    local pre="$1" port="$2" topic="$3" size="$4" acks="$5" batch="$6" n i ok=1 best=-1
    n="$(clamp_records "$(calc "$SIZING_BYTES / $size")" "$size")"
    perf_produce "$pre-sizing.log" "$port" "$topic" "$size" "$n" -1 "$acks" "$batch" || return 1
    n="$(clamp_records "$(calc "$P_RPS * $T_MAX")" "$size")"
    for i in $(seq 1 "$REPEAT_MAX"); do
        if perf_produce "$pre-max$i.log" "$port" "$topic" "$size" "$n" -1 "$acks" "$batch"; then
            if [ "$P_RPS" -gt "$best" ]; then best="$P_RPS"; stash "$P_VARS"; fi
        else
            ok=0
        fi
    done
    [ "$best" -ge 0 ] || return 1
    unstash "$P_VARS"
    [ "$ok" = 1 ]
}
# rk_max LOGPREFIX PORT TOPIC SIZE RECORDS ACKS: rdkafka_performance unthrottled, best of REPEAT_MAX.
rk_max() {
    local pre="$1" i ok=1 best=-1
    shift
    for i in $(seq 1 "$REPEAT_MAX"); do
        if rk_produce "$pre-max$i.log" "$@"; then
            if [ "$(fmt '%.0f' "$K_RPS")" -gt "$best" ]; then best="$(fmt '%.0f' "$K_RPS")"; stash "$K_VARS"; fi
        else
            ok=0
        fi
    done
    [ "$best" -ge 0 ] || return 1
    unstash "$K_VARS"
    [ "$ok" = 1 ]
}

# wait_broker_idle: after a maximum run, waits (up to 10 s) until the broker uses under 5% of a
# core over half a second, so the half-load run does not queue behind the flushes and cache
# evictions the maximum run left (one row measured 188 ms p99.9 that way).
wait_broker_idle() {
    local a b i
    for i in $(seq 1 20); do
        a="$(cpu_ticks "$BROKER_PID" | awk '{ print $1 + $2 }')"
        sleep 0.5
        b="$(cpu_ticks "$BROKER_PID" | awk '{ print $1 + $2 }')"
        awk -v a="$a" -v b="$b" -v hz="$CLK_TCK" 'BEGIN { exit !((b - a) / hz < 0.025) }' && return 0
    done
    return 0
}

QUIET_WAITED=0
QUIET_BUSY_STARTS=0
# wait_quiet: before a case, waits up to QUIET_WAIT s for the rest of the machine to use less than
# half a core (sampled over 1 s; nothing of ours is busy then).
wait_quiet() {
    local t0 t1 w=0
    [ "$QUIET_WAIT" -gt 0 ] || return 0
    while :; do
        t0="$(busy_ticks)"
        sleep 1
        t1="$(busy_ticks)"
        if awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { exit !((b - a) / hz < 0.5) }'; then
            break
        fi
        w=$((w + 1))
        if [ "$w" -ge "$QUIET_WAIT" ]; then
            QUIET_BUSY_STARTS=$((QUIET_BUSY_STARTS + 1))
            break
        fi
    done
    QUIET_WAITED=$((QUIET_WAITED + w))
}

# rk_produce LOG PORT TOPIC SIZE RECORDS ACKS [RATE]: rdkafka_performance; with RATE, throttled
# with per-message latency. Sets K_RECS K_MIBS K_RPS K_BCPU K_CCPU K_P50 K_P99 K_P999 (ms).
rk_produce() {
    local log="$1" port="$2" topic="$3" size="$4" n="$5" acks="$6" rate="${7:-}" line
    local extra=() lat="${1%.log}.lat"
    [ -n "$rate" ] && extra=(-r "$rate" -l -A "$lat")
    rm -f "$lat"
    meter_start
    run_timed "$log" $(( T_MAX * 10 + 60 )) "$RK_BIN" -P -t "$topic" -s "$size" -c "$n" \
        -b "127.0.0.1:$port" -X "acks=$acks" "${extra[@]}"
    local rc=$?
    meter_stop
    K_BCPU="$M_BCPU" K_BSYS="$M_BSYS" K_OTHER="$M_OTHER"
    K_CCPU="$RUN_CPU"
    K_P50=0 K_P99=0 K_P999=0
    # % N messages produced (B bytes), D delivered (offset X, F failed) in T ms: R msgs/s and M MB/s, ...
    line="$(grep -E '^% [0-9]+ messages produced' "$log" | tail -n 1)"
    if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
        warn "rdkafka_performance failed (exit $rc), see $log"
        K_RECS=0 K_RPS=0 K_MIBS=0
        return 1
    fi
    local delivered failed ms
    delivered="$(sed -E 's/.*\), ([0-9]+) delivered.*/\1/' <<<"$line")"
    failed="$(sed -E 's/.*, ([0-9]+) failed\).*/\1/' <<<"$line")"
    ms="$(sed -E 's/.* in ([0-9]+)ms:.*/\1/' <<<"$line")"
    K_RECS="$delivered"
    # The rate while sending: from the last once-a-second line printed before every record was
    # handed over (librdkafka's broker thread may sleep up to 1 s before sending the last queued
    # records, which would otherwise count against the broker); the final line if there is none.
    local steady
    steady="$(grep -E '^% [0-9]+ messages produced' "$log" | sed -E 's/^% ([0-9]+) messages produced.*\), ([0-9]+) delivered.* in ([0-9]+)ms:.*/\1 \2 \3/' |
        awk -v n="$n" '$1 < n && $3 >= 1000 { r = $2 / ($3 / 1000) } END { if (r > 0) printf "%.0f", r }')"
    K_RPS="${steady:-$(calc "$delivered / ($ms / 1000)")}"
    K_RPS_END="$(calc "$delivered / ($ms / 1000)")"
    K_MIBS="$(calc "$K_RPS * $size / 1048576")"
    if [ "$delivered" != "$n" ] || [ "$failed" != 0 ]; then
        warn "rdkafka_performance delivered $delivered of $n ($failed failed), see $log"
        return 1
    fi
    if [ -n "$rate" ] && [ -s "$lat" ]; then
        read -r K_P50 K_P99 K_P999 < <(sort -n "$lat" | awk '{ v[NR] = $1 } END {
            i50 = int(NR * 0.50); i99 = int(NR * 0.99); i999 = int(NR * 0.999)
            if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1; if (i999 < 1) i999 = 1
            printf "%.3f %.3f %.3f\n", v[i50] / 1000, v[i99] / 1000, v[i999] / 1000 }')
        rm -f "$lat"
    fi
    return 0
}

# perf_consume LOG PORT TOPIC RECORDS SIZE: sets C_MIBS C_RPS C_BCPU C_CCPU; returns 1 on failure.
perf_consume() {
    local log="$1" port="$2" topic="$3" n="$4" size="$5" row
    meter_start
    run_timed "$log" 300 "$BIN" perf consume --bootstrap-server "127.0.0.1:$port" --topic "$topic" \
        --messages "$n" --timeout 10000 --connections "$CONSUME_CONNS"
    local rc=$?
    meter_stop
    C_BCPU="$M_BCPU" C_BSYS="$M_BSYS" C_OTHER="$M_OTHER"
    C_CCPU="$RUN_CPU"
    # start.time, end.time, MB, MB.sec, nMsg, nMsg.sec, rebalance.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    row="$(grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2} ' "$log" | tail -n 1)"
    if [ "$rc" -ne 0 ] || [ -z "$row" ]; then
        warn "strand perf consume failed (exit $rc), see $log"
        C_MIBS=0 C_RPS=0
        return 1
    fi
    local got
    got="$(awk -F', ' '{ print $5 }' <<<"$row")"
    C_MIBS="$(awk -F', ' '{ printf "%.1f", $9 }' <<<"$row")"
    C_RPS="$(awk -F', ' '{ printf "%.0f", $10 }' <<<"$row")"
    if [ "$got" != "$n" ]; then
        warn "strand perf consume read $got of $n records, see $log"
        return 1
    fi
    return 0
}

per_gib() { # CPU_SECONDS RECORDS SIZE -> CPU seconds per GiB of payload
    awk -v c="$1" -v n="$2" -v s="$3" 'BEGIN { b = n * s; if (b <= 0) { print "-"; exit } printf "%.2f", c / (b / 1073741824) }'
}
label_size() { [ "$1" = 1024 ] && echo "1 KiB" || echo "$1 B"; }

# --- machine ----------------------------------------------------------------------------------
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
CPU_MODEL="${CPU_MODEL:-unknown}"
CORES="$(nproc)"
KERNEL="$(uname -sr)"
MEM_GB="$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
sample_load
DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
say "mode $MODE; $CORES cores ($CPU_MODEL), $KERNEL, data on $FSTYPE ($FSDEV) at $DATA_ROOT; load average $LOAD_START"
say "logs in $LOG_DIR"

# --- 1. ceilings ------------------------------------------------------------------------------
apt_install() { # PACKAGE: idempotent; returns 1 if it cannot be installed
    command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ "$INSTALL" = 1 ] || return 1
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$1" >>"$LOG_DIR/apt.log" 2>&1 && return 0
    apt-get update -q >>"$LOG_DIR/apt.log" 2>&1
    apt-get install -y -q "$1" >>"$LOG_DIR/apt.log" 2>&1
}

LOOP_TOOL=""
LOOP_MIBS=0
if ! command -v iperf3 >/dev/null 2>&1; then
    say "installing iperf3 (apt-get)"
    apt_install iperf3 || warn "iperf3 could not be installed; using the Python loopback sink"
fi
if command -v iperf3 >/dev/null 2>&1; then
    say "ceiling 1/2: loopback TCP, iperf3, 1 MiB writes, ${IPERF_SECS}s"
    port="$(free_port)"
    record_cmd iperf3 -s -1 -B 127.0.0.1 -p "$port"
    iperf3 -s -1 -B 127.0.0.1 -p "$port" >"$LOG_DIR/iperf3-server.log" 2>&1 &
    IPERF_PID=$!
    for i in $(seq 1 50); do
        if command -v ss >/dev/null 2>&1; then
            ss -ltn 2>/dev/null | grep -q "127.0.0.1:$port " && break
        elif [ "$i" -ge 10 ]; then
            break
        fi
        sleep 0.1
    done
    if run_timed "$LOG_DIR/iperf3.json" $((IPERF_SECS + 30)) iperf3 -c 127.0.0.1 -p "$port" -l 1M -t "$IPERF_SECS" -J; then
        LOOP_MIBS="$(python3 -c "import json,sys; d = json.load(open(sys.argv[1])); print('%.1f' % (d['end']['sum_received']['bits_per_second'] / 8 / 1048576))" "$LOG_DIR/iperf3.json" 2>/dev/null)"
        LOOP_TOOL="iperf3 $(iperf3 --version 2>/dev/null | awk 'NR==1 { print $2 }'), one stream, 1 MiB writes"
    else
        warn "iperf3 client failed (see $LOG_DIR/iperf3.json); using the Python loopback sink"
    fi
    kill "$IPERF_PID" 2>/dev/null
    wait "$IPERF_PID" 2>/dev/null
    IPERF_PID=""
fi
if [ -z "$LOOP_TOOL" ] || [ -z "$LOOP_MIBS" ] || [ "$LOOP_MIBS" = 0 ]; then
    say "ceiling 1/2: loopback TCP, Python sink, 1 MiB writes, ${IPERF_SECS}s"
    cat >"$LOG_DIR/loopsink.py" <<'PY'
# A plain TCP sink on loopback: one process reads into a 1 MiB buffer and discards, the other
# writes 1 MiB chunks for the given seconds. Prints MiB/s received.
import os, socket, sys, time
secs = float(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
r, w = os.pipe()
if os.fork() == 0:
    c, _ = srv.accept()
    buf = memoryview(bytearray(1 << 20))
    n = 0
    t0 = None
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        if t0 is None:
            t0 = time.monotonic()
        n += k
    os.write(w, ("%f\n" % (n / (time.monotonic() - t0) / 1048576)).encode())
    os._exit(0)
cl = socket.create_connection(("127.0.0.1", port))
chunk = b"x" * (1 << 20)
end = time.monotonic() + secs
while time.monotonic() < end:
    cl.sendall(chunk)
cl.close()
print(os.read(r, 100).decode().strip())
os.wait()
PY
    if run_timed "$LOG_DIR/loopsink.log" $((IPERF_SECS + 30)) python3 "$LOG_DIR/loopsink.py" "$IPERF_SECS"; then
        LOOP_MIBS="$(fmt '%.1f' "$(tail -n 1 "$LOG_DIR/loopsink.log")")"
        LOOP_TOOL="Python sink, one stream, 1 MiB writes"
    else
        die "the loopback measurement failed: $LOG_DIR/loopsink.log"
    fi
fi
say "  loopback: $LOOP_MIBS MiB/s ($LOOP_TOOL)"

say "ceiling 2/2: disk, tuning/probe-disk.sh (fio, O_DIRECT), ${FIO_RUNTIME}s per job, $FIO_SIZE file"
probe_args=(--runtime "$FIO_RUNTIME" --size "$FIO_SIZE")
[ "$INSTALL" = 1 ] || probe_args+=(--no-install)
run_timed "$LOG_DIR/probe-disk.log" 300 bash "$REPO/tuning/probe-disk.sh" "${probe_args[@]}" "$DATA_ROOT" \
    || { tail -n 20 "$LOG_DIR/probe-disk.log" >&2; die "tuning/probe-disk.sh failed (output above)"; }
kv() { sed -n "s/^$1=//p" "$LOG_DIR/probe-disk.log" | head -n 1; }
DISK_MIBS="$(kv seq_write_MBps)"
DISK_READ_MIBS="$(kv seq_read_MBps)"
SYNC_P50_US="$(kv append_fdatasync_p50_us)"
SYNC_P99_US="$(kv append_fdatasync_p99_us)"
DISK_PARTS="$(sed -n 's/^# parts: //p' "$LOG_DIR/probe-disk.log")"
[ -n "$DISK_MIBS" ] && [ -n "$SYNC_P50_US" ] || die "could not read probe-disk.sh's figures: $LOG_DIR/probe-disk.log"
say "  O_DIRECT sequential write: $DISK_MIBS MiB/s, read: $DISK_READ_MIBS MiB/s; 4 KiB append+fdatasync p50 $SYNC_P50_US us, p99 $SYNC_P99_US us"
PRODUCE_CEIL="$(awk -v a="$LOOP_MIBS" -v b="$DISK_MIBS" 'BEGIN { print (a < b ? a : b) }')"
# Cold consumption (page cache dropped) cannot outrun the disk's reads nor the loopback.
COLD_CEIL="$(awk -v a="$LOOP_MIBS" -v b="$DISK_READ_MIBS" 'BEGIN { print (a < b ? a : b) }')"
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0) print "-"; else printf "%.0f%%", 100 * a / b }'; }

# --- 2. rdkafka_performance -------------------------------------------------------------------
RK_BIN=""
RK_NOTE=""
build_rdkafka() { # scripts/bench/build-rdkafka.sh: builds once, cached in target/bench-rdkafka/
    local out t
    for t in cc make; do
        command -v "$t" >/dev/null 2>&1 || apt_install build-essential || { RK_NOTE="no C compiler/make"; return 1; }
    done
    out="$(bash "$REPO/scripts/bench/build-rdkafka.sh" "$LOG_DIR/rdkafka-build.log" 2>"$LOG_DIR/rdkafka-build.err")" || {
        RK_NOTE="$(tail -n 1 "$LOG_DIR/rdkafka-build.err")"
        return 1
    }
    RK_BIN="$(tail -n 1 <<<"$out")"
    RK_NOTE="librdkafka from $(basename "$RK_BIN" | sed 's/^rdkafka_performance-//')"
}
if [ "$RDKAFKA" = 1 ]; then
    say "rdkafka_performance"
    if build_rdkafka; then
        say "  $RK_BIN"
    else
        warn "rdkafka_performance unavailable: $RK_NOTE"
    fi
else
    RK_NOTE="skipped (--no-rdkafka)"
fi

# --- 3. the load generator's ceiling ----------------------------------------------------------
: >"$LOG_DIR/sink.tsv"
say "load generator ceiling: strand perf produce and rdkafka_performance -> strand perf sink"
SINK_PORT="$(free_port)"
record_cmd "$BIN" perf sink --listen "127.0.0.1:$SINK_PORT" --partitions 8
"$BIN" perf sink --listen "127.0.0.1:$SINK_PORT" --partitions 8 >"$LOG_DIR/sink.log" 2>&1 &
SINK_PID=$!
sleep 0.5
kill -0 "$SINK_PID" 2>/dev/null || die "strand perf sink did not start: $(cat "$LOG_DIR/sink.log")"
# sink.tsv: client size recs rps mibs ccpu | half_rps p50 p99 p999 | ok | other_cores | rt999
sink_case() { # CLIENT SIZE
    local client="$1" size="$2" recs=0 rps=0 mibs=0 ccpu=0 other=0 hrps=0 p50=0 p99=0 p999=0 rt999=- ok=failed n
    wait_quiet
    if [ "$client" = strand ]; then
        if sized_max "$LOG_DIR/sink-$client-$size" "$SINK_PORT" "sink-$size" "$size" 1 "$BATCH_SIZE"; then
            recs="$P_RECS" rps="$P_RPS" mibs="$P_MIBS" ccpu="$P_CCPU" other="$P_OTHER"
            hrps=$(( rps / 2 ))
            n="$(clamp_records "$(calc "$hrps * $T_HALF")" "$size")"
            perf_produce "$LOG_DIR/sink-$client-$size-half.log" "$SINK_PORT" "sink-$size" "$size" "$n" "$hrps" 1 "$BATCH_SIZE" \
                && p50="$P_P50" p99="$P_P99" p999="$P_P999" rt999="$P_RT999" ok=ok
        fi
    else
        n="$(clamp_records "$(calc "$RK_SIZING_BYTES / $size")" "$size")"
        if rk_produce "$LOG_DIR/sink-$client-$size-sizing.log" "$SINK_PORT" "sink-rk-$size" "$size" "$n" 1; then
            n="$(clamp_records "$(calc "$K_RPS * $T_MAX")" "$size")"
            if rk_max "$LOG_DIR/sink-$client-$size" "$SINK_PORT" "sink-rk-$size" "$size" "$n" 1; then
                recs="$K_RECS" rps="$(fmt '%.0f' "$K_RPS")" mibs="$K_MIBS" ccpu="$K_CCPU" other="$K_OTHER"
                hrps=$(( rps / 2 ))
                n="$(clamp_records "$(calc "$hrps * $T_HALF")" "$size")"
                rk_produce "$LOG_DIR/sink-$client-$size-half.log" "$SINK_PORT" "sink-rk-$size" "$size" "$n" 1 "$hrps" \
                    && p50="$K_P50" p99="$K_P99" p999="$K_P999" ok=ok
            fi
        fi
    fi
    [ "$ok" = ok ] || FAILED=$((FAILED + 1))
    say "  $client $(label_size "$size"): $(fmt '%.0f' "$mibs") MiB/s, $rps records/s; at half load p50 $p50 ms, p99.9 $p999 ms"
    printf '%s\t' "$client" "$size" "$recs" "$rps" "$mibs" "$ccpu" "$hrps" "$p50" "$p99" "$p999" "$ok" >>"$LOG_DIR/sink.tsv"
    printf '%s\t%s\n' "$other" "$rt999" >>"$LOG_DIR/sink.tsv"
}
METER_PID="$SINK_PID"
for size in "${SINK_SIZES[@]}"; do
    sink_case strand "$size"
done
[ -z "$RK_BIN" ] || sink_case rdkafka 1024
METER_PID=""
kill "$SINK_PID" 2>/dev/null
wait "$SINK_PID" 2>/dev/null
SINK_PID=""

# --- 4. produce matrix ------------------------------------------------------------------------
# produce.tsv: client size acks parts batch | recs rps mibs bcpu_s | half_rps p50 p99 p999 half_recs half_bcpu | ok | bsys_s other_cores
#   | half_rt999 half_stalls (request round trip p99.9 of the half-load run; slow-device warnings the
#   broker logged during it, see src/storage/device_watch.rs)
: >"$LOG_DIR/produce.tsv"
mkdir -p "$RUN_ROOT"
# Slow-device warnings in the running broker's log so far.
slow_device_warnings() {
    grep -c 'slow device:' "$BROKER_LOG" 2>/dev/null || true
}
produce_case() { # CLIENT SIZE ACKS PARTS BATCH [nohalf]
    local client="$1" size="$2" acks="$3" parts="$4" batch="$5" nohalf="${6:-}"
    local name="$client-$size-acks$acks-p$parts-b$batch" dir="$RUN_ROOT/case"
    wait_quiet
    local mrecs mrps mmibs mbcpu mbsys=0 mother=0 hrps=0 p50=0 p99=0 p999=0 hrecs=0 hbcpu=0 ok=ok rt999=- stalls=- s0
    sample_load
    rm -rf "$dir"
    start_broker "$dir" "$parts"
    say "produce $client $(label_size "$size") acks=$acks partitions=$parts batch.size=$batch (broker :$BROKER_PORT)"
    if [ "$client" = strand ]; then
        if sized_max "$LOG_DIR/$name" "$BROKER_PORT" "t-$name" "$size" "$acks" "$batch"; then
            mrecs="$P_RECS" mrps="$P_RPS" mmibs="$P_MIBS" mbcpu="$P_BCPU" mbsys="$P_BSYS" mother="$P_OTHER"
            say "  max: $(fmt '%.0f' "$mmibs") MiB/s, $mrps records/s, p99 $(fmt '%.1f' "$P_P99") ms; broker CPU $(per_gib "$mbcpu" "$mrecs" "$size") s/GiB"
            if [ -z "$nohalf" ]; then
                hrps=$(( mrps / 2 ))
                [ "$hrps" -ge 1 ] || hrps=1
                local n
                n="$(clamp_records "$(calc "$hrps * $T_HALF")" "$size")"
                wait_broker_idle
                s0="$(slow_device_warnings)"
                if perf_produce "$LOG_DIR/$name-half.log" "$BROKER_PORT" "t-$name" "$size" "$n" "$hrps" "$acks" "$batch"; then
                    p50="$P_P50" p99="$P_P99" p999="$P_P999" hrecs="$P_RECS" hbcpu="$P_BCPU" rt999="$P_RT999"
                    stalls=$(( $(slow_device_warnings) - s0 ))
                    say "  half load ($hrps records/s): p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms; request round trip p99.9 $rt999 ms; slow-device warnings $stalls"
                else
                    ok=failed
                fi
            fi
        else
            mrecs=0 mrps=0 mmibs=0 mbcpu=0 ok=failed
        fi
    else
        # rdkafka_performance: sized from the strand perf rate of the same case when there is one.
        local guess n
        guess="$(awk -F'\t' -v s="$size" -v a="$acks" -v p="$parts" -v b="$BATCH_SIZE" \
            '$1 == "strand" && $2 == s && $3 == a && $4 == p && $5 == b && $16 == "ok" { print $7 }' "$LOG_DIR/produce.tsv")"
        if [ -z "$guess" ] || [ "$guess" = 0 ]; then
            n="$(clamp_records "$(calc "$RK_SIZING_BYTES / $size")" "$size")"
            rk_produce "$LOG_DIR/$name-sizing.log" "$BROKER_PORT" "t-$name" "$size" "$n" "$acks"
            guess="$K_RPS"
        fi
        n="$(clamp_records "$(calc "$guess * $T_MAX")" "$size")"
        if rk_max "$LOG_DIR/$name" "$BROKER_PORT" "t-$name" "$size" "$n" "$acks"; then
            mrecs="$K_RECS" mrps="$(fmt '%.0f' "$K_RPS")" mmibs="$K_MIBS" mbcpu="$K_BCPU" mbsys="$K_BSYS" mother="$K_OTHER"
            say "  max: $(fmt '%.0f' "$mmibs") MiB/s, $mrps records/s (end to end, drain included: $(fmt '%.0f' "$K_RPS_END") records/s); broker CPU $(per_gib "$mbcpu" "$mrecs" "$size") s/GiB"
            if [ -z "$nohalf" ]; then
                hrps=$(( mrps / 2 ))
                [ "$hrps" -ge 1 ] || hrps=1
                n="$(clamp_records "$(calc "$hrps * $T_HALF")" "$size")"
                wait_broker_idle
                if rk_produce "$LOG_DIR/$name-half.log" "$BROKER_PORT" "t-$name" "$size" "$n" "$acks" "$hrps"; then
                    p50="$K_P50" p99="$K_P99" p999="$K_P999" hrecs="$K_RECS" hbcpu="$K_BCPU"
                    say "  half load ($hrps records/s): p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms"
                else
                    ok=failed
                fi
            fi
        else
            mrecs=0 mrps=0 mmibs=0 mbcpu=0 ok=failed
        fi
    fi
    stop_broker
    rm -rf "$dir"
    [ "$ok" = ok ] || FAILED=$((FAILED + 1))
    printf '%s\t' "$client" "$size" "$acks" "$parts" "$batch" "$mrecs" "$mrps" "$mmibs" "$mbcpu" \
        "$hrps" "$p50" "$p99" "$p999" "$hrecs" "$hbcpu" "$ok" "$mbsys" >>"$LOG_DIR/produce.tsv"
    printf '%s\t%s\t%s\n' "$mother" "$rt999" "$stalls" >>"$LOG_DIR/produce.tsv"
}

for size in "${SIZES[@]}"; do
    for acks in "${ACKS_LIST[@]}"; do
        for parts in "${PARTS_LIST[@]}"; do
            produce_case strand "$size" "$acks" "$parts" "$BATCH_SIZE"
        done
    done
done
if [ "$DEFAULT_BATCH_ROW" = 1 ]; then
    produce_case strand 1024 1 1 16384 nohalf
fi
if [ -n "$RK_BIN" ]; then
    for acks in 1 all; do
        for parts in "${RK_PARTS[@]}"; do
            produce_case rdkafka 1024 "$acks" "$parts" "$BATCH_SIZE"
        done
    done
fi

# --- 5. consume: tail and cold ----------------------------------------------------------------
# consume.tsv: size parts recs | tail_mibs tail_rps tail_bcpu | cold_mibs cold_rps cold_bcpu | ok | tail_bsys cold_bsys tail_other cold_other
: >"$LOG_DIR/consume.tsv"
for c in "${CONSUME_CASES[@]}"; do
    read -r size parts <<<"$c"
    name="consume-$size-p$parts"
    dir="$RUN_ROOT/case"
    wait_quiet
    sample_load
    rm -rf "$dir"
    # "Tail" means from the broker's tail cache: give it room for the whole data set (the default
    # --memory, 2 GiB per CPU, caches 1 GiB per shard), as an operator sizes --memory for the lag
    # its consumers may have. The cold run restarts the broker, so its cache is empty anyway.
    start_broker "$dir" "$parts" --memory "$((CONSUME_BYTES * 4 * $(nproc) / 2))" --set "log.tail.cache.bytes=$((CONSUME_BYTES * 2))"
    n="$(clamp_records "$(calc "$CONSUME_BYTES / $size")" "$size")"
    say "consume $(label_size "$size") partitions=$parts: produce $n records, consume them from the tail, restart, consume cold"
    ok=ok
    tm=0 tr=0 tb=0 cm=0 cr=0 cb=0 tbs=0 cbs=0 to=0 co=0
    if perf_produce "$LOG_DIR/$name-produce.log" "$BROKER_PORT" "c-$name" "$size" "$n" -1 1 "$BATCH_SIZE"; then
        if perf_consume "$LOG_DIR/$name-tail.log" "$BROKER_PORT" "c-$name" "$n" "$size"; then
            tm="$C_MIBS" tr="$C_RPS" tb="$C_BCPU" tbs="$C_BSYS" to="$C_OTHER"
            say "  tail: $tm MiB/s; broker CPU $(per_gib "$tb" "$n" "$size") s/GiB"
        else
            ok=failed
        fi
        stop_broker
        drop_caches
        start_broker "$dir" "$parts"
        if perf_consume "$LOG_DIR/$name-cold.log" "$BROKER_PORT" "c-$name" "$n" "$size"; then
            cm="$C_MIBS" cr="$C_RPS" cb="$C_BCPU" cbs="$C_BSYS" co="$C_OTHER"
            say "  cold: $cm MiB/s (page cache dropped: $DROPPED_CACHES); broker CPU $(per_gib "$cb" "$n" "$size") s/GiB"
        else
            ok=failed
        fi
    else
        ok=failed
    fi
    stop_broker
    rm -rf "$dir"
    [ "$ok" = ok ] || FAILED=$((FAILED + 1))
    printf '%s\t' "$size" "$parts" "$n" "$tm" "$tr" "$tb" "$cm" "$cr" "$cb" "$ok" "$tbs" "$cbs" "$to" >>"$LOG_DIR/consume.tsv"
    printf '%s\n' "$co" >>"$LOG_DIR/consume.tsv"
done

# --- 6. produce and consume together ----------------------------------------------------------
# together.tsv: round recs | produce_mibs consume_mibs | broker_cpu broker_sys | rest | ok | broker
# (rest: cores used meanwhile by everything but the broker, the two load generators included)
# The broker keeps its default tail cache (log.tail.cache.bytes), filled first by a warm-up on
# another topic, so the run measures the steady state: every batch is written, cached, sent to
# the tailing consumer and evicted. Broker CPU is over the whole run, from the consumer's start to
# its end, per GiB produced (each byte is produced once and consumed once).
: >"$LOG_DIR/together.tsv"
TOGETHER_SIZE=1024
TOGETHER_PARTS=8
TOGETHER_BROKERS=("main=$BIN")
[ -z "$BEFORE_BIN" ] || TOGETHER_BROKERS=("before=$BEFORE_BIN" "main=$BIN")
for round in $(seq 1 "$TOGETHER_ROUNDS"); do
  for tb in "${TOGETHER_BROKERS[@]}"; do
    label="${tb%%=*}"
    SERVE_BIN="${tb#*=}"
    name="together-$round-$label"
    dir="$RUN_ROOT/case"
    wait_quiet
    sample_load
    rm -rf "$dir"
    start_broker "$dir" "$TOGETHER_PARTS"
    n="$(clamp_records "$(calc "$CONSUME_BYTES / $TOGETHER_SIZE")" "$TOGETHER_SIZE")"
    say "produce and consume together, round $round, broker $label: warm-up of $n records, then $n records produced to a tailed topic"
    ok=ok pm=0 cm=0 bc=0 bs=0 other=0
    if perf_produce "$LOG_DIR/$name-warmup.log" "$BROKER_PORT" "w-$name" "$TOGETHER_SIZE" "$n" -1 1 "$BATCH_SIZE" \
        && perf_produce "$LOG_DIR/$name-seed.log" "$BROKER_PORT" "t-$name" "$TOGETHER_SIZE" 1000 -1 1 "$BATCH_SIZE"; then
        # Metered over the consumer's whole run; perf_produce meters (and resets) its own part.
        meter_start
        together_b0="$M_B0" together_t0="$M_T0" w0="$(date +%s.%N)"
        ccmd=("$BIN" perf consume --bootstrap-server "127.0.0.1:$BROKER_PORT" --topic "t-$name" \
            --messages "$((n + 1000))" --timeout 20000 --connections "$CONSUME_CONNS")
        record_cmd "${ccmd[@]}"
        timeout -k 5 300 "${ccmd[@]}" >"$LOG_DIR/$name-consume.log" 2>&1 &
        cpid=$!
        perf_produce "$LOG_DIR/$name-produce.log" "$BROKER_PORT" "t-$name" "$TOGETHER_SIZE" "$n" -1 1 "$BATCH_SIZE" || ok=failed
        pm="$P_MIBS"
        wait "$cpid" || ok=failed
        M_B0="$together_b0" M_T0="$together_t0" RUN_CPU=0 RUN_WALL="$(calc "$(date +%s.%N) - $w0")"
        meter_stop
        bc="$M_BCPU" bs="$M_BSYS" other="$M_OTHER"
        row="$(grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2} ' "$LOG_DIR/$name-consume.log" | tail -n 1)"
        got="$(awk -F', ' '{ print $5 }' <<<"$row")"
        cm="$(awk -F', ' '{ printf "%.1f", $9 }' <<<"$row")"
        if [ "$got" != "$((n + 1000))" ]; then
            warn "produce and consume together: the consumer read ${got:-no} of $((n + 1000)) records, see $LOG_DIR/$name-consume.log"
            ok=failed
        fi
        say "  produced $(fmt '%.0f' "$pm") MiB/s, consumed ${cm:-0} MiB/s; broker CPU $(per_gib "$bc" "$n" "$TOGETHER_SIZE") s/GiB produced and consumed"
    else
        ok=failed
    fi
    stop_broker
    rm -rf "$dir"
    [ "$ok" = ok ] || FAILED=$((FAILED + 1))
    printf '%s\t' "$round" "$n" "$pm" "${cm:-0}" "$bc" "$bs" "$other" "$ok" >>"$LOG_DIR/together.tsv"
    printf '%s\n' "$label" >>"$LOG_DIR/together.tsv"
    SERVE_BIN=""
  done
done
sample_load
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
ELAPSED=$((SECONDS - T_START))

# --- 7. the report ----------------------------------------------------------------------------
SECTION="$LOG_DIR/section.md"
{
    echo "<!-- bench:begin -->"
    echo "<!-- generated by scripts/bench.sh; edits between the markers are overwritten -->"
    echo "### Run"
    echo
    echo "| | |"
    echo "| --- | --- |"
    echo "| date | $DATE ($MODE run, $((ELAPSED / 60)) min $((ELAPSED % 60)) s) |"
    echo "| strand | release build of $(date -u -r "$SRC_BIN" '+%Y-%m-%d %H:%M UTC'); HEAD was $COMMIT |"
    echo "| machine | $CORES cores, $CPU_MODEL, $MEM_GB GiB RAM, $KERNEL |"
    echo "| data directory | $FSTYPE on $FSDEV (fresh directory per case, deleted after it) |"
    echo "| load average (1/5/15 min) | start $LOAD_START, end $LOAD_END; 1-min between cases $LOAD_MIN .. $LOAD_MAX (other work on the machine: 2 cores shared) |"
    echo "| producer settings | batch.size=$BATCH_SIZE linger.ms=$LINGER_MS, 2 connections (strand perf default); rdkafka_performance with librdkafka defaults |"
    echo "| run sizes | unthrottled ~${T_MAX} s (best of $REPEAT_MAX runs), half load ~${T_HALF} s (one run), consume data set $((CONSUME_BYTES >> 20)) MiB |"
    if [ "$QUIET_WAIT" -gt 0 ]; then
        echo "| quiet gate | before each case, waited up to ${QUIET_WAIT} s for other work to use < 0.5 core: ${QUIET_WAITED} s waited in all; $QUIET_BUSY_STARTS case(s) started busy anyway |"
    fi
    echo
    echo "### Ceilings"
    echo
    echo "| ceiling | figure | how |"
    echo "| --- | --- | --- |"
    echo "| loopback TCP | $(fmt '%.0f' "$LOOP_MIBS") MiB/s | $LOOP_TOOL, ${IPERF_SECS} s |"
    echo "| O_DIRECT sequential write | $(fmt '%.0f' "$DISK_MIBS") MiB/s | fio 1 MiB writes, qd 32, ${FIO_RUNTIME} s (tuning/probe-disk.sh) |"
    echo "| 4 KiB append + fdatasync | p50 $(fmt '%.2f' "$(calc "$SYNC_P50_US / 1000")") ms, p99 $(fmt '%.2f' "$(calc "$SYNC_P99_US / 1000")") ms | fio qd 1, O_DIRECT ($DISK_PARTS) |"
    echo "| O_DIRECT sequential read | $(fmt '%.0f' "$DISK_READ_MIBS") MiB/s | fio 1 MiB reads, qd 32, ${FIO_RUNTIME} s (tuning/probe-disk.sh) |"
    echo "| produce ceiling = min(loopback, O_DIRECT write) | $(fmt '%.0f' "$PRODUCE_CEIL") MiB/s | |"
    echo "| cold-consume ceiling = min(loopback, O_DIRECT read) | $(fmt '%.0f' "$COLD_CEIL") MiB/s | |"
    echo

    # Targets of issue 5, from the best 1 KiB case of each kind.
    best() { # CLIENT ACKS -> "mibs parts" of the fastest 1 KiB strand row
        awk -F'\t' -v c="$1" -v a="$2" -v b="$BATCH_SIZE" '$1 == c && $2 == 1024 && $3 == a && $5 == b && $16 == "ok" && $8 > m { m = $8; p = $4 } END { if (p != "") print m, p }' "$LOG_DIR/produce.tsv"
    }
    verdict() { awk -v v="$1" -v t="$2" -v le="${3:-}" 'BEGIN { if (v == "") { print "not measured"; exit } ok = (le ? v <= t : v >= t); print (ok ? "**reached**" : "**not reached**") }'; }
    echo "### Targets (issue 5)"
    echo
    echo "| target | measured | verdict |"
    echo "| --- | --- | --- |"
    read -r m p <<<"$(best strand 1)"
    r="$( [ -n "${m:-}" ] && calc "100 * $m / $PRODUCE_CEIL")"
    echo "| produce 1 KiB acks=1 >= 70% of min(loopback, O_DIRECT) | ${r:+$(fmt '%.1f' "$r")% ($(fmt '%.0f' "$m") of $(fmt '%.0f' "$PRODUCE_CEIL") MiB/s, best at $p partitions)} | $(verdict "$r" 70) |"
    read -r m p <<<"$(best strand all)"
    r="$( [ -n "${m:-}" ] && calc "100 * $m / $DISK_MIBS")"
    echo "| produce 1 KiB acks=all >= 60% of O_DIRECT | ${r:+$(fmt '%.1f' "$r")% ($(fmt '%.0f' "$m") of $(fmt '%.0f' "$DISK_MIBS") MiB/s, best at $p partitions)} | $(verdict "$r" 60) |"
    lim="$(calc "3 * $SYNC_P50_US / 1000")"
    worst="" cells=""
    while IFS=$'\t' read -r cl sz ak pa ba _ _ _ _ hr _ _ p999 _ _ okk _ _ rt st; do
        [ "$cl" = strand ] && [ "$ak" = all ] && [ "$ba" = "$BATCH_SIZE" ] && [ "$okk" = ok ] || continue
        cells+="$(label_size "$sz") ${pa}p $(fmt '%.1f' "$p999") (request round trip $( [ "$rt" = - ] && echo - || fmt '%.1f' "$rt"), slow-device warnings $st); "
        if [ -z "$worst" ] || awk -v a="$p999" -v b="$worst" 'BEGIN { exit !(a > b) }'; then worst="$p999"; fi
    done <"$LOG_DIR/produce.tsv"
    bestp="$(awk -F'\t' -v b="$BATCH_SIZE" '$1 == "strand" && $3 == "all" && $5 == b && $16 == "ok" && (m == "" || $13 < m) { m = $13 } END { print m }' "$LOG_DIR/produce.tsv")"
    nreach="$(awk -F'\t' -v b="$BATCH_SIZE" -v l="$lim" '$1 == "strand" && $3 == "all" && $5 == b && $16 == "ok" { n++; if ($13 <= l) k++ } END { printf "%d of %d cases", k, n }' "$LOG_DIR/produce.tsv")"
    echo "| acks=all p99.9 at half load <= 3 x append+fdatasync p50 ($(fmt '%.1f' "$lim") ms) | ms: ${cells%; } | $(verdict "$bestp" "$lim" le) in the best case; $nreach within |"
    m="$(awk -F'\t' '$1 == 1024 && $10 == "ok" && $4 > m { m = $4; p = $2 } END { if (p != "") print m, p }' "$LOG_DIR/consume.tsv")"
    read -r m p <<<"$m"
    r="$( [ -n "${m:-}" ] && calc "100 * $m / $LOOP_MIBS")"
    echo "| consume 1 KiB from the tail >= 80% of loopback | ${r:+$(fmt '%.1f' "$r")% ($(fmt '%.0f' "$m") of $(fmt '%.0f' "$LOOP_MIBS") MiB/s, best at $p partitions)} | $(verdict "$r" 80) |"
    m="$(awk -F'\t' '$10 == "ok" && $7 > m { m = $7; p = $2; s = $1 } END { if (p != "") print m, p, s }' "$LOG_DIR/consume.tsv")"
    read -r m p s <<<"$m"
    r="$( [ -n "${m:-}" ] && calc "100 * $m / $LOOP_MIBS")"
    r2="$( [ -n "${m:-}" ] && calc "100 * $m / $COLD_CEIL")"
    echo "| consume from cold segments >= 60% of loopback | ${r:+$(fmt '%.1f' "$r")% of loopback, $(fmt '%.0f' "$r2")% of min(loopback, disk read) ($(fmt '%.0f' "$m") MiB/s, best: $(label_size "$s"), $p partitions)} | $(verdict "$r" 60) |"
    c="$(awk -F'\t' -v b="$BATCH_SIZE" '$1 == "strand" && $2 == 1024 && $3 == 1 && $5 == b && $16 == "ok" { printf "%s%sp %.2f", sep, $4, $9 / ($6 * $2 / 1073741824); sep = ", " }' "$LOG_DIR/produce.tsv")"
    echo "| broker CPU per GiB, produce 1 KiB acks=1 (report) | ${c:-not measured} s/GiB | |"
    c="$(awk -F'\t' '$8 == "ok" && $9 == "main" { printf "%s%.2f", sep, $5 / ($2 * 1024 / 1073741824); sep = ", " }' "$LOG_DIR/together.tsv")"
    cb="$(awk -F'\t' '$8 == "ok" && $9 == "before" { printf "%s%.2f", sep, $5 / ($2 * 1024 / 1073741824); sep = ", " }' "$LOG_DIR/together.tsv")"
    [ -z "$cb" ] || c="$c (STRAND_BEFORE_BIN, alternated: $cb)"
    echo "| broker CPU per GiB produced and consumed, 1 KiB, acks=1, 8 partitions, a consumer tailing the producer (report; issue 6: -30% against 1.36 s/GiB before it, docs/benchmarks-history.md \"Session 6\") | ${c:-not measured} s/GiB | |"
    echo

    echo "### Produce"
    echo
    echo "Unthrottled maximum, then a run throttled to half its records/sec for the latencies (strand perf"
    echo "measures from each record's intended send time; rdkafka_performance \`-l\` from its produce call)."
    echo "Broker CPU = broker utime+stime per GiB of payload (broker and load generator share the machine's"
    echo "$CORES cores; the generators' own CPU is in the sink table). rdkafka_performance's tail latencies include librdkafka's"
    echo "own stalls (its broker thread can sleep up to 1 s before sending queued messages; see its row"
    echo "against the sink below, where the same stalls appear with no broker at all); its MiB/s is the"
    echo "delivery rate while it was still sending, as its last 1 s report before the final drain shows."
    echo "Others' CPU: cores used during the unthrottled run by everything but the broker and the load"
    echo "generator (other work on the machine, from /proc/stat), i.e. what this run did not have."
    echo
    echo "| client | record | acks | partitions | batch.size | MiB/s | records/s | of min(loopback, O_DIRECT) | of O_DIRECT | broker CPU s/GiB (kernel share) | others' CPU, cores | half load records/s | p50 ms | p99 ms | p99.9 ms | request round trip p99.9 ms | slow-device warnings |"
    echo "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    while IFS=$'\t' read -r cl sz ak pa ba mrecs mrps mmibs mbcpu hr p50 p99 p999 hrecs hbcpu okk mbsys mother rt999 stalls; do
        bl="$ba"
        [ "$cl" = rdkafka ] && bl="(librdkafka default)"
        cln="strand perf"
        [ "$cl" = rdkafka ] && cln="rdkafka_performance"
        if [ "$okk" != ok ] && [ "$mrecs" = 0 ]; then
            echo "| $cln | $(label_size "$sz") | $ak | $pa | $bl | failed | | | | | | | | | | | |"
            continue
        fi
        half="$hr"
        lat=("$(fmt '%.2f' "$p50")" "$(fmt '%.2f' "$p99")" "$(fmt '%.2f' "$p999")")
        rt="$rt999"
        [ "$rt" = - ] || rt="$(fmt '%.2f' "$rt")"
        if [ "$hr" = 0 ]; then half="-"; lat=(- - -); fi
        [ "$okk" = ok ] || half="$half (failed)"
        echo "| $cln | $(label_size "$sz") | $ak | $pa | $bl | $(fmt '%.0f' "$mmibs") | $mrps | $(pct "$mmibs" "$PRODUCE_CEIL") | $(pct "$mmibs" "$DISK_MIBS") | $(per_gib "$mbcpu" "$mrecs" "$sz") ($(pct "$mbsys" "$mbcpu")) | $(fmt '%.2f' "$mother") | $half | ${lat[0]} | ${lat[1]} | ${lat[2]} | $rt | $stalls |"
    done <"$LOG_DIR/produce.tsv"
    [ -n "$RK_BIN" ] || echo "| rdkafka_performance | | | | | $RK_NOTE | | | | | | | | | | | |"
    echo
    echo "### Consume (strand perf consume, $CONSUME_CONNS connections)"
    echo
    echo "Tail: consumed right after producing it (acks=1), broker still running. Cold: broker restarted"
    echo "(nothing in its memory), page cache dropped: $DROPPED_CACHES. Fetch-phase MiB/s."
    echo
    echo "| record | partitions | data set | tail MiB/s | tail of loopback | tail broker CPU s/GiB (kernel) | others' CPU, cores | cold MiB/s | cold of loopback | cold broker CPU s/GiB (kernel) | others' CPU, cores |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    while IFS=$'\t' read -r sz pa n tm tr tb cm cr cb okk tbs cbs to co; do
        echo "| $(label_size "$sz") | $pa | $((n * sz >> 20)) MiB | $(fmt '%.0f' "$tm") | $(pct "$tm" "$LOOP_MIBS") | $(per_gib "$tb" "$n" "$sz") ($(pct "$tbs" "$tb")) | $(fmt '%.2f' "$to") | $(fmt '%.0f' "$cm") | $(pct "$cm" "$LOOP_MIBS") | $(per_gib "$cb" "$n" "$sz") ($(pct "$cbs" "$cb")) | $(fmt '%.2f' "$co") |$( [ "$okk" = ok ] || echo " failed |")"
    done <"$LOG_DIR/consume.tsv"
    echo
    echo "### Produce and consume together (1 KiB, acks=1, $TOGETHER_PARTS partitions, $CONSUME_CONNS consumer connections)"
    echo
    echo "A fresh broker with its default tail cache, filled by a warm-up on another topic; then a"
    echo "consumer tails the topic while the records are produced. Broker CPU over the whole run, per GiB"
    echo "produced (each byte produced once and consumed once)."
    echo
    [ -z "$BEFORE_BIN" ] || echo "Rounds alternate this build (main) with STRAND_BEFORE_BIN (before), built $(date -u -r "$STRAND_BEFORE_BIN" '+%Y-%m-%d %H:%M UTC')."
    [ -z "$BEFORE_BIN" ] || echo
    echo "| round | broker | records | produce MiB/s | consume MiB/s | broker CPU s/GiB (kernel) | load generators and other work, cores |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    while IFS=$'\t' read -r rd n pm cm bc bs other okk lb; do
        echo "| $rd | $lb | $n | $(fmt '%.0f' "$pm") | $(fmt '%.0f' "$cm") | $(per_gib "$bc" "$n" "$TOGETHER_SIZE") ($(pct "$bs" "$bc")) | $(fmt '%.2f' "$other") |$( [ "$okk" = ok ] || echo " failed |")"
    done <"$LOG_DIR/together.tsv"
    echo
    echo "### Load generators against a sink (strand perf sink: answers at once, discards; acks=1, 8 partitions)"
    echo
    echo "The clients' own ceilings and latency floors with nothing behind the socket. rdkafka_performance"
    echo "spreads records over the 8 partitions here, so compare it with its 8-partition rows above."
    echo
    echo "| client | record | MiB/s | records/s | of loopback | client CPU s/GiB | others' CPU, cores | half load records/s | p50 ms | p99 ms | p99.9 ms | request round trip p99.9 ms |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    while IFS=$'\t' read -r cl sz recs rps mibs ccpu hr p50 p99 p999 okk other rt999; do
        cln="strand perf"
        [ "$cl" = rdkafka ] && cln="rdkafka_performance"
        if [ "$recs" = 0 ]; then echo "| $cln | $(label_size "$sz") | failed | | | | | | | | | |"; continue; fi
        [ "$rt999" = - ] || rt999="$(fmt '%.2f' "$rt999")"
        echo "| $cln | $(label_size "$sz") | $(fmt '%.0f' "$mibs") | $rps | $(pct "$mibs" "$LOOP_MIBS") | $(per_gib "$ccpu" "$recs" "$sz") | $(fmt '%.2f' "$other") | $hr$( [ "$okk" = ok ] || echo " (failed)") | $(fmt '%.2f' "$p50") | $(fmt '%.2f' "$p99") | $(fmt '%.2f' "$p999") | $rt999 |"
    done <"$LOG_DIR/sink.tsv"
    echo
    if [ "${#WARNINGS[@]}" -gt 0 ]; then
        echo "### Warnings"
        echo
        for w in "${WARNINGS[@]}"; do echo "- ${w//$REPO\//}"; done
        echo
    fi
    echo "### Commands"
    echo
    echo "\`bash scripts/bench.sh$( [ "$MODE" = quick ] && echo " --quick")\` ran, in order (strand = target/release/strand,"
    echo "rdkafka_performance = target/bench-rdkafka/rdkafka_performance-*, \$DATA = a fresh directory under"
    echo "$( [ "$DATA_ROOT" = "$REPO/target/bench-data" ] && echo "target/bench-data" || echo "$DATA_ROOT"); sizing runs included):"
    echo
    echo "<details><summary>$(wc -l <"$LOG_DIR/commands.txt") commands</summary>"
    echo
    echo '```'
    sed "s|$LOG_DIR/|\$LOGS/|g; s|$REPO/||g" "$LOG_DIR/commands.txt"
    echo '```'
    echo
    echo "</details>"
    echo "<!-- bench:end -->"
} >"$SECTION"

# Splice the section into OUT_FILE between the markers (create the file, or append the section).
if [ ! -f "$OUT_FILE" ]; then
    {
        echo "# Strand against this machine's ceilings"
        echo
        echo "Produced by \`bash scripts/bench.sh\` (see README.md, \"Benchmarks\"; the Strand vs Kafka page is"
        echo "BENCHMARKS.md at the top of the repository)."
        echo
    } >"$OUT_FILE" || die "cannot write $OUT_FILE"
fi
if grep -q '<!-- bench:begin -->' "$OUT_FILE" && grep -q '<!-- bench:end -->' "$OUT_FILE"; then
    awk -v sec="$SECTION" '
        /<!-- bench:begin -->/ { while ((getline l < sec) > 0) print l; skip = 1; next }
        /<!-- bench:end -->/ { skip = 0; next }
        !skip { print }' "$OUT_FILE" >"$OUT_FILE.tmp.$$" && mv "$OUT_FILE.tmp.$$" "$OUT_FILE"
else
    { echo; cat "$SECTION"; } >>"$OUT_FILE"
fi
cp "$SECTION" "$LOG_DIR/results.md"
say "results written to $OUT_FILE (logs: $LOG_DIR)"
sed -n '/^### Targets/,/^### Produce/p' "$SECTION" | sed '$d'
if [ "$FAILED" -gt 0 ]; then
    say "$FAILED case(s) failed; see the warnings above and the logs"
    exit 1
fi
exit 0

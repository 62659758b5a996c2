#!/usr/bin/env bash
# Measures the disk under a Strand data directory (in the spirit of Redpanda's iotune) and prints
# the settings it recommends. Three short fio runs on one bounded file, O_DIRECT throughout, as
# Strand does its I/O:
#   1. sequential write throughput: 1 MiB writes, queue depth 32, io_uring  (the produce ceiling)
#   2. sequential read throughput of what 1 wrote: 1 MiB reads, qd 32     (the cold-consume ceiling)
#   3. 4 KiB append + fdatasync latency p50/p99, queue depth 1          (the acks=all floor)
#   4. random 4 KiB read IOPS, queue depth 32, io_uring                  (consumers off the tail)
# fio is installed from the distribution (apt-get) when missing, unless --no-install.
#
# Usage: probe-disk.sh [--runtime SECONDS] [--size SIZE] [--no-install] [--dry-run] DIR
#   DIR        the data directory (log.dirs) or a directory on the same filesystem
#   --runtime  seconds per fio run (default 5)
#   --size     test file size, fio syntax (default 1G); the file is removed at the end
# Output: one "key=value" line per figure (seq_write_MBps, seq_read_MBps, append_fdatasync_p50_us,
# append_fdatasync_p99_us, rand_read_iops, and their parts), then the recommended settings.
# Changes nothing on the host except the temporary file (and installing fio).
set -u

say() { printf 'probe-disk: %s\n' "$*"; }
die() { printf 'probe-disk: ERROR: %s\n' "$*" >&2; exit 2; }

USAGE="usage: $0 [--runtime SECONDS] [--size SIZE] [--no-install] [--dry-run] DIR"
RUNTIME=5
SIZE=1G
INSTALL=1
DRY_RUN=0
DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runtime|--duration) RUNTIME="${2:?$1 needs a value}"; shift ;;
        --size) SIZE="${2:?--size needs a value}"; shift ;;
        --no-install) INSTALL=0 ;;
        --dry-run|-n) DRY_RUN=1 ;;
        -h|--help) echo "$USAGE"; exit 0 ;;
        -*) die "unknown argument: $1 ($USAGE)" ;;
        *) [ -z "$DIR" ] || die "one directory only ($USAGE)"; DIR="$1" ;;
    esac
    shift
done
[ -n "$DIR" ] || die "missing DIR ($USAGE)"
case "$RUNTIME" in ''|*[!0-9]*|0) die "--runtime must be a whole number of seconds >= 1" ;; esac
SIZE_BYTES="$(numfmt --from=iec "${SIZE%[bB]}" 2>/dev/null)" || die "invalid --size $SIZE (e.g. 1G, 256M)"
[ "$SIZE_BYTES" -ge $((16 << 20)) ] || die "--size must be at least 16M"

# --- the directory and its filesystem --------------------------------------------------------
probe_dir="$DIR"
while [ ! -d "$probe_dir" ]; do probe_dir="$(dirname "$probe_dir")"; done
FSKIND="$(stat -f -c %T "$probe_dir" 2>/dev/null || echo unknown)" # the kernel's name: ext4 shows as ext2/ext3
FSTYPE="$(findmnt -n -o FSTYPE -T "$probe_dir" 2>/dev/null | tail -n 1)"
FSTYPE="${FSTYPE:-$FSKIND}"
DEVICE="$(df -P "$probe_dir" 2>/dev/null | awk 'NR==2 {print $1}')"
AVAIL_KB="$(df -Pk "$probe_dir" 2>/dev/null | awk 'NR==2 {print $4}')"
say "directory $DIR: filesystem $FSTYPE on ${DEVICE:-unknown}, $((${AVAIL_KB:-0} / 1024 / 1024)) GiB free"
case "$FSKIND" in
    tmpfs|ramfs) die "$DIR is on $FSTYPE: no O_DIRECT there, and Strand refuses it; probe a disk filesystem" ;;
    ext2/ext3|xfs|btrfs) ;;
    *) say "note: filesystem $FSTYPE is not one Strand is tested on (ext4, xfs)" ;;
esac
if [ "$DRY_RUN" = 0 ]; then
    mkdir -p "$DIR" || die "cannot create $DIR"
fi
if [ -n "${AVAIL_KB:-}" ] && [ "$((AVAIL_KB * 1024))" -lt "$((SIZE_BYTES + SIZE_BYTES / 4))" ]; then
    die "not enough free space for a $SIZE test file in $DIR (use --size)"
fi

# --- fio ----------------------------------------------------------------------------------------
ensure_fio() {
    command -v fio >/dev/null 2>&1 && return 0
    if [ "$DRY_RUN" = 1 ]; then
        say "fio is not installed: would run 'apt-get install -y fio'"
        return 0
    fi
    [ "$INSTALL" = 1 ] || die "fio is not installed (and --no-install was given): install the fio package"
    command -v apt-get >/dev/null 2>&1 || die "fio is not installed and there is no apt-get: install fio with the system's package manager"
    [ "$(id -u)" = 0 ] || die "fio is not installed: run as root to install it, or install the fio package"
    say "installing fio (apt-get install -y fio)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q fio >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q fio >/dev/null || die "apt-get install fio failed"
    fi
    command -v fio >/dev/null 2>&1 || die "fio still missing after installing it"
}
ensure_fio

ENGINE=io_uring
if command -v fio >/dev/null 2>&1 && ! fio --enghelp=io_uring >/dev/null 2>&1; then
    ENGINE=libaio
    say "note: this fio has no io_uring engine; using libaio for the queued runs"
fi

FILE="$DIR/.strand-probe-disk.$$"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/probe-disk.XXXXXX")"
cleanup() { rm -f "$FILE"; rm -rf "$OUT"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

COMMON=(--filename="$FILE" --direct=1 --numjobs=1 --group_reporting --output-format=json)
JOB_SEQ=(--name=seq_write --rw=write --bs=1M --iodepth=32 --ioengine="$ENGINE" --size="$SIZE" --fallocate=none --time_based --runtime="$RUNTIME")
JOB_SEQ_READ=(--name=seq_read --rw=read --bs=1M --iodepth=32 --ioengine="$ENGINE" --size="$SIZE" --time_based --runtime="$RUNTIME")
JOB_APPEND=(--name=append_fdatasync --rw=write --bs=4k --iodepth=1 --ioengine=sync --fdatasync=1 --file_append=1 --fallocate=none --size="$SIZE" --runtime="$RUNTIME")
JOB_RAND=(--name=rand_read --rw=randread --bs=4k --iodepth=32 --ioengine="$ENGINE" --size="$SIZE" --norandommap --randrepeat=0 --time_based --runtime="$RUNTIME")

if [ "$DRY_RUN" = 1 ]; then
    say "dry run: would run, on $FILE (removed afterwards):"
    say "  fio ${COMMON[*]} ${JOB_SEQ[*]}"
    say "  fio ${COMMON[*]} ${JOB_SEQ_READ[*]}"
    say "  (truncate the file to 0 bytes)"
    say "  fio ${COMMON[*]} ${JOB_APPEND[*]}"
    say "  (fill the file to $SIZE, then) fio ${COMMON[*]} ${JOB_RAND[*]}"
    say "dry run: then print seq_write_MBps, append_fdatasync_p50_us/p99_us, rand_read_iops and recommended settings"
    exit 0
fi

# json_get FILE PATH: PATH such as jobs/0/write/bw_bytes (read with python3, or jq).
json_get() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])  # fio may print notes before the JSON
v = doc
for part in sys.argv[2].split("/"):
    v = v[int(part)] if isinstance(v, list) else v[part]
print(v)
PY
    elif command -v jq >/dev/null 2>&1; then
        local p arr="" IFS=/
        for p in $2; do
            case "$p" in *[!0-9]*) arr+="\"$p\"," ;; *) arr+="$p," ;; esac
        done
        sed -n '/^{/,$p' "$1" | jq -r --argjson p "[${arr%,}]" 'getpath($p)'
    else
        die "need python3 or jq to read fio's JSON output"
    fi
}

run_fio() { # name args...
    local name="$1"
    shift
    if ! fio "${COMMON[@]}" "$@" --output="$OUT/$name.json" >"$OUT/$name.log" 2>&1; then
        cat "$OUT/$name.log" "$OUT/$name.json" >&2 2>/dev/null
        die "fio $name failed (see above)"
    fi
}

say "fio $(fio --version | sed 's/^fio-//'), engine $ENGINE, ${RUNTIME}s per run, test file $SIZE"

say "1/4 sequential write (1 MiB, qd 32, O_DIRECT)..."
run_fio seq "${JOB_SEQ[@]}"
SEQ_BPS="$(json_get "$OUT/seq.json" jobs/0/write/bw_bytes)"

say "2/4 sequential read (1 MiB, qd 32, O_DIRECT)..."
run_fio seqread "${JOB_SEQ_READ[@]}"
SEQ_READ_BPS="$(json_get "$OUT/seqread.json" jobs/0/read/bw_bytes)"

say "3/4 4 KiB append + fdatasync (qd 1, O_DIRECT)..."
: >"$FILE"
run_fio append "${JOB_APPEND[@]}"
W50="$(json_get "$OUT/append.json" jobs/0/write/clat_ns/percentile/50.000000)"
W99="$(json_get "$OUT/append.json" jobs/0/write/clat_ns/percentile/99.000000)"
S50="$(json_get "$OUT/append.json" jobs/0/sync/lat_ns/percentile/50.000000)"
S99="$(json_get "$OUT/append.json" jobs/0/sync/lat_ns/percentile/99.000000)"
APPENDS="$(json_get "$OUT/append.json" jobs/0/write/total_ios)"

say "4/4 random read (4 KiB, qd 32, O_DIRECT)..."
# Real data under every block read (fio lays the file out to its full size first): reads of
# unwritten extents would never reach the device.
run_fio rand "${JOB_RAND[@]}"
RAND_IOPS="$(json_get "$OUT/rand.json" jobs/0/read/iops)"

us() { awk -v n="$1" 'BEGIN { printf "%d", n / 1000 + 0.5 }'; }
SEQ_MBPS="$(awk -v b="$SEQ_BPS" 'BEGIN { printf "%.1f", b / 1048576 }')"
SEQ_READ_MBPS="$(awk -v b="$SEQ_READ_BPS" 'BEGIN { printf "%.1f", b / 1048576 }')"
A50="$(us "$(awk -v a="$W50" -v b="$S50" 'BEGIN { print a + b }')")"
A99="$(us "$(awk -v a="$W99" -v b="$S99" 'BEGIN { print a + b }')")"
IOPS="$(awk -v n="$RAND_IOPS" 'BEGIN { printf "%d", n + 0.5 }')"

echo
echo "# Disk figures for $DIR ($FSTYPE on ${DEVICE:-unknown}), MB = 2^20 bytes"
echo "seq_write_MBps=$SEQ_MBPS"
echo "seq_read_MBps=$SEQ_READ_MBPS"
echo "append_fdatasync_p50_us=$A50"
echo "append_fdatasync_p99_us=$A99"
echo "rand_read_iops=$IOPS"
echo "# parts: 4 KiB O_DIRECT append write p50=$(us "$W50") us p99=$(us "$W99") us; fdatasync p50=$(us "$S50") us p99=$(us "$S99") us ($APPENDS appends)"
echo "# append_fdatasync_* adds the write and fdatasync percentiles: a close, slightly pessimistic bound"

# --- recommendations ----------------------------------------------------------------------------
CPUS="$(nproc 2>/dev/null || echo 1)"
pow2_mib_floor() { awk -v b="$1" 'BEGIN { m = b / 1048576; p = 1; while (p * 2 <= m) p *= 2; print p }'; }
clamp() { awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { print (v < lo ? lo : (v > hi ? hi : v)) }'; }

# Segment: the active segment is CRC-scanned at start-up, at about the disk's sequential speed;
# keep that under ~2 s per partition (sequential write speed stands in for read speed).
SEG_MIB="$(clamp "$(pow2_mib_floor "$(awk -v b="$SEQ_BPS" 'BEGIN { print b * 2 }')")" 128 1024)"
# Tail cache: ~50 ms of the disk's full write rate, so consumers a little behind the producers are
# served from memory; twice that when random reads are slow (cold reads are expensive).
TAIL_MIB="$(clamp "$(pow2_mib_floor "$(awk -v b="$SEQ_BPS" 'BEGIN { print b * 0.05 }')")" 4 64)"
if [ "$IOPS" -lt 10000 ]; then TAIL_MIB="$(clamp $((TAIL_MIB * 2)) 4 64)"; fi
if [ "$CPUS" -ge 4 ]; then
    SHARDS=$((CPUS - 1))
    SHARD_CPUS="$(seq -s, 1 $((CPUS - 1)))"
    IRQ_NOTE="CPU 0 is left for interrupts and the OS: run tuning/irq-affinity.sh 1-$((CPUS - 1))"
else
    SHARDS="$CPUS"
    SHARD_CPUS="$(seq -s, 0 $((CPUS - 1)))"
    IRQ_NOTE="with fewer than 4 CPUs every CPU runs a shard (none is set aside for interrupts)"
fi

echo
echo "# Recommended Strand settings for this disk and $CPUS CPU(s) (heuristics, see tuning/README.md):"
echo "--set log.segment.bytes=$((SEG_MIB * 1048576))"
echo "--set log.tail.cache.bytes=$((TAIL_MIB * 1048576))"
echo "--set num.partitions=$SHARDS"
echo "--shards $SHARDS --cpus $SHARD_CPUS"
echo "# why: log.segment.bytes=${SEG_MIB} MiB keeps start-up recovery of an active segment near 2 s at ${SEQ_MBPS} MB/s;"
echo "#      log.tail.cache.bytes=${TAIL_MIB} MiB per partition is ~50 ms of writes at full speed$( [ "$IOPS" -lt 10000 ] && echo ", doubled for slow random reads");"
echo "#      num.partitions=$SHARDS gives every shard a partition of an auto-created topic; $IRQ_NOTE."
echo "# expect: produce throughput capped near ${SEQ_MBPS} MB/s by this disk; acks=all latency of at least ~${A50} us (p50) per write round."
if [ "$A99" -gt 10000 ]; then
    echo "# warning: append+fdatasync p99 above 10 ms: acks=all tail latency will be dominated by the disk (a drive with power-loss protection helps)."
fi
if [ "$(awk -v b="$SEQ_BPS" 'BEGIN { print (b < 200 * 1048576) }')" = 1 ]; then
    echo "# warning: under 200 MB/s of sequential writes: this disk, not the CPU or network, bounds Strand's throughput."
fi

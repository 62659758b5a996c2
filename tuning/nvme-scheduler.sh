#!/usr/bin/env bash
# Sets the block I/O scheduler of NVMe namespaces to "none". NVMe devices have deep hardware
# queues of their own; a software scheduler (mq-deadline, bfq, kyber) only adds CPU cost and
# latency to Strand's O_DIRECT writes and reads, which io_uring already submits in order.
#
# Usage: nvme-scheduler.sh [--dry-run] [--undo] [--no-persist] [DEVICE...]
#   DEVICE: block device names (e.g. nvme0n1 vdb); default: every nvme*n* namespace.
#   Without --no-persist, a udev rule makes the setting survive reboots and hot-plug.
# Undo:  nvme-scheduler.sh --undo   (restores each device's previous scheduler, removes the rule)
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$DIR/lib.sh"

USAGE="usage: $0 [--dry-run] [--undo] [--no-persist] [DEVICE...]   (default: all nvme*n* devices)"
common_args "$USAGE" "$@"
PERSIST=1
DEVICES=()
set -- "${ARGS[@]+"${ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-persist) PERSIST=0 ;;
        -*) die "unknown argument: $1 ($USAGE)" ;;
        *) DEVICES+=("${1#/dev/}") ;;
    esac
    shift
done
RULE="$ROOT/etc/udev/rules.d/60-strand-io-scheduler.rules"

if [ "$UNDO" = 1 ]; then undo_all; finish; exit; fi

explicit=1
if [ ${#DEVICES[@]} -eq 0 ]; then
    explicit=0
    for d in "$ROOT"/sys/block/nvme*n*; do
        [ -e "$d" ] && DEVICES+=("$(basename "$d")")
    done
fi
if [ ${#DEVICES[@]} -eq 0 ]; then
    skip "NVMe block devices" "no /sys/block/nvme*n*; name other devices as arguments to tune them"
    finish
    exit
fi

tuned=()
for dev in "${DEVICES[@]}"; do
    sched="$ROOT/sys/block/$dev/queue/scheduler"
    if [ ! -e "$sched" ]; then
        skip "$dev scheduler" "$sched"
        continue
    fi
    cur="$(read_value "$sched")"
    sel="$(bracketed "$cur")"
    [ -z "$sel" ] && sel="$cur"
    if ! has_choice "$cur" none; then
        say "$dev: scheduler 'none' not offered (choices: $cur), skipped"
        continue
    fi
    rot="$(read_value "$ROOT/sys/block/$dev/queue/rotational" 2>/dev/null || echo 0)"
    if [ "$rot" = 1 ]; then
        warn "$dev is rotational: 'none' suits SSDs/NVMe; a spinning disk is better served by mq-deadline"
    fi
    set_value "$dev scheduler" "$sched" none "$sel" && tuned+=("$dev")
done

if [ "$PERSIST" = 1 ] && [ ${#tuned[@]} -gt 0 ]; then
    if [ "$explicit" = 0 ]; then
        match='KERNEL=="nvme[0-9]*n[0-9]*"'
        rule="ACTION==\"add|change\", SUBSYSTEM==\"block\", $match, ATTR{queue/scheduler}=\"none\""
    else
        rule=""
        for dev in "${tuned[@]}"; do
            rule+="ACTION==\"add|change\", SUBSYSTEM==\"block\", KERNEL==\"$dev\", ATTR{queue/scheduler}=\"none\""$'\n'
        done
        rule="${rule%$'\n'}"
    fi
    write_file "$RULE" "# Written by Strand's tuning/nvme-scheduler.sh; remove with nvme-scheduler.sh --undo.
$rule"
fi
finish

#!/usr/bin/env bash
# Sets the cpufreq governor of every CPU to "performance", so cores run at full clock instead of
# ramping up after a burst of requests (latency) and Strand's busy shards are never down-clocked.
#
# Usage: cpu-governor.sh [--dry-run] [--undo] [--governor NAME]
# Undo:  cpu-governor.sh --undo   (restores each CPU's previous governor, saved on first change)
# Not persistent across reboots: run it (or apply-all.sh) from a boot-time unit; see README.md.
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$DIR/lib.sh"

USAGE="usage: $0 [--dry-run] [--undo] [--governor NAME]   (default governor: performance)"
common_args "$USAGE" "$@"
GOVERNOR=performance
set -- "${ARGS[@]+"${ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
        --governor) GOVERNOR="${2:?--governor needs a value}"; shift ;;
        *) die "unknown argument: $1 ($USAGE)" ;;
    esac
    shift
done

if [ "$UNDO" = 1 ]; then undo_all; finish; exit; fi

found=0
for gov in "$ROOT"/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
    [ -e "$gov" ] || continue
    found=1
    cpu="$(basename "$(dirname "$(dirname "$gov")")")"
    avail="$(read_value "$(dirname "$gov")/scaling_available_governors" || true)"
    if [ -n "$avail" ] && ! has_choice "$avail" "$GOVERNOR"; then
        say "$cpu: governor '$GOVERNOR' not offered by this driver (available: $avail), skipped"
        continue
    fi
    set_value "$cpu scaling_governor" "$gov" "$GOVERNOR" || true
done
if [ "$found" = 0 ]; then
    skip "cpufreq scaling_governor" "no /sys/devices/system/cpu/cpu*/cpufreq: a VM or a host whose firmware controls the clock"
fi
driver="$(read_value "$ROOT/sys/devices/system/cpu/cpu0/cpufreq/scaling_driver" 2>/dev/null || true)"
[ -n "$driver" ] && say "cpufreq driver: $driver"
finish

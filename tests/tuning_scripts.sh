#!/usr/bin/env bash
# Tests of tuning/: never changes this host.
#   1. every tuning script with --dry-run (and --help): exit 0, non-empty output, no state saved;
#   2. every script applied to a fake /sys, /proc, /etc tree (STRAND_TUNING_ROOT): the values
#      change, a second run changes nothing (idempotent), --undo restores the originals;
#   3. probe-disk.sh --dry-run, then a short real run (1 s per fio job, 64 MiB file) in a
#      temporary directory on the repository's disk: it prints the three figures and removes
#      its file. This installs fio from apt if it is missing.
# Prints PASS/FAIL per check and a final "N passed, M failed"; exits 1 on any failure.
#
# Usage: bash tests/tuning_scripts.sh [--no-probe]
#   PROBE_DIR=DIR  directory for the probe-disk run (default: target/tmp of the repository)
set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T="$REPO/tuning"
RUN_PROBE=1
[ "${1-}" = "--no-probe" ] && RUN_PROBE=0

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tuning-test.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=checks.sh
source "$REPO/tests/checks.sh"
# After a failure, the failed step's output.
KO_HOOK='[ -f "$WORK/out" ] && sed "s/^/    | /" "$WORK/out" | tail -n 30'

# run NAME CMD...: runs CMD with stdout+stderr in $WORK/out, sets RC and OUT (NAME: for reading).
run() {
    shift
    "$@" >"$WORK/out" 2>&1
    RC=$?
    OUT="$(cat "$WORK/out")"
}

# The CPU list given to the scripts that need one: the last online CPU.
online="$(cat /sys/devices/system/cpu/online 2>/dev/null || echo 0)"
LAST_CPU="$(printf '%s\n' "$online" | tr ',' '\n' | tail -n 1 | sed 's/.*-//')"

# --- 1. dry runs on this host ---------------------------------------------------------------
state_before="$(ls -A /var/lib/strand-tuning 2>/dev/null | sort)"
etc_before="$(ls -l /etc/sysctl.d /etc/security/limits.d /etc/udev/rules.d 2>/dev/null | md5sum)"
for s in cpu-governor irq-affinity nvme-scheduler net-sysctls memlock thp apply-all; do
    args=(--dry-run)
    case "$s" in
        irq-affinity) args+=("$LAST_CPU") ;;
        apply-all) args+=(--broker-cpus "$LAST_CPU") ;;
    esac
    run "$s" bash "$T/$s.sh" "${args[@]}"
    if [ "$RC" -ne 0 ]; then
        ko "$s ${args[*]}" "exit $RC"
    elif [ -z "$OUT" ]; then
        ko "$s ${args[*]}" "no output"
    elif ! grep -q "dry run" <<<"$OUT"; then
        ko "$s ${args[*]}" "does not say it is a dry run"
    else
        ok "$s ${args[*]} ($(wc -l <<<"$OUT") lines)"
    fi
    run "$s --help" bash "$T/$s.sh" --help
    if [ "$RC" -eq 0 ] && grep -qi usage <<<"$OUT"; then ok "$s --help"; else ko "$s --help" "exit $RC"; fi
done
run "undo dry run" bash "$T/apply-all.sh" --undo --dry-run
if [ "$RC" -eq 0 ] && [ -n "$OUT" ]; then ok "apply-all --undo --dry-run"; else ko "apply-all --undo --dry-run" "exit $RC"; fi
run "bad argument" bash "$T/thp.sh" --dry-run --no-such-flag
if [ "$RC" -ne 0 ]; then ok "unknown argument is refused (exit $RC)"; else ko "unknown argument is refused" "exit 0"; fi
state_after="$(ls -A /var/lib/strand-tuning 2>/dev/null | sort)"
etc_after="$(ls -l /etc/sysctl.d /etc/security/limits.d /etc/udev/rules.d 2>/dev/null | md5sum)"
if [ "$state_before" = "$state_after" ] && [ "$etc_before" = "$etc_after" ]; then
    ok "dry runs saved no state and wrote nothing under /etc"
else
    ko "dry runs saved no state and wrote nothing under /etc"
fi

# --- 2. apply, re-apply, undo on a fake tree ------------------------------------------------
F="$WORK/root"
mk() { mkdir -p "$(dirname "$F/$1")"; printf '%s\n' "$2" >"$F/$1"; }
mk sys/kernel/mm/transparent_hugepage/enabled "[always] madvise never"
mk sys/kernel/mm/transparent_hugepage/defrag "always defer defer+madvise [madvise] never"
for c in 0 1 2 3; do
    mk "sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor" "powersave"
    mk "sys/devices/system/cpu/cpu$c/cpufreq/scaling_available_governors" "performance powersave"
done
mk sys/devices/system/cpu/online "0-3"
mk sys/block/nvme0n1/queue/scheduler "[mq-deadline] kyber none"
mk sys/block/nvme0n1/queue/rotational "0"
mk proc/sys/net/core/somaxconn "128"
mk proc/sys/net/core/rmem_max "212992"
mk proc/sys/net/core/wmem_max "33554432"
mk proc/sys/net/core/busy_poll "0"
mk proc/sys/net/core/busy_read "0"
mk proc/sys/net/ipv4/tcp_max_syn_backlog "512"
mk proc/sys/net/ipv4/tcp_rmem "4096	131072	6291456"
mk proc/sys/net/ipv4/tcp_wmem "4096	16384	4194304"
mkdir -p "$F/sys/devices/pci0000:00/0000:00:03.0/msi_irqs" "$F/sys/devices/pci0000:00/0000:00:03.0/nvme/nvme0" "$F/sys/class/net/eth9" "$F/sys/class/nvme/nvme0" "$F/etc/security" "$F/run/systemd/system"
touch "$F/sys/devices/pci0000:00/0000:00:03.0/msi_irqs/"{40,41}
ln -s "$F/sys/devices/pci0000:00/0000:00:03.0" "$F/sys/class/net/eth9/device"
ln -s "$F/sys/devices/pci0000:00/0000:00:03.0" "$F/sys/class/nvme/nvme0/device"
mk proc/irq/40/smp_affinity_list "0-3"
mk proc/irq/41/smp_affinity_list "0-3"
mk proc/irq/default_smp_affinity "f"
printf '%s\n' "           CPU0 CPU1 CPU2 CPU3" " 40: 1 2 3 4 PCI-MSIX-0000:00:03.0 0-edge eth9-rx-0" " 41: 1 2 3 4 PCI-MSIX-0000:00:03.0 1-edge eth9-tx-0" >"$F/proc/interrupts"
snapshot() { (cd "$F" && find sys proc -type f | sort | while read -r f; do printf '%s=%s\n' "$f" "$(cat "$f")"; done); }
ORIG="$(snapshot)"

apply_all() { STRAND_TUNING_ROOT="$F" bash "$T/apply-all.sh" --broker-cpus 1-3 "$@"; }
run "apply (fake root)" apply_all
v() { cat "$F/$1"; }
if [ "$RC" -eq 0 ] \
    && [ "$(v sys/kernel/mm/transparent_hugepage/enabled)" = madvise ] \
    && [ "$(v sys/devices/system/cpu/cpu2/cpufreq/scaling_governor)" = performance ] \
    && [ "$(v sys/block/nvme0n1/queue/scheduler)" = none ] \
    && [ "$(v proc/sys/net/core/somaxconn)" = 4096 ] \
    && [ "$(v proc/sys/net/core/wmem_max)" = 33554432 ] \
    && [ "$(v proc/sys/net/ipv4/tcp_wmem)" = "4096 16384 16777216" ] \
    && [ "$(v proc/sys/net/core/busy_read)" = 50 ] \
    && [ "$(v proc/irq/40/smp_affinity_list)" = 0 ] \
    && [ "$(v proc/irq/default_smp_affinity)" = 1 ] \
    && [ -f "$F/etc/sysctl.d/60-strand.conf" ] \
    && [ -f "$F/etc/security/limits.d/90-strand-memlock.conf" ] \
    && grep -q 'LimitMEMLOCK=infinity' "$F/etc/systemd/system/strand.service.d/90-strand-memlock.conf" \
    && [ -f "$F/etc/udev/rules.d/60-strand-io-scheduler.rules" ]; then
    ok "apply on a fake tree sets every knob and writes the persistence files"
else
    ko "apply on a fake tree sets every knob" "exit $RC"
fi
FIRST="$(snapshot)"
run "re-apply (fake root)" apply_all
if [ "$RC" -eq 0 ] && [ "$(snapshot)" = "$FIRST" ] && [ "$(grep -c ': nothing changed' <<<"$OUT")" -eq 6 ]; then
    ok "a second apply changes nothing (idempotent)"
else
    ko "a second apply changes nothing" "exit $RC"
fi
run "undo (fake root)" apply_all --undo
if [ "$RC" -eq 0 ] && [ "$(snapshot | sed 's/\t/ /g')" = "$(printf '%s\n' "$ORIG" | sed 's/\t/ /g' \
        | sed 's/^\(sys\/kernel\/mm\/transparent_hugepage\/enabled\)=.*/\1=always/; s/^\(sys\/block\/nvme0n1\/queue\/scheduler\)=.*/\1=mq-deadline/')" ] \
    && [ ! -e "$F/etc/sysctl.d/60-strand.conf" ] && [ ! -e "$F/etc/security/limits.d/90-strand-memlock.conf" ] \
    && [ ! -e "$F/var/lib/strand-tuning/thp.state" ]; then
    ok "--undo restores every original value and removes the files"
else
    ko "--undo restores every original value" "exit $RC"
    diff <(printf '%s\n' "$ORIG") <(snapshot) | head -20
fi
# A VM-like tree with none of the knobs: everything is skipped, nothing fails.
E="$WORK/empty"
mkdir -p "$E/sys/devices/system/cpu" "$E/proc/sys" "$E/etc"
echo 0-1 >"$E/sys/devices/system/cpu/online"
run "empty tree" env STRAND_TUNING_ROOT="$E" bash "$T/apply-all.sh" --broker-cpus 1
if [ "$RC" -eq 0 ] && grep -q "not present, skipped" <<<"$OUT" && ! grep -q "^[a-z-]*: set " <<<"$OUT"; then
    ok "a host without the knobs: all skipped ($(grep -c 'not present, skipped' <<<"$OUT") skips), exit 0"
else
    ko "a host without the knobs: all skipped" "exit $RC"
fi

# --- 3. probe-disk ------------------------------------------------------------------------------
PD_BASE="${PROBE_DIR:-$REPO/target/tmp}"
mkdir -p "$PD_BASE"
PD="$(mktemp -d "$PD_BASE/probe-disk-test.XXXXXX")"
run "probe-disk --dry-run" bash "$T/probe-disk.sh" --dry-run "$PD"
if [ "$RC" -eq 0 ] && grep -q "fio " <<<"$OUT"; then ok "probe-disk.sh --dry-run"; else ko "probe-disk.sh --dry-run" "exit $RC"; fi
if [ "$RUN_PROBE" = 1 ]; then
    run "probe-disk" bash "$T/probe-disk.sh" --runtime 1 --size 64M "$PD"
    missing=""
    grep -Eq '^seq_write_MBps=[0-9]+(\.[0-9]+)?$' <<<"$OUT" || missing+=" seq_write_MBps"
    grep -Eq '^append_fdatasync_p50_us=[0-9]+$' <<<"$OUT" || missing+=" append_fdatasync_p50_us"
    grep -Eq '^append_fdatasync_p99_us=[0-9]+$' <<<"$OUT" || missing+=" append_fdatasync_p99_us"
    grep -Eq '^rand_read_iops=[0-9]+$' <<<"$OUT" || missing+=" rand_read_iops"
    grep -Eq '^--set log.segment.bytes=[0-9]+$' <<<"$OUT" || missing+=" log.segment.bytes"
    if [ "$RC" -eq 0 ] && [ -z "$missing" ]; then
        ok "probe-disk.sh --runtime 1 --size 64M: $(grep -E '^(seq_write_MBps|append_fdatasync_p50_us|append_fdatasync_p99_us|rand_read_iops)=' <<<"$OUT" | tr '\n' ' ')"
    else
        ko "probe-disk.sh prints the three figures" "exit $RC, missing:${missing:- none}"
    fi
    if [ -z "$(ls -A "$PD")" ]; then ok "probe-disk.sh removed its test file"; else ko "probe-disk.sh removed its test file" "$(ls -A "$PD")"; fi
fi
run "probe-disk bad dir" bash "$T/probe-disk.sh" --runtime 1 /dev/shm/strand-probe-test
if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm)" = tmpfs ]; then
    if [ "$RC" -ne 0 ] && grep -q tmpfs <<<"$OUT"; then ok "probe-disk.sh refuses tmpfs"; else ko "probe-disk.sh refuses tmpfs" "exit $RC"; fi
fi
rmdir /dev/shm/strand-probe-test 2>/dev/null
rm -rf "$PD"

echo
checks_summary

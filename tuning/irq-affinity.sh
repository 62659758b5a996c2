#!/usr/bin/env bash
# Moves the interrupts of network interfaces and disks (NVMe, virtio, SCSI...) off the CPUs that
# run Strand's shards, so a shard's core is never interrupted by packet or completion handling
# and its latency stays flat. The interrupts go to the remaining ("housekeeping") CPUs.
#
# Usage: irq-affinity.sh [--dry-run] [--undo] BROKER_CPUS
#   BROKER_CPUS: the CPUs given to strand --cpus, as a list such as 1-7 or 2,3,6-7.
# Also:
#   - sets /proc/irq/default_smp_affinity so interrupts registered later avoid those CPUs too;
#   - if irqbalance runs, bans BROKER_CPUS in /etc/default/irqbalance
#     (IRQBALANCE_BANNED_CPULIST) and restarts it, so it does not move them back.
# Kernel-managed interrupts (NVMe per-CPU queue vectors) cannot be moved from user space: they
# are reported and skipped; use the isolcpus=managed_irq,BROKER_CPUS boot parameter for those.
# Undo:  irq-affinity.sh --undo   (restores each IRQ's previous affinity and the irqbalance file)
# Not persistent: run it (or apply-all.sh) from a boot-time unit; see README.md.
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$DIR/lib.sh"

USAGE="usage: $0 [--dry-run] [--undo] BROKER_CPUS   (e.g. 1-7: the CPUs strand --cpus pins shards to)"
common_args "$USAGE" "$@"
BROKER=""
set -- "${ARGS[@]+"${ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
        --broker-cpus) BROKER="${2:?--broker-cpus needs a value}"; shift ;;
        -*) die "unknown argument: $1 ($USAGE)" ;;
        *) [ -z "$BROKER" ] || die "one CPU list only ($USAGE)"; BROKER="$1" ;;
    esac
    shift
done
IRQBALANCE_CONF="$ROOT/etc/default/irqbalance"

irqbalance_active() {
    [ -z "$ROOT" ] || return 1
    pgrep -x irqbalance >/dev/null 2>&1
}

if [ "$UNDO" = 1 ]; then
    undo_all
    if irqbalance_active; then run_cmd systemctl restart irqbalance; fi
    finish
    exit
fi

[ -n "$BROKER" ] || die "missing BROKER_CPUS ($USAGE)"
broker_ids="$(cpulist_expand "$BROKER")" || die "invalid CPU list: $BROKER"
[ -n "$broker_ids" ] || die "empty CPU list: $BROKER"
online="$(read_value "$ROOT/sys/devices/system/cpu/online" || true)"
[ -n "$online" ] || die "cannot read $ROOT/sys/devices/system/cpu/online"
online_ids="$(cpulist_expand "$online")"
for c in $broker_ids; do
    printf '%s\n' "$online_ids" | grep -qx "$c" || die "CPU $c is not online (online: $online)"
done
house="$(comm -23 <(printf '%s\n' "$online_ids" | sort) <(printf '%s\n' "$broker_ids" | sort) | sort -n | cpulist_compact)"
say "CPUs online: $online; broker (shards): $(printf '%s\n' "$broker_ids" | cpulist_compact); interrupts go to: ${house:-none}"
if [ -z "$house" ]; then
    say "the broker CPUs cover every online CPU: no CPU is left for interrupts, nothing to do"
    say "(leave at least one CPU out of strand --cpus on hosts where interrupt latency matters)"
    finish
    exit
fi

# IRQ numbers of a device: MSI/MSI-X vectors or the legacy line, from its sysfs node or a parent
# (a virtio device's vectors belong to its PCI function).
device_irqs() {
    local d="$1"
    d="$(readlink -f "$d" 2>/dev/null)" || return 0
    for _ in 0 1 2; do
        [ -n "$d" ] && [ "$d" != / ] || return 0
        if [ -d "$d/msi_irqs" ] && [ -n "$(ls -A "$d/msi_irqs" 2>/dev/null)" ]; then
            ls "$d/msi_irqs"
            return 0
        fi
        if [ -r "$d/irq" ] && [ "$(cat "$d/irq")" != 0 ]; then
            cat "$d/irq"
            return 0
        fi
        d="$(dirname "$d")"
    done
}

declare -A IRQ_OWNER=()
add_irqs() { # label sysfs-device
    local irq
    for irq in $(device_irqs "$2"); do
        if [ -z "${IRQ_OWNER[$irq]+x}" ]; then IRQ_OWNER[$irq]="$1"; fi
    done
}
for n in "$ROOT"/sys/class/net/*; do
    [ -e "$n/device" ] || continue # lo, bridges, veth, ifb: no hardware, no interrupts
    add_irqs "net $(basename "$n")" "$n/device"
done
for b in "$ROOT"/sys/block/*; do
    name="$(basename "$b")"
    case "$name" in loop*|ram*|zram*|dm-*|md*|nbd*|sr*) continue ;; esac
    [ -e "$b/device" ] || continue
    add_irqs "disk $name" "$b/device"
done
for c in "$ROOT"/sys/class/nvme/*; do
    [ -e "$c/device" ] && add_irqs "nvme $(basename "$c")" "$c/device"
done

if [ ${#IRQ_OWNER[@]} -eq 0 ]; then
    skip "NIC/NVMe/disk interrupts" "no device IRQs found in sysfs"
else
    want="$house"
    for irq in $(printf '%s\n' "${!IRQ_OWNER[@]}" | sort -n); do
        f="$ROOT/proc/irq/$irq/smp_affinity_list"
        name="$(awk -v n="$irq:" '$1 == n { print $NF }' "$ROOT/proc/interrupts" 2>/dev/null)"
        label="IRQ $irq (${IRQ_OWNER[$irq]}${name:+, $name})"
        if [ ! -e "$f" ]; then skip "$label" "$f"; continue; fi
        cur="$(cpulist_expand "$(read_value "$f")" | cpulist_compact)"
        if [ "$cur" = "$want" ]; then
            say "ok: $label affinity already $want"
        elif [ "$DRY_RUN" = 1 ]; then
            say "would set $label affinity: $cur -> $want"
        elif printf '%s\n' "$want" >"$f" 2>/dev/null; then
            save_original val "$f" "$cur"
            say "set $label affinity: $cur -> $want"
            CHANGED=$((CHANGED + 1))
        else
            say "$label: affinity $cur is kernel-managed (or the IRQ refuses moves): skipped; see isolcpus=managed_irq in README.md"
        fi
    done
fi

# Interrupts registered from now on.
dflt="$ROOT/proc/irq/default_smp_affinity"
if [ -e "$dflt" ]; then
    cur="$(read_value "$dflt")"
    want_mask="$(cpulist_mask "$house")"
    if [ "$(mask_norm "$cur")" = "$(mask_norm "$want_mask")" ]; then
        say "ok: default_smp_affinity already $cur"
    else
        set_value "default_smp_affinity" "$dflt" "$want_mask" "$cur" || true
    fi
else
    skip "default_smp_affinity" "$dflt"
fi

# irqbalance would move the interrupts back onto the broker's CPUs.
if irqbalance_active || [ -f "$IRQBALANCE_CONF" ]; then
    banned="$(printf '%s\n' "$broker_ids" | cpulist_compact)"
    line="IRQBALANCE_BANNED_CPULIST=$banned"
    if [ -f "$IRQBALANCE_CONF" ]; then
        content="$(grep -v '^IRQBALANCE_BANNED_CPULIST=' "$IRQBALANCE_CONF")"
        content="${content}"$'\n'"$line"
    else
        content="$line"
    fi
    differs=1
    [ -f "$IRQBALANCE_CONF" ] && grep -qx "$line" "$IRQBALANCE_CONF" && differs=0
    if [ "$differs" = 1 ]; then
        write_file "$IRQBALANCE_CONF" "$content"
        if irqbalance_active; then run_cmd systemctl restart irqbalance; fi
    else
        say "ok: irqbalance already bans $banned"
    fi
else
    skip "irqbalance" "not installed or not running"
fi
finish

#!/usr/bin/env bash
# Runs every host tuning script for a Strand broker, in order, and reports each one's result.
#
# Usage: apply-all.sh [--dry-run] [--undo] [--broker-cpus LIST] [--user NAME] [--unit NAME]
#   --broker-cpus LIST  CPUs the shards are pinned to (strand --cpus); needed for irq-affinity.sh,
#                       which is skipped without it.
#   --user, --unit      passed to memlock.sh (defaults: strand, strand.service)
# Undo:  apply-all.sh --undo   (runs every script's --undo, in reverse order)
# Exit status: 0 when every script succeeded, 1 otherwise (the others still run).
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

USAGE="usage: $0 [--dry-run] [--undo] [--broker-cpus LIST] [--user NAME] [--unit NAME]"
COMMON=()
BROKER=""
MEMLOCK=()
UNDO=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run|-n) COMMON+=(--dry-run) ;;
        --undo) COMMON+=(--undo); UNDO=1 ;;
        --broker-cpus) BROKER="${2:?--broker-cpus needs a value}"; shift ;;
        --user|--unit) MEMLOCK+=("$1" "${2:?$1 needs a value}"); shift ;;
        -h|--help) echo "$USAGE"; exit 0 ;;
        *) echo "apply-all: unknown argument: $1 ($USAGE)" >&2; exit 2 ;;
    esac
    shift
done

steps=(cpu-governor nvme-scheduler net-sysctls memlock thp irq-affinity)
if [ "$UNDO" = 1 ]; then
    steps=(irq-affinity thp memlock net-sysctls nvme-scheduler cpu-governor)
fi
ok=0
bad=0
failed=()
for s in "${steps[@]}"; do
    args=("${COMMON[@]+"${COMMON[@]}"}")
    case "$s" in
        memlock) args+=("${MEMLOCK[@]+"${MEMLOCK[@]}"}") ;;
        irq-affinity)
            if [ "$UNDO" = 0 ]; then
                if [ -z "$BROKER" ]; then
                    echo "== irq-affinity: skipped (no --broker-cpus given)"
                    continue
                fi
                args+=("$BROKER")
            fi
            ;;
    esac
    echo "== $s ${args[*]+"${args[*]}"}"
    if bash "$DIR/$s.sh" "${args[@]+"${args[@]}"}"; then
        ok=$((ok + 1))
    else
        bad=$((bad + 1))
        failed+=("$s")
    fi
done
echo "== apply-all: $ok script(s) succeeded, $bad failed${failed[*]+: ${failed[*]}}"
[ "$bad" -eq 0 ]

#!/usr/bin/env bash
# Sets transparent huge pages to "madvise" (both enabled and defrag): only memory that asks for
# huge pages (madvise(MADV_HUGEPAGE)) gets them, so the broker's page faults never stall on
# synchronous compaction and khugepaged does not collapse its buffers behind its back (latency
# spikes and memory bloat with "always").
#
# Usage: thp.sh [--dry-run] [--undo] [--mode always|madvise|never]
# Undo:  thp.sh --undo   (restores the previous enabled/defrag values)
# Not persistent: add transparent_hugepage=madvise to the kernel command line; see README.md.
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$DIR/lib.sh"

USAGE="usage: $0 [--dry-run] [--undo] [--mode always|madvise|never]   (default: madvise)"
common_args "$USAGE" "$@"
MODE=madvise
set -- "${ARGS[@]+"${ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
        --mode) MODE="${2:?--mode needs a value}"; shift ;;
        *) die "unknown argument: $1 ($USAGE)" ;;
    esac
    shift
done

if [ "$UNDO" = 1 ]; then undo_all; finish; exit; fi

THP="$ROOT/sys/kernel/mm/transparent_hugepage"
if [ ! -d "$THP" ]; then
    skip "transparent huge pages" "kernel built without CONFIG_TRANSPARENT_HUGEPAGE"
    finish
    exit
fi

choose() { # label file wanted [fallback]
    local label="$1" file="$2" want="$3" fallback="${4-}" cur sel
    if [ ! -e "$file" ]; then skip "$label" "$file"; return 0; fi
    cur="$(read_value "$file")"
    if ! has_choice "$cur" "$want"; then
        if [ -n "$fallback" ] && has_choice "$cur" "$fallback"; then
            want="$fallback"
        else
            say "$label: '$want' not offered (choices: $cur), skipped"
            return 0
        fi
    fi
    sel="$(bracketed "$cur")"
    set_value "$label" "$file" "$want" "${sel:-$cur}" || true
}

choose "THP enabled" "$THP/enabled" "$MODE"
if [ "$MODE" = never ]; then
    choose "THP defrag" "$THP/defrag" never
else
    choose "THP defrag" "$THP/defrag" madvise
fi
finish

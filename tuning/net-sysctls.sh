#!/usr/bin/env bash
# Network sysctls for a broker with many client connections and large produce/fetch transfers:
#   net.core.somaxconn, net.ipv4.tcp_max_syn_backlog  accept backlog (bursts of reconnecting clients)
#   net.core.rmem_max, net.core.wmem_max             ceiling for SO_RCVBUF/SO_SNDBUF that clients set
#   net.ipv4.tcp_rmem, net.ipv4.tcp_wmem             autotuning ceiling (3rd field) for fat pipes
#   net.core.busy_poll, net.core.busy_read           socket busy polling (microseconds)
# Limits are only ever raised: a host already above a value keeps its own.
#
# Usage: net-sysctls.sh [--dry-run] [--undo] [--busy-poll-us N] [--no-persist]
#   --busy-poll-us N  busy poll/read time (default 50; 0 leaves both untouched)
#   Without --no-persist, /etc/sysctl.d/60-strand.conf keeps the values across reboots.
# Undo:  net-sysctls.sh --undo   (restores the previous values, removes the sysctl.d file)
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$DIR/lib.sh"

USAGE="usage: $0 [--dry-run] [--undo] [--busy-poll-us N] [--no-persist]"
common_args "$USAGE" "$@"
BUSY=50
PERSIST=1
set -- "${ARGS[@]+"${ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
        --busy-poll-us) BUSY="${2:?--busy-poll-us needs a value}"; shift ;;
        --no-persist) PERSIST=0 ;;
        *) die "unknown argument: $1 ($USAGE)" ;;
    esac
    shift
done
case "$BUSY" in ''|*[!0-9]*) die "--busy-poll-us must be a number of microseconds" ;; esac
CONF="$ROOT/etc/sysctl.d/60-strand.conf"

if [ "$UNDO" = 1 ]; then undo_all; finish; exit; fi

BUF_MAX=16777216 # 16 MiB
PERSISTED=""

sysctl_path() { printf '%s/proc/sys/%s' "$ROOT" "$(printf '%s' "$1" | tr '.' '/')"; }

# at_least KEY MIN: raise a single-number sysctl to MIN.
at_least() {
    local key="$1" min="$2" p cur
    p="$(sysctl_path "$key")"
    if [ ! -e "$p" ]; then skip "$key" "$p"; return 0; fi
    cur="$(read_value "$p")"
    if [ "$cur" -ge "$min" ] 2>/dev/null; then
        say "ok: $key already $cur (>= $min)"
    else
        set_value "$key" "$p" "$min" "$cur" || return 0
    fi
    PERSISTED+="$key = $(if [ "$cur" -ge "$min" ] 2>/dev/null; then echo "$cur"; else echo "$min"; fi)"$'\n'
}

# max_field KEY MAX: raise the third field (autotuning maximum) of tcp_rmem/tcp_wmem.
max_field() {
    local key="$1" max="$2" p cur a b c
    p="$(sysctl_path "$key")"
    if [ ! -e "$p" ]; then skip "$key" "$p"; return 0; fi
    cur="$(read_value "$p")"
    read -r a b c <<<"$cur"
    if [ "${c:-0}" -ge "$max" ] 2>/dev/null; then
        say "ok: $key already $cur (max >= $max)"
    else
        c="$max"
        set_value "$key" "$p" "$a $b $c" "$cur" || return 0
    fi
    PERSISTED+="$key = $a $b $c"$'\n'
}

# exactly KEY VALUE
exactly() {
    local key="$1" want="$2" p
    p="$(sysctl_path "$key")"
    if [ ! -e "$p" ]; then skip "$key" "$p (kernel without CONFIG_NET_RX_BUSY_POLL, or not in this network namespace)"; return 0; fi
    set_value "$key" "$p" "$want" || return 0
    PERSISTED+="$key = $want"$'\n'
}

at_least net.core.somaxconn 4096
at_least net.ipv4.tcp_max_syn_backlog 4096
at_least net.core.rmem_max "$BUF_MAX"
at_least net.core.wmem_max "$BUF_MAX"
max_field net.ipv4.tcp_rmem "$BUF_MAX"
max_field net.ipv4.tcp_wmem "$BUF_MAX"
if [ "$BUSY" -gt 0 ]; then
    exactly net.core.busy_poll "$BUSY"
    exactly net.core.busy_read "$BUSY"
else
    say "busy polling left as it is (--busy-poll-us 0)"
fi

if [ "$PERSIST" = 1 ] && [ -n "$PERSISTED" ]; then
    write_file "$CONF" "# Written by Strand's tuning/net-sysctls.sh; remove with net-sysctls.sh --undo.
${PERSISTED%$'\n'}"
fi
finish

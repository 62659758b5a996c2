#!/usr/bin/env bash
# Raises the locked-memory limit (RLIMIT_MEMLOCK) for the user and systemd unit that run Strand.
# glommio registers its I/O buffers with io_uring (fixed buffers), which pins them and counts
# against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK (root). Too low a limit and
# registration fails (glommio falls back to slower unregistered buffers, with a WARN); below
# 512 KiB the executor does not start at all.
#
# Writes:
#   /etc/security/limits.d/90-strand-memlock.conf   for login sessions (PAM: ssh, su, sudo -i)
#   /etc/systemd/system/UNIT.d/90-strand-memlock.conf  LimitMEMLOCK=infinity, when systemd runs
#                                                   (limits.conf does not apply to services)
# Usage: memlock.sh [--dry-run] [--undo] [--user NAME] [--unit NAME.service] [--limit KIB|unlimited]
#   defaults: --user strand --unit strand.service --limit unlimited
# Undo:  memlock.sh --undo   (removes the two files, then systemctl daemon-reload)
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$DIR/lib.sh"

USAGE="usage: $0 [--dry-run] [--undo] [--user NAME] [--unit NAME.service] [--limit KIB|unlimited]"
common_args "$USAGE" "$@"
USER_NAME=strand
UNIT=strand.service
LIMIT=unlimited
set -- "${ARGS[@]+"${ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case "$1" in
        --user) USER_NAME="${2:?--user needs a value}"; shift ;;
        --unit) UNIT="${2:?--unit needs a value}"; shift ;;
        --limit) LIMIT="${2:?--limit needs a value}"; shift ;;
        *) die "unknown argument: $1 ($USAGE)" ;;
    esac
    shift
done
case "$UNIT" in *.service) ;; *) UNIT="$UNIT.service" ;; esac
case "$LIMIT" in
    unlimited|infinity) LIMIT=unlimited; SYSTEMD_LIMIT=infinity ;;
    *[!0-9]*|'') die "--limit must be a number of KiB or 'unlimited'" ;;
    *) SYSTEMD_LIMIT="${LIMIT}K" ;;
esac
LIMITS_FILE="$ROOT/etc/security/limits.d/90-strand-memlock.conf"
DROPIN="$ROOT/etc/systemd/system/$UNIT.d/90-strand-memlock.conf"
systemd_running() { [ -d "$ROOT/run/systemd/system" ]; }

if [ "$UNDO" = 1 ]; then
    undo_all
    if systemd_running; then run_cmd systemctl daemon-reload; fi
    finish
    exit
fi

# Current values.
say "current: this shell's memlock limit is $(ulimit -l) KiB (soft), $(ulimit -H -l) KiB (hard); running as uid $(id -u)"
if [ "$(id -u)" = 0 ]; then
    say "note: root has CAP_IPC_LOCK, so a broker run as root is not limited by RLIMIT_MEMLOCK"
fi
if ! getent passwd "$USER_NAME" >/dev/null 2>&1; then
    say "note: user '$USER_NAME' does not exist here yet; the limit applies once it does (or pass --user)"
fi
if [ -d "$ROOT/etc/security" ]; then
    write_file "$LIMITS_FILE" "# Written by Strand's tuning/memlock.sh; remove with memlock.sh --undo.
# Locked memory for glommio/io_uring registered buffers (applies to PAM login sessions).
$USER_NAME soft memlock $LIMIT
$USER_NAME hard memlock $LIMIT"
else
    skip "/etc/security (pam_limits)" "limits.conf is not used on this host"
fi

if systemd_running; then
    if command -v systemctl >/dev/null 2>&1 && [ -z "$ROOT" ]; then
        cur="$(systemctl show -p LimitMEMLOCK --value "$UNIT" 2>/dev/null || true)"
        say "current: $UNIT LimitMEMLOCK=${cur:-unknown}"
    fi
    content="# Written by Strand's tuning/memlock.sh; remove with memlock.sh --undo.
[Service]
LimitMEMLOCK=$SYSTEMD_LIMIT"
    differs=1
    [ -f "$DROPIN" ] && [ "$(cat "$DROPIN")" = "$content" ] && differs=0
    write_file "$DROPIN" "$content"
    [ "$differs" = 1 ] && run_cmd systemctl daemon-reload
    say "restart $UNIT for the new limit to apply to a running broker"
else
    skip "systemd" "no /run/systemd/system; for another supervisor raise the limit there (e.g. 'ulimit -l unlimited' before starting strand, or docker --ulimit memlock=-1)"
fi
finish

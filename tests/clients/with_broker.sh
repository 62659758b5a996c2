#!/usr/bin/env bash
# Usage: with_broker.sh [strand serve args...] -- command [args...]
# Starts a fresh broker (see lib.sh), exports BOOTSTRAP, runs the command,
# and stops the broker afterwards. Exit status is the command's.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
broker_args=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do broker_args+=("$1"); shift; done
[ "${1:-}" = "--" ] || fail "usage: with_broker.sh [broker args...] -- command [args...]"
shift
[ "$#" -gt 0 ] || fail "usage: with_broker.sh [broker args...] -- command [args...]"
start_broker "${broker_args[@]}"
"$@"

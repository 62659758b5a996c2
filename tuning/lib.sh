# shellcheck shell=bash
# Helpers shared by the tuning scripts. Sourced, never run on its own.
#
# Conventions every script follows:
#   --dry-run   print the current value of each knob and what would change; change nothing.
#   --undo      put back what an earlier run changed (values saved in $STATE_DIR), or with
#               --dry-run show what would be put back.
#   A knob that does not exist on this host (a VM without cpufreq, no NVMe, ...) is reported as
#   "not present, skipped" and is not an error. Running a script twice changes nothing the
#   second time ("ok: ... already ...").
#
# STRAND_TUNING_ROOT (tests only): a directory prefixed to every /sys, /proc and /etc path, so a
# fake tree can be tuned without touching the host; commands such as systemctl are then only
# printed, never run.

set -u

ROOT="${STRAND_TUNING_ROOT:-}"
STATE_DIR="${STRAND_TUNING_STATE:-$ROOT/var/lib/strand-tuning}"
SCRIPT_NAME="$(basename "$0" .sh)"
STATE_FILE="$STATE_DIR/$SCRIPT_NAME.state"
DRY_RUN=0
UNDO=0
ARGS=()
CHANGED=0
FAILED=0

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 2; }
skip() { say "$1: not present, skipped${2:+ ($2)}"; }

# Parses the common flags; everything else is left in ARGS. $1 is the usage text.
common_args() {
    local usage="$1"
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --dry-run|-n) DRY_RUN=1 ;;
            --undo) UNDO=1 ;;
            -h|--help) printf '%s\n' "$usage"; exit 0 ;;
            *) ARGS+=("$1") ;;
        esac
        shift
    done
    if [ "$DRY_RUN" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
        die "changing host settings needs root; run as root, or with --dry-run to only look"
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: nothing will be changed"
    fi
}

# Reads a one-line file, whitespace normalised to single spaces.
read_value() {
    local v
    v="$(cat "$1" 2>/dev/null)" || return 1
    printf '%s' "$v" | tr -s ' \t\n' '   ' | sed 's/^ //; s/ $//'
}

# The selected word of a sysfs choice file such as "always [madvise] never".
bracketed() {
    printf '%s\n' "$1" | sed -n 's/.*\[\([^]]*\)\].*/\1/p'
}

# Whether word $2 is one of the words of $1 (brackets ignored).
has_choice() {
    printf '%s\n' "$1" | tr -d '[]' | tr ' ' '\n' | grep -qx -- "$2"
}

# Records the original value of something about to change, once: the first saved value is
# the host's own, later runs must not overwrite it.
save_original() {
    local kind="$1" key="$2" value="$3"
    mkdir -p "$STATE_DIR"
    if [ -f "$STATE_FILE" ] && cut -f2 "$STATE_FILE" | grep -qxF -- "$key"; then
        return 0
    fi
    printf '%s\t%s\t%s\n' "$kind" "$key" "$value" >>"$STATE_FILE"
}

# set_value LABEL PATH DESIRED [CURRENT]: a sysfs/procfs knob. CURRENT defaults to the file's
# normalised content.
set_value() {
    local label="$1" path="$2" want="$3" cur="${4-}"
    if [ ! -e "$path" ]; then
        skip "$label" "$path"
        return 0
    fi
    if [ $# -lt 4 ]; then
        cur="$(read_value "$path")"
    fi
    if [ "$cur" = "$want" ]; then
        say "ok: $label already $want"
        return 0
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "would set $label: $cur -> $want"
        return 0
    fi
    save_original val "$path" "$cur"
    if printf '%s\n' "$want" >"$path" 2>/dev/null; then
        say "set $label: $cur -> $want"
        CHANGED=$((CHANGED + 1))
    else
        warn "cannot set $label ($path) to $want"
        FAILED=$((FAILED + 1))
        return 1
    fi
}

# write_file PATH CONTENT: a whole configuration file owned by these scripts.
write_file() {
    local path="$1" content="$2"
    if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
        say "ok: $path already up to date"
        return 0
    fi
    if [ "$DRY_RUN" = 1 ]; then
        if [ -f "$path" ]; then say "would rewrite $path as:"; else say "would create $path:"; fi
        printf '%s\n' "$content" | sed 's/^/    | /'
        return 0
    fi
    mkdir -p "$STATE_DIR/files" "$(dirname "$path")"
    if [ -f "$path" ]; then
        local backup
        backup="$STATE_DIR/files/$(printf '%s' "$path" | tr '/' '%')"
        [ -f "$backup" ] || cp -p "$path" "$backup"
        save_original file "$path" "$backup"
    else
        save_original file "$path" "-"
    fi
    printf '%s\n' "$content" >"$path"
    say "wrote $path"
    CHANGED=$((CHANGED + 1))
}

# Runs a command that changes the host (systemctl, ...): printed in a dry run or a fake tree.
run_cmd() {
    if [ "$DRY_RUN" = 1 ]; then
        say "would run: $*"
    elif [ -n "$ROOT" ]; then
        say "fake root, not running: $*"
    else
        say "running: $*"
        "$@" || { warn "command failed: $*"; FAILED=$((FAILED + 1)); }
    fi
}

# Puts back everything recorded in the state file.
undo_all() {
    if [ ! -f "$STATE_FILE" ]; then
        say "nothing to undo (no $STATE_FILE: this script changed nothing here, or it was undone)"
        return 0
    fi
    local kind key value
    while IFS=$'\t' read -r kind key value; do
        case "$kind" in
            val)
                if [ "$DRY_RUN" = 1 ]; then
                    say "would restore $key to '$value' (now '$(read_value "$key")')"
                elif printf '%s\n' "$value" >"$key" 2>/dev/null; then
                    say "restored $key to '$value'"
                else
                    warn "cannot restore $key to '$value'"
                    FAILED=$((FAILED + 1))
                fi
                ;;
            file)
                if [ "$value" = "-" ]; then
                    if [ "$DRY_RUN" = 1 ]; then say "would remove $key"; else rm -f "$key" && say "removed $key"; fi
                else
                    if [ "$DRY_RUN" = 1 ]; then say "would restore $key from $value"; else cp -p "$value" "$key" && say "restored $key"; fi
                fi
                ;;
        esac
    done <"$STATE_FILE"
    if [ "$DRY_RUN" = 0 ]; then
        rm -f "$STATE_FILE"
    fi
}

# Closing lines: the undo note and the exit status.
finish() {
    if [ "$UNDO" = 1 ]; then
        :
    elif [ "$DRY_RUN" = 1 ]; then
        say "undo note: after applying, '$0 --undo' restores the previous values (saved in $STATE_FILE)"
    elif [ "$CHANGED" -gt 0 ]; then
        say "changed $CHANGED setting(s); undo with: $0 --undo  (previous values saved in $STATE_FILE)"
    else
        say "nothing changed"
    fi
    [ "$FAILED" -eq 0 ]
}

# CPU list helpers ("0-3,8" <-> one id per line).
cpulist_expand() {
    local part a b
    local IFS=','
    for part in $1; do
        part="${part// /}"
        [ -z "$part" ] && continue
        case "$part" in
            *-*) a="${part%-*}"; b="${part#*-}" ;;
            *) a="$part"; b="$part" ;;
        esac
        case "$a$b" in *[!0-9]*) return 1 ;; esac
        seq "$a" "$b"
    done | sort -n -u
}

cpulist_compact() {
    awk 'NR==1{s=$1;p=$1;next} $1==p+1{p=$1;next} {printf "%s%s,", s, (s==p?"":"-" p); s=$1;p=$1} END{if(NR) printf "%s%s", s, (s==p?"":"-" p)}'
}

# Hex affinity mask of a CPU list (as /proc/irq/*/smp_affinity), 32-bit words comma-separated.
cpulist_mask() {
    local -a words=()
    local cpu w i s top=0 out=""
    for cpu in $(cpulist_expand "$1"); do
        w=$((cpu / 32))
        words[w]=$(( ${words[w]:-0} | (1 << (cpu % 32)) ))
        [ "$w" -gt "$top" ] && top=$w
    done
    for ((i = top; i >= 0; i--)); do
        if [ "$i" -eq "$top" ]; then printf -v s '%x' "${words[i]:-0}"; else printf -v s '%08x' "${words[i]:-0}"; fi
        out+="$s"
        [ "$i" -gt 0 ] && out+=","
    done
    printf '%s\n' "$out"
}

# A mask normalised for comparison (no commas, no leading zeros, lower case).
mask_norm() {
    local m
    m="$(printf '%s' "$1" | tr -d ', \n' | tr 'A-F' 'a-f' | sed 's/^0*//')"
    printf '%s' "${m:-0}"
}

# shellcheck shell=bash
# PASS/FAIL bookkeeping for the shell tests that run outside cargo and run_all.sh
# (bench_smoke.sh, bench_peer_smoke.sh, tuning_scripts.sh). Source it, then:
#   ok NAME            count a pass and print "PASS NAME"
#   ko NAME [WHY]      count a failure and print "FAIL NAME: WHY" (then the hook, if set)
#   check NAME CMD...  ok or ko by CMD's exit status
#   checks_summary     print "N passed, M failed"; its status is 0 only without failures
# KO_HOOK: a command (eval'd) run after each failure, e.g. to print the output of the step.
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
ko() {
    fail=$((fail + 1))
    echo "FAIL $1${2:+: $2}"
    if [ -n "${KO_HOOK:-}" ]; then eval "$KO_HOOK"; fi
}
check() {
    local name="$1"
    shift
    if "$@"; then ok "$name"; else ko "$name"; fi
}
checks_summary() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

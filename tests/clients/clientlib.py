"""Small helpers shared by the Python client tests (no pytest needed).

Each test calls ensure_broker(broker_args) first: if $BOOTSTRAP is not set, the
script re-executes itself under with_broker.sh, which starts a fresh broker
(lib.sh) and exports BOOTSTRAP.
"""
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class TestFailure(Exception):
    pass


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def check_eq(expected, actual, what):
    if expected != actual:
        e, a = repr(expected), repr(actual)
        if len(e) > 400:
            e = e[:400] + "..."
        if len(a) > 400:
            a = a[:400] + "..."
        raise TestFailure("%s: expected %s, got %s" % (what, e, a))
    log("ok: %s" % what)


def ensure_broker(broker_args):
    """Return the bootstrap address, starting a broker if none was given."""
    if os.environ.get("BOOTSTRAP"):
        return os.environ["BOOTSTRAP"]
    script = os.path.abspath(sys.argv[0])
    cmd = ["bash", os.path.join(HERE, "with_broker.sh")] + list(broker_args) + \
          ["--", sys.executable, script] + sys.argv[1:]
    os.execvp(cmd[0], cmd)


def make_lines(n, prefix="line"):
    """n distinct lines, numbered so that order is checkable."""
    return ["%s-%06d payload %d" % (prefix, i, (i * 7919) % 100003) for i in range(1, n + 1)]


def write_lines_file(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_lines_file(path):
    with open(path) as f:
        return f.read().splitlines()


def run_main(name, main, timeout_s=240):
    """Run main() with a hard timeout; print PASS/FAIL and exit accordingly."""
    def on_alarm(signum, frame):
        raise TestFailure("timed out after %ds" % timeout_s)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout_s)
    try:
        main()
    except TestFailure as e:
        print("%s: FAIL: %s" % (name, e), file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception:
        import traceback
        traceback.print_exc()
        print("%s: FAIL: unexpected exception (see traceback above)" % name, file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        signal.alarm(0)
    print("%s: PASS" % name, flush=True)
    # Client libraries may leave non-daemon threads behind; do not hang on them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

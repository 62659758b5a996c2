#!/usr/bin/env python3
"""Judge franz-go's pkg/kgo test results against tests/go/expected.tsv.

Reads the test2json event streams of one or more runs of the kgo test binary,
the classification of its tests (brokertests: name, tab, broker|unit) and the
expectations file (tab-separated: name, EXPECTED-FAIL, reason, a text the
failure output must contain). Prints one line per broker test and the counts.
Exits 1 when a test not listed fails or has no result, when a listed test does
not fail (it passes or skips: the list must stay true) or fails without its
text, or when a listed test is not in the suite. With --report FILE it writes
the report card (markdown) there.

    kgo_results.py --classes C --expected E [--report R --meta K=V ...] RUN.json...
"""
import argparse
import json
import re
import sys

# A t.Log/t.Skip line as `go test -v` prints it: "    file_test.go:123: message".
LOG_LINE = re.compile(r"^\s+(\w+_test\.go:\d+): (.*)$")


class Result:
    def __init__(self):
        self.action = None      # pass, fail, skip, or None (no result: timeout or crash)
        self.elapsed = 0.0
        self.logs = []          # "file:line: message" lines of this test
        self.output = []        # every output line of this test


def read_events(paths):
    """Results of top-level tests and of subtests, keyed by their full names."""
    results = {}
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                name = ev.get("Test")
                if not name:
                    continue
                r = results.setdefault(name, Result())
                action = ev.get("Action")
                if action == "output":
                    text = ev.get("Output", "").rstrip("\n")
                    r.output.append(text)
                    m = LOG_LINE.match(text)
                    if m:
                        r.logs.append(f"{m.group(1)}: {m.group(2)}")
                elif action in ("pass", "fail", "skip"):
                    r.action = action
                    r.elapsed = ev.get("Elapsed", 0.0)
    return results


def read_tsv(path, columns):
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < columns:
                sys.exit(f"{path}: expected {columns} tab-separated columns: {line!r}")
            rows[parts[0]] = parts[1:]
    return rows


def skip_reason(r):
    """The t.Skip message: the last log line, less deferred "... completed in ..." timings."""
    messages = [line.split(": ", 1)[1] for line in r.logs if " completed in " not in line]
    return messages[-1] if messages else "skipped without a message"


def skipped_subtests(name, results):
    """'sub: reason' for each skipped subtest of a test."""
    out = []
    for sub, r in sorted(results.items()):
        if sub.startswith(name + "/") and r.action == "skip":
            out.append(f"{sub[len(name) + 1:]}: {skip_reason(r)}")
    return out


def test_seconds(name, results):
    """Seconds of a test: its own, or its longest subtest's (parallel subtests run after
    their parent's function returned)."""
    return max((r.elapsed for full, r in results.items()
                if full == name or full.startswith(name + "/")), default=0.0)


def first_failure(r):
    for line in r.logs:
        if "FAILED TESTING" not in line:
            return line
    return "no t.Error line; see the output" if r.action == "fail" else "no result (timeout or crash)"


def missing_evidence(name, exp, results):
    """A problem when an expected failure's output lacks the text expected.tsv gives."""
    evidence = exp[2] if len(exp) > 2 else ""
    for full, r in results.items():
        if (full == name or full.startswith(name + "/")) and any(evidence in line for line in r.output):
            return None
    return f"fails, but its output lacks {evidence!r}: it fails for another reason than the listed one"


def judge(name, r, expected, results):
    """(status, reason, problem): status is PASS, FAIL, EXPECTED or SKIP;
    problem is a message when the result breaks the expectations."""
    exp = expected.get(name)
    if r is None and exp:
        return "EXPECTED", exp[1], "did not run"
    if r is None or r.action in (None, "fail"):
        if exp:
            stopped = " [stopped by the run's timeout]" if r is None or r.action is None else ""
            return "EXPECTED", exp[1] + stopped, missing_evidence(name, exp, results)
        if r is None or r.action is None:
            return "FAIL", "no result (timeout or crash)", "no result"
        return "FAIL", first_failure(r), "failed"
    if r.action == "skip":
        problem = "is listed as EXPECTED-FAIL but was skipped" if exp else None
        return "SKIP", skip_reason(r), problem
    if exp:
        return "PASS", "", "is listed as EXPECTED-FAIL but now PASSES: remove it from tests/go/expected.tsv"
    return "PASS", "", None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--report")
    ap.add_argument("--partial", action="store_true", help="judge only the tests that ran (a -test.run subset)")
    ap.add_argument("--meta", action="append", default=[], help="a line for the report header")
    ap.add_argument("--results-out", help="write each test's raw outcome (name, PASS|FAIL|SKIP|NONE) there")
    ap.add_argument("--reference", help="a --results-out file of a reference broker: a column of the report")
    ap.add_argument("--reference-name", default="reference")
    ap.add_argument("--notes", help="a hand-written markdown file appended to the report")
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()

    classes = {k: v[0] for k, v in read_tsv(args.classes, 2).items()}
    expected = read_tsv(args.expected, 4)
    results = read_events(args.runs)

    problems = [f"{name}: is listed in tests/go/expected.tsv but is not a test of the suite"
                for name in expected if name not in classes]
    if args.partial:
        classes = {name: kind for name, kind in classes.items() if name in results}
    rows = {"broker": [], "unit": []}
    for name in sorted(classes):
        r = results.get(name)
        status, reason, problem = judge(name, r, expected, results)
        if status == "PASS":
            reason = "; ".join(f"subtest {s}" for s in skipped_subtests(name, results))
        rows[classes[name]].append((name, status, reason, test_seconds(name, results)))
        if problem:
            problems.append(f"{name}: {problem}")
            print_output(name, r, results)

    counts = {kind: count(rows[kind]) for kind in rows}
    for name, status, reason, elapsed in rows["broker"]:
        print(f"{status:<9} {name} ({elapsed:.1f}s){'  ' + reason if reason else ''}")
    unit_bad = [row for row in rows["unit"] if row[1] not in ("PASS", "SKIP")]
    for name, status, reason, elapsed in unit_bad:
        print(f"{status:<9} {name} (unit test)  {reason}")
    print(summary_line("broker tests", counts["broker"]))
    print(summary_line("unit tests", counts["unit"]))
    for p in problems:
        print(f"PROBLEM: {p}")
    if args.results_out:
        write_outcomes(args.results_out, classes, results)
    if args.report:
        reference = None
        if args.reference:
            reference = (args.reference_name, {k: v[0] for k, v in read_tsv(args.reference, 2).items()})
        notes = open(args.notes, encoding="utf-8").read() if args.notes else ""
        write_report(args.report, rows, counts, args.meta, reference, notes)
    sys.exit(1 if problems else 0)


def print_output(name, r, results):
    """The output of a test that broke the expectations (and of its subtests)."""
    print(f"----- output of {name} -----")
    for full, res in sorted(results.items()):
        if full == name or full.startswith(name + "/"):
            for line in res.output[-200:]:
                print("    " + line)
    print(f"----- end of {name} -----")


def count(rows):
    c = {"PASS": 0, "FAIL": 0, "EXPECTED": 0, "SKIP": 0}
    for row in rows:
        c[row[1]] += 1
    return c


def summary_line(label, c):
    total = sum(c.values())
    return (f"{label}: {total}: {c['PASS']} passed, {c['EXPECTED']} expected failures, "
            f"{c['SKIP']} skipped, {c['FAIL']} failed")


def write_outcomes(path, classes, results):
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Raw outcome of each franz-go pkg/kgo test (kgo_results.py --results-out).\n")
        for name in sorted(classes):
            r = results.get(name)
            outcome = (r.action or "none").upper() if r else "NONE"
            f.write(f"{name}\t{outcome}\n")


def cell(text):
    return text.replace("|", "\\|")


def write_report(path, rows, counts, meta, reference, notes):
    lines = ["# franz-go's integration suite against Strand", "",
             "Generated by `UPDATE_REPORT=1 bash tests/clients/franz_go_test.sh`; do not edit by hand.", ""]
    lines += [f"- {m}" for m in meta]
    lines += ["", "## Counts", "",
              "- " + summary_line("Broker tests", counts["broker"]),
              "- " + summary_line("Unit tests (no broker)", counts["unit"]),
              "",
              "PASS: passed; EXPECTED: fails because Strand does not serve what it needs yet (listed in",
              "`tests/go/expected.tsv`); SKIP: the test skipped itself (an API the broker does not advertise,",
              "or a setting the run does not give), not counted as a pass; FAIL: an unexpected failure.",
              "Broker tests are the tests that reach `KGO_SEEDS` (found by `tests/go/brokertests`); unit tests",
              "run in-process.", ""]
    if notes:
        lines += [notes.rstrip("\n"), ""]
    lines += ["## Broker tests", ""]
    ref_name, ref = reference if reference else (None, {})
    if reference:
        lines += [f"The {ref_name} column: the same tests against {ref_name} (`FRANZ_GO_SEEDS`, see the script).", "",
                  f"| test | result | seconds | reason | {ref_name} |", "| --- | --- | --- | --- | --- |"]
    else:
        lines += ["| test | result | seconds | reason |", "| --- | --- | --- | --- |"]
    for name, status, reason, elapsed in rows["broker"]:
        ref_cell = f" {ref.get(name, '-')} |" if reference else ""
        lines.append(f"| {name} | {status} | {elapsed:.1f} | {cell(reason)} |{ref_cell}")
    lines += ["", "## Unit tests", "", "| test | result | reason |", "| --- | --- | --- |"]
    for name, status, reason, _ in rows["unit"]:
        lines.append(f"| {name} | {status} | {cell(reason)} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

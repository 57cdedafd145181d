"""Turns the SDK suites' reports into the README's compatibility table, and checks it.

    python3 conformance/table.py target/conformance/python.json target/conformance/node.json \
        --out target/conformance/table.md [--check README.md]

A cell is "yes" when every comparison of that kind was the same (stream: the raw chunks and
the stream() helper's final completion; non-stream: create(), and parse() where the case
has it), "no" (with the first difference as a footnote) otherwise; "direct" says the case
worked directly against the fake (or raised the expected exception class). --check fails
when README.md's table (between the conformance-table markers) is not this output.
"""

import argparse
import json
import sys

BEGIN = "<!-- conformance-table:begin (written by conformance/table.py; do not edit) -->"
END = "<!-- conformance-table:end -->"

COLUMNS = {"non-stream": ["non_stream", "parse"], "stream": ["stream", "helper"]}


def cell(row, kinds, notes):
    modes = [row["modes"][m] for m in kinds if m in row["modes"]]
    if not modes:
        return "n/a"
    bad = [m["detail"] for m in modes if not m["same"]]
    if not bad:
        return "yes"
    notes.append(bad[0])
    return f"no [{len(notes)}]"


def render(reports):
    notes = []
    head = ["feature"]
    for r in reports:
        name = f"{'Python' if r['sdk'] == 'python' else 'Node'} `openai` {r['version']}"
        head += [f"{name}: direct", "non-stream", "stream"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    features = [row["feature"] for row in reports[0]["results"]]
    for i, feature in enumerate(features):
        cells = [feature]
        for r in reports:
            row = r["results"][i]
            assert row["feature"] == feature, "the suites ran different cases"
            if row["direct_failures"]:
                notes.append("the SDK fails directly: " + "; ".join(row["direct_failures"]))
                cells.append(f"no [{len(notes)}]")
            else:
                cells.append("yes")
            cells += [cell(row, COLUMNS["non-stream"], notes), cell(row, COLUMNS["stream"], notes)]
        lines.append("| " + " | ".join(cells) + " |")
    for n, text in enumerate(notes, 1):
        lines.append("")
        lines.append(f"[{n}] {text}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", help="README whose table must be this output")
    a = ap.parse_args()
    reports = [json.load(open(p)) for p in a.reports]
    table = render(reports)
    open(a.out, "w").write(table)
    print(table)
    if a.check:
        text = open(a.check).read()
        if BEGIN not in text or END not in text:
            print(f"{a.check}: no conformance table markers", file=sys.stderr)
            sys.exit(1)
        current = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
        if current != table:
            print(
                f"{a.check}'s compatibility table is not what the suite produced; "
                f"replace the lines between the markers with {a.out}",
                file=sys.stderr,
            )
            sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Calls per operation from a callgrind profile of SecProxyProfile, and who makes them.

    callgrind-calls.py FILE OPERATIONS [FUNCTION ...]    (TOP=N callers each, default 6)

FILE is a `--callgrind-out-file` written with `--toggle-collect='*measuredRegion*'`, OPERATIONS the COUNT
SecProxyProfile ran; FUNCTION defaults to the Swift runtime's ARC, allocation, exclusivity, metadata
and cast entry points. Pipe through `swift demangle --simplified` for readable callers.
"""
import collections
import os
import re
import sys

DEFAULT = [
    "swift_retain", "swift_release", "swift_retain_n", "swift_release_n", "swift_bridgeObjectRetain",
    "swift_bridgeObjectRelease", "swift_allocObject", "malloc", "free", "swift_beginAccess",
    "swift_getGenericMetadata", "swift_dynamicCast", "swift_conformsToProtocol",
]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, operations = sys.argv[1], int(sys.argv[2])
    wanted = sys.argv[3:] or DEFAULT
    top = int(os.environ.get("TOP", "6"))
    names = {}  # callgrind compresses names: "(id) name" the first time, "(id)" after

    def name(text):
        match = re.match(r"\((\d+)\)(?: (.*))?", text)
        if not match:
            return text
        if match.group(2) is not None:
            names[match.group(1)] = match.group(2)
        return names.get(match.group(1), text)

    calls = collections.Counter()
    callers = collections.defaultdict(collections.Counter)
    function = callee = None
    total = 0
    with open(path, errors="replace") as profile:
        for line in profile:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                function = name(line[3:])
            elif line.startswith("cfn="):
                callee = name(line[4:])
            elif line.startswith("calls="):
                count = int(line[6:].split()[0])
                calls[callee] += count
                callers[callee][function] += count
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    print(f"instructions/op: {total / operations:.0f}")
    for target in wanted:
        hits = [f for f in calls if f == target or f.split("(")[0].strip() == target]
        count = sum(calls[f] for f in hits)
        if count == 0:
            continue
        print(f"{target}: {count / operations:.2f}/op")
        merged = collections.Counter()
        for f in hits:
            merged.update(callers[f])
        for caller, n in merged.most_common(top):
            print(f"    {n / operations:8.2f}  {caller[:160]}")


if __name__ == "__main__":
    main()

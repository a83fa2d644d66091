"""Summarise a py-spy profile of the worker: the functions where its time goes.

``make bench`` with ``--profile FILE`` records the Herald worker (all its processes) with
py-spy (``pip install py-spy``; not a dependency of Herald) during the telemetry-on run, as
collapsed stacks. ``python -m bench.profile FILE`` prints the top functions by samples in
which they were on the stack (inclusive) and at its top (self), as shares of the samples of
the pool children.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LOCATION = re.compile(r" \((?P<file>[^)]*?)(?::\d+)?\)$")


def _frame(raw: str) -> str:
    """``func (path/to/module.py:12)`` as ``func (module.py)``, the path shortened."""
    match = _LOCATION.search(raw)
    if not match:
        return raw
    path = match.group("file")
    short = path.split("site-packages/")[-1] if "site-packages/" in path else path
    short = short.split("/herald/", 1)[-1] if "/herald/" in short else short
    return f"{raw[: match.start()]} ({short})"


def summarise(path: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        # Task runs only (in the pool children; the parent mostly waits on the broker).
        if not any("trace_task" in f for f in frames):
            continue
        count = int(count_text)
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if not total:
        return "no samples of task runs"
    lines = [f"{total} samples of task runs", "", "inclusive  self  function"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"{count / total:8.1%} {own[frame] / total:6.1%}  {frame}")
    lines += ["", "top by self time", ""]
    for frame, count in own.most_common(top):
        lines.append(f"{count / total:6.1%}  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    print(summarise(args.profile, args.top))


if __name__ == "__main__":
    main()

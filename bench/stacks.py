"""Summarize a py-spy profile in its raw (collapsed stack) format.

Record a server under load, then print the share of samples under each function:

    py-spy record --pid PID --duration 10 --rate 200 --gil --format raw -o out.raw
    python bench/stacks.py out.raw --match 'orderdesk|sqlalchemy/orm' --top 40

`--gil` keeps only samples of the thread holding the GIL, which is where a
CPU-bound Python server spends its time. Each line printed is the percentage of
samples in which the function is on the stack ("inclusive"), then the functions
that were on top of the stack most often ("self").
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)")


def load(path: Path) -> tuple[Counter[str], Counter[str], int]:
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
        leaves[frames[-1]] += samples
    return inclusive, leaves, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--match", default="", help="Regex the functions must match.")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    inclusive, leaves, total = load(args.profile)
    pattern = re.compile(args.match)
    print(f"{total} samples")
    shown = 0
    for frame, samples in inclusive.most_common():
        if shown >= args.top:
            break
        if pattern.search(frame):
            print(f"{100 * samples / total:5.1f}%  {frame}")
            shown += 1
    print("self:")
    for frame, samples in leaves.most_common(15):
        print(f"{100 * samples / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()

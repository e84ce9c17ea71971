"""Summarise a py-spy raw (collapsed) profile: where the samples are, by function, cumulative and self.

`python bench/profile_top.py bench/profiles/nothing-10x2000.txt [N]`: the N functions (default 25) that most
samples pass through, with the main thread's share, so a no-op's cost can be read without a browser."""

from __future__ import annotations

import collections
import sys
from pathlib import Path


def main(path: Path, n: int = 25) -> None:
    total = 0
    cumulative: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if not any("MainThread" in f or "process" in f for f in frames[:2]):
            pass
        k = int(count)
        total += k
        for f in set(frames[1:]):
            cumulative[f] += k
        own[frames[-1]] += k
    print(f"{total} samples")
    for f, k in cumulative.most_common(n):
        print(f"{100 * k / total:5.1f}% cum {100 * own[f] / total:5.1f}% self  {f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25)

"""Plot the scale matrix: wall time against module count, per tool, one panel per scenario and server count.

Run by bench/scale.py with the bench-only virtualenv's Python (matplotlib is not a dependency of the project):
`bench/.venvs/tools/bin/python bench/plot_scale.py bench/scale-results.json bench/scale.png`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SCENARIOS = (("first", "first deploy"), ("nothing", "nothing changed"), ("one", "one module changed"))


def main(raw: Path, png: Path) -> None:
    data = json.loads(raw.read_text())
    samples = [s for s in data["samples"] if s["seconds"]]
    servers = sorted({s["servers"] for s in samples})
    tools = sorted({s["tool"] for s in samples}, key=lambda t: (not t.startswith("zato"), t))
    fig, axes = plt.subplots(len(servers), len(SCENARIOS), figsize=(5 * len(SCENARIOS), 3.6 * len(servers)),
                             squeeze=False, sharex=True)
    for row, n in enumerate(servers):
        for col, (scenario, title) in enumerate(SCENARIOS):
            ax = axes[row][col]
            for tool in tools:
                points = sorted((s["modules"], statistics.median(s["seconds"])) for s in samples
                                if s["tool"] == tool and s["servers"] == n and s["scenario"] == scenario)
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=tool)
            ax.set_title(f"{n} server{'s' if n > 1 else ''}: {title}", fontsize=10)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            if row == len(servers) - 1:
                ax.set_xlabel("modules")
            if col == 0:
                ax.set_ylabel("wall time (s)")
    handles, labels = {}, {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
            labels[label] = label
    fig.legend(list(handles.values()), list(labels), loc="lower center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(png, dpi=90)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

#!/usr/bin/env python3
"""Draws docs/benchmarks.png from docs/benchmarks.csv (written by `cargo xtask bench dataplane`).

Medians over the rounds, as in docs/benchmarks.md. matplotlib is not a dependency of the
project: when it is missing, the script makes a virtual environment under target/plot-venv,
installs matplotlib there from PyPI, and runs itself again with it.
"""

import csv
import os
import statistics
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
VENV = ROOT / "target" / "plot-venv"

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    python = VENV / "bin" / "python3"
    if os.environ.get("ZONEWALL_PLOT_VENV"):
        sys.exit("matplotlib is still missing inside " + str(VENV))
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "matplotlib"], check=True
    )
    env = dict(os.environ, ZONEWALL_PLOT_VENV="1")
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)

LABELS = {
    "baseline": "no policy",
    "zonewall": "zonewall",
    "iptables": "iptables",
    "iptables-established-first": "iptables,\nestablished first",
    "nftables": "nftables",
}
COLORS = {
    "baseline": "#9e9e9e",
    "zonewall": "#1f77b4",
    "iptables": "#d62728",
    "iptables-established-first": "#ff9896",
    "nftables": "#2ca02c",
}


def medians(rows):
    """Per configuration and figure: (median, lowest, highest) over the rounds, or None."""
    by_config = {}
    for row in rows:
        by_config.setdefault(row["configuration"], []).append(row)
    out = {}
    for config, samples in by_config.items():
        figures = {}
        for key in samples[0]:
            if key in ("configuration", "round"):
                continue
            values = [float(s[key]) for s in samples if s[key] != ""]
            figures[key] = (
                (statistics.median(values), min(values), max(values)) if values else None
            )
        out[config] = figures
    return out


def bars(ax, positions, configs, m, key, scale=1.0, **style):
    """Median bars with the lowest-to-highest range of the rounds as error bars."""
    values = [m[c][key][0] * scale for c in configs]
    low = [v - m[c][key][1] * scale for v, c in zip(values, configs)]
    high = [m[c][key][2] * scale - v for v, c in zip(values, configs)]
    ax.bar(positions, values, yerr=[low, high], capsize=3, ecolor="black", **style)


def main():
    with open(DOCS / "benchmarks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    m = medians(rows)
    configs = [c for c in LABELS if c in m]
    labels = [LABELS[c] for c in configs]
    colors = [COLORS[c] for c in configs]
    positions = range(len(configs))

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle(
        "zonewall dataplane benchmark, 10,000 rules / 100,000 prefixes: "
        "medians of %d rounds, bars from lowest to highest" % len({r["round"] for r in rows})
    )
    width = 0.4

    ax = axes[0][0]
    bars(ax, positions, configs, m, "throughput_gbit_s", color=colors)
    ax.set_title("TCP throughput (iperf3)")
    ax.set_ylabel("Gbit/s")

    ax = axes[0][1]
    left = [p - width / 2 for p in positions]
    right = [p + width / 2 for p in positions]
    bars(ax, left, configs, m, "latency_p50_us", width=width, color=colors)
    bars(ax, right, configs, m, "latency_p99_us", width=width, color=colors, alpha=0.5, hatch="//")
    ax.set_yscale("log")
    ax.set_title("request/response latency (p50 solid, p99 hatched)")
    ax.set_ylabel("microseconds (log)")

    ax = axes[1][0]
    bars(ax, positions, configs, m, "connections_per_s", color=colors)
    ax.set_title("new connections/s (connect, 64-byte echo, close)")
    ax.set_ylabel("connections/s")

    ax = axes[1][1]
    # zonewall twice: from receiving the policy (compile + apply) and from handing the
    # compiled tables to apply.
    timed = []
    for c in configs:
        if m[c]["full_policy_live_s"] is None:
            continue
        timed.append((LABELS[c], COLORS[c], "full_policy_live_s", "rule_change_live_s", c))
        if m[c].get("full_policy_after_compile_s") is not None:
            timed.append(
                (
                    LABELS[c] + "\nafter compiling",
                    "#aec7e8",
                    "full_policy_after_compile_s",
                    "rule_change_after_compile_s",
                    c,
                )
            )
    for i, (label, color, full, change, c) in enumerate(timed):
        bars(ax, [i - width / 2], [c], m, full, scale=1e3, width=width, color=color)
        bars(ax, [i + width / 2], [c], m, change, scale=1e3, width=width, color=color, alpha=0.5, hatch="//")
    ax.axhline(1000, color="black", linewidth=0.8, linestyle="--")
    ax.axhline(100, color="black", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    ax.set_title("time to the first packet with the new verdict\n"
                 "full policy solid, one rule change hatched; targets 1 s, 100 ms")
    ax.set_ylabel("milliseconds (log)")
    ax.set_xticks(list(range(len(timed))))
    ax.set_xticklabels([t[0] for t in timed], fontsize=8)

    for ax in (axes[0][0], axes[0][1], axes[1][0]):
        ax.set_xticks(list(positions))
        ax.set_xticklabels(labels, fontsize=8)
    for row in axes:
        for ax in row:
            ax.grid(axis="y", alpha=0.3)

    fig.tight_layout()
    out = DOCS / "benchmarks.png"
    fig.savefig(out, dpi=100)
    print("wrote", out)


if __name__ == "__main__":
    main()

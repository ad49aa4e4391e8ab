#!/usr/bin/env python3
"""Draws the latency percentile curves of `pinlock bench` scenario 1 as SVG.

Usage: pinlock bench --save results.json && python3 docs/plot_bench.py results.json docs/bench-latency.svg

Standard library only. The x axis is the percentile on a log scale of
1/(1-p) (50 %, 90 %, 99 %, ...), the y axis the latency in µs on a log scale.
"""

import json
import math
import sys

WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 50, 60
SERIES = [
    ("pinlock_curve", "pinlock (guest-visible)", "#d62728"),
    ("floor_curve", "floor: raw tokio-postgres", "#1f77b4"),
    ("floor_fenced_curve", "floor with pinlock's SQL", "#2ca02c"),
]
X_TICKS = [(0.0, "0 %"), (50.0, "50 %"), (90.0, "90 %"), (99.0, "99 %"), (99.9, "99.9 %"), (99.99, "99.99 %")]
X_MAX = 4.6  # where the maximum is drawn (beyond 99.99 %)


def x_of(percentile):
    """-log10(1 - p), with the maximum pinned to X_MAX."""
    if percentile >= 100.0:
        return X_MAX
    return min(-math.log10(1.0 - percentile / 100.0), X_MAX)


def y_ticks(lo, hi):
    """1-2-5 ticks between lo and hi (µs)."""
    ticks, decade = [], 10 ** math.floor(math.log10(lo))
    while decade <= hi * 10:
        for m in (1, 2, 5):
            v = m * decade
            if lo <= v <= hi:
                ticks.append(v)
        decade *= 10
    return ticks


def label(us):
    return f"{us / 1000:g} ms" if us >= 1000 else f"{us:g} µs"


def render(results):
    scenario = results["uncontended"]
    curves = [(scenario[key], name, color) for key, name, color in SERIES if scenario.get(key)]
    values = [p["us"] for curve, _, _ in curves for p in curve if p["us"] > 0]
    lo, hi = 10 ** math.floor(math.log10(min(values))), max(values) * 1.2
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(percentile):
        return LEFT + plot_w * x_of(percentile) / X_MAX

    def py(us):
        return TOP + plot_h * (1 - (math.log10(max(us, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    machine, plan = results["machine"], results["plan"]
    title = "pinlock bench, scenario 1: uncontended acquire + release"
    subtitle = (f"{machine['cores']} cores, {machine['cpu_model']}; {machine['postgres'].split(' on ')[0]}; "
                f"{scenario['pinlock']['count']} samples per side")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{title}</text>',
           f'<text x="{LEFT}" y="38" fill="#555">{subtitle}</text>']
    for us in y_ticks(lo, hi):
        y = py(us)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label(us)}</text>')
    for percentile, text in X_TICKS + [(100.0, "max")]:
        x = px(percentile)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{text}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 12}" text-anchor="middle">percentile</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    for i, (curve, name, color) in enumerate(curves):
        points = " ".join(f"{px(p['percentile']):.1f},{py(p['us']):.1f}" for p in curve)
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        y = TOP + 14 + 20 * i
        out.append(f'<line x1="{LEFT + plot_w + 12}" y1="{y}" x2="{LEFT + plot_w + 32}" y2="{y}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + plot_w + 36}" y="{y + 4}" font-size="11">{name}</text>')
    run = "--quick" if plan["quick"] else "full run"
    out.append(f'<text x="{LEFT + plot_w + 12}" y="{TOP + 90}" font-size="11" fill="#555">{run}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        results = json.load(f)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(render(results))


if __name__ == "__main__":
    main()

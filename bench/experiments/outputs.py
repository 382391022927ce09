"""Write an experiment's rows as CSV, a markdown table and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def write_csv(rows: Sequence[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def markdown(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return "" if v is None else str(v)


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _medians(rows: Sequence[dict], key: str) -> tuple[list, list[list]]:
    """The medians of `key` and their min-max distances, as matplotlib's yerr wants them."""
    med = [r[f"{key}_median"] for r in rows]
    return med, [[m - r[f"{key}_min"] for m, r in zip(med, rows)],
                 [r[f"{key}_max"] - m for m, r in zip(med, rows)]]


def _median_bars(ax, xs, rows: Sequence[dict], key: str, label: str, width: float = 0.4) -> None:
    """Bars at the medians of `key` with min-max error bars."""
    med, err = _medians(rows, key)
    ax.bar(list(xs), med, width=width, yerr=err, capsize=3, label=label)


def plot_scheduler(rows: Sequence[dict], path: str) -> None:
    """Planning time and makespan / fluid optimum against the number of sources, per algorithm,
    at the largest state and one joiner."""
    chunks = max(r["chunks"] for r in rows)
    sel = [r for r in rows if r["chunks"] == chunks and r["joiners"] == 1]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for alg in sorted({r["algorithm"] for r in sel}):
        pts = sorted((r["sources"], r["plan_ms_median"], r["x_optimum"]) for r in sel
                     if r["algorithm"] == alg)
        xs = [p[0] for p in pts]
        a.plot(xs, [p[1] for p in pts], marker="o", label=alg)
        b.plot(xs, [p[2] for p in pts], marker="o", label=alg)
    a.set(xscale="log", yscale="log", xlabel="sources", ylabel="planning time (ms, median)",
          title=f"Planning time, {chunks:,} chunks, 1 joiner")
    b.set(xscale="log", yscale="log", xlabel="sources", ylabel="makespan / fluid optimum",
          title="Predicted makespan against the LP optimum")
    ticks = sorted({r["sources"] for r in sel})
    for ax in (a, b):
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_sync(rows: Sequence[dict], path: str) -> None:
    """Joiner's transfer and whole sync per strategy (median, min-max bars), each model's bound
    as a dashed line over its bars."""
    strategies = [r["strategy"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(rows))
    for off, key, label in ((-0.2, "transfer_s", "transfer"), (0.2, "total_s", "whole sync")):
        _median_bars(ax, [x + off for x in xs], rows, key, label)
    labelled = False
    for x, r in zip(xs, rows):
        if r.get("bound_s"):       # each model has its own bound: a dash over its bars
            ax.hlines(float(r["bound_s"]), x - 0.45, x + 0.45, colors="k", linestyles="--",
                      linewidth=1, label=None if labelled else "bound S / min(ingress, egress)")
            labelled = True
    ax.set_xticks(list(xs), [f"{s}\n{r['model']}" for s, r in zip(strategies, rows)])
    ax.set(yscale="log", ylabel="seconds (log)",
           title=f"State sync to a joiner on {rows[0]['topology']}")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_scale_out(rows: Sequence[dict], path: str) -> None:
    """Per strategy (median, min-max bars): the existing workers' idle time per join, and the
    scale-out delay (join -> the joiner's first step, join -> every rank at the new size)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    xs = range(len(rows))
    labels = [r["strategy"] + ("" if len({q["model"] for q in rows}) == 1 else f"\n{r['model']}")
              for r in rows]
    panels = ((a, (("worst_idle_s", "worst worker"), ("mean_idle_s", "mean of workers")),
               "idle time of existing workers per join (s)", "Existing workers stand idle"),
              (b, (("joiner_training_s", "joiner training"),
                   ("all_at_new_size_s", "all ranks training at the new size")),
               "seconds after the join", "Scale-out delay"))
    for ax, keys, ylabel, title in panels:
        for off, (key, label) in zip((-0.2, 0.2), keys):
            _median_bars(ax, [x + off for x in xs], rows, key, label)
        ax.set_xticks(list(xs), labels)
        ax.set(ylabel=ylabel, title=f"{title} ({rows[0]['topology']}, {rows[0]['model']})")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_scaling(rows: Sequence[dict], path: str) -> None:
    """Against the cluster size (hosts after the join), per strategy: the existing workers' worst
    idle time per join (median, min-max bars), and the steady-state step and commit time."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        sel = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["hosts"])
        xs = [r["hosts"] for r in sel]
        med, err = _medians(sel, "worst_idle_s")
        a.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=strategy)
        if all(r.get("step_s_median") is not None for r in sel):
            line = b.plot(xs, [r["step_s_median"] for r in sel], marker="o",
                          label=f"{strategy}: step")[0]
            if all(r.get("commit_s_median") is not None for r in sel):
                b.plot(xs, [r["commit_s_median"] for r in sel], marker="x", linestyle="--",
                       color=line.get_color(), label=f"{strategy}: commit")
    a.set(xlabel="hosts training after the join", ylabel="worst idle time per join (s)",
          title=f"Existing workers stand idle ({rows[0]['model']})")
    b.set(xlabel="hosts after the join (measured before it: one fewer)", ylabel="seconds (log)",
          yscale="log",
          title="Steady state: step and commit time")
    for ax in (a, b):
        ax.set_xticks(sorted({r["hosts"] for r in rows}))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_events(rows: Sequence[dict], floor: dict, path: str) -> None:
    """Per event: the time to training at the new configuration and to the agents' views
    (median, min-max bars); and the agents' own handling latency next to the UDP floor."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    xs = range(len(rows))
    _median_bars(a, [x - 0.2 for x in xs], rows, "to_training_s", "training at the new size")
    _median_bars(a, [x + 0.2 for x in xs],
                 [r if r["view_first_s_median"] is not None else
                  dict(r, view_first_s_median=0, view_first_s_min=0, view_first_s_max=0)
                  for r in rows], "view_first_s", "first agent's new view")
    a.set(ylabel="seconds after the event", title="Event -> training at the new configuration")
    b.bar([x - 0.2 for x in xs], [r["handled_ms_median"] or 0 for r in rows], width=0.4,
          label="agents: arrival -> installed (median)")
    b.bar([x + 0.2 for x in xs], [r["handled_ms_max"] or 0 for r in rows], width=0.4,
          label="agents: maximum")
    b.axhline(floor["p50_ms"], color="k", linestyle="--", linewidth=1,
              label=f"UDP fan-out floor p50 ({floor['peers']} peers, same load)")
    b.axhline(floor["p99_ms"], color="k", linestyle=":", linewidth=1, label="UDP floor p99")
    b.set(ylabel="milliseconds", title="Agents' view-change latency")
    for ax in (a, b):
        ax.set_xticks(list(xs), [r["event"] for r in rows])
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_transfer(rows: Sequence[dict], path: str) -> None:
    """Per model: the joiner's transfer against the bound (seconds), uncapped and with the
    joiner's ingress capped; and transfer / bound with the 1.10x target."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    caps = list(dict.fromkeys(r["ingress_cap_mbit"] for r in rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(caps)
    for k, cap in enumerate(caps):
        sel = {r["model"]: r for r in rows if r["ingress_cap_mbit"] == cap}
        xs = [i + (k - (len(caps) - 1) / 2) * width for i in range(len(models))]
        label = "joiner ingress unshaped" if cap is None else f"ingress capped at {cap:g} Mbit/s"
        _median_bars(a, xs, [sel[m] for m in models], "transfer_s", label, width)
        a.scatter(xs, [sel[m]["bound_s"] for m in models], marker="_", s=300, color="k",
                  zorder=3, label="bound" if k == 0 else None)
        b.bar(xs, [sel[m]["x_bound"] for m in models], width=width, label=label)
    b.axhline(1.10, color="r", linestyle="--", linewidth=1, label="target 1.10x")
    for ax in (a, b):
        ax.set_xticks(range(len(models)), models)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    a.set(yscale="log", ylabel="seconds (log)",
          title=f"Whole-state transfer to a joiner ({rows[0]['topology']})")
    b.set(ylabel="transfer / bound", ylim=(0.9, max(1.3, max(r["x_bound"] for r in rows) + 0.05)),
          title="Against S / min(ingress, sum of egress)")
    _save(fig, path)


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path

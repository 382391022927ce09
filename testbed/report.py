"""``chaos-testbed report RUN_DIR``: draw one run's timeline as a PNG (matplotlib, headless).

Top: a lane per host -- its worker processes one after another (a tick where each begins),
training, idle, and each sync split into its phases -- with
the agents' view changes and the launcher's records on two lanes above; faults are vertical
lines through everything. Bottom: the world size over time. The figures behind the picture come
from :mod:`testbed.run_timeline`; this module only draws them.
"""

from __future__ import annotations

import os

from chaos_hvd.errors import EventLogError
from chaos_hvd.events import read_events

from .errors import InputError
from .run_timeline import PHASES, RunTimeline, build

COLORS = {"train": "#4caf50", "idle": "#bdbdbd", "exchange": "#90caf9", "plan": "#ffb74d",
          "transfer": "#1565c0", "load": "#8e24aa", "verify": "#f06292"}
FAULT_COLORS = {"crash": "#d32f2f", "leave": "#d32f2f", "pause": "#f57c00", "resume": "#f57c00",
                "join": "#388e3c", "partition": "#6a1b9a", "heal": "#6a1b9a",
                "link_down": "#00838f", "link_up": "#00838f", "degrade": "#795548",
                "restore": "#795548"}
MAX_FAULT_LABELS = 30


class ReportError(InputError):
    """The run directory holds nothing to draw, or records that cannot be read."""


def load_run(run_dir: str) -> RunTimeline:
    def read(name: str):
        path = os.path.join(run_dir, name)
        try:
            # lexists: a dangling link or a link loop is an error, not a missing log
            return read_events(path) if os.path.lexists(path) else []
        except (EventLogError, OSError) as e:
            raise ReportError(str(e), path) from None
    timeline = read("timeline.jsonl")
    if not timeline:
        raise ReportError(f"{run_dir}: no timeline.jsonl (not a chaos-testbed run directory?)")
    return build(timeline, read("events.jsonl"), read("agents.jsonl"))


def write_report(run_dir: str, out: str | None = None) -> str:
    """Draw the run's timeline; returns the PNG's path (default RUN_DIR/timeline.png)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    run = load_run(run_dir)
    out = out or os.path.join(run_dir, "timeline.png")
    lanes = ["launcher", "agents"] + run.lanes
    row = {lane: i for i, lane in enumerate(reversed(lanes))}
    fig, (ax, axw) = plt.subplots(
        2, 1, sharex=True, figsize=(14, 2.0 + 0.45 * len(lanes) + 1.6),
        gridspec_kw={"height_ratios": [max(3, len(lanes)), 1.6]})
    for seg in run.segments:
        ax.broken_barh([(seg.start, seg.end - seg.start)], (row[seg.lane] - 0.35, 0.7),
                       color=COLORS[seg.kind], linewidth=0)
    faults = [m for m in run.markers if m.kind == "fault"]
    for m in faults:
        color = FAULT_COLORS.get(m.label.split()[0], "#000000")
        for a in (ax, axw):
            a.axvline(m.t, color=color, linestyle="--", linewidth=0.9, alpha=0.8)
        if len(faults) <= MAX_FAULT_LABELS:
            ax.text(m.t, 1.01, m.label[:28], rotation=90, fontsize=7, va="bottom", ha="center",
                    color=color, transform=ax.get_xaxis_transform())
    for kind, lane, style in (("view", "agents", "v"), ("launcher", "launcher", "D")):
        ts = [m.t for m in run.markers if m.kind == kind]
        ax.plot(ts, [row[lane]] * len(ts), style, color="#0d47a1", markersize=5, linestyle="")
    starts = [m for m in run.markers if m.kind == "process"]
    ax.plot([m.t for m in starts], [row[m.lane] for m in starts], "|", color="#263238",
            markersize=14, linestyle="")
    aborts = [m for m in run.markers if m.kind == "abort"]
    ax.plot([m.t for m in aborts], [row[m.lane] for m in aborts], "x", color="#b71c1c",
            markersize=8, linestyle="", label="crash-watch abort")
    ax.set_yticks(range(len(lanes)), list(reversed(lanes)), fontsize=8)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_title(f"{os.path.basename(os.path.abspath(run_dir))}: workers, syncs and faults "
                 "(| a worker process starts, v agents' view change, D launcher record, x abort)",
                 pad=70 if len(faults) <= MAX_FAULT_LABELS else 8)
    legend = [Patch(color=COLORS[k], label=k) for k in ("train", "idle") + PHASES]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              title="lane segments", title_fontsize=8)
    if run.world:
        ts = [t for t, _ in run.world] + [run.end]
        sizes = [s for _, s in run.world] + [run.world[-1][1]]
        axw.step(ts, sizes, where="post", color="#263238")
        axw.set_ylim(0, max(sizes) + 1)
    axw.set_ylabel("world size (ranks)")
    axw.set_xlabel("time since the job started (s)")
    axw.set_xlim(0, max(run.end, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def describe(run: RunTimeline) -> str:
    """A few lines of text beside the picture: faults, world sizes, idle time per lane."""
    idle = run.idle_s()
    processes = sum(1 for m in run.markers if m.kind == "process")
    lines = [f"{processes} worker process(es) on {len(run.lanes)} lane(s), "
             f"{sum(1 for m in run.markers if m.kind == 'fault')} fault action(s), "
             f"world sizes {[s for _, s in run.world]}"]
    lines += [f"  {lane}: idle {idle[lane]:.1f} s" for lane in run.lanes]
    return "\n".join(lines)

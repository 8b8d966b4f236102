"""The report's charts as inline SVG: drawn with matplotlib's object API (no pyplot, no GUI backend), text kept
as text (searchable, with a font list ending in sans-serif), ids prefixed per chart so many fit in one page."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from forecasting.report import format as fmt

BLUE = "#2563eb"
LIGHT_BLUE = "#bfdbfe"
GREY = "#9ca3af"
LIGHT_GREY = "#e5e7eb"
INK = "#1f2937"
RED = "#dc2626"
GREEN = "#15803d"
ORANGE = "#ea580c"
GRADE_COLOURS = {"A": "#15803d", "B": "#65a30d", "C": "#f59e0b", "D": "#dc2626"}

RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, found by the browser's search
    "svg.hashsalt": "leadcast",  # stable ids, so the same inputs give the same file
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": GREY,
    "axes.labelcolor": INK,
    "xtick.color": INK,
    "ytick.color": INK,
    "legend.frameon": False,
}
# matplotlib keeps global state (rcParams, font caches): one chart at a time, also in a threaded server.
_LOCK = threading.Lock()
_ID = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


@contextmanager
def drawing() -> Iterator[None]:
    """Hold the drawing lock with the report's style in force."""
    with _LOCK, matplotlib.rc_context(cast(Any, RC)):
        yield


P = ParamSpec("P")
R = TypeVar("R")


def drawn(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a chart function under the drawing lock and style."""
    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with drawing():
            return fn(*args, **kwargs)

    return wrapper


def to_svg(fig: Figure, key: str, label: str) -> str:
    """Return the figure as an <svg> element for inline HTML, ids prefixed with `key`, labelled for readers."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = _ID.sub(lambda m: f"{m.group(1)}{key}-{m.group(2)}", text)
    safe = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("<svg ", f'<svg role="img" aria-label="{safe}" class="chart-svg" ', 1).strip()


def _money_axis(ax: Axes, axis: str = "y") -> None:
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _pos: fmt.money(v)))


def _share_axis(ax: Axes, axis: str = "y") -> None:
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def _finite(values: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
    return np.asarray(pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float))


@drawn
def fan_chart(past: pd.DataFrame, periods: list[dict[str, Any]], total: dict[str, Any],
              target: float | None) -> str:
    """Draw actual revenue of past periods, then each forecast period's P10-P90 range, P50 and mean, against
    the target (on the horizon total, beside the periods, when the horizon has several periods)."""
    several = len(periods) > 1
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    if several:
        grid = fig.add_gridspec(1, 2, width_ratios=(4, 1))
        ax, ax_total = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    else:
        ax, ax_total = fig.add_subplot(), None
    n_past = len(past)
    xs_past = np.arange(n_past)
    if n_past:
        ax.bar(xs_past, past["won_revenue"].to_numpy(float), width=0.6, color=GREY, label="actual won revenue")
    xs = np.arange(n_past, n_past + len(periods))
    p10 = _finite([p["p10"] for p in periods])
    p50 = _finite([p["p50"] for p in periods])
    p90 = _finite([p["p90"] for p in periods])
    mean = _finite([p["mean"] for p in periods])
    if several and n_past:
        # The fan: the range opens from the last actual period.
        anchor = float(past["won_revenue"].iloc[-1])
        ax.fill_between(np.r_[xs_past[-1], xs], np.r_[anchor, p10], np.r_[anchor, p90], color=LIGHT_BLUE,
                        alpha=0.45, linewidth=0)
        ax.plot(np.r_[xs_past[-1], xs], np.r_[anchor, p50], color=BLUE, linewidth=1, linestyle=":")
    ax.bar(xs, p90 - p10, bottom=p10, width=0.6, color=LIGHT_BLUE, edgecolor=BLUE, linewidth=1,
           label="forecast P10–P90")
    ax.hlines(p50, xs - 0.3, xs + 0.3, color=BLUE, linewidth=2.5, label="P50")
    ax.plot(xs, mean, "D", color=INK, markersize=4, label="mean")
    for x, lo, mid, hi in zip(xs, p10, p50, p90, strict=True):
        ax.annotate(fmt.money(mid), (x, hi), xytext=(0, 3), textcoords="offset points", ha="center",
                    va="bottom", color=BLUE, fontsize=8)
        ax.annotate(fmt.money(lo), (x + 0.32, lo), ha="left", va="center", color=INK, fontsize=7)
    labels = [*past["label"].astype(str), *[str(p["label"]) for p in periods]]
    ax.set_xticks(np.arange(len(labels)), labels, rotation=30 if len(labels) > 8 else 0, ha="right"
                  if len(labels) > 8 else "center")
    ax.set_ylabel("won revenue")
    _money_axis(ax)
    if target is not None and not several:
        ax.axhline(target, color=RED, linestyle="--", linewidth=1.2, label=f"target {fmt.money(target)}")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, ncols=5)
    ax.margins(y=0.18)
    if ax_total is not None:
        lo, mid, hi = float(total["p10"]), float(total["p50"]), float(total["p90"])
        ax_total.bar([0], [hi - lo], bottom=[lo], width=0.5, color=LIGHT_BLUE, edgecolor=BLUE)
        ax_total.hlines([mid], -0.25, 0.25, color=BLUE, linewidth=2.5)
        ax_total.plot([0], [float(total["mean"])], "D", color=INK, markersize=4)
        ax_total.annotate(fmt.money(mid), (0, hi), xytext=(0, 3), textcoords="offset points", ha="center",
                          va="bottom", color=BLUE, fontsize=8)
        if target is not None:
            ax_total.axhline(target, color=RED, linestyle="--", linewidth=1.2, label=f"target {fmt.money(target)}")
            ax_total.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8)
        ax_total.set_xticks([0], ["horizon total"])
        ax_total.set_xlim(-0.6, 0.6)
        ax_total.set_ylim(bottom=0)
        ax_total.margins(y=0.18)
        _money_axis(ax_total)
    return to_svg(fig, "fan", "Fan chart: actual won revenue by period and the forecast P10 to P90 range")


@drawn
def backtest_chart(rows: list[dict[str, Any]]) -> str | None:
    """Draw each replayed forecast's P10-P90 range and P50 with the revenue that actually closed."""
    if not rows:
        return None
    fig = Figure(figsize=(9.0, 3.2), layout="constrained")
    ax = fig.add_subplot()
    xs = np.arange(len(rows))
    p10 = _finite([r["p10"] for r in rows])
    p90 = _finite([r["p90"] for r in rows])
    p50 = _finite([r["forecasts"]["monte_carlo_p50"] for r in rows])
    actual = _finite([r["actual"] for r in rows])
    inside = np.asarray([bool(r["inside_p10_p90"]) for r in rows])
    ax.bar(xs, p90 - p10, bottom=p10, width=0.55, color=LIGHT_BLUE, edgecolor=BLUE, label="forecast P10–P90")
    ax.hlines(p50, xs - 0.27, xs + 0.27, color=BLUE, linewidth=2.5, label="forecast P50")
    ax.plot(xs[inside], actual[inside], "o", color=INK, markersize=6, label="actual (inside)")
    if (~inside).any():
        ax.plot(xs[~inside], actual[~inside], "X", color=RED, markersize=8, label="actual (outside)")
    ax.set_xticks(xs, [f"as of {r['as_of']}\n{r['label']}" for r in rows], fontsize=7)
    ax.set_ylabel("won revenue in the horizon")
    _money_axis(ax)
    ax.set_ylim(bottom=0)
    ax.margins(y=0.15)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, ncols=4)
    return to_svg(fig, "backtest", "Backtest: past forecasts' P10 to P90 ranges against the revenue that closed")


@drawn
def funnel_chart(funnel: pd.DataFrame) -> str | None:
    """Draw the open pipeline by stage as two funnels: number of deals and their value."""
    if funnel.empty or funnel["open_deals"].sum() == 0:
        return None
    fig = Figure(figsize=(9.0, 0.6 * len(funnel) + 1.2), layout="constrained")
    ys = np.arange(len(funnel))[::-1]
    for i, (column, title, show) in enumerate((("open_deals", "open deals", fmt.count),
                                               ("open_value", "value of open deals", fmt.money))):
        ax = fig.add_subplot(1, 2, i + 1)
        values = funnel[column].to_numpy(float)
        ax.barh(ys, values, left=-values / 2, height=0.7, color=BLUE if i == 0 else GREEN)
        for y, v in zip(ys, values, strict=True):
            ax.text(0.0, float(y), show(v), ha="center", va="center", color="white" if v > values.max() * 0.25 else INK,
                    fontsize=8, fontweight="bold")
        ax.set_yticks(ys, funnel["stage"].astype(str))
        ax.set_xticks([])
        ax.spines[["left", "bottom"]].set_visible(False)
        ax.set_title(title)
        top = values.max() if values.max() > 0 else 1.0
        ax.set_xlim(-top / 2 * 1.05, top / 2 * 1.05)
    return to_svg(fig, "funnel", "Funnel: open deals and their value by stage")


@drawn
def conversion_chart(stages: list[dict[str, Any]]) -> str | None:
    """Draw each open stage's conversion to the next stage and its probability of ending won."""
    if not stages:
        return None
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    ax = fig.add_subplot()
    xs = np.arange(len(stages))
    conv = _finite([s.get("conversion_to_next") for s in stages])
    win = _finite([s.get("win_probability") for s in stages])
    ax.bar(xs - 0.2, conv, width=0.4, color=BLUE, label="converts to the next stage")
    ax.bar(xs + 0.2, win, width=0.4, color=GREEN, label="ends won")
    for x, a, b in zip(xs, conv, win, strict=True):
        for dx, v in ((-0.2, a), (0.2, b)):
            if np.isfinite(v):
                ax.text(float(x + dx), float(v), fmt.pct(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, [str(s["stage"]) for s in stages])
    _share_axis(ax)
    ax.set_ylim(0, 1.12)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncols=2)
    return to_svg(fig, "conversion", "Stage conversion rates and win probability by stage")


@drawn
def monthly_chart(monthly: pd.DataFrame, *, months: int = 24) -> str | None:
    """Draw won revenue by month (bars) and its growth on the month before (line, %)."""
    if monthly.empty:
        return None
    data = monthly.tail(months)
    fig = Figure(figsize=(9.0, 3.2), layout="constrained")
    ax = fig.add_subplot()
    xs = np.arange(len(data))
    ax.bar(xs, data["won_revenue"].to_numpy(float), color=BLUE, width=0.7, label="won revenue")
    _money_axis(ax)
    ax.set_ylabel("won revenue")
    growth = _finite(data["growth_pct"].tolist())
    ax2 = ax.twinx()
    ax2.spines["right"].set_visible(True)
    ax2.plot(xs, growth, "o-", color=ORANGE, markersize=3, linewidth=1.2, label="growth on previous month")
    ax2.axhline(0, color=ORANGE, linewidth=0.6, linestyle=":")
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:+.0f}%"))
    ax2.set_ylabel("growth", color=ORANGE)
    ax.set_xticks(xs, data["month"].astype(str), rotation=45 if len(xs) > 8 else 0,
                  ha="right" if len(xs) > 8 else "center")
    handles = ax.get_legend_handles_labels()
    handles2 = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="lower left", bbox_to_anchor=(0.0, 1.0),
              fontsize=8, ncols=2)
    ax.margins(y=0.2)
    return to_svg(fig, "monthly", "Won revenue by month with growth on the month before")


@drawn
def velocity_chart(trend: pd.DataFrame, *, window_days: int) -> str | None:
    """Draw sales velocity and its four levers (open deals, deal size, win rate, cycle length) over time."""
    if trend.empty:
        return None
    fig = Figure(figsize=(9.0, 5.6), layout="constrained")
    grid = fig.add_gridspec(3, 2)
    every = 1 if len(trend) <= 8 else 2
    labels = [f"{pd.Timestamp(d):%b %y}" if (len(trend) - 1 - i) % every == 0 else ""
              for i, d in enumerate(trend["date"])]
    xs = np.arange(len(trend))
    panels = [
        (grid[0, :], "sales_velocity_per_day", "sales velocity ($ per day)", BLUE, fmt.money),
        (grid[1, 0], "open_deals", "open deals", INK, fmt.count),
        (grid[1, 1], "average_deal_size", f"average deal size (won in prior {window_days} days)", GREEN, fmt.money),
        (grid[2, 0], "win_rate", f"win rate (closed in prior {window_days} days)", ORANGE, fmt.pct),
        (grid[2, 1], "average_cycle_days", f"sales cycle, days (won in prior {window_days} days)", RED,
         lambda v: f"{v:,.0f}"),
    ]
    for spec, column, title, colour, show in panels:
        ax = fig.add_subplot(spec)
        values = trend[column].to_numpy(float)
        ax.plot(xs, values, "o-", color=colour, markersize=3, linewidth=1.5)
        ax.set_title(title, fontsize=9, loc="left")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p, show=show: show(v)))
        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_xlim(-0.5, len(xs) - 0.5 + 0.8)
        last = values[-1] if len(values) else float("nan")
        if np.isfinite(last):
            ax.annotate(show(last), (xs[-1], last), xytext=(4, 0), textcoords="offset points", va="center",
                        fontsize=8, color=colour)
        ax.margins(y=0.25)
    return to_svg(fig, "velocity", "Sales velocity and its four levers by month")


@drawn
def group_chart(table: pd.DataFrame, *, by: str, what: str, key: str, limit: int = 20) -> str | None:
    """Draw win rate and average won cycle per group (the `limit` groups with most closed deals)."""
    data = table[table["closed_deals"] > 0]
    if data.empty:
        return None
    shown = data.sort_values(["closed_deals", by], ascending=[False, True], kind="stable").head(limit)
    shown = shown.sort_values("win_rate", ascending=True, kind="stable")
    fig = Figure(figsize=(9.0, 0.22 * len(shown) + 1.3), layout="constrained")
    ys = np.arange(len(shown))
    names = shown[by].astype(str).tolist()
    ax = fig.add_subplot(1, 2, 1)
    wr = shown["win_rate"].to_numpy(float)
    ax.barh(ys, wr, color=BLUE, height=0.7)
    ax.set_yticks(ys, names, fontsize=7 if len(shown) > 12 else 8)
    _share_axis(ax, "x")
    ax.set_title("win rate (won / closed)")
    for y, v in zip(ys, wr, strict=True):
        ax.text(float(v), float(y), f" {fmt.pct(v)}", va="center", fontsize=7)
    ax.set_xlim(0, min(1.0, np.nanmax(wr) * 1.2 if np.isfinite(wr).any() else 1.0) or 1.0)
    ax2 = fig.add_subplot(1, 2, 2, sharey=ax)
    cycle = shown["average_cycle_days"].to_numpy(float)
    ax2.barh(ys, np.nan_to_num(cycle), color=RED, height=0.7)
    ax2.set_title("average sales cycle, days (won deals)")
    ax2.tick_params(labelleft=False)
    for y, v in zip(ys, cycle, strict=True):
        ax2.text(float(np.nan_to_num(v)), float(y), f" {v:,.0f}" if np.isfinite(v) else " –", va="center",
                 fontsize=7)
    ax2.margins(x=0.12)
    note = f"{len(shown)} of {len(data)} {what} with closed deals, most closed deals first" \
        if len(data) > len(shown) else f"all {len(data)} {what} with closed deals"
    fig.suptitle(note, fontsize=8, color=INK)
    return to_svg(fig, key, f"Win rate and sales cycle by {what}")


@drawn
def mix_chart(mix: pd.DataFrame, *, by: str) -> str | None:
    """Draw the product mix: deals created, won and lost per category, and each category's share of revenue."""
    if mix.empty:
        return None
    fig = Figure(figsize=(9.0, 0.35 * len(mix) + 1.8), layout="constrained")
    ys = np.arange(len(mix))[::-1]
    names = mix[by].astype(str).tolist()
    ax = fig.add_subplot(1, 2, 1)
    h = 0.26
    for offset, column, colour in ((h, "created", GREY), (0.0, "won", GREEN), (-h, "lost", RED)):
        ax.barh(ys + offset, mix[column].to_numpy(float), height=h, color=colour, label=f"deals {column}")
    ax.set_yticks(ys, names)
    ax.set_title("deals created, won and lost")
    ax.legend(fontsize=7, loc="lower right")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt.count(v)))
    ax2 = fig.add_subplot(1, 2, 2, sharey=ax)
    share = mix["revenue_share"].to_numpy(float)
    ax2.barh(ys, share, color=BLUE, height=0.6)
    ax2.tick_params(labelleft=False)
    for y, v, r in zip(ys, share, mix["won_revenue"].to_numpy(float), strict=True):
        ax2.text(float(v), float(y), f" {fmt.pct(v)} ({fmt.money(r)})", va="center", fontsize=7)
    _share_axis(ax2, "x")
    ax2.set_xlim(0, max(1e-9, float(np.nanmax(share)) if len(share) else 1.0) * 1.45)
    ax2.set_title("share of won revenue")
    return to_svg(fig, "mix", "Product mix: deals created, won and lost, and share of won revenue")


@drawn
def grades_chart(table: pd.DataFrame, scores: np.ndarray, grades: np.ndarray) -> str | None:
    """Draw the open leads per grade and the distribution of their scores, coloured by grade."""
    if len(scores) == 0:
        return None
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    ax = fig.add_subplot(1, 3, 1)
    xs = np.arange(len(table))
    colours = [GRADE_COLOURS[g] for g in table["grade"]]
    ax.bar(xs, table["leads"].to_numpy(float), color=colours)
    for x, n, s in zip(xs, table["leads"], table["share"], strict=True):
        ax.text(float(x), float(n), f"{fmt.count(n)}\n{fmt.pct(s)}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, [f"grade {g}" for g in table["grade"]])
    ax.set_title("open leads by grade")
    ax.margins(y=0.3)
    ax2 = fig.add_subplot(1, 3, (2, 3))
    bins = [float(b) for b in range(0, 105, 5)]
    stacks = [scores[grades == g] for g in table["grade"]]
    ax2.hist(stacks, bins=bins, stacked=True, color=colours, label=[f"grade {g}" for g in table["grade"]])
    ax2.set_xlabel("score (probability of converting x 100)")
    ax2.set_ylabel("open leads")
    ax2.set_title("score distribution")
    ax2.legend(fontsize=7)
    return to_svg(fig, "grades", "Open leads by grade and their score distribution")

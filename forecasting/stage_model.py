"""The stage model learned from history: win probability by stage reached and by time spent, stage durations,
and a timing model: competing-risk daily hazards (win, loss, move to the next stage) by days in the stage and
quarter phase, per stage and product, with a mixture-cure adjustment for cohorts of deals that never move."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from crmdata.stages import StageConfig
from forecasting.columns import equals, is_in, lookup, positions, sorted_codes
from forecasting.periods import as_day
from forecasting.snapshot import elapsed_days, entry_stage

EPOCH = np.datetime64("1970-01-01", "D")
EXITS = ("won", "lost", "advance")  # how a stay in a stage ends; codes 0, 1, 2
WON, LOST, ADVANCE = 0, 1, 2


def day_numbers(values: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Return whole days since 1970-01-01 (NaT as -2**62) for an array of timestamps."""
    arr = np.asarray(pd.to_datetime(values), dtype="datetime64[ns]")
    days = arr.astype("datetime64[D]")
    out = (days - EPOCH).astype(np.int64)
    out[np.isnat(arr)] = -(2**62)
    return out


def month_number(day: np.ndarray) -> np.ndarray:
    """Return the calendar month (months since January 1970) of each day number."""
    day = np.asarray(day, dtype=np.int64)
    if day.size > 64:
        lo, hi = int(day.min()), int(day.max())
        if hi - lo < day.size:  # many cells on few days: convert each distinct day once
            table = (EPOCH + np.arange(lo, hi + 1).astype("timedelta64[D]")).astype("datetime64[M]").astype(np.int64)
            return table[day - lo]
    return (EPOCH + day.astype("timedelta64[D]")).astype("datetime64[M]").astype(np.int64)


def quarter_phase(day: np.ndarray) -> np.ndarray:
    """Return the month of the quarter (0, 1 or 2) of each day number."""
    return (month_number(day) % 12) % 3


@dataclass(frozen=True)
class StageStats:
    """What history says about one open stage."""

    stage: str
    reached: int
    won: int
    lost: int
    open: int
    win_probability: float
    conversion_to_next: float
    won_days_median: float
    won_days_p80: float
    mean_days_to_win: float


@dataclass(frozen=True)
class Hazards:
    """Daily probabilities of winning, losing and (for stays in a stage) advancing, by (age bin, quarter phase),
    where age is days since entering the stage; past the last bin every hazard is 0 (nothing that old ever left).
    `deals` counts the stays they were estimated from."""

    bin_days: int
    won: np.ndarray
    lost: np.ndarray
    deals: int
    advance: np.ndarray | None = None
    cure: float = 0.0
    survival: np.ndarray = field(default_factory=lambda: np.ones(1))
    cohorts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cohort_susceptible: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def cohort_ratio(self, entered_day: np.ndarray, age: np.ndarray) -> np.ndarray:
        """Return P(will ever leave | open at age, its cohort) / P(will ever leave | open at age, all deals).

        Mixture cure model: a share `cure` of deals never leave the stage (they sit until someone closes them
        by hand); S(a) = cure + (1 - cure) S1(a). A cohort (deals entering in one calendar month) has its own
        share q_c of deals that will leave, estimated from how many of them left so far (see fit_hazards).
        P(leave | open at a) = q S1(a) / (1 - q + q S1(a)).
        """
        out = np.ones(len(age))
        q = 1.0 - self.cure
        if len(self.cohorts) == 0 or q <= 0:
            return out
        month = month_number(entered_day)
        pos = np.clip(np.searchsorted(self.cohorts, month), 0, len(self.cohorts) - 1)
        qc = np.where(self.cohorts[pos] == month, self.cohort_susceptible[pos], q)
        a = np.clip(age, 0, len(self.survival) - 1)
        s1 = np.clip((self.survival[a] - self.cure) / q, 0.0, 1.0)
        base = np.divide(q * s1, 1.0 - q + q * s1, out=np.zeros(len(a)), where=(1.0 - q + q * s1) > 0)
        den = 1.0 - qc + qc * s1
        mine = np.divide(qc * s1, den, out=np.zeros(len(a)), where=den > 0)
        np.divide(mine, base, out=out, where=(base > 0) & (age >= 0))
        return out

    @property
    def max_age(self) -> int:
        """Return the first age (days) with no hazard left."""
        return int(self.won.shape[0] * self.bin_days)


@dataclass(frozen=True)
class StageModel:
    """A stage model fitted on the pipeline known at `as_of`."""

    as_of: pd.Timestamp
    stages: StageConfig
    entry: str
    stats: tuple[StageStats, ...]
    hazards: dict[str, Hazards]
    won_days: dict[str, np.ndarray] = field(repr=False)
    realisation: float
    average_deal_size: float
    dispersion: float
    observed_from: pd.Timestamp
    use_cohorts: bool = True
    segment_by: str | None = None
    segment_hazards: dict[tuple[str, str], Hazards] = field(default_factory=dict, repr=False)
    sojourn: dict[str, Hazards] = field(default_factory=dict, repr=False)
    sojourn_segments: dict[tuple[str, str], Hazards] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[object, ...], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False)

    def stat(self, stage: str) -> StageStats:
        """Return the statistics of an open stage."""
        for s in self.stats:
            if s.stage == stage:
                return s
        raise KeyError(stage)

    def stage_probability(self, stage: str) -> float:
        """Return P(win | reached stage), ignoring time spent."""
        return self.stat(stage).win_probability

    def hazards_for(self, stage: str, segment: str | None = None) -> Hazards:
        """Return the timing hazards of a stage (and segment, e.g. a product, when it has its own), falling back
        to the nearest earlier stage that has them."""
        found = self.entry
        if stage in self.hazards:
            found = stage
        elif stage in self.stages.open:
            order = self.stages.order(stage)
            found = next((s for s in reversed(self.stages.open[: order + 1]) if s in self.hazards), self.entry)
        if segment is not None and (found, segment) in self.segment_hazards:
            return self.segment_hazards[(found, segment)]
        return self.hazards[found]

    def _sojourn_for(self, stage: str, segment: str | None) -> Hazards | None:
        if segment is not None and (stage, segment) in self.sojourn_segments:
            return self.sojourn_segments[(stage, segment)]
        return self.sojourn.get(stage)

    def win_profile(
        self, stage: str, days_in_stage: np.ndarray, *, start: pd.Timestamp, days: int, segment: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (daily, later): P(win on day u after `start`) for u < days, shape (n, days), and P(win later).

        A negative days_in_stage d means the deal enters the stage -d days after start (hazard 0 until then).
        While in the stage: P(win on day u) = S(u) h_won, P(advance on day u) = S(u) h_adv, with S(u+1) =
        S(u) (1 - h_won - h_lost - h_adv), hazards at (days in stage, quarter phase of the day). A deal that
        advances on day v continues as a deal entering the next stage on day v (semi-Markov). Stages whose deals
        never advance (or with no stage history) use the hazards of closing since entering the stage.
        """
        ages = np.asarray(days_in_stage, dtype=np.int64)
        start_day = int(day_numbers(pd.DatetimeIndex([as_day(start)]))[0])
        soj = self._sojourn_for(stage, segment) if stage in self.stages.open else None
        nxt_order = self.stages.order(stage) + 1 if stage in self.stages.open else len(self.stages.open)
        if soj is None or soj.advance is None or nxt_order >= len(self.stages.open):
            won, later, _, _ = _walk(self.hazards_for(stage, segment), ages, start_day, days, self.use_cohorts)
            return won, later
        won, later, adv, adv_later = _walk(soj, ages, start_day, days, self.use_cohorts)
        nxt = self.stages.open[nxt_order]
        q_daily, q_later = self.entering(nxt, start=start, days=days, segment=segment)
        ever = q_daily.sum(axis=1) + q_later
        return won + adv @ q_daily, later + adv @ q_later + adv_later * ever[-1]

    def entering(
        self, stage: str, *, start: pd.Timestamp, days: int, segment: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return win_profile for deals entering `stage` on each day 0..days-1 after start (cached: read-only)."""
        key = (stage, segment, as_day(start), days)
        if key not in self._cache:
            self._cache[key] = self.win_profile(stage, -np.arange(days), start=start, days=days, segment=segment)
        return self._cache[key]

    def win_probability(
        self, stage: str, days_in_stage: np.ndarray, *, start: pd.Timestamp, segment: str | None = None
    ) -> np.ndarray:
        """Return P(win eventually | in `stage` for days_in_stage days at `start`)."""
        daily, later = self.win_profile(stage, days_in_stage, start=start, days=1, segment=segment)
        return daily[:, 0] + later


WALK_CELLS = 4_000_000  # (deal x day) cells stepped at once: about 32 MB per array


def _walk(
    hz: Hazards, ages: np.ndarray, start_day: int, days: int, use_cohorts: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step deals forward day by day; return daily win and advance probabilities (n, days) and their later sums.

    alive(u) = prod over v < u of (1 - h_won(v) - h_lost(v) - h_adv(v)), as a running product along the days
    (an exact sequential product and sum, so the result equals stepping one day at a time).
    """
    n = len(ages)
    won = np.zeros((n, days))
    adv = np.zeros((n, days))
    won_later = np.zeros(n)
    adv_later = np.zeros(n)
    if n == 0:
        return won, won_later, adv, adv_later
    span = max(days, hz.max_age - int(ages.min()))
    phases = quarter_phase(start_day + np.arange(span))
    nb = hz.won.shape[0]
    h_adv = hz.advance if hz.advance is not None else np.zeros_like(hz.won)
    step = max(1, WALK_CELLS // span)
    for lo in range(0, n, step):
        rows = slice(lo, min(n, lo + step))
        age = ages[rows, None] + np.arange(span)[None, :]
        b = age // hz.bin_days
        valid = (age >= 0) & (b < nb)
        bc = np.clip(b, 0, nb - 1)
        hw = np.where(valid, hz.won[bc, phases], 0.0)
        hl = np.where(valid, hz.lost[bc, phases], 0.0)
        ha = np.where(valid, h_adv[bc, phases], 0.0)
        alive = np.empty_like(hw)
        alive[:, 0] = 1.0
        np.multiply.accumulate(1.0 - hw - hl - ha, axis=1, out=hl)
        alive[:, 1:] = hl[:, :-1]
        hw *= alive
        ha *= alive
        won[rows] = hw[:, :days]
        adv[rows] = ha[:, :days]
        if span > days:
            won_later[rows] = np.add.accumulate(hw[:, days:], axis=1)[:, -1]
            adv_later[rows] = np.add.accumulate(ha[:, days:], axis=1)[:, -1]
    if use_cohorts:
        ratio = hz.cohort_ratio(start_day - ages, ages)[:, None]
        won, adv = won * ratio, adv * ratio
        won_later, adv_later = won_later * ratio[:, 0], adv_later * ratio[:, 0]
    return won, won_later, adv, adv_later


def stage_entries(
    snap: pd.DataFrame, *, stages: StageConfig, history: pd.DataFrame | None, as_of: pd.Timestamp, entry: str,
    extra: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Return one row per (deal, open stage entered before as_of): entered_at, closed_at, outcome at as_of.

    Rows from the history first (by deal id, then entry time; a stage entered twice counts from its first
    entry), then one row in the entry stage from its creation for each deal without a recorded stage.
    """
    t = as_day(as_of)
    rows = np.zeros(0, dtype=np.int64)  # the snapshot row of each history entry kept
    kept = np.zeros(0, dtype=np.int64)
    if history is not None and len(history):
        row = positions(history["opportunity_id"], snap["opportunity_id"])
        kept = np.flatnonzero((history["entered_at"] < t).fillna(False).to_numpy(bool)
                              & is_in(history["stage"], stages.open) & (row >= 0))
        entered = history["entered_at"].to_numpy("datetime64[ns]")[kept].view(np.int64)
        kept = kept[np.lexsort((entered, sorted_codes(snap["opportunity_id"])[row[kept]]))]
        # The first entry of each (deal, stage) in that order.
        key = row[kept] * len(stages.open) + positions(history["stage"].iloc[kept], stages.open)
        kept = kept[np.sort(np.unique(key, return_index=True)[1])]
        rows = row[kept]
    with_history = np.zeros(len(snap), dtype=bool)
    with_history[rows] = True
    rest = np.flatnonzero(~with_history & snap["created_at"].notna().to_numpy(bool))
    snap_rows = np.concatenate([rows, rest])
    hist = history if history is not None else pd.DataFrame({
        "opportunity_id": pd.Series(dtype="string"), "stage": pd.Series(dtype="string"),
        "entered_at": snap["created_at"].iloc[:0]})
    entries = pd.DataFrame({
        "opportunity_id": pd.concat([hist["opportunity_id"].iloc[kept], snap["opportunity_id"].iloc[rest]],
                                    ignore_index=True).astype("string"),
        "stage": pd.concat([hist["stage"].iloc[kept].astype("string"),
                            pd.Series([entry] * len(rest), dtype="string")], ignore_index=True),
        "entered_at": pd.concat([hist["entered_at"].iloc[kept], snap["created_at"].iloc[rest]],
                                ignore_index=True),
    })
    for column in ("closed_at", "outcome", "amount", "won_amount", *[c for c in extra if c in snap.columns]):
        entries[column] = snap[column].iloc[snap_rows].reset_index(drop=True)
    return entries


def _in_deal_order(entries: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Return the entries sorted by (deal id, entry time), stably, and each one's next entry time of the same
    deal (NaT for its last)."""
    ids = sorted_codes(entries["opportunity_id"])
    order = np.lexsort((entries["entered_at"].to_numpy("datetime64[ns]").view(np.int64), ids))
    e = entries.iloc[order]
    same = np.zeros(len(order), dtype=bool)
    same[:-1] = ids[order][1:] == ids[order][:-1]
    entered = e["entered_at"].to_numpy("datetime64[ns]")
    nxt = np.full(len(order), np.datetime64("NaT"), dtype="datetime64[ns]")
    nxt[:-1][same[:-1]] = entered[1:][same[:-1]]
    return e, pd.Series(nxt, index=e.index)


def sojourn_entries(entries: pd.DataFrame) -> pd.DataFrame:
    """Return stays in a stage: a stay ends with "advance" when the deal entered another open stage next, else
    with the deal's close (won / lost) or is still open (censored at the as-of date)."""
    e, nxt = _in_deal_order(entries)
    out = e.copy()
    moved = nxt.notna()
    out["closed_at"] = nxt.where(moved, e["closed_at"])
    out["outcome"] = e["outcome"].astype("string").mask(moved, "advance")
    return out


def _reached_matrix(snap: pd.DataFrame, entries: pd.DataFrame, *, stages: StageConfig, entry: str) -> np.ndarray:
    """Return a (deals x open stages) bool matrix of the stages each deal reached by as_of."""
    k = len(stages.open)
    current = positions(snap["stage"], stages.open)
    is_open = equals(snap["outcome"], "open")
    # An open deal reached its current stage (a Prospecting deal has not reached Engaging); a closed one at
    # least the entry stage.
    deepest = np.where(is_open, current, np.maximum(current, stages.open.index(entry)))
    if len(entries):
        e_order = positions(entries["stage"], stages.open)
        pos = positions(entries["opportunity_id"], snap["opportunity_id"])
        np.maximum.at(deepest, pos, e_order)
    won = equals(snap["outcome"], "won")
    deepest[won] = k - 1  # a won deal passed every stage
    return np.arange(k)[None, :] <= deepest[:, None]


def _stage_durations(entries: pd.DataFrame, *, stages: StageConfig) -> pd.DataFrame:
    """Return days spent in each stage by deals that left it (to the next stage entered, or to the close)."""
    e, nxt = _in_deal_order(entries)
    left = nxt.where(nxt.notna(), e["closed_at"])
    days = elapsed_days(left, e["entered_at"])
    final_outcome = e["outcome"]
    return pd.DataFrame({"stage": e["stage"], "days": days, "outcome": final_outcome}).dropna(subset=["days"])


class _Stays(NamedTuple):
    """Stays in a stage counted on the (age bin, quarter phase) grid, with what the cure model needs."""

    nb: int
    risk: np.ndarray  # (nb, 3) deal-days at risk
    won: np.ndarray  # (nb, 3) events, likewise lost and advance
    lost: np.ndarray
    advance: np.ndarray
    start: np.ndarray  # per stay with time at risk: entry day, end day, closed (left before as_of), outcome
    end: np.ndarray
    closed: np.ndarray
    outcome: np.ndarray  # WON, LOST, ADVANCE or -1 (still open)
    at_risk: np.ndarray  # per occupied (entry day, age) grid cell: deals at risk, calendar day, (bin, phase) cell
    day: np.ndarray
    cell: np.ndarray


def _count_stays(
    entries: pd.DataFrame, *, t_dn: int, obs_dn: int, bin_days: int, half_life_days: float, min_bins: int = 0
) -> _Stays | None:
    """Count deal-days at risk and events by (age bin, quarter phase); None when no stay has a day at risk."""
    start = day_numbers(entries["entered_at"])
    end = day_numbers(entries["closed_at"])
    outcome = positions(entries["outcome"], EXITS)  # 0 won, 1 lost, 2 advance, -1 open
    closed = (end > -(2**61)) & (end < t_dn) & (outcome >= 0)
    first = np.maximum(start, obs_dn)
    last = np.where(closed, end, t_dn - 1)
    length = np.maximum(last - first + 1, 0)
    ok = length > 0
    start, first, length, closed, end = start[ok], first[ok], length[ok], closed[ok], end[ok]
    outcome = outcome[ok]
    if int(length.sum()) == 0:
        return None
    # Deal-days at risk per (start day, age): each stay is one run of ages on its start day's row. The runs'
    # ends, sorted by row and age, give each row's count between two ends by a cumulative sum (a row's +1s and
    # -1s cancel); only runs where deals are at risk are listed, day by day. Memory follows the deal-days at
    # risk: a dense (start day x age) grid grew with the square of the pipeline's span (4 deals from 1907 to
    # 2099 asked for 12.7 GiB; schemathesis).
    s0 = int(start.min())
    row = start - s0
    a0 = first - start
    rows = np.concatenate([row, row])
    ends = np.concatenate([a0, a0 + length])
    order = np.lexsort((ends, rows))
    rows, ends = rows[order], ends[order]
    running = np.cumsum(np.concatenate([np.ones(len(row), np.int64), -np.ones(len(row), np.int64)])[order])
    run = np.where(rows[1:] == rows[:-1], ends[1:] - ends[:-1], 0)
    keep = (running[:-1] > 0) & (run > 0)
    run_row, run_age, run, run_count = rows[:-1][keep], ends[:-1][keep], run[keep], running[:-1][keep]
    cell_row = np.repeat(run_row, run)
    age = np.repeat(run_age, run) + (np.arange(int(run.sum())) - np.repeat(np.cumsum(run) - run, run))
    at_risk = np.repeat(run_count, run).astype(np.float64)
    day = s0 + cell_row + age
    nb = max(int(age.max()) // bin_days + 1, min_bins)
    b = age // bin_days
    ph = quarter_phase(day)
    cell = b * 3 + ph
    recency = 0.5 ** ((t_dn - day) / half_life_days) if np.isfinite(half_life_days) else np.ones(len(day))
    risk = np.bincount(cell, weights=at_risk * recency, minlength=nb * 3).reshape(nb, 3)
    ev_age = end - start
    ev_cell = (ev_age // bin_days) * 3 + quarter_phase(np.where(closed, end, 0))
    ev_weight = 0.5 ** ((t_dn - end) / half_life_days) if np.isfinite(half_life_days) else np.ones(len(end))

    def count(kind: int) -> np.ndarray:
        hit = closed & (outcome == kind)
        return np.bincount(ev_cell[hit], weights=ev_weight[hit], minlength=nb * 3).reshape(nb, 3)

    return _Stays(nb, risk, count(WON), count(LOST), count(ADVANCE), start, end, closed, outcome, at_risk, day,
                  cell)


def _prior_hazard(prior: Hazards, kind: str, nb: int) -> np.ndarray:
    """Return a prior's (age bin, phase) hazard of one kind (won, lost, advance), padded with 0 to nb bins."""
    h = getattr(prior, kind)
    h = np.zeros((0, 3)) if h is None else h
    return np.vstack([h, np.zeros((max(nb - h.shape[0], 0), 3))])[:nb]


def segment_strength(
    groups: list[pd.DataFrame], *, prior: Hazards, as_of: pd.Timestamp, observed_from: pd.Timestamp,
    bin_days: int = 7, half_life_days: float = float("inf"),
) -> np.ndarray:
    """Return, per age bin, how many pseudo-exits a segment's hazards borrow from its stage's (inf: all of them).

    Empirical Bayes (gamma-Poisson): in age bin b a segment's exit hazards are its stage's times a factor theta
    with mean 1 and variance phi_b. With E_g = the exits (won, lost or advanced) of segment g in the bin and X_g =
    the exits the stage's hazards expect from its deal-days at risk (sum over quarter phases of R x h),
    E[(E_g - X_g)^2 - E_g] = phi_b X_g^2, so phi_b = max(0, sum_g (E_g - X_g)^2 - E_g) / sum_g X_g^2, and the
    posterior factor of the exit hazard is (E_g + m_b) / (X_g + m_b) = 1 + w (E_g / X_g - 1), m_b = 1 / phi_b,
    w = X_g / (X_g + m_b). Where the segments differ (a slow product barely closes in the first weeks, when a
    fast one mostly does) they borrow little; where they are alike, or the bin has too few exits to tell, they
    take the stage's hazards. fit_hazards applies the one weight w to each kind's own ratio (won, lost,
    advance), so shrinking does not tilt a segment's odds of winning against losing.
    """
    t_dn = int(day_numbers(pd.DatetimeIndex([as_day(as_of)]))[0])
    obs_dn = int(day_numbers(pd.DatetimeIndex([as_day(observed_from)]))[0])
    nb = prior.won.shape[0]
    counted = [_count_stays(group, t_dn=t_dn, obs_dn=obs_dn, bin_days=bin_days, half_life_days=half_life_days,
                            min_bins=nb) for group in groups]
    return _strength_of(counted, prior=prior)


def _strength_of(counted: list[_Stays | None], *, prior: Hazards) -> np.ndarray:
    """Return segment_strength from the segments' stays counted with min_bins = the prior's bins."""
    nb = prior.won.shape[0]
    kinds = ("won", "lost", "advance")
    num = np.zeros(nb)
    den = np.zeros(nb)
    for c in counted:
        if c is None:
            continue
        e = sum(getattr(c, k).sum(axis=1) for k in kinds)[:nb]
        x = sum((c.risk * _prior_hazard(prior, k, c.nb)).sum(axis=1) for k in kinds)[:nb]
        num += (e - x) ** 2 - e
        den += x**2
    phi = np.divide(np.maximum(num, 0.0), den, out=np.zeros(nb), where=den > 0)
    return np.divide(1.0, phi, out=np.full(nb, np.inf), where=phi > 0)


def fit_hazards(
    entries: pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    observed_from: pd.Timestamp,
    bin_days: int = 7,
    seasonal_prior: float = 100.0,
    cohort_prior: float = 50.0,
    half_life_days: float = float("inf"),
    prior: Hazards | None = None,
    prior_strength: np.ndarray | float = np.inf,
) -> tuple[Hazards, np.ndarray]:
    """Estimate daily won/lost hazards by (age bin, quarter phase) with delayed entry and right censoring.

    h(b, q) = (E(b, q) + k x h(b)) / (R(b, q) + k), where E counts closes and R deal-days at risk in age bin b
    during quarter phase q, h(b) = E(b) / R(b) pools the phases and k = `seasonal_prior` deal-days shrinks a
    phase with little evidence towards the pooled hazard. Deal-days before `observed_from` (the first close in
    the data) are not at risk: an export that keeps only deals closed after some date says nothing earlier.
    With a `prior` (the stage's hazards, for one segment of it), each kind k (won, lost, advance) is the prior's
    times a credibility-weighted factor per age bin: h_k(b, q) = h_prior,k(b, q) x (1 + w_b (E_k(b) / X_k(b) - 1)),
    E_k(b) = the segment's events of kind k in bin b, X_k(b) = sum over phases of R(b, q) h_prior,k(b, q) (the
    events the prior expects), w_b = X(b) / (X(b) + m_b) with X(b) = the exits of any kind the prior expects and
    m_b = `prior_strength` pseudo-exits (one number, or one per bin; inf: the prior's hazards; see
    segment_strength). One weight for every kind, so borrowing does not tilt winning against losing.
    Also return, per calendar month since observed_from (rows: month start day, observed wins, expected wins).
    """
    t_dn = int(day_numbers(pd.DatetimeIndex([as_day(as_of)]))[0])
    obs_dn = int(day_numbers(pd.DatetimeIndex([as_day(observed_from)]))[0])
    c = _count_stays(entries, t_dn=t_dn, obs_dn=obs_dn, bin_days=bin_days, half_life_days=half_life_days,
                     min_bins=0 if prior is None else prior.won.shape[0])
    return _hazards_of(c, t_dn=t_dn, obs_dn=obs_dn, bin_days=bin_days, seasonal_prior=seasonal_prior,
                       cohort_prior=cohort_prior, prior=prior, prior_strength=prior_strength)


def _hazards_of(
    c: _Stays | None, *, t_dn: int, obs_dn: int, bin_days: int, seasonal_prior: float, cohort_prior: float,
    prior: Hazards | None, prior_strength: np.ndarray | float,
) -> tuple[Hazards, np.ndarray]:
    """Return fit_hazards from stays already counted (min_bins = the prior's bins when there is a prior)."""
    if c is None:
        return Hazards(bin_days, np.zeros((1, 3)), np.zeros((1, 3)), 0), np.zeros((0, 3))
    nb, risk, won_ev, lost_ev, adv_ev = c.nb, c.risk, c.won, c.lost, c.advance
    start, end, closed, outcome, at_risk, day, cell = c.start, c.end, c.closed, c.outcome, c.at_risk, c.day, c.cell
    ev_age = end - start

    def rate(events: np.ndarray) -> np.ndarray:
        pooled = np.divide(events.sum(1), risk.sum(1), out=np.zeros(nb), where=risk.sum(1) > 0)
        num = events + seasonal_prior * pooled[:, None]
        den = risk + seasonal_prior
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    if prior is None:
        hw, hl, ha = rate(won_ev), rate(lost_ev), rate(adv_ev)
    else:
        # A segment (e.g. one product) borrows strength from its stage: per age bin, its own rate of each kind
        # (events / events the stage's hazards expect) weighted X / (X + m) against the stage's (factor 1).
        given = np.atleast_1d(np.asarray(prior_strength, dtype=float))
        m = np.full(nb, given[0]) if given.size == 1 else np.full(nb, np.inf)
        if given.size > 1:
            m[: min(nb, given.size)] = given[:nb]
        prior_h = [_prior_hazard(prior, k, nb) for k in ("won", "lost", "advance")]
        prior_x = [(risk * h).sum(axis=1) for h in prior_h]
        x_all = sum(prior_x)
        own = np.zeros(nb)
        np.divide(x_all, x_all + m, out=own, where=np.isfinite(m) & (x_all + m > 0))

        def borrow(events: np.ndarray, i: int) -> np.ndarray:
            ratio = np.divide(events.sum(axis=1), prior_x[i], out=np.ones(nb), where=prior_x[i] > 0)
            return prior_h[i] * (1.0 + own * (ratio - 1.0))[:, None]

        hw, hl, ha = borrow(won_ev, 0), borrow(lost_ev, 1), borrow(adv_ev, 2)
    scale = np.maximum(hw + hl + ha, 1.0)  # keep a daily probability: won + lost + advance <= 1
    hw, hl, ha = hw / scale, hl / scale, ha / scale
    # Observed against expected wins per calendar month, to measure how much months vary beyond chance.
    month = month_number(day)
    expected = np.bincount(month - month.min(), weights=hw.reshape(-1)[cell] * at_risk)
    ev_month = (EPOCH + end[closed & (outcome == WON)].astype("timedelta64[D]")).astype(
        "datetime64[M]").astype(np.int64) - month.min()
    observed = np.bincount(ev_month, minlength=len(expected))[: len(expected)]
    full = np.arange(len(expected)) + month.min()
    # Only whole calendar months inside [observed_from, as_of).
    m_start = (full.astype("datetime64[M]").astype("datetime64[D]") - EPOCH).astype(np.int64)
    m_end = ((full + 1).astype("datetime64[M]").astype("datetime64[D]") - EPOCH).astype(np.int64)
    whole = (m_start >= obs_dn) & (m_end <= t_dn)
    monthly = np.column_stack([m_start, observed, expected])[whole]
    # Mixture cure model: the share of deals that never leave is where survival levels off after the last
    # exit ever seen; each entry cohort (calendar month) gets its own share of leavers, (K_c + m q) /
    # (sum F1(x_i) + m), K_c = deals that left, F1(x_i) = P(a leaver has left by its exposure x_i), m = cohort_prior.
    weight = risk.sum(axis=1)
    pooled = np.divide(((hw + hl + ha) * risk).sum(axis=1), weight, out=np.zeros(nb), where=weight > 0)
    survival = np.concatenate([[1.0], np.cumprod(1.0 - np.repeat(pooled, bin_days))])
    last_exit = int(ev_age[closed].max()) + 1 if closed.any() else 0
    cure = float(survival[min(last_exit, len(survival) - 1)]) if closed.any() else 0.0
    q = 1.0 - cure
    fresh = start >= obs_dn  # cohorts seen from their start (no left truncation)
    cohorts = np.zeros(0, dtype=np.int64)
    susceptible = np.zeros(0)
    if q > 0 and fresh.any() and np.isfinite(cohort_prior):
        exposure = np.clip(t_dn - start[fresh], 0, len(survival) - 1)
        f1 = np.clip((1.0 - survival[exposure]) / q, 0.0, 1.0)
        cohort = month_number(start[fresh])
        cohorts, inv = np.unique(cohort, return_inverse=True)
        k_c = np.bincount(inv, weights=closed[fresh].astype(float), minlength=len(cohorts))
        f_c = np.bincount(inv, weights=f1, minlength=len(cohorts))
        susceptible = np.clip((k_c + cohort_prior * q) / (f_c + cohort_prior), 0.0, 1.0)
    hazards = Hazards(bin_days, hw, hl, len(start), ha if adv_ev.any() else None, cure, survival, cohorts,
                      susceptible)
    return hazards, monthly


def _dispersion(monthly: np.ndarray, *, prior: float, prior_weight: float) -> float:
    """Return the sd of log(observed / expected) monthly wins beyond Poisson noise, shrunk towards a prior.

    s^2 = mean(log(O/E)^2 - 1/E) over months with E >= 5; sigma = sqrt((n s^2 + w prior^2) / (n + w)).
    """
    if len(monthly):
        o, e = monthly[:, 1], monthly[:, 2]
        use = (e >= 5) & (o > 0)
        n = int(use.sum())
        s2 = float(np.mean(np.log(o[use] / e[use]) ** 2 - 1.0 / e[use])) if n else 0.0
    else:
        n, s2 = 0, 0.0
    return float(np.sqrt((n * max(s2, 0.0) + prior_weight * prior**2) / (n + prior_weight)))


def stage_statistics(
    snap: pd.DataFrame, *, stages: StageConfig, as_of: pd.Timestamp, history: pd.DataFrame | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[str, pd.DataFrame, tuple[StageStats, ...], dict[str, np.ndarray]]:
    """Return (entry stage, stage entries, per-stage statistics, days won deals spent per stage).

    P(win | reached s) = won deals that reached s / closed deals that reached s (a won deal reached every stage;
    a lost deal the stages recorded for it, or the entry stage). Conversion s -> next = deals that reached the
    next stage (or won, after the last) / deals that reached s and are no longer in it. Stage durations: days
    from entering a stage to entering the next or closing.
    """
    t = as_day(as_of)
    entry = entry_stage(snap, stages=stages, history=history)
    entries = stage_entries(snap, stages=stages, history=history, as_of=t, entry=entry, extra=extra)
    reached = _reached_matrix(snap, entries, stages=stages, entry=entry)
    won, lost, is_open = (equals(snap["outcome"], kind) for kind in ("won", "lost", "open"))
    order = lookup(snap["stage"], {s: stages.order(s) for s in stages.all}, default=-1).astype(np.int64)
    durations = _stage_durations(entries, stages=stages)
    stats = []
    won_days: dict[str, np.ndarray] = {}
    for i, s in enumerate(stages.open):
        r = reached[:, i]
        n_won, n_lost = int((r & won).sum()), int((r & lost).sum())
        p = n_won / (n_won + n_lost) if n_won + n_lost else float("nan")
        decided = r & (~is_open | (order > i))
        nxt = reached[:, i + 1] if i + 1 < len(stages.open) else won
        conv = float((decided & nxt).sum() / decided.sum()) if decided.sum() else float("nan")
        wd = durations.loc[(durations["stage"] == s) & (durations["outcome"] == "won"), "days"].to_numpy(float)
        won_days[s] = wd
        se = entries[(entries["stage"] == s) & (entries["outcome"] == "won")]
        to_win = elapsed_days(se["closed_at"], se["entered_at"]).to_numpy(float)
        stats.append(StageStats(
            stage=s, reached=int(r.sum()), won=n_won, lost=n_lost, open=int((r & is_open & (order == i)).sum()),
            win_probability=p, conversion_to_next=conv,
            won_days_median=float(np.median(wd)) if len(wd) else float("nan"),
            won_days_p80=float(np.percentile(wd, 80)) if len(wd) else float("nan"),
            mean_days_to_win=float(np.mean(to_win)) if len(to_win) else float("nan"),
        ))
    return entry, entries, tuple(stats), won_days


def fit_stage_model(
    snap: pd.DataFrame,
    *,
    stages: StageConfig,
    as_of: pd.Timestamp,
    history: pd.DataFrame | None = None,
    bin_days: int = 7,
    seasonal_prior: float = 100.0,
    cohort_prior: float = 50.0,
    half_life_days: float = float("inf"),
    segment_by: str | None = "product",
    segment_prior: float | None = None,
    min_segment_deals: int = 30,
    dispersion_prior: float = 0.15,
    dispersion_prior_weight: float = 3.0,
) -> StageModel:
    """Learn the stage model from a snapshot (see forecasting.snapshot.snapshot) taken at `as_of`.

    Stage probabilities, conversions and durations as in stage_statistics. Timing: daily won/lost hazards per
    stage on the clock "days since entering the stage" (see fit_hazards). Each value of `segment_by` with at least
    `min_segment_deals` stays in a stage gets its own hazards, borrowing from the stage's per age bin as much as
    the segments are alike (`segment_prior=None`: estimated, see segment_strength; a number fixes the pseudo-exits
    per bin). Realisation = won revenue / amount of won deals (how booked value compares with the amount in the
    pipeline). Dispersion: see _dispersion.
    """
    t = as_day(as_of)
    closed = snap[snap["outcome"].isin(["won", "lost"])]
    observed_from = closed["closed_at"].min() if len(closed) else t
    t_dn = int(day_numbers(pd.DatetimeIndex([t]))[0])
    obs_dn = int(day_numbers(pd.DatetimeIndex([as_day(observed_from)]))[0])
    segment = segment_by if segment_by is not None and segment_by in snap.columns else None
    entry, entries, stats, won_days = stage_statistics(snap, stages=stages, as_of=t, history=history,
                                                       extra=(segment,) if segment else ())
    hazards: dict[str, Hazards] = {}
    entry_monthly = np.zeros((0, 3))
    for s in stages.open:
        stage_rows = entries[entries["stage"] == s]
        if len(stage_rows) and stage_rows["outcome"].isin(["won", "lost"]).any():
            hz, monthly = fit_hazards(stage_rows, as_of=t, observed_from=observed_from, bin_days=bin_days,
                                      seasonal_prior=seasonal_prior, cohort_prior=cohort_prior,
                                      half_life_days=half_life_days)
            hazards[s] = hz
            if s == entry:
                entry_monthly = monthly
    if entry not in hazards:
        hz, entry_monthly = fit_hazards(entries, as_of=t, observed_from=observed_from, bin_days=bin_days,
                                        seasonal_prior=seasonal_prior, cohort_prior=cohort_prior,
                                        half_life_days=half_life_days)
        hazards[entry] = hz
    def by_segment(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
        keys = rows[str(segment)]
        # Grouping Arrow strings directly: an object column would hash one Python string per row.
        keys = (keys.astype("string").fillna("(none)") if pd.api.types.is_string_dtype(keys)
                else keys.astype(object).where(keys.notna(), "(none)"))
        return [(str(value), group) for value, group in rows.groupby(keys, sort=True)
                if len(group) >= min_segment_deals]

    def segment_fits(rows: pd.DataFrame, base: Hazards, need_close: bool) -> dict[str, Hazards]:
        groups = [(v, g) for v, g in by_segment(rows) if not need_close or g["outcome"].isin(["won", "lost"]).any()]
        # Each segment's stays are counted once, for its borrowing weight and for its hazards.
        counted = [_count_stays(g, t_dn=t_dn, obs_dn=obs_dn, bin_days=bin_days, half_life_days=half_life_days,
                                min_bins=base.won.shape[0]) for _, g in groups]
        strength = (_strength_of(counted, prior=base) if segment_prior is None
                    else np.asarray(segment_prior, dtype=float))
        return {v: _hazards_of(c, t_dn=t_dn, obs_dn=obs_dn, bin_days=bin_days, seasonal_prior=seasonal_prior,
                               cohort_prior=cohort_prior, prior=base, prior_strength=strength)[0]
                for (v, _), c in zip(groups, counted, strict=True)}

    segment_hazards: dict[tuple[str, str], Hazards] = {}
    if segment is not None:
        for s, base in hazards.items():
            for value, hz in segment_fits(entries[entries["stage"] == s], base, True).items():
                segment_hazards[(s, value)] = hz
    sojourn: dict[str, Hazards] = {}
    sojourn_segments: dict[tuple[str, str], Hazards] = {}
    stays = sojourn_entries(entries)
    for s in stages.open[:-1]:
        rows = stays[stays["stage"] == s]
        if not (rows["outcome"] == "advance").any():
            continue
        base = fit_hazards(rows, as_of=t, observed_from=observed_from, bin_days=bin_days,
                           seasonal_prior=seasonal_prior, cohort_prior=cohort_prior,
                           half_life_days=half_life_days)[0]
        sojourn[s] = base
        if segment is not None:
            for value, hz in segment_fits(rows, base, False).items():
                sojourn_segments[(s, value)] = hz
    w = snap[snap["outcome"] == "won"]
    amount = w["amount"].astype(float)
    booked = w["won_amount"].astype(float)
    both = amount.notna() & booked.notna() & (amount > 0)
    realisation = float(booked[both].sum() / amount[both].sum()) if both.any() else 1.0
    ads = float(booked.fillna(0).sum() / len(w)) if len(w) else float("nan")
    return StageModel(
        as_of=t, stages=stages, entry=entry, stats=stats, hazards=hazards, won_days=won_days,
        realisation=realisation, average_deal_size=ads,
        dispersion=_dispersion(entry_monthly, prior=dispersion_prior, prior_weight=dispersion_prior_weight),
        observed_from=pd.Timestamp(observed_from), use_cohorts=bool(np.isfinite(cohort_prior)),
        segment_by=segment, segment_hazards=segment_hazards, sojourn=sojourn, sojourn_segments=sojourn_segments,
    )

"""A synthetic CRM whose generative story is known, so models and forecasts can be checked against the truth.

The story is documented in docs/synthetic-crm.md; every number that shapes it is a module constant here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crmdata.contracts import LEAD, OPPORTUNITY, STAGE_HISTORY
from crmdata.loaders import write_table
from crmdata.stages import DEFAULT_STAGES, StageConfig

GENERATOR_VERSION = "2"
DEFAULT_AS_OF = pd.Timestamp("2026-07-01")
LEAD_HISTORY_DAYS = 365
DEAL_HISTORY_DAYS = 730
DEAL_FUTURE_DAYS = 180
CONVERSION_WINDOW_DAYS = 90
INTEREST_HALF_LIFE_DAYS = 30.0
STUCK_SHARE = 0.10

SOURCES = ("organic_search", "paid_search", "referral", "event", "outbound", "partner", "social")
SOURCE_P = (0.28, 0.2, 0.1, 0.1, 0.15, 0.07, 0.1)
SOURCE_EFFECT = (0.0, -0.1, 0.6, 0.3, -0.5, 0.4, -0.3)
PRODUCT_INTERESTS = ("CRM", "Analytics", "Marketing")
COUNTRIES = ("US", "UK", "DE", "FR", "IN", "BR", "CA", "AU")
COUNTRY_P = (0.35, 0.12, 0.1, 0.08, 0.12, 0.08, 0.08, 0.07)
COUNTRY_REGION = ("NA", "EMEA", "EMEA", "EMEA", "APAC", "LATAM", "NA", "APAC")
GENDERS = ("female", "male", "non-binary")
GENDER_P = (0.47, 0.5, 0.03)
INDUSTRIES = ("software", "manufacturing", "retail", "finance", "healthcare", "education", "government")
INDUSTRY_P = (0.22, 0.16, 0.15, 0.14, 0.13, 0.1, 0.1)
INDUSTRY_EFFECT = (0.5, 0.2, -0.1, 0.3, 0.1, -0.4, -0.3)
JOB_LEVELS = ("c_level", "vp", "director", "manager", "individual_contributor", "student")
JOB_P = (0.06, 0.1, 0.17, 0.27, 0.33, 0.07)
JOB_EFFECT = (0.7, 0.6, 0.4, 0.1, -0.3, -1.5)
JOB_AUTHORITY = (0.85, 0.65, 0.4, 0.2, 0.05, 0.0)
TIMEFRAMES = ("0-3 months", "3-6 months", "6-12 months", "12+ months")
TIMEFRAME_P = (0.2, 0.3, 0.3, 0.2)
TIMEFRAME_EFFECT = (0.8, 0.3, 0.0, -0.6)
LEAD_INTERCEPT = -3.3

# Products: name, category, list price ($), cycle factor (x the stage durations), win-rate shift (logit).
PRODUCTS = (
    ("Core CRM", "CRM", 12_000.0, 1.0, 0.1),
    ("CRM Enterprise", "CRM", 48_000.0, 1.6, -0.3),
    ("Analytics Pro", "Analytics", 24_000.0, 1.3, -0.1),
    ("Analytics Lite", "Analytics", 3_500.0, 0.6, 0.3),
    ("Marketing Suite", "Marketing", 18_000.0, 1.1, 0.0),
    ("Email Starter", "Marketing", 1_200.0, 0.5, 0.4),
)
PRODUCT_P = (0.25, 0.08, 0.12, 0.2, 0.15, 0.2)
DEAL_STAGES = ("qualification", "contact", "proposal", "closing")
STAGE_ADVANCE = (0.7, 0.72, 0.68, 0.75)  # probability of moving on (from closing: of winning)
STAGE_MEAN_DAYS = (8.0, 12.0, 18.0, 14.0)
STAGE_SHAPE = 4.0  # gamma shape of the stage durations: a thin tail, so a stuck deal stands out
LOST_DURATION_FACTOR = 0.8
REP_SKILL_SD = 0.35
SEASONALITY = 0.15  # +-15% creation rate over the year, peaking in spring
GROWTH_PER_YEAR = 0.10
QUARTER_PUSH_DAYS = 20  # wins due this many days into a quarter ...
QUARTER_PUSH_SHARE = 0.35  # ... are pulled into the last days of the previous one this often

FIRST_NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
               "Maya", "Nils", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor", "Wen", "Yara")
LAST_NAMES = ("Adler", "Brooks", "Castro", "Dubois", "Evans", "Fischer", "Garcia", "Huang", "Ito", "Jensen",
              "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Patel", "Quist", "Rossi", "Silva", "Tanaka")
ACCOUNT_STEMS = ("North", "Blue", "Iron", "Silver", "Bright", "Cedar", "Delta", "Echo", "Granite", "Harbor",
                 "Lumen", "Maple", "Nova", "Orbit", "Pine", "Quartz", "River", "Summit", "Terra", "Vertex")
ACCOUNT_SUFFIXES = ("Labs", "Systems", "Logistics", "Health", "Foods", "Capital", "Works", "Media", "Energy",
                    "Retail", "Robotics", "Analytics")
TEAMS_REGIONS = (("East", "NA"), ("West", "NA"), ("Central", "EMEA"), ("Pacific", "APAC"), ("South", "LATAM"))


@dataclass(frozen=True)
class SyntheticLeads:
    """Leads in the lead contract and, beside them, each lead's true probability of converting."""

    leads: pd.DataFrame
    truth: pd.DataFrame
    as_of: pd.Timestamp


@dataclass(frozen=True)
class SyntheticPipeline:
    """Opportunities as of `as_of`, their stage history, and the truth about every deal, future ones included."""

    opportunities: pd.DataFrame
    history: pd.DataFrame
    truth: pd.DataFrame
    as_of: pd.Timestamp
    stages: StageConfig


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng: np.random.Generator, n: int, p: tuple[float, ...]) -> np.ndarray:
    return rng.choice(len(p), size=n, p=np.asarray(p) / np.sum(p))


def _labels(values: tuple[str, ...], index: np.ndarray, missing: np.ndarray | None = None) -> pd.Series:
    labels = pd.Series(np.asarray(values, dtype=object)[index]).astype("string")
    return labels.mask(pd.Series(missing)) if missing is not None else labels


def _maybe(values: np.ndarray, known: np.ndarray) -> pd.Series:
    """Return a nullable boolean column that is empty where the answer is not known."""
    return pd.Series(pd.array(values.astype(bool), dtype="boolean")).mask(pd.Series(~known))


def _ids(prefix: str, n: int, start: int = 0) -> pd.Series:
    width = max(7, len(str(start + n)))
    numbers = np.char.zfill(np.arange(start, start + n).astype(str), width)
    return pd.Series(np.char.add(prefix, numbers)).astype("string")


def _days(timestamps: np.ndarray) -> pd.Series:
    """Round float day offsets from the epoch-free reference to whole seconds and return timestamps."""
    return pd.Series(pd.to_datetime(timestamps, unit="s"))


def generate_leads(*, n: int, seed: int, as_of: pd.Timestamp = DEFAULT_AS_OF) -> SyntheticLeads:
    """Generate `n` leads as seen at `as_of`, labelled with whether they converted within 90 days after it."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = np.random.default_rng([seed, 1])
    as_of_s = as_of.value // 10**9
    age_days = rng.uniform(0, LEAD_HISTORY_DAYS, n)
    created = as_of_s - np.floor(age_days * 86_400)

    source = _pick(rng, n, SOURCE_P)
    interest_area = rng.integers(0, len(PRODUCT_INTERESTS), n)
    country = _pick(rng, n, COUNTRY_P)
    region_codes = np.asarray([("NA", "EMEA", "APAC", "LATAM").index(r) for r in COUNTRY_REGION])[country]
    gender = _pick(rng, n, GENDER_P)
    age = np.clip(np.round(rng.normal(41, 10, n)), 21, 70)
    industry = _pick(rng, n, INDUSTRY_P)
    job = _pick(rng, n, JOB_P)
    employees = np.maximum(1, np.round(np.exp(rng.normal(4.5, 1.6, n))))
    revenue = np.round(employees * np.exp(rng.normal(np.log(150_000), 0.5, n)), -3)

    # Interest is a latent trait that shows through behaviour and engagement; only the observed signals enter p.
    latent = rng.normal(0, 1, n)
    web_visits = rng.poisson(np.exp(0.9 + 0.6 * latent))
    has_visits = web_visits > 0
    pages = np.where(has_visits, np.round(1 + rng.gamma(2.0, 0.9 + 0.3 * np.clip(latent, -1, 2)), 1), 0.0)
    time_on_site = np.where(has_visits, np.round(web_visits * pages * rng.gamma(2.0, 25.0, n)), 0.0)
    pricing = np.minimum(rng.poisson(np.exp(-1.0 + 0.9 * latent)), web_visits)
    demo = rng.random(n) < _sigmoid(-2.6 + 1.2 * latent)
    downloads = rng.poisson(np.exp(-0.6 + 0.5 * latent))
    forms = rng.poisson(np.exp(-0.8 + 0.4 * latent))
    opens = rng.poisson(np.exp(1.3 + 0.4 * latent))
    clicks = rng.binomial(opens, _sigmoid(-1.5 + 0.6 * latent))
    likes = rng.poisson(np.exp(-0.4 + 0.3 * latent))
    shares = rng.poisson(np.exp(-1.6 + 0.3 * latent))
    events = rng.poisson(np.exp(-1.6 + 0.5 * latent))

    lead_age_days = age_days
    quiet_activity = np.minimum(rng.exponential(20.0 * np.exp(-0.3 * latent)), lead_age_days)
    quiet_engagement = np.minimum(rng.exponential(25.0 * np.exp(-0.3 * latent)), lead_age_days)
    has_engagement = (opens + likes + shares + events) > 0
    last_activity = np.where(has_visits, as_of_s - np.floor(quiet_activity * 86_400), np.nan)
    last_engagement = np.where(has_engagement, as_of_s - np.floor(quiet_engagement * 86_400), np.nan)
    quiet_days = np.fmin(np.where(has_visits, quiet_activity, np.inf), np.where(has_engagement, quiet_engagement,
                                                                                 np.inf))
    decay = np.where(np.isfinite(quiet_days), 0.5 ** (np.where(np.isfinite(quiet_days), quiet_days, 0)
                                                       / INTEREST_HALF_LIFE_DAYS), 0.0)

    asked_bant = rng.random(n) < 0.7
    budget = np.where(asked_bant, rng.random(n) < _sigmoid(-0.6 + 0.15 * np.log10(revenue + 1)), False)
    budget_amount = np.where(budget, np.round(np.exp(rng.normal(np.log(15_000), 0.8, n)), -2), np.nan)
    authority = rng.random(n) < np.asarray(JOB_AUTHORITY)[job]
    need = rng.random(n) < _sigmoid(-0.2 + 0.4 * latent)
    timeframe = _pick(rng, n, TIMEFRAME_P)

    missing = {name: rng.random(n) < share for name, share in (
        ("country", 0.08), ("age", 0.25), ("gender", 0.2), ("industry", 0.1), ("job_level", 0.12),
        ("employees", 0.15), ("annual_revenue", 0.2), ("timeframe", 0.15))}
    missing["timeframe"] |= ~asked_bant

    fit = (np.where(missing["industry"], 0.0, np.asarray(INDUSTRY_EFFECT)[industry])
           + np.where(missing["job_level"], 0.0, np.asarray(JOB_EFFECT)[job])
           + np.where(missing["employees"], 0.0, 0.18 * (np.log10(employees) - 2.0))
           + np.asarray(SOURCE_EFFECT)[source]
           + 0.8 * budget + 0.6 * (authority & asked_bant) + 0.7 * (need & asked_bant)
           + np.where(missing["timeframe"], -0.2, np.asarray(TIMEFRAME_EFFECT)[timeframe]))
    interest = (0.35 * np.log1p(web_visits) + 0.5 * np.log1p(pricing) + 1.1 * demo + 0.3 * np.log1p(clicks)
                + 0.2 * np.log1p(downloads) + 0.25 * np.minimum(events, 3) + 0.1 * np.log1p(shares)
                + 0.15 * np.log1p(forms))
    logit = LEAD_INTERCEPT + fit + 1.6 * interest * decay
    p = _sigmoid(logit)
    converted = rng.random(n) < p
    converted_at = np.where(converted, as_of_s + np.floor(rng.uniform(1, CONVERSION_WINDOW_DAYS, n) * 86_400),
                            np.nan)

    stage = np.where(demo | (pricing > 0) | (forms > 0), 2, np.where(has_visits | has_engagement, 1, 0))
    lead_ids = _ids("L", n)
    leads = pd.DataFrame({
        "lead_id": lead_ids,
        "created_at": _days(created),
        "source": _labels(SOURCES, source),
        "product_interest": _labels(PRODUCT_INTERESTS, interest_area),
        "stage": _labels(DEFAULT_STAGES.lead_stages, stage),
        "country": _labels(COUNTRIES, country, missing["country"]),
        "region": _labels(("NA", "EMEA", "APAC", "LATAM"), region_codes, missing["country"]),
        "age": pd.array(np.where(missing["age"], np.nan, age), dtype="Float64"),
        "gender": _labels(GENDERS, gender, missing["gender"]),
        "industry": _labels(INDUSTRIES, industry, missing["industry"]),
        "employees": pd.array(np.where(missing["employees"], np.nan, employees), dtype="Float64"),
        "annual_revenue": pd.array(np.where(missing["annual_revenue"], np.nan, revenue), dtype="Float64"),
        "job_level": _labels(JOB_LEVELS, job, missing["job_level"]),
        "web_visits": pd.array(web_visits.astype(float), dtype="Float64"),
        "pages_per_visit": pd.array(pages, dtype="Float64"),
        "time_on_site": pd.array(time_on_site, dtype="Float64"),
        "pricing_page_visits": pd.array(pricing.astype(float), dtype="Float64"),
        "demo_requested": pd.array(demo, dtype="boolean"),
        "content_downloads": pd.array(downloads.astype(float), dtype="Float64"),
        "form_submissions": pd.array(forms.astype(float), dtype="Float64"),
        "last_activity_at": _days(last_activity),
        "email_opens": pd.array(opens.astype(float), dtype="Float64"),
        "email_clicks": pd.array(clicks.astype(float), dtype="Float64"),
        "social_likes": pd.array(likes.astype(float), dtype="Float64"),
        "social_shares": pd.array(shares.astype(float), dtype="Float64"),
        "events_attended": pd.array(events.astype(float), dtype="Float64"),
        "last_engagement_at": _days(last_engagement),
        "budget_stated": _maybe(budget, asked_bant),
        "budget_amount": pd.array(budget_amount, dtype="Float64"),
        "decision_maker": _maybe(authority, asked_bant),
        "need_stated": _maybe(need, asked_bant),
        "purchase_timeframe": _labels(TIMEFRAMES, timeframe, missing["timeframe"]),
        "converted": pd.array(converted, dtype="boolean"),
        "converted_at": _days(converted_at),
    })
    assert tuple(leads.columns) == LEAD.names
    truth = pd.DataFrame({"lead_id": lead_ids, "true_probability": p})
    return SyntheticLeads(leads=leads, truth=truth, as_of=as_of)


def _creation_weights(start_day: float, days: int, origin_s: int) -> np.ndarray:
    """Return the relative creation rate on each of `days` days from `start_day`: yearly season x steady growth."""
    day = np.arange(days) + start_day
    date = pd.to_datetime(origin_s + day * 86_400, unit="s")
    season = 1.0 + SEASONALITY * np.cos(2 * np.pi * (date.day_of_year.to_numpy() - 105) / 365.25)
    trend = (1.0 + GROWTH_PER_YEAR) ** (day / 365.25)
    return np.asarray(season * trend, dtype=float)


def _creation_times(rng: np.random.Generator, n: int, start_day: float, days: int, origin_s: int) -> np.ndarray:
    """Draw creation times with a yearly season and steady growth (seconds since the epoch, whole seconds)."""
    weights = _creation_weights(start_day, days, origin_s)
    picked = rng.choice(days, size=n, p=weights / weights.sum())
    return np.sort(origin_s + np.floor((start_day + picked + rng.random(n)) * 86_400))


def future_deal_count(n: int, *, as_of: pd.Timestamp = DEFAULT_AS_OF) -> int:
    """Return how many deals the generator creates in the DEAL_FUTURE_DAYS after `as_of`, given `n` before it.

    The same seasonal, growing rate carries on across `as_of`: n x (sum of the daily rate over the future days) /
    (sum over the DEAL_HISTORY_DAYS before), so the day after the export is as busy as the day before it.
    """
    origin_s = as_of.value // 10**9 - DEAL_HISTORY_DAYS * 86_400
    past = _creation_weights(0.0, DEAL_HISTORY_DAYS, origin_s).sum()
    future = _creation_weights(float(DEAL_HISTORY_DAYS), DEAL_FUTURE_DAYS, origin_s).sum()
    return round(n * future / past)


def _names(rng: np.random.Generator, n: int, first: tuple[str, ...], second: tuple[str, ...]) -> list[str]:
    combos = [f"{a} {b}" for a in first for b in second]
    order = rng.permutation(len(combos))
    names = [combos[i] for i in order[: min(n, len(combos))]]
    names += [f"{combos[order[i % len(combos)]]} {i // len(combos) + 1}" for i in range(len(names), n)]
    return names


def generate_opportunities(*, n: int, seed: int, as_of: pd.Timestamp = DEFAULT_AS_OF) -> SyntheticPipeline:
    """Generate `n` opportunities created before `as_of`, plus the deals of the next 180 days as truth."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = np.random.default_rng([seed, 2])
    as_of_s = as_of.value // 10**9
    origin_s = as_of_s - DEAL_HISTORY_DAYS * 86_400
    n_future = future_deal_count(n, as_of=as_of)
    created = np.concatenate([
        _creation_times(rng, n, 0.0, DEAL_HISTORY_DAYS, origin_s),
        _creation_times(rng, n_future, float(DEAL_HISTORY_DAYS), DEAL_FUTURE_DAYS, origin_s),
    ])
    total = n + n_future

    n_reps = int(np.clip(n // 300, 8, 400))
    rep_names = np.asarray(_names(rng, n_reps, FIRST_NAMES, LAST_NAMES), dtype=object)
    rep_skill = rng.normal(0, REP_SKILL_SD, n_reps)
    rep_team = rng.integers(0, len(TEAMS_REGIONS), n_reps)
    rep = rng.integers(0, n_reps, total)
    product = _pick(rng, total, PRODUCT_P)
    price = np.asarray([p[2] for p in PRODUCTS])[product]
    cycle = np.asarray([p[3] for p in PRODUCTS])[product]
    shift = np.asarray([p[4] for p in PRODUCTS])[product] + rep_skill[rep]
    amount = np.round(price * np.exp(rng.normal(0, 0.25, total)), -1)
    n_accounts = int(np.clip(total // 6, 20, 5000))
    account_names = np.asarray(_names(rng, n_accounts, ACCOUNT_STEMS, ACCOUNT_SUFFIXES), dtype=object)
    account = rng.integers(0, n_accounts, total)

    stuck = rng.random(total) < STUCK_SHARE
    stuck_stage = rng.integers(0, len(DEAL_STAGES), total)
    n_stages = len(DEAL_STAGES)
    entered = np.full((total, n_stages), np.nan)
    t = created.astype(float)
    alive = np.ones(total, dtype=bool)
    end_time = np.full(total, np.nan)
    won = np.zeros(total, dtype=bool)
    for k in range(n_stages):
        entered[alive, k] = t[alive]
        halted = alive & stuck & (stuck_stage == k)
        alive &= ~halted
        advance = rng.random(total) < _sigmoid(np.log(STAGE_ADVANCE[k] / (1 - STAGE_ADVANCE[k])) + shift)
        duration = rng.gamma(STAGE_SHAPE, STAGE_MEAN_DAYS[k] * cycle / STAGE_SHAPE, total)
        duration = np.where(advance, duration, duration * LOST_DURATION_FACTOR)
        t = t + np.floor(duration * 86_400) + 3600
        lose = alive & ~advance
        end_time[lose] = t[lose]
        alive &= advance
        if k == n_stages - 1:
            won = alive.copy()
            end_time[won] = t[won]
    # Reps pull wins that would land early in a quarter into the last days of the one before.
    close_dates = pd.to_datetime(np.where(won, end_time, 0), unit="s")
    quarter_start = close_dates.to_period("Q").start_time
    into_quarter = (close_dates - quarter_start).days.to_numpy()
    pushed = won & (into_quarter < QUARTER_PUSH_DAYS) & (rng.random(total) < QUARTER_PUSH_SHARE)
    pulled_to = (quarter_start.to_numpy().astype("datetime64[s]").astype(np.int64)
                 - np.floor(rng.uniform(0.05, 5, total) * 86_400))
    pushed &= pulled_to > entered[:, n_stages - 1] + 3600
    end_time = np.where(pushed, pulled_to, end_time)
    stuck_final = stuck & np.isnan(end_time)

    ids = _ids("O", total)
    final_outcome = np.where(np.isnan(end_time), "open", np.where(won, "won", "lost"))
    truth = pd.DataFrame({
        "opportunity_id": ids,
        "created_at": _days(created),
        "observed": created < as_of_s,
        "stuck": stuck_final,
        "final_outcome": pd.Series(final_outcome).astype("string"),
        "final_closed_at": _days(end_time),
        "final_won_amount": pd.array(np.where(won, amount, 0.0), dtype="Float64"),
        "amount": pd.array(amount, dtype="Float64"),
        "owner": pd.Series(rep_names[rep]).astype("string"),
        "product": _labels(tuple(p[0] for p in PRODUCTS), product),
        "product_category": _labels(tuple(p[1] for p in PRODUCTS), product),
    })

    obs = created < as_of_s
    closed_by = obs & ~np.isnan(end_time) & (end_time <= as_of_s)
    entered_obs = np.where(entered <= as_of_s, entered, np.nan)
    reached = np.sum(~np.isnan(entered_obs), axis=1)
    current = np.clip(reached - 1, 0, n_stages - 1)
    stage_names = np.asarray(DEAL_STAGES, dtype=object)[current]
    stage_names = np.where(closed_by, np.where(won, "won", "lost"), stage_names)
    stage_entered = np.where(closed_by, end_time, entered_obs[np.arange(total), current])
    expected_close = created + np.floor(sum(STAGE_MEAN_DAYS) * cycle * np.exp(rng.normal(0, 0.3, total)) * 86_400)
    team = np.asarray([name for name, _ in TEAMS_REGIONS], dtype=object)[rep_team[rep]]
    region = np.asarray([r for _, r in TEAMS_REGIONS], dtype=object)[rep_team[rep]]
    sel = np.flatnonzero(obs)
    opportunities = pd.DataFrame({
        "opportunity_id": ids.iloc[sel].reset_index(drop=True),
        "lead_id": pd.Series(pd.NA, index=range(len(sel)), dtype="string"),
        "account": pd.Series(account_names[account[sel]]).astype("string"),
        "owner": pd.Series(rep_names[rep[sel]]).astype("string"),
        "team": pd.Series(team[sel]).astype("string"),
        "region": pd.Series(region[sel]).astype("string"),
        "product": truth["product"].iloc[sel].reset_index(drop=True),
        "product_category": truth["product_category"].iloc[sel].reset_index(drop=True),
        "amount": pd.array(amount[sel], dtype="Float64"),
        "created_at": _days(created[sel]),
        "stage": pd.Series(stage_names[sel]).astype("string"),
        "stage_entered_at": _days(stage_entered[sel]),
        "expected_close_date": _days(expected_close[sel]).dt.normalize(),
        "closed_at": _days(np.where(closed_by, end_time, np.nan)[sel]),
        "outcome": pd.Series(np.where(closed_by, np.where(won, "won", "lost"), "open")[sel]).astype("string"),
        "won_amount": pd.array(np.where(closed_by & won, amount, np.where(closed_by, 0.0, np.nan))[sel],
                               dtype="Float64"),
    })
    assert tuple(opportunities.columns) == OPPORTUNITY.names

    hist_stage = np.column_stack([np.where(np.isnan(entered_obs[:, k]), -1, k) for k in range(n_stages)])
    hist_time = entered_obs
    rows, cols = np.nonzero(hist_stage[sel] >= 0)
    ends = np.flatnonzero(closed_by[sel])
    history = pd.DataFrame({
        "opportunity_id": pd.concat([ids.iloc[sel].iloc[rows], ids.iloc[sel].iloc[ends]]).reset_index(drop=True),
        "stage": pd.Series(np.concatenate([np.asarray(DEAL_STAGES, dtype=object)[cols],
                                           np.where(won[sel][ends], "won", "lost")])).astype("string"),
        "entered_at": _days(np.concatenate([hist_time[sel][rows, cols], end_time[sel][ends]])),
    })
    history = history.sort_values(["opportunity_id", "entered_at"], kind="stable").reset_index(drop=True)
    assert tuple(history.columns) == STAGE_HISTORY.names
    return SyntheticPipeline(opportunities=opportunities, history=history, truth=truth, as_of=as_of,
                             stages=DEFAULT_STAGES)


def link_leads(pipeline: SyntheticPipeline, leads: SyntheticLeads, *, seed: int) -> SyntheticPipeline:
    """Attach converted leads to opportunities created after the lead, so the two tables join."""
    rng = np.random.default_rng([seed, 3])
    converted = leads.leads.loc[leads.leads["converted"].fillna(False).to_numpy(bool), "lead_id"].to_numpy()
    opps = pipeline.opportunities.copy()
    take = min(len(converted), len(opps) // 2)
    if take:
        rows = rng.choice(len(opps), size=take, replace=False)
        opps.loc[np.sort(rows), "lead_id"] = rng.permutation(converted)[:take]
    return SyntheticPipeline(opportunities=opps, history=pipeline.history, truth=pipeline.truth,
                             as_of=pipeline.as_of, stages=pipeline.stages)


DEMO_STEPS = 7


def write_demo(
    *,
    out: Path,
    leads: int,
    opportunities: int,
    seed: int,
    fmt: str = "parquet",
    as_of: pd.Timestamp = DEFAULT_AS_OF,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Generate the synthetic CRM and write it (parquet or csv) with a manifest; return the manifest.

    `on_step` is called after each of the DEMO_STEPS steps with the step's name (for a progress bar).
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError("format must be parquet or csv")
    step = on_step or (lambda _name: None)
    lead_data = generate_leads(n=leads, seed=seed, as_of=as_of)
    step("leads")
    pipeline = link_leads(generate_opportunities(n=opportunities, seed=seed, as_of=as_of), lead_data, seed=seed)
    step("opportunities")
    tables = {
        "leads": lead_data.leads,
        "leads_truth": lead_data.truth,
        "opportunities": pipeline.opportunities,
        "stage_history": pipeline.history,
        "opportunities_truth": pipeline.truth,
    }
    files: dict[str, dict[str, object]] = {}
    for name, frame in tables.items():
        path = out / f"{name}.{fmt}"
        write_table(frame, path)
        step(path.name)
        files[name] = {"file": path.name, "rows": len(frame)}
    manifest: dict[str, object] = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "as_of": as_of.isoformat(),
        "format": fmt,
        "files": files,
        "lead_conversion_rate": round(float(lead_data.leads["converted"].mean()), 6),
        "stages": {"open": list(pipeline.stages.open), "won": list(pipeline.stages.won),
                   "lost": list(pipeline.stages.lost)},
    }
    tmp = out / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / "manifest.json")
    return manifest

"""A vectorised, seeded Monte Carlo of revenue per period: exact draws for the deals that shape the spread, an
exact multivariate normal for the sum of the many small ones, compound Poisson for deals not yet created."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_DRAW_LIMIT = 20_000_000


@dataclass(frozen=True)
class Simulation:
    """Simulated revenue, shape (simulations, periods), and how the open deals were simulated."""

    revenue: np.ndarray
    exact_deals: int
    normal_deals: int
    normal_max_skew: float


def _exact_count(values: np.ndarray, probs: np.ndarray, *, max_skew: float, min_exact: int) -> tuple[int, float]:
    """Return how many of the largest deals to draw one by one so the rest sum to a near-normal total.

    For the rest, per period k: skew_k = sum(a^3 p (1-p)(1-2p)) / sum(a^2 p (1-p))^1.5 (a Bernoulli sum's third
    standardised cumulant); the smallest count >= min_exact with max_k |skew_k| <= max_skew is returned.
    """
    n = len(values)
    if n <= min_exact:
        return n, 0.0
    q = probs * (1.0 - probs)
    k2 = values[:, None] ** 2 * q
    k3 = values[:, None] ** 3 * q * (1.0 - 2.0 * probs)
    # Suffix sums over deals sorted by value, largest first: the rest after the first j deals.
    s2 = np.cumsum(k2[::-1], axis=0)[::-1]
    s3 = np.cumsum(k3[::-1], axis=0)[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(s2 > 0, np.abs(s3) / s2**1.5, 0.0).max(axis=1)
    ok = np.flatnonzero((skew <= max_skew) & (np.arange(n) >= min_exact))
    if len(ok) == 0:
        return n, 0.0
    j = int(ok[0])
    return j, float(skew[j])


def alias_tables(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return Walker alias tables (threshold, alias), one row per deal, for the categorical rows of q.

    Drawing k uniform in 0..K-1 and w uniform in [0, 1), then taking k if w < threshold[k] else alias[k], picks k
    with probability q[k]. Built with Vose's method, vectorised over rows: K - 1 steps, each pairing a column
    below the mean (smallest) with one above it (largest).
    """
    m, k = q.shape
    scaled = q.astype(np.float64) * k
    threshold = np.ones((m, k), dtype=np.float64)
    alias = np.tile(np.arange(k), (m, 1))
    done = np.zeros((m, k), dtype=bool)
    rows = np.arange(m)
    for _ in range(k - 1):
        small = np.argmin(np.where(done, np.inf, scaled), axis=1)
        large = np.argmax(np.where(done, -np.inf, scaled), axis=1)
        s_val = scaled[rows, small]
        active = (s_val < 1.0) & (small != large)
        r, sm, lg = rows[active], small[active], large[active]
        threshold[r, sm] = s_val[active]
        alias[r, sm] = lg
        scaled[r, lg] -= 1.0 - s_val[active]
        done[r, sm] = True
    return threshold.astype(np.float32), alias


def _simulate_exact(values: np.ndarray, probs: np.ndarray, *, n_sims: int, rng: np.random.Generator,
                    chunk_cells: int) -> np.ndarray:
    """Draw every deal: does it win within the horizon (one uniform per simulation and deal), and if so in
    which period (an alias-table draw from its conditional timing, only for the winners)."""
    m, k = probs.shape
    out = np.zeros((n_sims, k), dtype=np.float64)
    if m == 0:
        return out
    p_win = probs.sum(axis=1)
    cond = np.divide(probs, p_win[:, None], out=np.full_like(probs, 1.0 / k), where=p_win[:, None] > 0)
    threshold, alias = alias_tables(cond)
    p_win32 = p_win.astype(np.float32)
    chunk = max(1, min(n_sims, chunk_cells // max(m, 1)))
    for lo in range(0, n_sims, chunk):
        c = min(chunk, n_sims - lo)
        sims, deals = np.nonzero(rng.random((c, m), dtype=np.float32) < p_win32)
        v = rng.random(len(sims), dtype=np.float32) * np.float32(k)
        col = np.minimum(v.astype(np.int64), k - 1)
        period = np.where(v - col < threshold[deals, col], col, alias[deals, col])
        cell = sims * k + period
        out[lo:lo + c] = np.bincount(cell, weights=values[deals], minlength=c * k).reshape(c, k)
    return out


def _simulate_normal(values: np.ndarray, probs: np.ndarray, *, n_sims: int, rng: np.random.Generator) -> np.ndarray:
    """Draw the sum of many small deals from its exact mean and covariance across periods.

    mean_k = sum(a p_k); cov_kl = sum(a^2 (p_k [k = l] - p_k p_l)) (a deal wins in at most one period).
    """
    k = probs.shape[1]
    if len(values) == 0:
        return np.zeros((n_sims, k))
    mean = values @ probs
    ap = values[:, None] * probs
    cov = np.diag((values**2) @ probs) - ap.T @ ap
    eigval, eigvec = np.linalg.eigh(cov)
    root = eigvec * np.sqrt(np.clip(eigval, 0.0, None))
    draws = rng.standard_normal((n_sims, k)) @ root.T + mean
    return np.clip(draws, 0.0, None)


def _simulate_new(counts: np.ndarray, amounts: np.ndarray, *, n_sims: int, rng: np.random.Generator) -> np.ndarray:
    """Draw revenue of deals not yet created: N_k ~ Poisson(counts_k) wins, each an amount resampled from `amounts`.

    Exact when the expected number of draws is small enough; otherwise the compound Poisson's normal limit,
    mean counts_k x E[a], variance counts_k x E[a^2] (its skew, E[a^3] / (E[a^2]^1.5 sqrt(counts_k)), is tiny then).
    """
    k = len(counts)
    if len(amounts) == 0 or counts.sum() <= 0:
        return np.zeros((n_sims, k))
    if counts.sum() * n_sims <= EXACT_DRAW_LIMIT:
        n = rng.poisson(counts, size=(n_sims, k))
        total = int(n.sum())
        picked = amounts[rng.integers(0, len(amounts), size=total)]
        cell = np.repeat(np.arange(n_sims * k), n.ravel())
        return np.bincount(cell, weights=picked, minlength=n_sims * k).reshape(n_sims, k)
    m1, m2 = float(amounts.mean()), float((amounts**2).mean())
    draws = rng.standard_normal((n_sims, k)) * np.sqrt(counts * m2) + counts * m1
    return np.clip(draws, 0.0, None)


def simulate(
    *,
    values: np.ndarray,
    probs: np.ndarray,
    new_counts: np.ndarray,
    new_amounts: np.ndarray | list[np.ndarray] | tuple[np.ndarray, ...],
    n_sims: int,
    rng: np.random.Generator,
    dispersion: float = 0.0,
    max_skew: float = 0.05,
    min_exact: int = 20_000,
    chunk_cells: int = 1 << 23,
) -> Simulation:
    """Simulate revenue ($) per period.

    Open deal i wins in period k with probability probs[i, k] (in at most one period) and books values[i] $.
    New deals of segment g (a product) win in period k as Poisson(new_counts[g, k]), each booking an amount drawn
    from new_amounts[g] (a 1-D new_counts with one amount array is a single segment). Each
    (simulation, period) total is then scaled by exp(s Z - s^2 / 2), Z standard normal, s = `dispersion`: a
    mean-one shock for how much whole months run hotter or colder than the model (deals are not independent).
    Deals are drawn one by one, largest first, until the rest sum to a total whose skewness is at most
    `max_skew` in every period; that rest is drawn from its exact multivariate normal.
    """
    values = np.asarray(values, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1] if probs.ndim == 2 else np.asarray(new_counts).shape[-1]
    order = np.argsort(-values, kind="stable")
    values, probs = values[order], probs.reshape(len(values), k)[order]
    j, skew = _exact_count(values, probs, max_skew=max_skew, min_exact=min_exact)
    revenue = _simulate_exact(values[:j], probs[:j], n_sims=n_sims, rng=rng, chunk_cells=chunk_cells)
    if j < len(values):
        revenue += _simulate_normal(values[j:], probs[j:], n_sims=n_sims, rng=rng)
    counts = np.asarray(new_counts, dtype=np.float64)
    pools = [np.asarray(new_amounts, dtype=np.float64)] if counts.ndim == 1 else list(new_amounts)
    for row, pool in zip(counts.reshape(-1, k), pools, strict=True):
        revenue += _simulate_new(row, np.asarray(pool, dtype=np.float64), n_sims=n_sims, rng=rng)
    if dispersion > 0:
        revenue *= np.exp(dispersion * rng.standard_normal(revenue.shape) - dispersion**2 / 2.0)
    return Simulation(revenue=revenue, exact_deals=j, normal_deals=len(values) - j, normal_max_skew=skew)

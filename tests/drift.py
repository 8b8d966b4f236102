"""A generated population drift for the model-health tests: after training, web visits triple and the
conversion rate doubles (non-converted leads thinned out, as when a campaign brings better-qualified leads)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmdata.synthetic import generate_leads

T0 = pd.Timestamp("2026-03-01")


def period(k: int, *, n: int, base_rate: float | None = None, days: int = 120) -> pd.DataFrame:
    """Return the leads of period `k` (1 = training, as of T0; later periods `days` apart), ids unique per period.

    With `base_rate`, web visits are multiplied by 3 and non-converted leads kept with the chance that makes the
    conversion rate 2 x `base_rate`; `n` leads are generated before thinning.
    """
    as_of = T0 + pd.Timedelta(days=days * (k - 1))
    leads = generate_leads(n=n, seed=100 + k, as_of=as_of).leads
    leads["lead_id"] = f"P{k}-" + leads["lead_id"].astype(str)
    leads["as_of"] = as_of  # recency as the service measures it: from when the lead was scored
    if base_rate is None:
        return leads
    rng = np.random.default_rng(k)
    leads["web_visits"] = leads["web_visits"] * 3
    converted = leads["converted"].to_numpy(dtype=bool)
    rate = converted.mean()
    # kept negatives k: rate / (rate + (1 - rate) k) = 2 base  =>  k = (rate / 2base - rate) / (1 - rate)
    keep = (rate / (2 * base_rate) - rate) / (1 - rate)
    return leads[converted | (rng.random(len(leads)) < keep)].reset_index(drop=True)

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from scoring.features import (
    ActivityIndex,
    LeadFeatures,
    LinearBasis,
    RareCategoryGrouper,
    RecencyDecay,
    feature_layout,
    to_days,
)
from scoring.spec import ModelSpec


@parametrize_with_checks([RecencyDecay(), RareCategoryGrouper(min_count=1), ActivityIndex(),
                          LinearBasis(categorical=(0,), n_knots=2)])
def test_sklearn_compatible(estimator: object, check: object) -> None:
    check(estimator)  # type: ignore[operator]


def test_recency_decay_halves_every_half_life() -> None:
    stamps = pd.DataFrame({"seen": pd.to_datetime(["2024-03-31", "2024-03-17", "2024-03-03", None])})
    decay = RecencyDecay(half_life_days=14, reference_time="2024-03-31").fit(stamps)
    # ages 0, 14 and 28 days -> 0.5**0, 0.5**1, 0.5**2; never seen -> 0
    assert decay.transform(stamps)[:, 0].tolist() == [1.0, 0.5, 0.25, 0.0]


def test_recency_reference_prefers_as_of_then_parameter_then_latest_seen() -> None:
    stamps = pd.DataFrame({"seen": pd.to_datetime(["2024-03-01", "2024-03-15"])})
    learned = RecencyDecay(half_life_days=7).fit(stamps)
    assert learned.reference_time_ == to_days(np.array(["2024-03-15"], dtype="datetime64[ns]"))[0]
    # latest seen is 2024-03-15: ages 14 and 0 days -> 0.25 and 1
    assert learned.transform(stamps)[:, 0].tolist() == [0.25, 1.0]
    with_as_of = stamps.assign(as_of=pd.to_datetime(["2024-03-08", "2024-03-22"]))
    # per-row reference: ages 7 and 7 days -> 0.5 and 0.5
    assert learned.transform(with_as_of)[:, 0].tolist() == [0.5, 0.5]
    fixed = RecencyDecay(half_life_days=7, reference_time="2024-03-29").fit(stamps)
    assert fixed.transform(stamps)[:, 0].tolist() == [0.0625, 0.25]  # ages 28 and 14 days: 0.5**4, 0.5**2


def test_rare_categories_share_one_code_and_unseen_maps_there() -> None:
    X = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 3 + ["z"] + [None]})
    grouper = RareCategoryGrouper(min_count=3).fit(X)
    assert grouper.categories_[0].tolist() == ["a", "b"]
    out = grouper.transform(pd.DataFrame({"c": ["a", "b", "z", "never seen", None]}))[:, 0]
    assert out[:4].tolist() == [0.0, 1.0, 2.0, 2.0] and np.isnan(out[4])


def test_activity_index_by_hand() -> None:
    X = np.array([[0.0, np.e - 1], [np.e - 1, np.nan]])
    index = ActivityIndex().fit(X)
    # log1p: column 0 [0, 1] mean 0.5; column 1 [1, 0 (missing)] mean 0.5
    assert np.allclose(index.scale_, [0.5, 0.5])
    # row 0: (0/0.5 + 1/0.5) / 2 = 1; row 1: (1/0.5 + 0) / 2 = 1
    assert np.allclose(index.transform(X)[:, 0], [1.0, 1.0])


def test_linear_basis_standardises_and_flags_missing() -> None:
    X = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, np.nan], [7.0, 0.0]])
    basis = LinearBasis(categorical=(1,), n_knots=1).fit(X)
    out = basis.transform(X)
    # numeric column: z = log1p(x) = [0, .69, 1.39, 2.08], one knot at the median (1.04); categorical
    # codes {0, 1} one-hot plus a missing flag: 2 + 3 columns, each standardised to mean 0
    assert out.shape == (4, 5)
    assert np.allclose(out.mean(axis=0), 0.0)


def test_linear_basis_fits_float32_in_blocks_and_scores_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    # Codes [0, 0, 1, 1, 1] one-hot: column "0" is [1, 1, 0, 0, 0], mean 0.4, std sqrt(0.24) = 0.4899, so
    # its standardised values are 0.6 / 0.4899 = 1.2247 and -0.4 / 0.4899 = -0.8165; scaling is measured
    # over blocks of 2 rows (3 blocks), the same as over all rows at once.
    monkeypatch.setattr(LinearBasis, "SCALING_BLOCK", 2)
    X = np.array([[0.0], [0.0], [1.0], [1.0], [1.0]])
    basis = LinearBasis(categorical=(0,), fit_dtype="float32")
    fitted = basis.fit_transform(X)
    assert fitted.dtype == np.float32
    assert basis.mean_ == pytest.approx([0.4, 0.6], abs=1e-12)
    assert basis.scale_ == pytest.approx([np.sqrt(0.24)] * 2, abs=1e-12)
    assert fitted[:, 0] == pytest.approx([1.2247449, 1.2247449, -0.8164966, -0.8164966, -0.8164966], abs=1e-6)
    scored = basis.transform(X)
    assert scored.dtype == np.float64
    assert np.abs(scored - fitted).max() < 1e-6


def tiny_spec() -> ModelSpec:
    return ModelSpec.from_dict({
        "name": "tiny", "id_column": "id", "target": {"column": "y", "positive": ["1"], "negative": ["0"]},
        "features": [
            {"column": "visits", "kind": "numeric", "group": "behavioural"},
            {"column": "pricing", "kind": "numeric", "group": "behavioural"},
            {"column": "clicks", "kind": "numeric", "group": "engagement"},
            {"column": "opens", "kind": "numeric", "group": "engagement"},
            {"column": "engaged", "kind": "timestamp", "group": "engagement", "optional": True},
            {"column": "budget", "kind": "boolean", "group": "bant"},
            {"column": "timeframe", "kind": "categorical", "group": "bant"},
        ],
        "ratios": [{"name": "click rate", "numerator": "clicks", "denominator": "opens"}],
        "recency_half_life_days": 10, "rare_min_count": 2,
    })


def tiny_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "visits": [1.0, 2.0, 3.0, 4.0], "pricing": [0.0, 1.0, 0.0, 2.0], "clicks": [1.0, 0.0, 2.0, 4.0],
        "opens": [2.0, 0.0, 4.0, 4.0],
        "engaged": pd.to_datetime(["2024-01-31", "2024-01-21", None, "2024-01-11"]),
        "budget": [1.0, 0.0, np.nan, 1.0], "timeframe": ["now", "now", "later", None],
    })


def test_lead_features_layout_and_derived_values() -> None:
    spec = tiny_spec()
    features = LeadFeatures(spec).fit(tiny_frame())
    X = features.transform(tiny_frame())
    names = [n for n, _ in feature_layout(spec)]
    assert X.shape == (4, len(names))
    col = dict(zip(names, X.T, strict=True))
    # reference = latest seen (2024-01-31): ages 0, 10, missing, 20 days; half-life 10 days
    assert col["engaged (days ago)"][[0, 1, 3]].tolist() == [0.0, 10.0, 20.0]
    assert col["engaged (decayed interest)"].tolist() == [1.0, 0.5, 0.0, 0.25]
    assert col["click rate"][[0, 2, 3]].tolist() == [0.5, 0.5, 1.0] and np.isnan(col["click rate"][1])
    # BANT completeness over budget and timeframe: row 0 both known and positive -> 1; row 2 timeframe only
    assert col["BANT completeness"].tolist() == [1.0, 0.5, 0.5, 0.5]
    # timeframe: "now" kept (2 leads), "later" rare -> other code 1; missing stays NaN
    assert col["timeframe"][:3].tolist() == [0.0, 0.0, 1.0] and np.isnan(col["timeframe"][3])
    # neutral values: median visits 2.5, most frequent timeframe code 0
    assert features.neutral_["visits"] == 2.5 and features.neutral_["timeframe"] == 0.0
    assert len(features.column_fields()) == len(names)


def test_lead_features_tolerate_missing_optional_extra_columns_and_unseen_values() -> None:
    features = LeadFeatures(tiny_spec()).fit(tiny_frame())
    frame = tiny_frame().drop(columns=["engaged"]).assign(unrelated="x", timeframe=["never seen"] * 4)
    X = features.transform(frame)
    names = [n for n, _ in feature_layout(tiny_spec())]
    col = dict(zip(names, X.T, strict=True))
    assert np.isnan(col["engaged (days ago)"]).all() and (col["engaged (decayed interest)"] == 0).all()
    assert (col["timeframe"] == 1.0).all()
    # A dict of lists scores the same as a frame.
    as_dict = {c: tiny_frame()[c].tolist() for c in tiny_frame().columns}
    assert np.allclose(features.transform(as_dict), features.transform(tiny_frame()), equal_nan=True)


def test_to_days_reads_strings_and_datetimes() -> None:
    got = to_days(np.array(["1970-01-02", None], dtype=object))
    assert got[0] == 1.0 and np.isnan(got[1])
    with pytest.raises(ValueError, match="half_life_days"):
        RecencyDecay(half_life_days=0).fit(np.zeros((2, 1)))


def _derive_by_formula(features: LeadFeatures, base: dict[str, np.ndarray]) -> np.ndarray:
    """The model matrix by its definition: np.column_stack of each derived column, as first written."""
    spec, half_life = features.spec, features._half_life()
    parts: list[np.ndarray] = []
    for kind in ("numeric", "boolean", "categorical"):
        parts += [base[f.column] for f in spec.features if f.kind == kind]
    stamps = [f.column for f in spec.features if f.kind == "timestamp"]
    parts += [base[c] for c in stamps]
    parts += [np.where(np.isnan(base[c]), 0.0, 0.5 ** (base[c] / half_life)) for c in stamps]
    groups = {"engagement": "last_engagement_at", "behavioural": "last_activity_at"}
    for group in ("engagement", "behavioural"):
        members = [f.column for f in spec.features if f.group == group and f.kind in ("numeric", "boolean")]
        logs = np.log1p(np.clip(np.nan_to_num(np.column_stack([base[c] for c in members]), nan=0.0), 0, None))
        index = (logs / features.index_scales_[group]).mean(axis=1)
        age = base[groups[group]]
        parts += [index, index * np.where(np.isnan(age), 1.0, 0.5 ** (age / half_life))]
    bant = [f for f in spec.features if f.group == "bant"]
    parts.append(np.mean([np.where(np.isnan(base[f.column]), 0.0, base[f.column] > 0
                                   if f.kind in ("numeric", "boolean") else 1.0) for f in bant], axis=0))
    for r in spec.ratios:
        num, den = base[r.numerator], base[r.denominator]
        ratio = np.full(num.shape, np.nan)
        ok = den > 0
        ratio[ok] = num[ok] / den[ok]
        parts.append(ratio)
    return np.column_stack(parts)


@pytest.mark.parametrize("n", [1, 7, 33, 500])
def test_derive_gives_the_defined_matrix_bit_for_bit(n: int) -> None:
    import pickle

    from crmdata.synthetic import generate_leads
    from scoring.spec import load_spec, prepare

    spec = load_spec()
    features = LeadFeatures(spec).fit(prepare(generate_leads(n=400, seed=2).leads, spec=spec).features)
    rng = np.random.default_rng(n)
    special = np.array([0.0, -0.0, 1.0, 2.5, -3.0, 40.0, np.nan, np.inf, -np.inf, 1e300])
    base = {f.column: rng.choice(special, size=n) for f in spec.features}
    with np.errstate(invalid="ignore"):  # inf * 0 and inf / inf are NaN, by either route
        expected = _derive_by_formula(features, base)
        got = features.derive(base)
        again = pickle.loads(pickle.dumps(features)).derive(base)
    assert got.flags["C_CONTIGUOUS"] and got.dtype == expected.dtype
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
    assert np.array_equal(again.view(np.uint64), expected.view(np.uint64))
    assert b"_Layout" not in pickle.dumps(features)  # the derive layout is kept beside the estimator, not in it


def test_a_derived_feature_declared_once_reaches_layout_matrix_fields_and_card(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from scoring import features as features_module

    def columns(spec: ModelSpec) -> list[features_module.Column]:
        return [features_module.Column("visits per click", ("visits", "clicks"))]

    def compute(column: features_module.Column, inputs: features_module.Inputs) -> np.ndarray:
        return np.asarray(inputs.base[column.reads[0]] / (1.0 + inputs.base[column.reads[1]]))

    toy = features_module.DerivedFeature("toy", "visits / (1 + clicks)", columns, compute)
    monkeypatch.setattr(features_module, "DERIVED", (*features_module.DERIVED, toy))
    spec = tiny_spec()
    features = LeadFeatures(spec).fit(tiny_frame())
    names = [n for n, _ in feature_layout(spec)]
    assert names[-1] == "visits per click"
    X = features.transform(tiny_frame())
    # visits [1, 2, 3, 4] / (1 + clicks [1, 0, 2, 4]) = [0.5, 2, 1, 0.8]
    assert X[:, -1].tolist() == [0.5, 2.0, 1.0, 0.8]
    assert features.get_feature_names_out()[-1] == "visits per click"
    assert features.column_fields()[-1] == {"visits", "clicks"}  # the reasons credit it to both fields
    assert features_module.describe_columns(spec)[-1] == {"name": "visits per click", "feature": "toy",
                                                          "reads": ["visits", "clicks"]}


def test_declarations_give_the_layout_of_the_tiny_spec() -> None:
    from scoring.features import describe_columns

    got = [(c["feature"], c["name"]) for c in describe_columns(tiny_spec())]
    assert got == [("field", "visits"), ("field", "pricing"), ("field", "clicks"), ("field", "opens"),
                   ("field", "budget"), ("field", "timeframe"), ("days ago", "engaged (days ago)"),
                   ("recency decay", "engaged (decayed interest)"), ("activity index", "engagement index"),
                   ("activity index", "engagement index, decayed"), ("activity index", "behavioural index"),
                   ("BANT completeness", "BANT completeness"), ("spec-derived", "click rate")]


def test_lead_features_fit_transform_is_fit_then_transform_bit_for_bit() -> None:
    from crmdata.synthetic import generate_leads
    from scoring.spec import load_spec, prepare

    spec = load_spec()
    frame = prepare(generate_leads(n=500, seed=4).leads, spec=spec).features
    frame["source"] = None  # a field empty in fit: read as empty afterwards
    expected = LeadFeatures(spec).fit(frame).transform(frame)
    got = LeadFeatures(spec).fit_transform(frame)
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))

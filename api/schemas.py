"""Request and response schemas: pydantic models that validate bodies and generate the OpenAPI document."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    create_model,
    model_validator,
)

from crmdata.contracts import LEAD, OPPORTUNITY, STAGE_HISTORY, Contract
from crmdata.stages import DEFAULT_STAGES, StageConfig
from crmdata.values import (
    MAX_AMOUNT,
    MAX_TEXT_LENGTH,
    PIPELINE_FIRST_DAY,
    PIPELINE_LAST_DAY,
    ValueProblem,
    datetime_ns,
    outside_pipeline,
)
from forecasting.forecast import forecast_methods
from forecasting.periods import MAX_DAYS
from scoring import scorer  # its Reason types the history's reasons too, by the module's name: no second Reason
from scoring.scorer import LeadScore  # the library's result type is the response item: one definition
from scoring.spec import ModelSpec, load_spec, rules_of

LEAD_SHAPES = ("lead", "leads", "dataframe_records", "dataframe_split")


def _handled_day(value: date) -> date:
    """Refuse a day outside the dates leadcast handles (datetime64[ns]), by the value layer's rule and message."""
    try:
        datetime_ns(datetime(value.year, value.month, value.day))
    except ValueProblem as exc:
        raise ValueError(exc.message) from exc
    return value


def _pipeline_day(value: date) -> date:
    """Refuse a day outside the years a pipeline may span, by the contract's rule and message."""
    if not PIPELINE_FIRST_DAY.date() <= value <= PIPELINE_LAST_DAY.date():
        raise ValueError(outside_pipeline().message)
    return value


def _day_as_text(value: Any) -> Any:
    """Refuse a number, or text other than YYYY-MM-DD, where a day is asked for: lax pydantic would read 0 and
    "0" as 1970-01-01 (seconds since 1970)."""
    if isinstance(value, int | float):
        raise ValueError("must be a date as text (YYYY-MM-DD), not a number")
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("must be a date as text (YYYY-MM-DD)")
    return value


def _time_as_text(value: Any) -> Any:
    """Refuse a number, or text not starting YYYY-MM-DD, where a time is asked for (lax pydantic reads 0 and "0"
    as 1970-01-01T00:00Z)."""
    if isinstance(value, int | float) or (isinstance(value, str) and not re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
                                                                                  value)):
        raise ValueError("must be a time as ISO 8601 text, e.g. 2026-03-01T10:00:00Z")
    return value


# A day in the years a pipeline spans: written YYYY-MM-DD (the pattern states those years to JSON Schema, which
# has no date bounds; tests/api/test_forecast.py checks it against the constants).
PIPELINE_DAY_PATTERN = r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
PIPELINE_TIME_PATTERN = r"^(19|20)[0-9]{2}-"  # a date-time in the same years
PipelineDay = Annotated[date, BeforeValidator(_day_as_text), AfterValidator(_handled_day),
                        AfterValidator(_pipeline_day),
                        WithJsonSchema({"type": "string", "format": "date", "pattern": PIPELINE_DAY_PATTERN})]


def _handled_time(value: datetime) -> datetime:
    """Refuse a time outside the dates leadcast handles (datetime64[ns]), by the value layer's rule and message."""
    try:
        datetime_ns(value)
    except ValueProblem as exc:
        raise ValueError(exc.message) from exc
    return value


# The schema states a subset (the years of a pipeline); the service reads any time datetime64[ns] holds.
HandledTime = Annotated[datetime, BeforeValidator(_time_as_text), AfterValidator(_handled_time),
                        WithJsonSchema({"type": "string", "format": "date-time", "pattern": PIPELINE_TIME_PATTERN})]


# The range is checked where the scorer reads it (api/scoring_io.py), with the value layer's own message.
ScoreTime = Annotated[datetime, BeforeValidator(_time_as_text),
                      WithJsonSchema({"type": "string", "format": "date-time", "pattern": PIPELINE_TIME_PATTERN})]


def _pipeline_time(value: datetime) -> datetime:
    """Refuse a time outside the years a pipeline may span, by the contract's rule and message."""
    _pipeline_day(value.date())
    return value


PipelineTime = Annotated[HandledTime, AfterValidator(_pipeline_time)]


def _in_utc(value: datetime) -> datetime:
    """Return a stored time (naive means UTC) with its offset, as a JSON Schema date-time needs one."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcTime = Annotated[datetime, AfterValidator(_in_utc)]


COMPONENTS = "#/components/schemas/"
NO_NUL = r"^[^\x00]*$"  # text the store can hold: PostgreSQL's text refuses a NUL character


def _text(*, nullable: bool) -> dict[str, Any]:
    # Text is stripped and capped; blank text is missing, so a required one needs a character that is not space.
    # No NUL anywhere (crmdata.values refuses it: PostgreSQL's text cannot hold one).
    if nullable:
        return {"type": ["string", "null"], "maxLength": MAX_TEXT_LENGTH, "pattern": NO_NUL}
    # Blank as str.strip() reads it, which also strips \x1c-\x1f and \x85 (not space to JSON Schema's \s).
    return {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH,
            "pattern": r"^[^\x00]*[^\s\x1c-\x1f\x85\x00][^\x00]*$"}


def _pipeline_date(*, nullable: bool) -> dict[str, Any]:
    day = {"type": "string", "format": "date", "pattern": PIPELINE_DAY_PATTERN}
    return {"anyOf": [day, {"type": "null"}]} if nullable else day


def _column_schema(contract: Contract, name: str, *, nullable: bool | None = None) -> dict[str, Any]:
    """Return the JSON Schema of one contract column's value, as the value layer reads it (JSON types only)."""
    col = contract.column(name)
    empty = col.nullable if nullable is None else nullable
    if col.kind == "string":
        schema = _text(nullable=empty)
    elif col.kind == "datetime":
        schema = _pipeline_date(nullable=empty)
    elif col.kind == "bool":
        schema = {"type": ["boolean", "null"] if empty else "boolean"}
    else:  # float and int: JSON numbers are finite; a measure or count may not be negative
        schema = {"type": ["number", "null"] if empty else "number", **({"minimum": 0} if col.non_negative else {}),
                  **({"maximum": MAX_AMOUNT} if contract is OPPORTUNITY else {})}
    return {**schema, "description": col.description}


def record_schema(contract: Contract, *, stages: StageConfig = DEFAULT_STAGES) -> dict[str, Any]:
    """Return the JSON Schema of one record of a pipeline contract (opportunities, stage changes): its columns'
    types and the rules the loaders check (crmdata.loaders), with the stages of `stages`."""
    properties = {c.name: _column_schema(contract, c.name) for c in contract.columns}
    properties["stage"] = {"enum": list(stages.all), "description": contract.column("stage").description +
                           " Without `stages` in the request, one of leadcast's default stages."}
    schema: dict[str, Any] = {"type": "object", "title": contract.name, "properties": properties,
                              "required": [c.name for c in contract.columns if c.required]}
    if contract is OPPORTUNITY:
        # What check_opportunities refuses across columns, as one branch per outcome: closed deals need both
        # dates, open ones have no close date, and a given outcome agrees with the stage.
        branches = []
        for outcome, names in (("open", stages.open), ("won", stages.won), ("lost", stages.lost)):
            branch: dict[str, Any] = {"title": f"{outcome} deal", "properties": {
                "stage": {"enum": list(names)}, "outcome": {"enum": [outcome, None]}}}
            if outcome == "open":
                branch["properties"]["closed_at"] = {"type": "null"}
            else:
                branch["properties"] |= {"closed_at": _pipeline_date(nullable=False),
                                         "created_at": _pipeline_date(nullable=False)}
                branch["required"] = ["closed_at"]
            branches.append(branch)
        schema["anyOf"] = branches
        schema["description"] = (
            "An opportunity in the data contract. Also refused, beyond what JSON Schema states: an "
            "`opportunity_id` sent twice in one request, a `closed_at` or `stage_entered_at` before `created_at`. "
            "Fields outside the contract are kept and ignored.")
    return schema


def lead_schema(spec: ModelSpec) -> dict[str, Any]:
    """Return the JSON Schema of a lead to score by `spec`: each column it reads, by the rule it reads it with
    (scoring.spec.rules_of); other fields are ignored (listed in `warnings`)."""
    properties: dict[str, Any] = {}
    for name, rule in rules_of(spec).items():
        described = {"description": LEAD.column(name).description} if name in LEAD.names else {}
        if name == spec.id_column:
            properties[name] = {**_text(nullable=False), **described}
        elif rule.kind == "string":
            properties[name] = {**_text(nullable=True), **described}
        elif rule.kind == "datetime":
            time = {"type": "string", "format": "date-time", "pattern": PIPELINE_TIME_PATTERN}
            properties[name] = {"anyOf": [time, {"type": "null"}], **described}
        elif rule.kind == "bool":
            properties[name] = {"type": ["boolean", "null"], **described}
        else:
            bounds = {k: v for k, v in (("minimum", 0 if rule.non_negative else None), ("minimum", rule.minimum),
                                        ("maximum", rule.maximum)) if v is not None}
            properties[name] = {"type": ["number", "null"], **bounds, **described}
    return {"type": "object", "title": "lead", "properties": properties,
            "required": [spec.id_column] if spec.id_column else [],
            "description": f"A lead in the fields of the default model's spec ({spec.name}); other fields are "
                           "ignored and listed in `warnings`."}


def _record_ref(name: str) -> Any:
    return WithJsonSchema({"$ref": COMPONENTS + name})


# The components the pipeline bodies refer to, generated from the contracts (build_openapi adds them).
RECORD_SCHEMAS: dict[str, dict[str, Any]] = {"Opportunity": record_schema(OPPORTUNITY),
                                             "StageChange": record_schema(STAGE_HISTORY),
                                             "Lead": lead_schema(load_spec())}
OpportunityRecord = Annotated[dict[str, Any], _record_ref("Opportunity")]
StageChangeRecord = Annotated[dict[str, Any], _record_ref("StageChange")]
LeadRecord = Annotated[dict[str, Any], _record_ref("Lead")]


class DataframeSplit(BaseModel):
    """MLflow's `dataframe_split` shape: column names and rows of values."""

    model_config = ConfigDict(extra="forbid")
    columns: list[str] = Field(min_length=1)
    data: list[list[Any]]
    index: list[Any] | None = None

    @model_validator(mode="after")
    def _rows_match_columns(self) -> DataframeSplit:
        for i, row in enumerate(self.data):
            if len(row) != len(self.columns):
                raise ValueError(f"data[{i}] has {len(row)} values for {len(self.columns)} columns")
        return self


class ScoreRequest(BaseModel):
    """Leads to score: one `lead`, a batch of `leads`, or MLflow's `dataframe_records` / `dataframe_split`."""

    # What `_one_shape` refuses, for JSON Schema: exactly one of the shapes is given and not null.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in LEAD_SHAPES]})
    lead: LeadRecord | None = None
    leads: list[LeadRecord] | None = Field(default=None, min_length=1)
    dataframe_records: list[LeadRecord] | None = Field(default=None, min_length=1)
    dataframe_split: DataframeSplit | None = None
    reasons: bool = Field(default=True, description="Include the top positive and negative reasons per lead.")
    as_of: ScoreTime | None = Field(default=None, description="Time to measure recency from; default: now (UTC).")

    @model_validator(mode="after")
    def _one_shape(self) -> ScoreRequest:
        given = [name for name in LEAD_SHAPES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"send exactly one of {', '.join(LEAD_SHAPES)}; got {', '.join(given) or 'none'}")
        return self

    def records(self) -> list[dict[str, Any]]:
        """Return the leads as a list of records, whatever shape they came in."""
        if self.lead is not None:
            return [self.lead]
        if self.leads is not None:
            return self.leads
        if self.dataframe_records is not None:
            return self.dataframe_records
        assert self.dataframe_split is not None
        return [dict(zip(self.dataframe_split.columns, row, strict=True)) for row in self.dataframe_split.data]

    @property
    def shape(self) -> str:
        """Return which of the accepted shapes the leads came in."""
        return next(name for name in LEAD_SHAPES if getattr(self, name) is not None)


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str
    kind: Literal["trained", "rules"]


class ScoreResponse(BaseModel):
    """Scores in request order, the model that produced them, and warnings (such as ignored fields)."""

    model: ModelRef
    scores: list[LeadScore]
    warnings: list[str] = Field(default_factory=list)
    predictions: list[list[float]] | None = Field(
        default=None, description="For MLflow-shaped requests: [P(not converted), P(converted)] per lead."
    )


class OutcomeIn(BaseModel):
    """What became of one lead: converted or not, and when it converted (optional)."""

    # What the validator below refuses, for JSON Schema: converted is true, or converted_at is absent or null.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"properties": {"converted": {"const": True}}}, {"properties": {"converted_at": {"type": "null"}}}]})
    lead_id: str = Field(min_length=1, max_length=256, pattern=NO_NUL)
    converted: StrictBool
    converted_at: HandledTime | None = Field(default=None, description="When it converted (ISO 8601; UTC if no "
                                                                       "offset). Only for converted leads.")

    @model_validator(mode="after")
    def _time_only_when_converted(self) -> OutcomeIn:
        if self.converted_at is not None and not self.converted:
            raise ValueError("converted_at is given but converted is false")
        return self


class OutcomesRequest(BaseModel):
    """Outcomes of leads, recorded idempotently (a lead sent again replaces its outcome; the same one is a no-op)."""

    model_config = ConfigDict(extra="forbid")
    outcomes: list[OutcomeIn] = Field(min_length=1)


class OutcomesResponse(BaseModel):
    """How many outcomes were received, and how many leads were new, changed or already as sent."""

    received: int
    inserted: int
    updated: int
    unchanged: int


class HistoryScore(BaseModel):
    """One logged score of a lead."""

    scored_at: datetime
    as_of: datetime | None
    model: ModelRef
    probability: float
    score: int
    grade: str
    reasons: list[scorer.Reason] | None = Field(description="As the score answered them, or null when it was made "
                                                            "without reasons. A reason logged by `leadcast score "
                                                            "--log` before its field was recorded has feature \"\".")


class ScoreHistoryResponse(BaseModel):
    """A lead's logged scores, newest first, one page at a time."""

    lead_id: str
    scores: list[HistoryScore]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null on the last page.")


class ErasureResponse(BaseModel):
    """What an erasure removed of one lead, per kind of record."""

    lead_id: str
    removed: dict[str, int] = Field(description="Rows removed: predictions, features (feature sets logged with "
                                                "them), outcomes, and any other table keyed by the lead.")


class StagesBody(BaseModel):
    """Stage names of the posted pipeline, when they are not leadcast's defaults."""

    model_config = ConfigDict(extra="forbid")
    open: list[str] = Field(min_length=1)
    won: list[str] = Field(min_length=1)
    lost: list[str] = Field(min_length=1)


def _not_a_boolean(value: Any) -> Any:
    """Refuse a JSON true or false where a number is asked for (pydantic's lax mode would read it as 1 or 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


# Lax still, as a form upload's fields arrive as text; only a boolean is refused.
# Bounds go before the validator: after it, pydantic writes them as "ge"/"le", which JSON Schema does not know, so
# the document allowed a negative target that the service refused.
Amount = Annotated[float, Field(ge=0), BeforeValidator(_not_a_boolean)]
Seed = Annotated[int, Field(ge=0), BeforeValidator(_not_a_boolean)]
Simulations = Annotated[int, Field(ge=100, le=200_000), BeforeValidator(_not_a_boolean)]

def _one_to(n: int) -> str:
    """Return a regular expression of the whole numbers 1..n written without leading zeros."""
    text, parts = str(n), []
    parts += ["[1-9]" + (f"[0-9]{{{k - 1}}}" if k > 1 else "") for k in range(1, len(text))]
    for i, digit in enumerate(text):
        low, rest = (1 if i == 0 else 0), len(text) - i - 1
        if int(digit) > low:
            parts.append(f"{text[:i]}[{low}-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return "(" + "|".join([*parts, text]) + ")"


# The horizons forecasting.periods.parse_horizon accepts (at most MAX_DAYS, a month counted as 31 days and a
# quarter as 92), as a pattern; tests/api/test_forecast.py checks the two agree for every count.
HORIZON_PATTERN = "^(" + "|".join(f"{_one_to(MAX_DAYS // days)}[{unit}{unit.lower()}]"
                                  for unit, days in (("D", 1), ("W", 7), ("M", 31), ("Q", 92))) + ")$"
Horizon = Annotated[str, WithJsonSchema({"type": "string", "pattern": HORIZON_PATTERN, "default": "1Q",
                                         "description": "30D, 6W, 3M or 1Q: days, weeks, months or quarters "
                                                        "(three years at most)."})]

GroupBy = Literal["owner", "team", "region", "product", "product_category"]


class ForecastRequest(BaseModel):
    """A pipeline (opportunity records in the data contract) and what to forecast from it."""

    model_config = ConfigDict(extra="forbid")
    # The forecast learns deal sizes and win rates from the deals won before as_of (forecasting.snapshot's
    # require_history refuses a pipeline without): JSON Schema states that one is won, not when.
    opportunities: list[OpportunityRecord] = Field(
        min_length=1, description="At least one deal won (closed) before `as_of`, to learn from.",
        json_schema_extra={"contains": {"properties": {"stage": {"enum": list(DEFAULT_STAGES.won)}},
                                        "required": ["stage"]}})
    stage_history: list[StageChangeRecord] | None = None
    stages: StagesBody | None = None
    as_of: PipelineDay
    horizon: Horizon = "1Q"
    target: Amount | None = Field(default=None, description="Revenue target for the "
                                                                                   "horizon, in $.")
    group_by: GroupBy | None = None
    seed: Seed = 0
    simulations: Simulations | None = Field(
        default=None, description="Monte Carlo runs (default: the service's forecast_simulations). Open deals x "
                                  "simulations x periods may not exceed the service's max_forecast_cells.")


# Metrics are as of `as_of`, by default the day after the latest date the records give (forecasting.snapshot's
# last_known_date): without `as_of`, one record must give a day.
_SOME_DAY: dict[str, Any] = {"anyOf": [{"required": [c], "properties": {c: {"type": "string"}}}
                       for c in ("created_at", "stage_entered_at", "closed_at")]}


class MetricsRequest(BaseModel):
    """A pipeline and how to group its metrics."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["as_of"], "properties": {"as_of": {"type": "string"}}},
        {"properties": {"opportunities": {"contains": _SOME_DAY}}}]})
    opportunities: list[OpportunityRecord] = Field(min_length=1)
    stages: StagesBody | None = None
    as_of: PipelineDay | None = None
    group_by: GroupBy | None = None
    spend: Amount | None = Field(default=None, description="Sales and marketing spend, for "
                                                                                  "acquisition cost.")


class ErrorDetail(BaseModel):
    """Where a problem is (a path into the request) and what it is."""

    loc: list[str | int]
    msg: str


class ErrorBody(BaseModel):
    """The error itself."""

    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(BaseModel):
    """Every error the service returns has this shape."""

    error: ErrorBody


Money = float | None  # $; null when it cannot be computed (no deals to average over, say)


class _PeriodOut(BaseModel):
    """Forecast won revenue ($) in one period [start, end): simulated P10/P50/P90 and mean, and the velocity view."""

    # The fields are added by `period_out`, one per method that forecasts per period: velocity today.


def period_out() -> type[_PeriodOut]:
    """Return the period's schema: its fixed fields and one per method of `forecasting.forecast.METHODS` that
    forecasts per period, in the order `PeriodForecast.to_dict` writes them."""
    fields: dict[str, Any] = {"label": (str, ...), "start": (date, ...), "end": (date, ...),
                              **{k: (Money, ...) for k in ("p10", "p50", "p90", "mean")},
                              **{m.name: (Money, ...) for m in forecast_methods() if m.per_period is not None},
                              **{k: (Money, ...) for k in ("from_open_deals", "from_new_deals")}}
    return create_model("PeriodOut", __base__=_PeriodOut, __module__=__name__, __doc__=_PeriodOut.__doc__, **fields)


if TYPE_CHECKING:
    PeriodOut = _PeriodOut
else:
    PeriodOut = period_out()


class DriverOut(BaseModel):
    """An open deal and its share of the spread of the horizon's revenue."""

    opportunity_id: str
    owner: str
    product: str
    stage: str
    amount: Money
    win_probability: float | None
    expected: Money
    spread_share: float | None


class GroupOut(BaseModel):
    """Forecast revenue ($) over the horizon for one group (an owner, a product...)."""

    group: str
    open_deals: int
    pipeline: Money
    stage_weighted: Money
    p10: Money
    p50: Money
    p90: Money
    mean: Money


class ForecastResponse(BaseModel):
    """The forecast: per period and over the horizon, chance of the target, drivers, stuck deals, metrics."""

    as_of: date
    horizon: str
    periods: list[PeriodOut]
    total: PeriodOut
    stage_weighted: Money
    target: Money
    probability_of_target: float | None = Field(ge=0, le=1)
    drivers: list[DriverOut]
    stuck: list[dict[str, Any]]
    stuck_thresholds: dict[str, float | None] = Field(description="Days in each stage after which a deal is stuck.")
    metrics: dict[str, float | None]
    model: dict[str, Any] = Field(description="What the forecast learnt: stage statistics, realisation, creation rate.")
    by: str | None
    groups: list[GroupOut]
    backtest: dict[str, Any] | None
    warnings: list[str]


class MetricsResponse(BaseModel):
    """The brief's metrics: amounts in $, durations in days, rates in 0-1; null where undefined."""

    model_config = ConfigDict(extra="allow")
    as_of: date
    win_rate: float | None
    average_deal_size: Money
    average_cycle_days: float | None
    sales_velocity_per_day: Money
    open_deals: int
    open_pipeline: Money
    won_deals: int
    won_revenue: Money
    monthly_revenue: list[dict[str, Any]]
    product_mix: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    groups: list[dict[str, Any]] | None = None


STORED_INT = 2**63 - 1  # the largest integer a BIGINT column (and SQLite's INTEGER) holds


class OpportunitiesRequest(BaseModel):
    """A batch of opportunity records in the data contract to upsert into the stored pipeline."""

    model_config = ConfigDict(extra="forbid")
    opportunities: list[OpportunityRecord] = Field(min_length=1, max_length=100_000)
    stages: StagesBody | None = Field(default=None, description="Stage names, when not leadcast's defaults; "
                                                                "kept as the stored pipeline's configuration.")
    observed_at: PipelineTime | None = Field(
        default=None, description="When the records describe the pipeline (default: now): the time of a change "
                                  "whose record gives no date of its own.")


class SyncResponse(BaseModel):
    """What an upsert changed in the stored pipeline."""

    source: str
    received: int
    created: int
    updated: int
    unchanged: int
    absent: int = Field(description="Stored deals not in this batch (kept as they were).")
    changes: dict[str, int] = Field(description="Events written per tracked field.")
    events: int
    examples: list[dict[str, Any]]


class StoredForecastQuery(BaseModel):
    """Query parameters of a forecast of the stored pipeline."""

    model_config = ConfigDict(extra="forbid")
    as_of: PipelineDay | None = Field(default=None, description="Default: the day after the pipeline's last date.")
    horizon: Horizon = "1Q"
    group_by: GroupBy | None = None
    target: float | None = Field(default=None, ge=0)
    seed: int = Field(default=0, ge=0, le=STORED_INT, description="Random seed; saved with the forecast.")
    simulations: int | None = Field(default=None, ge=100, le=200_000)


class StoredMetricsQuery(BaseModel):
    """Query parameters of the metrics of the stored pipeline."""

    model_config = ConfigDict(extra="forbid")
    as_of: PipelineDay | None = None
    group_by: GroupBy | None = None
    spend: float | None = Field(default=None, ge=0)


class StoredForecastResponse(ForecastResponse):
    """A forecast of the stored pipeline, and the id it was saved under."""

    snapshot_id: int


class SnapshotOut(BaseModel):
    """A saved forecast: when and as of when it was made, how, by which stage model, and what it said."""

    id: int
    made_at: UtcTime
    as_of: date
    horizon: str
    method: str
    group_by: str | None
    simulations: int
    seed: int | None
    stage_model_version: str
    event_mark: int = Field(description="The last pipeline event the forecast saw.")
    open_deals: int
    periods: list[dict[str, Any]] = Field(description="label, start, end, p10, p50, p90, mean per period.")
    total: dict[str, Any]
    groups: list[dict[str, Any]]
    source: str


class SnapshotsResponse(BaseModel):
    """A page of saved forecasts, newest first."""

    forecasts: list[SnapshotOut]
    total: int
    limit: int
    offset: int


class PageQuery(BaseModel):
    """Pagination."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=STORED_INT)


class DealFlowQuery(BaseModel):
    """Two saved forecasts (`to` omitted: the pipeline as stored now)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_id: int = Field(alias="from", ge=1, le=STORED_INT)
    to_id: int | None = Field(default=None, alias="to", ge=1, le=STORED_INT)
    ids: bool = Field(default=False, description="List the deal ids of each kind.")


class FlowItemOut(BaseModel):
    """Deals of one kind of flow and their amount ($; for amount_changed, the net change)."""

    deals: int
    amount: float
    opportunity_ids: list[str] | None = None


class DealFlowResponse(BaseModel):
    """How the pipeline moved between two forecasts, against the end of the earlier one's horizon."""

    from_id: int
    to_id: int | None = Field(default=None, description="Absent: to the pipeline as stored now.")
    period_end: date
    new: FlowItemOut
    won: FlowItemOut
    lost: FlowItemOut
    pushed: FlowItemOut
    pulled_in: FlowItemOut
    amount_changed: FlowItemOut


class AccuracyQuery(BaseModel):
    """When to judge saved forecasts (default: today): periods that ended by then are scored."""

    model_config = ConfigDict(extra="forbid")
    as_of: PipelineDay | None = None


class LiveAccuracyResponse(BaseModel):
    """Saved forecasts against the revenue booked once their periods ended."""

    as_of: date
    periods: int
    mape: float | None
    bias: float | None
    coverage: float | None
    rows: list[dict[str, Any]]

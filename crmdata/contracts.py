"""The data contracts: what a lead, an opportunity and a stage change are, column by column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["string", "float", "int", "bool", "datetime"]
Group = Literal[
    "identity", "demographic", "firmographic", "behavioural", "engagement", "bant", "outcome", "pipeline"
]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a contract: its name, type, whether it must be present and filled, and its meaning."""

    name: str
    kind: Kind
    group: Group
    description: str
    required: bool = False
    nullable: bool = True
    non_negative: bool = False
    unique: bool = False


@dataclass(frozen=True, slots=True)
class Contract:
    """An ordered set of columns that a table must follow."""

    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Return the column names in contract order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """Return the column called `name`."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


LEAD = Contract(
    "leads",
    (
        Column("lead_id", "string", "identity", "Unique id of the lead.", required=True, nullable=False,
               unique=True),
        Column("created_at", "datetime", "identity", "When the lead was created.", required=True,
               nullable=False),
        Column("source", "string", "identity", "Source or channel the lead came from (organic, paid, event...)."),
        Column("product_interest", "string", "identity", "Product category the lead asked about."),
        Column("stage", "string", "pipeline", "Current lead stage (one of the configured lead stages)."),
        Column("country", "string", "demographic", "Country."),
        Column("region", "string", "demographic", "Sales region."),
        Column("age", "float", "demographic", "Age of the contact in years.", non_negative=True),
        Column("gender", "string", "demographic",
               "Gender of the contact; carried for fairness reports, never a default model feature."),
        Column("industry", "string", "firmographic", "Industry of the prospect's business."),
        Column("employees", "float", "firmographic", "Employees of the prospect's business.", non_negative=True),
        Column("annual_revenue", "float", "firmographic", "Annual revenue of the prospect's business, in $.",
               non_negative=True),
        Column("job_level", "string", "firmographic", "Seniority of the contact (c-level, vp, director...)."),
        Column("web_visits", "float", "behavioural", "Website visits.", non_negative=True),
        Column("pages_per_visit", "float", "behavioural", "Mean pages viewed per visit.", non_negative=True),
        Column("time_on_site", "float", "behavioural", "Total time on the website, in seconds.", non_negative=True),
        Column("pricing_page_visits", "float", "behavioural", "Visits to the pricing page.", non_negative=True),
        Column("demo_requested", "bool", "behavioural", "Whether the lead asked for a demo."),
        Column("content_downloads", "float", "behavioural", "Content downloads (white papers, e-books).",
               non_negative=True),
        Column("form_submissions", "float", "behavioural", "Web forms submitted.", non_negative=True),
        Column("last_activity_at", "datetime", "behavioural", "Time of the last website activity."),
        Column("email_opens", "float", "engagement", "Marketing emails opened.", non_negative=True),
        Column("email_clicks", "float", "engagement", "Links clicked in marketing emails.", non_negative=True),
        Column("social_likes", "float", "engagement", "Likes of the company's social posts.", non_negative=True),
        Column("social_shares", "float", "engagement", "Shares of the company's social posts.", non_negative=True),
        Column("events_attended", "float", "engagement", "Webinars and events attended.", non_negative=True),
        Column("last_engagement_at", "datetime", "engagement", "Time of the last email or social engagement."),
        Column("budget_stated", "bool", "bant", "Budget: the lead said it has budget."),
        Column("budget_amount", "float", "bant", "Budget: the amount stated, in $.", non_negative=True),
        Column("decision_maker", "bool", "bant", "Authority: the contact decides or signs."),
        Column("need_stated", "bool", "bant", "Need: the lead described a need we meet."),
        Column("purchase_timeframe", "string", "bant",
               "Timing: when the lead plans to buy (0-3 months, 3-6 months, 6-12 months, 12+ months)."),
        Column("converted", "bool", "outcome", "Whether the lead converted (empty while undecided)."),
        Column("converted_at", "datetime", "outcome", "When the lead converted."),
    ),
)

OPPORTUNITY = Contract(
    "opportunities",
    (
        Column("opportunity_id", "string", "identity", "Unique id of the opportunity.", required=True,
               nullable=False, unique=True),
        Column("lead_id", "string", "identity", "The lead this opportunity came from, when known."),
        Column("account", "string", "firmographic", "Customer account (company)."),
        Column("owner", "string", "pipeline", "Sales rep who owns the deal.", required=True, nullable=False),
        Column("team", "string", "pipeline", "Sales team or manager."),
        Column("region", "string", "pipeline", "Sales region or office."),
        Column("product", "string", "pipeline", "Product sold.", required=True, nullable=False),
        Column("product_category", "string", "pipeline", "Product category (series, line)."),
        Column("amount", "float", "pipeline", "Expected deal value, in $ (open deals: the value at stake).",
               non_negative=True),
        Column("created_at", "datetime", "pipeline",
               "When the deal was created or engaged; may be empty only for open deals.", required=True),
        Column("stage", "string", "pipeline", "Current stage (one of the configured stages).", required=True,
               nullable=False),
        Column("stage_entered_at", "datetime", "pipeline", "When the deal entered its current stage."),
        Column("expected_close_date", "datetime", "pipeline", "The rep's expected close date."),
        Column("closed_at", "datetime", "outcome", "When the deal was won or lost; empty while open."),
        Column("outcome", "string", "outcome", "open, won or lost; derived from the stage when absent."),
        Column("won_amount", "float", "outcome", "Revenue booked when won, in $ (0 or empty otherwise).",
               non_negative=True),
    ),
)

STAGE_HISTORY = Contract(
    "stage_history",
    (
        Column("opportunity_id", "string", "identity", "The opportunity that changed stage.", required=True,
               nullable=False),
        Column("stage", "string", "pipeline", "The stage it entered.", required=True, nullable=False),
        Column("entered_at", "datetime", "pipeline", "When it entered that stage.", required=True,
               nullable=False),
    ),
)

CONTRACTS = {c.name: c for c in (LEAD, OPPORTUNITY, STAGE_HISTORY)}

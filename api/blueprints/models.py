"""The models being served, one champion per model name: their cards, and an admin reload that swaps each name
to its new champion. `?model=NAME` picks a name; without it, the default spec's model answers."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.errors import ApiError
from api.http import Runtime, refuse_unknown_query, requires, runtime
from api.serving import Champions, ModelHolder, ModelLoadFailed, Served, champion_poll, model_names, model_source
from scoring.artifacts import ModelError, UnknownModelError

bp = Blueprint("models", __name__, url_prefix="/v1/models")


class MonitoringQuery(BaseModel):
    """The query of GET /v1/models/monitoring: which model (NAME, NAME@VERSION, a version or an alias) and since
    when."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, min_length=1, max_length=200)
    since: str | None = Field(default=None, min_length=1, max_length=64)


def init(app: Flask, rt: Runtime) -> None:
    """Load every model name's champion (the default name's, or the cold-start rules) when the app is created;
    a failed load never stops it."""
    settings = rt.settings

    def make(name: str) -> ModelHolder:
        return ModelHolder(name=name, source=model_source(settings, name=name),
                           on_load=lambda s: rt.metrics.set_model(name=s.name, version=s.version, kind=s.kind),
                           poll=champion_poll(settings, name=name))

    default = make(settings.registered_model_name)
    rt.models = default  # the default spec's model, as a one-model home has always had it
    champions = Champions(default=default, make=make, names=lambda: model_names(settings))
    rt.champions = champions
    # The holder logs why; the service starts anyway and answers 503 on scoring until a reload works.
    with contextlib.suppress(ModelLoadFailed):
        default.load()
    champions.discover()


def champions() -> Champions:
    """Return this app's holders, one per model name."""
    found = runtime().champions
    if found is None:
        raise RuntimeError("the models blueprint's init has not run on this app")
    return found


def holder(name: str | None = None) -> ModelHolder:
    """Return the holder of model `name` (default the default spec's), or raise 404 for a name the registry
    does not hold (the answer lists those it holds) and 422 for one that cannot be a model name."""
    try:
        return champions().holder(name)
    except UnknownModelError as exc:
        raise ApiError(404, "not_found", f"no model named {exc.name!r}; the known models are {', '.join(exc.known)}",
                       [{"loc": ["query", "model"], "msg": f"unknown model; known: {', '.join(exc.known)}"}]) \
            from exc
    except ModelError as exc:
        raise ApiError(422, "invalid_input", "the query parameter model is not a model name",
                       [{"loc": ["query", "model"], "msg": str(exc)}]) from exc


def requested_model(*, only: bool = False) -> str | None:
    """Return the model name the request's `?model=` asks for (None: the default spec's model); with `only`,
    refuse any other query parameter."""
    if only:
        refuse_unknown_query("model")
    name = request.args.get("model")
    if name is not None and not name:
        raise ApiError(422, "invalid_input", "the query parameter model is empty: give a model name or leave it out",
                       [{"loc": ["query", "model"], "msg": "empty"}])
    return name


def current_model(name: str | None = None) -> Served:
    """Return the served champion of model `name` (default the default spec's), or raise 503 (with the reason,
    never a path) while none is loaded."""
    models = holder(name)
    served = models.current()
    if served is None:
        raise ApiError(503, "unavailable", f"no model is loaded{_of(models, name)}: {models.unavailable_reason()}; "
                       "fix the champion, then reload")
    return served


def _of(models: ModelHolder, name: str | None) -> str:
    return "" if name is None else f" for {models.name!r}"


@bp.get("")
@requires("score")
def index() -> Response:
    """List every model name's champion (version and kind, or why none is served), the default first."""
    found = champions()
    found.discover()
    for each in found.holders():
        each.refresh()
    return jsonify({"default": found.default.name, "models": found.describe()})


@bp.get("/current")
@requires("score")
def current() -> Response:
    """Return the model card of the champion being served for `?model=` (default the default spec's)."""
    served = current_model(requested_model(only=True))
    return jsonify({"model": served.describe(), "card": served.card})


@bp.post("/reload")
@requires("admin")
def reload() -> Response:
    """Re-resolve the champion of `?model=` (default: of every name, new names included) and swap to it;
    requests in flight finish on the old model. 503 when any name fails, naming it; the others are swapped."""
    name = requested_model(only=True)
    found = champions()
    if name is None:
        found.discover(load=False)
        targets = found.holders()
    else:
        targets = [holder(name)]
    answers: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for each in targets:
        # What was served when the call came: a back-off retry inside `current` would load the new champion
        # first and report it as its own predecessor.
        previous = each.serving()
        try:
            served = each.reload()
        except ModelLoadFailed as exc:
            # The cause names files on the server: it went to the log; the caller gets the reason in plain words.
            keeping = "still serving the previous model" if previous is not None else "no model is served"
            failed.append((each.name, f"reload failed, {keeping}: {exc.reason}"))
            answers.append({"name": each.name, "status": "unavailable", "reason": exc.reason})
            continue
        answers.append({**served.describe(), "status": "ready",
                        "previous": previous.describe() if previous else None})
    if failed:
        name_, why = failed[0]
        which = "" if len(targets) == 1 else f"model {name_!r}: "
        raise ApiError(503, "unavailable", f"{which}{why}; the service log says more",
                       [{"loc": ["models", n], "msg": m} for n, m in failed])
    main = answers[0]
    return jsonify({"model": {k: main[k] for k in ("name", "version", "kind")}, "previous": main["previous"],
                    "models": answers})


@bp.get("/monitoring")
@requires("admin", "monitor")
def monitoring() -> Response:
    """Return the health of a model version (default the champion of `?model=NAME`, else of the default spec's
    model) on the scores that name's model version logged and their matured outcomes."""
    from api.monitoring import parse_since, split_model_ref, store_health

    query = MonitoringQuery.model_validate(request.args.to_dict())
    name, version = split_model_ref(query.model)
    picked = holder(name).name  # the score endpoint's check: 404 listing the known names, 422 for a bad name
    rt = runtime()
    try:
        report = store_health(rt.settings, rt.store, name=picked, version=version, since=parse_since(query.since))
    except ModelError as exc:  # the message names server paths: the caller gets the reason only
        raise ApiError(404, "not_found", f"cannot monitor that model: {exc.reason}") from exc
    rt.metrics.set_health(report)
    return jsonify(report)

"""The report's one way to take a section made elsewhere: Markup goes in as is, any other text is escaped."""

from __future__ import annotations

import numpy as np
import pytest
from markupsafe import Markup

from crmdata.loaders import Pipeline
from forecasting.report import ExtraSection, build_report

QUICK = {"as_of": "2026-07-01", "horizon": "1Q", "n_sims": 200, "backtest_months": 0}


def test_trusted_markup_as_is_plain_text_and_titles_escaped(small_pipeline: Pipeline) -> None:
    trusted = ExtraSection(key="made-here", title="<b>Ours</b>", html=Markup('<p class="x">from our template</p>'))
    plain = ExtraSection(key="from-outside", title="Theirs", html="<script>alert('x')</script>")
    report = build_report(small_pipeline, rng=np.random.default_rng(0), extra_sections=[trusted, plain],
                          **QUICK)  # type: ignore[arg-type]
    html = report.html
    assert ('<section id="made-here"><h2>&lt;b&gt;Ours&lt;/b&gt;</h2><p class="x">from our template</p></section>'
            in html)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html and "<script>" not in html
    assert '<a href="#made-here">&lt;b&gt;Ours&lt;/b&gt;</a>' in html  # linked from the navigation
    assert html.index('id="made-here"') < html.index('id="from-outside"') < html.index('id="notes"')


def test_a_key_must_be_an_id_the_page_does_not_use(small_pipeline: Pipeline) -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        ExtraSection(key='x" onload="y', title="t", html="")
    with pytest.raises(ValueError, match="'summary' is already used"):
        build_report(small_pipeline, rng=np.random.default_rng(0), extra_sections=[
            ExtraSection(key="summary", title="t", html="")], **QUICK)  # type: ignore[arg-type]

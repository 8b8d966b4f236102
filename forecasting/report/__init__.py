"""The leadership report: the forecast with its measured accuracy, pipeline health, reps and products, as one
self-contained HTML page and an Excel workbook (`build_report`, `write_report`)."""

from forecasting.report.build import Report, build_report, write_report
from forecasting.report.content import ExtraSection

__all__ = ["ExtraSection", "Report", "build_report", "write_report"]

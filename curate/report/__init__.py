"""The HTML run report: `write_report(out)` writes OUT/report.html, one self-contained offline page."""
from curate.report.report import ReportError, build_html, report_main, write_report

__all__ = ["ReportError", "build_html", "report_main", "write_report"]

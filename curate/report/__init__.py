"""The HTML run report: `write_report(out)` writes OUT/report.html, one self-contained offline page.

The names load lazily, so a runner worker that only stores dropped-sample thumbnails
(`curate.report.thumbs`) does not import matplotlib and DuckDB.
"""
__all__ = ["ReportError", "build_html", "report_main", "write_report"]


def __getattr__(name: str):
    if name in __all__:
        from curate.report import report

        return getattr(report, name)
    raise AttributeError(f"module 'curate.report' has no attribute {name!r}")

"""Rendering only: HTML pages, contact sheets and plots from numbers measured elsewhere."""

from likeness.report.score_report import DEFAULT_METRICS, write_score_report

__all__ = ["DEFAULT_METRICS", "write_score_report"]

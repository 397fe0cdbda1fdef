"""The dashboard: one static HTML page whose inline script polls ``/v1/status`` every second.

No build step and no third-party assets, so it works on a machine without internet and its
content security is easy to review: the page is constant, and data only enters it as text.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["dashboard_html"]


@functools.cache
def dashboard_html() -> str:
    """The page, read once from the package data next to this module."""
    return resources.files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")

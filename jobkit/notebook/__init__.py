"""Notebook views of jobs: live ipywidgets in Jupyter, a text progress view elsewhere.

Importing this package is cheap: ipywidgets is imported only when a widget is made.
"""

from .display import dashboard, progress_group
from .text import render_text, watch_text

__all__ = ["dashboard", "progress_group", "render_text", "watch_text"]

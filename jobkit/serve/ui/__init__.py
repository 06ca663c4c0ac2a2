"""The /ui web dashboard of `jobkit serve`: queues, job search, a job page with live progress, admin actions."""

from .app import ui_app
from .session import Authenticate, Viewer

__all__ = ["Authenticate", "Viewer", "ui_app"]

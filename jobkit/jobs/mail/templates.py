"""Subject and bodies from Jinja2 templates: inline in the payload, or a set in the worker's registered folder.

Templates are payload data, so they render in Jinja2's sandbox (no attribute tricks reach Python internals),
with undefined variables an error rather than blank text. HTML bodies are autoescaped: a recipient's name
`<b>` arrives as text, never as markup; subjects and plain-text bodies are not HTML and are not escaped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import ConfigError
from .._registry import shorten
from .errors import EmailSetupError
from .models import SendEmail

__all__ = ["Rendered", "Templates", "register_email_templates"]

_folder: Path | None = None
_SPACES = re.compile(r"\s+")


def register_email_templates(folder: str | os.PathLike[str] | None) -> None:
    """Let payloads name template sets in `folder` (`template="welcome"`: welcome.subject.txt, with welcome.txt
    and/or welcome.html beside it); None forgets it."""
    global _folder
    if folder is None:
        _folder = None
        return
    path = Path(folder).resolve()
    if not path.is_dir():
        raise ConfigError(f"email template folder {path} does not exist: create it, or register another")
    _folder = path


def _jinja() -> Any:
    try:
        import jinja2
        import jinja2.sandbox
    except ImportError:
        raise EmailSetupError("the email job needs Jinja2 in the worker: pip install 'jobkit[email]'") from None
    return jinja2


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str | None
    html: str | None


class Templates:
    """The payload's three templates, compiled once per job; `render(context)` fills them for one recipient."""

    def __init__(self, p: SendEmail) -> None:
        jinja2 = _jinja()
        sandbox = jinja2.sandbox.SandboxedEnvironment
        self._error = jinja2.TemplateError
        try:
            if p.template is not None:
                self.subject, self.text, self.html = self._named(jinja2, sandbox, p.template)
            else:
                plain = sandbox(undefined=jinja2.StrictUndefined, autoescape=False)
                markup = sandbox(undefined=jinja2.StrictUndefined, autoescape=True)
                self.subject = plain.from_string(p.subject or "")
                self.text = None if p.text is None else plain.from_string(p.text)
                self.html = None if p.html is None else markup.from_string(p.html)
        except jinja2.TemplateSyntaxError as exc:
            raise EmailSetupError(f"a template of the payload does not parse: {exc} (line {exc.lineno})") from None

    def _named(self, jinja2: Any, sandbox: Any, name: str) -> tuple[Any, Any, Any]:
        if _folder is None:
            raise EmailSetupError(f"template {shorten(name)!r} cannot be found: no template folder is registered."
                                  " Call jobkit.jobs.register_email_templates('/srv/mail-templates') in the worker")
        env = sandbox(loader=jinja2.FileSystemLoader(_folder), undefined=jinja2.StrictUndefined,
                      autoescape=jinja2.select_autoescape(["html", "htm"], default_for_string=False))

        def load(suffix: str) -> Any:
            try:
                return env.get_template(f"{name}{suffix}")
            except jinja2.TemplateNotFound:
                return None

        subject, text, html = load(".subject.txt"), load(".txt"), load(".html")
        if subject is None or (text is None and html is None):
            raise EmailSetupError(f"template {shorten(name)!r} needs {name}.subject.txt and {name}.txt and/or"
                                  f" {name}.html in the template folder {_folder}")
        return subject, text, html

    def render(self, context: dict[str, Any]) -> Rendered:
        """One recipient's subject and bodies; EmailSetupError naming the problem when a template fails."""
        try:
            subject = _SPACES.sub(" ", self.subject.render(context)).strip()
            text = None if self.text is None else self.text.render(context)
            html = None if self.html is None else self.html.render(context)
        except self._error as exc:
            raise EmailSetupError(f"rendering the templates failed: {type(exc).__name__}: {exc}") from None
        return Rendered(subject, text, html)

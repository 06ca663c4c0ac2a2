"""The email job: templated messages through a registered SMTP server, at a shared rate. Needs `jobkit[email]`."""

from .errors import EmailSetupError
from .models import Attachment, EmailReport, Recipient, RecipientOutcome, SendEmail
from .servers import SmtpServer, register_smtp_server
from .task import send_email
from .templates import register_email_templates

__all__ = [
    "Attachment", "EmailReport", "EmailSetupError", "Recipient", "RecipientOutcome", "SendEmail", "SmtpServer",
    "register_email_templates", "register_smtp_server", "send_email",
]

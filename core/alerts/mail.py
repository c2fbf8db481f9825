"""Email channels: smtplib in a thread, with STARTTLS (smtp:// and starttls) or implicit TLS (smtps://),
and a login when the URL has user:password."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

from servermanager.core.alerts import message
from servermanager.core.alerts.message import DeliveryError, Notification


def build(n: Notification, from_addr: str, to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = message.subject(n)
    msg["From"] = from_addr
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=from_addr.rpartition("@")[2] or None)
    msg.set_content(message.text(n))
    return msg


def _send_sync(url: str, starttls: bool, msg: EmailMessage, timeout: float) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    implicit = parts.scheme == "smtps"
    port = parts.port or (465 if implicit else 25)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if implicit:
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        smtp.ehlo()
        if not implicit and starttls:
            if not smtp.has_extn("starttls"):
                raise DeliveryError(
                    f"the SMTP server {host}:{port} does not offer STARTTLS; "
                    "use smtps://, or set starttls to false to send in the clear"
                )
            smtp.starttls(context=context)
            smtp.ehlo()
        if user is not None and password is not None:
            smtp.login(user, password)
        smtp.send_message(msg)


def _text(said: bytes | str) -> str:
    return said.decode(errors="replace") if isinstance(said, bytes) else said


def _plain(exc: BaseException, host: str) -> str:
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"the SMTP server refused the login: {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        who = ", ".join(f"{a} ({c} {_text(e)})" for a, (c, e) in exc.recipients.items())
        return f"the SMTP server refused the recipients: {who}"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"the SMTP server refused the sender {exc.sender}: {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the SMTP server answered {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"the SMTP server does not support that: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {host} is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {host} failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"the SMTP server {host} did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return f"could not connect to the SMTP server {host}: connection refused"
    if isinstance(exc, OSError):
        return f"could not talk to the SMTP server {host}: {exc.strerror or exc}"
    return f"sending mail failed: {exc.__class__.__name__}: {exc}"


async def send(
    url: str, starttls: bool, from_addr: str, to: list[str], n: Notification, timeout: float
) -> None:
    msg = build(n, from_addr, to)
    host = urlsplit(url).hostname or "?"
    try:
        async with asyncio.timeout(timeout * 3):
            await asyncio.to_thread(_send_sync, url, starttls, msg, timeout)
    except DeliveryError:
        raise
    except TimeoutError:
        raise DeliveryError(f"the SMTP server {host} did not finish within {timeout * 3:g}s") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(_plain(exc, host)) from None

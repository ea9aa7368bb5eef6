"""PII redaction for logs: emails and phone numbers are masked by default."""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"(?<![\w.-])\+?\d[\d\s().-]{6,}\d(?![\w-])")  # not inside ids/uuids


def mask_email(value: str) -> str:
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", value)


def redact(text: str) -> str:
    """Mask emails and phone-like digit runs; set KLAVIYO_SEGMENT_LOG_PII=1 to see them (debugging only)."""
    if _log_pii():
        return text
    text = mask_email(text)
    return _PHONE.sub(_mask_phone, text)


def _log_pii() -> bool:
    """Read per call (tests and debugging sessions flip it); a malformed unrelated variable must not make a log
    call raise, so any configuration error means "redact"."""
    from klaviyo_segment.errors import ConfigError
    from klaviyo_segment.settings import env_settings

    try:
        return env_settings().log_pii
    except ConfigError:
        return False


_NOT_PHONE = re.compile(r"\d{1,3}(\.\d{1,3}){3}|\d{4}-\d{2}-\d{2}")  # IPv4 addresses, ISO dates


def _mask_phone(match: re.Match[str]) -> str:
    value = match.group(0)
    if _NOT_PHONE.fullmatch(value) or sum(c.isdigit() for c in value) < 7:
        return value  # addresses and short numbers are not phone numbers
    return value[:3] + "***" + value[-2:]


class RedactingFilter(logging.Filter):
    """Logging filter that rewrites the formatted message with :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - a broken format string is not ours to fix
            return True
        record.msg, record.args = redact(message), None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Attach the filter to this project's logger (idempotent)."""
    target = logger or logging.getLogger("klaviyo_segment")
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())

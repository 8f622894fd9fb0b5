"""Users' email addresses: validated with `email-validator` (no DNS look-ups), stored
normalised, shown masked."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from web.errors import Refused

MAX_EMAIL = 254


def normalize_email(raw: object) -> str:
    """The address as we store it, or a 422 saying what is wrong with it.

    Deliverability is not checked (no DNS here); special-use domains (.test, localhost)
    are refused by the library. Non-ASCII local parts would need SMTPUTF8 from every relay on
    the way: refused with a clear message instead. The domain is stored in its ASCII (IDNA)
    form, which every mail server accepts."""
    if not isinstance(raw, str) or not raw.strip():
        raise Refused(422, "Enter an email address.")
    if len(raw) > MAX_EMAIL or any(ch in raw for ch in "\r\n\x00"):
        raise Refused(422, "That is not a valid email address.")
    try:
        valid = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise Refused(422, f"That is not a valid email address: {error}") from None
    return valid.ascii_email or valid.normalized


def mask(address: str | None) -> str:
    """ "j•••@example.com": first character, "•••", "@", the whole domain."""
    if not address or "@" not in address:
        return ""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}•••@{domain}"

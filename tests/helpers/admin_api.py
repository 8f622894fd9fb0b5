"""The admin API as the unit tests speak it: the `settings` fixture's token, and the
mutations that set a user's 2FA flags (GraphQL documents, sent by the caller)."""

from __future__ import annotations

TOKEN = "admin-token-for-tests-0123456789abcdef"  # the `settings` fixture's admin token
RESULT_FIELDS = "success message username requires2fa user2faEnabled effective2fa"


def set_required(username: str, required: bool) -> str:
    value = "true" if required else "false"
    return (
        f'mutation {{ r: setUser2faRequired(username: "{username}", required: {value}) '
        f"{{ {RESULT_FIELDS} }} }}"
    )


def set_enabled(username: str, enabled: bool) -> str:
    value = "true" if enabled else "false"
    return (
        f'mutation {{ r: setUser2faEnabled(username: "{username}", enabled: {value}) '
        f"{{ {RESULT_FIELDS} }} }}"
    )

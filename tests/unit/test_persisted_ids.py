"""`row.pk`: a persisted row's id typed as int, and a clear error before the row is flushed."""

import pytest

from models import AuthSession, Notification, Passkey, RecoveryCode, SecurityEvent, User
from models.base import NotPersisted
from models.challenge import WebAuthnChallenge

TABLES = [AuthSession, Notification, Passkey, RecoveryCode, SecurityEvent, User, WebAuthnChallenge]


@pytest.mark.parametrize("table", TABLES)
def test_pk_is_a_property_not_a_field_nor_a_column(table):
    assert "pk" not in table.model_fields
    assert "pk" not in table.__table__.c


def test_pk_before_flush_is_a_clear_error():
    with pytest.raises(NotPersisted, match="User has no id yet"):
        _ = User().pk


def test_pk_is_the_id():
    user = User()
    user.id = 7
    assert user.pk == 7

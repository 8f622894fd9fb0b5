"""revision 4: users.data_version, bumped by the database on every change the account page shows

The account page is rendered once and reused while nothing it shows has changed
(web/pagecache.py). What "changed" means is kept by the database itself, so that no
writer can forget it (the user site, the admin API, the CLI, the clean-up jobs): a trigger
on each table the page reads adds one to the owner's `users.data_version`.

- users: any update;
- passkeys, recovery_codes, security_events: any insert, update or delete;
- auth_sessions: insert, delete, and an update of any column but `last_seen_at` (the
  once-a-minute touch of every signed-in request: the page shows it to the minute and
  is re-rendered at least once a minute anyway, web.pagecache.MAX_AGE).

A later migration that rebuilds one of these tables on SQLite (batch_alter_table copies the
table) drops its triggers: it must create them again (`create_triggers`);
tests/unit/test_page_cache.py fails when one is missing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHILDREN = ("passkeys", "recovery_codes", "security_events", "auth_sessions")
SESSION_COLUMNS = (
    "token_hash, user_id, state, amr, acr, mfa_verified, auth_time, created_at, expires_at, "
    "passkey_id, reauth_at, confirmed_passkey_ids, partial_reason, user_agent, ip"
)
"""Every column of auth_sessions but id and last_seen_at."""


def _events(table: str) -> list[tuple[str, str]]:
    """(name suffix, event) of the triggers of a child table."""
    update = f"UPDATE OF {SESSION_COLUMNS}" if table == "auth_sessions" else "UPDATE"
    return [("insert", "INSERT"), ("update", update), ("delete", "DELETE")]


def _sqlite() -> list[str]:
    statements = [
        # recursive_triggers is off: the inner UPDATE does not fire this trigger again
        "CREATE TRIGGER users_data_version AFTER UPDATE ON users "
        "WHEN NEW.data_version = OLD.data_version "
        "BEGIN UPDATE users SET data_version = OLD.data_version + 1 WHERE id = OLD.id; END"
    ]
    for table in CHILDREN:
        for suffix, when in _events(table):
            row = "OLD" if suffix == "delete" else "NEW"
            # names from the constants above, no input
            trigger = f"CREATE TRIGGER {table}_data_version_{suffix} AFTER {when} ON {table} "
            bump = f"UPDATE users SET data_version = data_version + 1 WHERE id = {row}.user_id"  # noqa: S608
            statements.append(f"{trigger}BEGIN {bump}; END")
    return statements


def _postgresql() -> list[str]:
    statements = [
        """CREATE FUNCTION users_data_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.data_version = OLD.data_version THEN
                NEW.data_version := OLD.data_version + 1;
            END IF;
            RETURN NEW;
        END $$""",
        "CREATE TRIGGER users_data_version BEFORE UPDATE ON users "
        "FOR EACH ROW EXECUTE FUNCTION users_data_version()",
        """CREATE FUNCTION owner_data_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE users SET data_version = data_version + 1
            WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END;
            RETURN NULL;
        END $$""",
    ]
    for table in CHILDREN:
        events = " OR ".join(when for _, when in _events(table))
        statements.append(
            f"CREATE TRIGGER {table}_data_version AFTER {events} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION owner_data_version()"
        )
    return statements


def create_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for statement in _sqlite() if dialect == "sqlite" else _postgresql():
        op.execute(statement)


def drop_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS users_data_version")
        for table in CHILDREN:
            for suffix, _ in _events(table):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_data_version_{suffix}")
    else:
        op.execute("DROP TRIGGER IF EXISTS users_data_version ON users")
        for table in CHILDREN:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_data_version ON {table}")
        op.execute("DROP FUNCTION IF EXISTS users_data_version()")
        op.execute("DROP FUNCTION IF EXISTS owner_data_version()")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("data_version", sa.Integer(), nullable=False, server_default="0")
        )
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("data_version")

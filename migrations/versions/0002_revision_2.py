"""revision 2: recent authentication, email and the notification outbox, grace period

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:40:51.542310
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=48), nullable=False),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_TIME(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_TIME(), nullable=False),
        sa.Column("claimed_until", UTC_TIME(), nullable=True),
        sa.Column("sent_at", UTC_TIME(), nullable=True),
        sa.Column("gave_up_at", UTC_TIME(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_due", ["sent_at", "next_attempt_at"])
        batch_op.create_index("ix_notifications_user_id", ["user_id"])

    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.alter_column("step_up_at", new_column_name="reauth_at")
        batch_op.add_column(
            sa.Column("confirmed_passkey_ids", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.add_column(
            sa.Column(
                "partial_reason",
                sqlmodel.sql.sqltypes.AutoString(length=32),
                nullable=False,
                server_default="",
            )
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True)
        )
        batch_op.add_column(sa.Column("requires_2fa_from", UTC_TIME(), nullable=True))
        batch_op.add_column(sa.Column("requirement_reminded_at", UTC_TIME(), nullable=True))
        batch_op.add_column(sa.Column("password_changed_at", UTC_TIME(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_changed_at")
        batch_op.drop_column("requirement_reminded_at")
        batch_op.drop_column("requires_2fa_from")
        batch_op.drop_column("email")

    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_column("partial_reason")
        batch_op.drop_column("confirmed_passkey_ids")
        batch_op.alter_column("reauth_at", new_column_name="step_up_at")

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_user_id")
        batch_op.drop_index("ix_notifications_due")

    op.drop_table("notifications")

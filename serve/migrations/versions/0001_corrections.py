"""The corrections table: one row per (upload sha256, label), with the 28x28 the model saw.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("answer", sa.String(16)),
        sa.Column("confidence", sa.Float),
        sa.Column("model", sa.String(255)),
        sa.Column("image28", sa.LargeBinary, nullable=False),
        sa.Column("raw", sa.LargeBinary),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("sha256", "label", name="one_correction_per_upload_and_label"),
        sa.CheckConstraint("state IN ('pending', 'accepted', 'rejected')", name="known_state"),
    )
    op.create_index("corrections_state", "corrections", ["state"])


def downgrade():
    op.drop_index("corrections_state", "corrections")
    op.drop_table("corrections")

"""The daemon's own schema in the watched database (continuity markers, the outbox)."""

from __future__ import annotations

SCHEMA = "invalidator"

# Not CREATE SCHEMA IF NOT EXISTS: that needs CREATE on the database even when the schema
# exists (sql/role.sql creates it for a role that has no such right).
ENSURE_SCHEMA_SQL = f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = '{SCHEMA}') THEN
        CREATE SCHEMA {SCHEMA};
    END IF;
END $$;
"""

-- Replica identity for the watched tables whose key templates need OLD values.
--
--   psql "postgresql://app_owner@db.example.internal:5432/app" -f sql/replica_identity.sql
--
-- Run as the tables' owner. Which tables need it? Ask the daemon, against the database:
--
--   invalidator check --config config.yaml
--   error: config.yaml: rules[0] (table public.users): keys[1]: 'user_by_email:{email}'
--     needs old email on UPDATE and DELETE but REPLICA IDENTITY DEFAULT carries only id:
--     the old key cannot be built (ALTER TABLE ... REPLICA IDENTITY FULL)
--
-- Why: on UPDATE and DELETE, wal2json sends the old row only as far as the table's replica
-- identity carries it. With the default (the primary key) a template such as
-- `user:{id}` is fine, but `user_by_email:{email}` cannot be built for the old row, and an
-- UPDATE that changes the email would leave the old email's key in the cache. FULL puts
-- every old column in the WAL. A table with REPLICA IDENTITY NOTHING, or DEFAULT without a
-- primary key, sends no UPDATE or DELETE at all; `check` reports that as an error too.
--
-- Cost: FULL writes the whole old row into the WAL for every UPDATE and DELETE of the
-- table. When the needed columns form a unique index on NOT NULL columns,
--   ALTER TABLE public.users REPLICA IDENTITY USING INDEX users_email_key;
-- carries just those. `when_changed` rules compare old and new values of their columns,
-- so those columns must be in the replica identity as well.
--
-- Takes a brief ACCESS EXCLUSIVE lock on each table; takes effect for changes after it.

\set ON_ERROR_STOP on

-- user_by_email:{email} needs the old email.
ALTER TABLE public.users REPLICA IDENTITY FULL;

-- Check the result (d = default, f = full, i = index, n = nothing):
SELECT c.oid::regclass AS "table", c.relreplident AS replica_identity
FROM pg_class c
WHERE c.oid IN ('public.users'::regclass);

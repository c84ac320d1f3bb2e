-- The database role of pg-cache-invalidator, with no more rights than it needs.
--
--   psql "postgresql://postgres@db.example.internal:5432/app" \
--        -v password="$(openssl rand -base64 24)" -f sql/role.sql
--
-- Run it as a superuser (or a role with CREATEROLE that may grant REPLICATION), connected
-- to the application's database. It may be run again: the role is created once, and its
-- attributes, password and grants are (re)applied each time. Put the same password in the
-- Secret invalidator-db (k8s/secret.example.yaml).
-- The password travels in the statement: with log_statement = ddl or all it reaches the
-- server log. If that matters, give any placeholder here and set the real one with psql's
-- \password invalidator afterwards.
--
-- What the rights are for:
--   LOGIN REPLICATION  open the logical replication stream (`invalidator run`), create or
--                      drop the slot (`setup`/`teardown`). REPLICATION is a strong right: a
--                      logical slot decodes every table of the database, whatever the
--                      grants; the rules only choose what the daemon acts on.
--   CONNECT, USAGE     reach the database and the schemas of the watched tables.
--   SELECT             the watched tables: `check` reads their columns and replica
--                      identity, `refresh` rules with a `query` value and `invalidator warm`
--                      read rows. Nothing ever writes to the database.
--   source.kind: pgoutput also needs a publication of the watched tables: `setup`/`run`
--                      create and alter it when the role owns those tables (and may CREATE
--                      in the database); otherwise create it as their owner, e.g.
--                      CREATE PUBLICATION cache_invalidator FOR TABLE users (id, email)
--                      WITH (publish_via_partition_root = true);
--                      `invalidator check` says which tables and columns it must hold.
--
-- Managed PostgreSQL (check your provider's current documentation):
--   Amazon RDS / Aurora: parameter group rds.logical_replication = 1 (sets wal_level=logical,
--     needs a reboot); there is no REPLICATION attribute for your users there: run
--     `GRANT rds_replication TO invalidator;` instead (this script does when the role exists).
--   Google Cloud SQL: flag cloudsql.logical_decoding = on; the cloudsqlsuperuser may
--     ALTER ROLE ... REPLICATION.
--   Azure Database for PostgreSQL flexible server: server parameter wal_level = logical;
--     an azure_pg_admin member may ALTER ROLE ... REPLICATION.
--   All three ship the wal2json output plugin.
--
-- Self-managed servers also need wal_level = logical (restart), a free max_replication_slots
-- and max_wal_senders entry, and a pg_hba.conf line for the role on the application's
-- database: a logical replication connection matches the database name, not the
-- `replication` keyword.

\set ON_ERROR_STOP on

\if :{?password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'give the password: psql ... -v password=... -f sql/role.sql'; END $$;
\endif

SELECT format('CREATE ROLE invalidator LOGIN PASSWORD %L', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'invalidator')
\gexec

-- CREATE ROLE's defaults stand: NOSUPERUSER NOCREATEDB NOCREATEROLE.
ALTER ROLE invalidator WITH LOGIN PASSWORD :'password';

-- REPLICATION where the server allows it; rds_replication on Amazon RDS / Aurora.
SELECT CASE
         WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_replication')
           THEN 'GRANT rds_replication TO invalidator'
         ELSE 'ALTER ROLE invalidator WITH REPLICATION'
       END
\gexec

SELECT format('GRANT CONNECT ON DATABASE %I TO invalidator', current_database())
\gexec

-- The watched tables: one line per schema and table of your rules (k8s/invalidator.yaml).
GRANT USAGE ON SCHEMA public TO invalidator;
GRANT SELECT ON TABLE public.users TO invalidator;

-- The daemon's own schema: its continuity marker (invalidator.continuity: the last
-- confirmed position, system identifier and timeline of its slot, kept in the database so
-- a failover that loses the slot does not lose it) and, for source.kind: notify, the
-- outbox. The daemon creates its tables there itself.
CREATE SCHEMA IF NOT EXISTS invalidator AUTHORIZATION invalidator;

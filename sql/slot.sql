-- The logical replication slot the daemon streams from, with the wal2json plugin.
--
--   psql "postgresql://invalidator@db.example.internal:5432/app" -f sql/slot.sql
--   psql ... -v slot=my_slot -f sql/slot.sql          # another name (source.slot)
--
-- Usually not needed: `invalidator run` creates the slot on first start (unless
-- source.create_slot is false), and `invalidator setup` creates it on its own — both the
-- same way as this script. Create it here when the daemon's role may not create slots, or
-- to start keeping changes before the daemon is deployed.
--
-- Run as the invalidator role (or a superuser) on the application's database: a logical
-- slot belongs to one database. It may be run again (an existing slot is left as it is).
--
-- Watch it: from creation on, PostgreSQL keeps all WAL the slot has not confirmed. A slot
-- nobody streams fills the disk (alert ReplicationSlotWalRetained; on PostgreSQL 13+
-- max_slot_wal_keep_size caps it, at the price of losing the slot). Drop a slot that is no
-- longer used with `invalidator teardown` or
--   SELECT pg_drop_replication_slot('cache_invalidator');

\set ON_ERROR_STOP on

\if :{?slot}
\else
  \set slot cache_invalidator
\endif

-- In the select list, not in FROM: the function is called only when the WHERE holds.
SELECT pg_create_logical_replication_slot(:'slot', 'wal2json') AS created
WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = :'slot');

SELECT slot_name, plugin, active, confirmed_flush_lsn
FROM pg_replication_slots
WHERE slot_name = :'slot';

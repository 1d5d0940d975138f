-- =============================================================================
-- stagehand's own schema, migration V001.
--
-- Lives in the schema "stagehand", next to (never inside) Cuebot's public
-- schema, and is applied to every database stagehand runs against, Cuebot's
-- included. Nothing here creates, alters or drops anything in public; the
-- only link to it is the foreign key from show_lease to public.show.
--
-- Applied by stagehand::db::migrate in a transaction, once, and recorded in
-- stagehand.schema_migrations; it is also idempotent on its own (IF NOT
-- EXISTS everywhere), so running it twice changes nothing.
--
-- Contents
--   schema_migrations  which of stagehand's migrations have been applied.
--   instance           one row per running stagehand process (heartbeat).
--   show_lease         which instance owns the scheduling (and accounting
--                      writes) of a show, for how long, under which fencing
--                      epoch. The lease logic comes later; every booking will
--                      re-check (pk_instance, int_epoch) inside its
--                      transaction so a stale owner cannot book.
-- =============================================================================

CREATE SCHEMA IF NOT EXISTS stagehand;

CREATE TABLE IF NOT EXISTS stagehand.schema_migrations (
    version    INT         PRIMARY KEY,
    name       TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS stagehand.instance (
    pk_instance  UUID        PRIMARY KEY,
    str_name     TEXT        NOT NULL,
    str_host     TEXT        NOT NULL,
    int_pid      INT         NOT NULL,
    ts_started   TIMESTAMPTZ NOT NULL DEFAULT now(),
    ts_heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- pk_instance is NULL while no instance holds the show. int_epoch only ever
-- grows: each new grant of the lease increments it (fencing token).
CREATE TABLE IF NOT EXISTS stagehand.show_lease (
    pk_show     VARCHAR(36) PRIMARY KEY REFERENCES public.show (pk_show) ON DELETE CASCADE,
    pk_instance UUID        NULL,
    int_epoch   BIGINT      NOT NULL DEFAULT 0,
    ts_claimed  TIMESTAMPTZ NOT NULL DEFAULT now()
);

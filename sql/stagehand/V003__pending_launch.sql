-- =============================================================================
-- stagehand's own schema, migration V003: bookings not yet launched.
--
-- A booking commits before RQD is asked to run the frame. If the instance dies
-- in between (kill -9, power, OOM), or gives up on an RQD that never confirmed
-- a kill, the frame stays RUNNING with a proc that no process will ever run or
-- undo. Each booking therefore records its procs here in the same transaction
-- as the procs themselves; a row goes once RQD accepted the launch or the
-- booking was undone. Rows of an instance that is gone are resolved by the
-- instance that holds the show now: it asks RQD to kill the frame and, once
-- RQD answers, undoes the booking (as Cuebot's lost-proc handling does).
--
-- No foreign keys to public: Cuebot deletes procs and frames as it pleases,
-- and a row whose proc is gone is simply dropped by the sweep.
-- =============================================================================

CREATE TABLE IF NOT EXISTS stagehand.pending_launch (
    pk_proc     VARCHAR(36) PRIMARY KEY,
    pk_frame    VARCHAR(36) NOT NULL,
    pk_show     VARCHAR(36) NOT NULL,
    pk_instance UUID        NULL,
    int_version INT         NOT NULL,
    ts_booked   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS i_pending_launch_show ON stagehand.pending_launch (pk_show);

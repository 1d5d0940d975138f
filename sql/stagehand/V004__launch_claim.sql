-- =============================================================================
-- stagehand's own schema, migration V004: who may act on a pending launch.
--
-- V003's sweep undid the pending bookings of an instance that had stopped
-- heartbeating. An instance that is only frozen (SIGSTOP, a VM paused, a long
-- GC-like stall) wakes up with those bookings still in its launch queue and
-- would launch frames that were already undone and booked again elsewhere: the
-- frame runs twice. So each row now has exactly one actor at a time:
--
--   * the launcher claims the row (ts_launch = now()) right before it calls
--     RQD, unless the row was swept;
--   * the sweeper takes the row (b_swept, pk_instance = the sweeper) only if no
--     launcher claim is younger than a launch can take.
--
-- Both are single-row UPDATEs whose conditions PostgreSQL re-checks on the
-- latest row version after a lock wait, so exactly one of them wins. A
-- launcher that finds its row swept drops the task: the sweeper kills and
-- undoes it. A sweeper that dies leaves its rows under its own pk_instance, so
-- they are swept again once its heartbeat is stale.
-- =============================================================================

ALTER TABLE stagehand.pending_launch ADD COLUMN IF NOT EXISTS ts_launch TIMESTAMPTZ NULL;
ALTER TABLE stagehand.pending_launch ADD COLUMN IF NOT EXISTS b_swept BOOLEAN NOT NULL DEFAULT false;

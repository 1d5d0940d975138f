-- =============================================================================
-- stagehand's own schema, migration V006: a frame with a launch unresolved is
-- not booked again.
--
-- Between a booking's COMMIT and RQD starting the frame, Cuebot may stop the
-- frame (an operator's retry or eat, a job kill): its kill reaches RQD before
-- the launch did, finds nothing and answers OK, and the frame goes back to
-- WAITING. Booked again at once, it would start twice when the first launch
-- lands. So the booking's frame update skips a frame that still has a
-- pending_launch row, and the launcher forgets a row only once it knows the
-- frame is still the booking's (its version unchanged) or RQD confirmed a kill
-- of the stale start. This index serves that test, once per booked frame.
--
-- A row also keeps its host: once Cuebot released the proc, the kill that
-- must come before the row goes has nothing else to find the host by.
-- =============================================================================

CREATE INDEX IF NOT EXISTS i_pending_launch_frame ON stagehand.pending_launch (pk_frame);
ALTER TABLE stagehand.pending_launch ADD COLUMN IF NOT EXISTS pk_host VARCHAR(36) NULL;

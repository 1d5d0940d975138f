-- =============================================================================
-- stagehand's own schema, migration V005: live application licenses.
--
-- One row per license: the latest sample of the license provider ([licenses]
-- provider), written by whichever instance polled last (a sample never replaces
-- a newer one). The booking transaction locks the rows of the licenses its
-- frames need FOR UPDATE, in name order, after the limit_record rows and
-- before the cap rows, and only then counts in a new statement the farm's own
-- starts of licensed layers since ts_queried: two batches (of this instance or
-- another) cannot both spend the last seat.
--
--   str_hosts    hosts holding a seat of a host-based license at ts_queried;
--                NULL when the provider reports counts only.
--   ts_queried   the provider's queried_at: starts after it are not in the sample.
--   ts_received  when the sample was stored: a row older than [licenses]
--                stale_after holds its layers.
-- =============================================================================

CREATE TABLE IF NOT EXISTS stagehand.license (
    str_name      TEXT PRIMARY KEY,
    int_total     BIGINT NOT NULL,
    int_available BIGINT NOT NULL,
    b_host_based  BOOLEAN NOT NULL DEFAULT false,
    str_hosts     TEXT[] NULL,
    ts_queried    TIMESTAMPTZ NOT NULL,
    ts_received   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- =============================================================================
-- stagehand's own schema, migration V002: host reservations for wide frames.
--
-- A frame that cannot fit anywhere because small frames keep taking the
-- cores freed on every host (a 64-core frame in a flood of 1-core frames)
-- reserves one host here (EASY backfill). Until the frame books or the
-- reservation expires, a booking on that host by any other frame must either
-- leave the reserved resources idle or be expected to finish before
-- ts_shadow, the time the host was expected to free enough for the frame.
-- Every instance's booking transaction checks this table under the host row
-- lock, so the rule holds across instances and against stale host indexes.
--
-- Units follow Cuebot: cores x100, memory in KB.
-- =============================================================================

CREATE TABLE IF NOT EXISTS stagehand.host_reservation (
    pk_host     VARCHAR(36) PRIMARY KEY REFERENCES public.host (pk_host) ON DELETE CASCADE,
    pk_frame    VARCHAR(36) NOT NULL UNIQUE REFERENCES public.frame (pk_frame) ON DELETE CASCADE,
    pk_layer    VARCHAR(36) NOT NULL,
    pk_show     VARCHAR(36) NOT NULL,
    pk_instance UUID        NULL,
    int_cores   BIGINT      NOT NULL,
    int_mem     BIGINT      NOT NULL,
    int_gpus    BIGINT      NOT NULL DEFAULT 0,
    int_gpu_mem BIGINT      NOT NULL DEFAULT 0,
    ts_created  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ts_shadow   TIMESTAMPTZ NOT NULL,
    ts_expires  TIMESTAMPTZ NOT NULL
);

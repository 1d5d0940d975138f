-- =============================================================================
-- stagehand: OpenCue-compatible schema, part 1 of 3 -- tables and their keys.
--
-- What this is
--   The subset of Cuebot's PostgreSQL schema that stagehand (and the Cuebot
--   triggers kept in 002_functions_triggers.sql) read and write, as it stands
--   after Cuebot's Flyway migrations V1 .. V47
--   (cuebot/src/main/resources/conf/ddl/postgres/migrations/).
--   Table names, column names, column order, types, NOT NULL, defaults,
--   primary keys, unique constraints/indexes and foreign keys follow Cuebot,
--   including constraint and index names.
--
-- When it is applied
--   ONLY to databases that do not have Cuebot's schema: integration tests,
--   benchmarks and the demo. A real Cuebot database is never touched by these
--   files (stagehand checks for public.frame and skips them).
--
-- Idempotent: every statement can run again on a database that already has
-- it without error and without changing anything (CREATE ... IF NOT EXISTS,
-- constraints declared inline so they are created with their table).
-- Everything lives in the public schema, as in Cuebot.
--
-- Where each part comes from
--   V1   Initial_schema: every table below except show_stats, limit_record,
--        layer_limit and frame_state_display_overrides; all keys and FKs.
--   V2   limit_record, layer_limit (Cuebot gives them no primary key and no FK).
--   V3   show.str_name, job.str_show widened to VARCHAR(512).
--   V4   job.str_os nullable, no default.         V5  *_env.str_key VARCHAR(2048).
--   V6   job.int_uid nullable, no default.        V7  layer.int_timeout(_llu), frame.ts_llu.
--   V8   host.str_name, host_tag.str_tag VARCHAR(45).
--   V9/V10 proc virt and *_mem / *_resource rss/vss columns BIGINT.
--   V11  multiple GPU: int_gpu* renames and new int_gpus* columns everywhere.
--   V14  proc.bytea_children.                    V16 show_stats (show counters moved there).
--   V26  frame_state_display_overrides.          V29 proc.int_swap_used.
--   V30  layer_output.ser_order SERIAL.          V31 host_stat.str_os VARCHAR(32).
--   V34  job.str_loki_url.                       V37 *_pss columns (nullable, default 0).
--   V41  frame/layer/job.ts_eligible.            V43 layer_stat.ts_started/ts_stopped.
--   V45  show.b_scheduler_managed.               V47 layer.ts_start_after, str_start_after_reason.
--
-- Rows Cuebot creates with triggers (see 002) -- a seeder must NOT insert them:
--   INSERT folder -> folder_level, folder_resource           (after_insert_folder)
--   INSERT job    -> job_stat, job_resource, job_usage, job_mem, job_history
--                                                            (after_insert_job)
--   INSERT layer  -> layer_stat, layer_resource, layer_usage, layer_mem,
--                    layer_history                           (after_insert_layer)
--   Their keys equal the parent key (pk_job_stat = pk_job, ...). Adjust them
--   with UPDATE (e.g. job_resource.int_max_cores, folder_resource.int_max_cores).
-- Rows Cuebot inserts from Java -- a seeder MUST insert them itself:
--   facility, dept, show + show_stats, alloc, subscription, point, folder,
--   host + host_stat, host_tag, job, job_env, layer, layer_env, limit_record,
--   layer_limit, frame, proc.
--   Frames are inserted in state SETUP and then moved to WAITING with
--   UPDATE frame SET str_state='WAITING' WHERE pk_job=$1 AND str_state='SETUP'.
--   No trigger counts frames on insert or on leaving SETUP: Cuebot's Java
--   (JobDaoJdbc.activateJob) then sets layer_stat.int_waiting_count /
--   int_depend_count / int_total_count, job_stat.int_waiting_count /
--   int_depend_count, job.int_frame_count / int_layer_count and
--   show_stats.int_frame_insert_count / int_job_insert_count explicitly.
--
-- Deviations from Cuebot
--   * frame_history.pk_frame_history defaults to gen_random_uuid() (core
--     PostgreSQL >= 13) instead of uuid_generate_v1(), so the uuid-ossp
--     extension is not required. Same type, VARCHAR(36).
--   * Only the tables listed here. Cuebot also has action, filter, matcher,
--     service, show_service, show_alias, owner, host_local, task, task_lock,
--     redirect, history_period(_bak), duplicate_cursors and
--     uncommitted_transactions(_bak); neither the scheduler nor the triggers
--     kept in 002 touch them.
--   * (Placement only) Unique indexes that are not constraints in Cuebot (i_job_stat_pk_job,
--     i_layer_stat_pk_layer, ...) are created here next to their table; the
--     plain (non-unique) indexes are in 003.
-- =============================================================================

-- ----------------------------------------------------------------------------
-- Configuration (V1). Read by the history triggers (str_key = 'DISABLE_HISTORY').
-- ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.config (
    pk_config   VARCHAR(36)  NOT NULL,
    str_key     VARCHAR(36)  NOT NULL,
    int_value   BIGINT       DEFAULT 0,
    long_value  BIGINT       DEFAULT 0,
    str_value   VARCHAR(255) DEFAULT '',
    b_value     BOOLEAN      DEFAULT false,
    CONSTRAINT c_pk_pkconfig PRIMARY KEY (pk_config),
    CONSTRAINT c_show_uk UNIQUE (str_key)
);

-- ----------------------------------------------------------------------------
-- Facilities, departments, shows (V1, V3, V11, V16, V45).
-- ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.facility (
    pk_facility VARCHAR(36) NOT NULL,
    str_name    VARCHAR(36) NOT NULL,
    b_default   BOOLEAN     NOT NULL DEFAULT false,
    CONSTRAINT c_facility_pk PRIMARY KEY (pk_facility)
);

CREATE TABLE IF NOT EXISTS public.dept (
    pk_dept     VARCHAR(36) NOT NULL,
    str_name    VARCHAR(36) NOT NULL,
    b_default   BOOLEAN     NOT NULL DEFAULT false,
    CONSTRAINT c_dept_pk PRIMARY KEY (pk_dept)
);

-- The V1 counters int_frame_insert_count .. int_frame_fail_count were moved to
-- show_stats and dropped from show by V16.
CREATE TABLE IF NOT EXISTS public.show (
    pk_show                 VARCHAR(36)   NOT NULL,
    str_name                VARCHAR(512)  NOT NULL,
    b_paused                BOOLEAN       NOT NULL DEFAULT false,
    int_default_min_cores   INT           NOT NULL DEFAULT 100,
    int_default_max_cores   INT           NOT NULL DEFAULT 10000,
    b_booking_enabled       BOOLEAN       NOT NULL DEFAULT true,
    b_dispatch_enabled      BOOLEAN       NOT NULL DEFAULT true,
    b_active                BOOLEAN       NOT NULL DEFAULT true,
    str_comment_email       VARCHAR(1024),
    int_default_min_gpus    INT           NOT NULL DEFAULT 100,
    int_default_max_gpus    INT           NOT NULL DEFAULT 100000,
    b_scheduler_managed     BOOLEAN       NOT NULL DEFAULT false,
    CONSTRAINT c_show_pk PRIMARY KEY (pk_show)
);

-- V16. No foreign key to show in Cuebot.
CREATE TABLE IF NOT EXISTS public.show_stats (
    pk_show                 VARCHAR(36) NOT NULL,
    int_frame_insert_count  BIGINT      NOT NULL DEFAULT 0,
    int_job_insert_count    BIGINT      NOT NULL DEFAULT 0,
    int_frame_success_count BIGINT      NOT NULL DEFAULT 0,
    int_frame_fail_count    BIGINT      NOT NULL DEFAULT 0,
    CONSTRAINT c_show_stats_pk PRIMARY KEY (pk_show)
);

-- ----------------------------------------------------------------------------
-- Allocations and subscriptions (V1, V11).
-- ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.alloc (
    pk_alloc     VARCHAR(36) NOT NULL,
    str_name     VARCHAR(36) NOT NULL,
    b_allow_edit BOOLEAN     NOT NULL DEFAULT true,
    b_default    BOOLEAN     NOT NULL DEFAULT false,
    str_tag      VARCHAR(24),
    b_billable   BOOLEAN     NOT NULL DEFAULT true,
    pk_facility  VARCHAR(36) NOT NULL,
    b_enabled    BOOLEAN     DEFAULT true,
    CONSTRAINT c_alloc_pk PRIMARY KEY (pk_alloc),
    CONSTRAINT c_alloc_name_uniq UNIQUE (str_name),
    CONSTRAINT c_alloc_pk_facility FOREIGN KEY (pk_facility) REFERENCES public.facility (pk_facility)
);

-- int_burst is BIGINT but int_cores is INT, as in Cuebot.
CREATE TABLE IF NOT EXISTS public.subscription (
    pk_subscription VARCHAR(36)   NOT NULL,
    pk_alloc        VARCHAR(36)   NOT NULL,
    pk_show         VARCHAR(36)   NOT NULL,
    int_size        BIGINT        NOT NULL DEFAULT 0,
    int_burst       BIGINT        NOT NULL DEFAULT 0,
    int_cores       INT           NOT NULL DEFAULT 0,
    float_tier      NUMERIC(16,2) NOT NULL DEFAULT 0,
    int_gpus        INT           NOT NULL DEFAULT 0,
    CONSTRAINT c_subscription_pk PRIMARY KEY (pk_subscription),
    CONSTRAINT c_subscription_uk UNIQUE (pk_show, pk_alloc),
    CONSTRAINT c_subscription_pk_alloc FOREIGN KEY (pk_alloc) REFERENCES public.alloc (pk_alloc),
    CONSTRAINT c_subscription_pk_show FOREIGN KEY (pk_show) REFERENCES public.show (pk_show)
);

-- ----------------------------------------------------------------------------
-- Folders ("groups") and points (V1, V11).
-- ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.folder (
    pk_folder         VARCHAR(36) NOT NULL,
    pk_parent_folder  VARCHAR(36),
    pk_show           VARCHAR(36) NOT NULL,
    str_name          VARCHAR(36) NOT NULL,
    int_priority      BIGINT      NOT NULL DEFAULT 1,
    b_default         BOOLEAN     NOT NULL DEFAULT false,
    pk_dept           VARCHAR(36) NOT NULL,
    int_job_min_cores INT         NOT NULL DEFAULT -1,
    int_job_max_cores INT         NOT NULL DEFAULT -1,
    int_job_priority  INT         NOT NULL DEFAULT -1,
    int_min_cores     INT         NOT NULL DEFAULT 0,
    int_max_cores     INT         NOT NULL DEFAULT -1,
    b_exclude_managed BOOLEAN     NOT NULL DEFAULT false,
    f_order           INT         NOT NULL DEFAULT 0,
    int_job_min_gpus  INT         NOT NULL DEFAULT -1,
    int_job_max_gpus  INT         NOT NULL DEFAULT -1,
    int_min_gpus      INT         NOT NULL DEFAULT 0,
    int_max_gpus      INT         NOT NULL DEFAULT -1,
    CONSTRAINT c_folder_pk PRIMARY KEY (pk_folder),
    CONSTRAINT c_folder_uk UNIQUE (pk_parent_folder, str_name),
    CONSTRAINT c_folder_pk_show FOREIGN KEY (pk_show) REFERENCES public.show (pk_show),
    CONSTRAINT c_folder_pk_dept FOREIGN KEY (pk_dept) REFERENCES public.dept (pk_dept)
);

-- One row per folder, written by the after_insert_folder trigger.
CREATE TABLE IF NOT EXISTS public.folder_level (
    pk_folder_level VARCHAR(36) NOT NULL,
    pk_folder       VARCHAR(36) NOT NULL,
    int_level       BIGINT      NOT NULL DEFAULT 0,
    CONSTRAINT c_folder_level_pk PRIMARY KEY (pk_folder_level),
    CONSTRAINT c_folder_level_uk UNIQUE (pk_folder),
    CONSTRAINT c_folder_level_pk_folder FOREIGN KEY (pk_folder) REFERENCES public.folder (pk_folder)
);

-- One row per folder, written by the after_insert_folder trigger.
-- int_max_cores / int_max_gpus of -1 (the default) mean "no limit"; Cuebot's
-- dispatch reads any other value as a cap, 0 included.
CREATE TABLE IF NOT EXISTS public.folder_resource (
    pk_folder_resource VARCHAR(36)   NOT NULL,
    pk_folder          VARCHAR(36)   NOT NULL,
    int_cores          INT           NOT NULL DEFAULT 0,
    int_max_cores      INT           NOT NULL DEFAULT -1,
    int_min_cores      INT           NOT NULL DEFAULT 0,
    float_tier         NUMERIC(16,2) NOT NULL DEFAULT 0,
    int_gpus           INT           NOT NULL DEFAULT 0,
    int_max_gpus       INT           NOT NULL DEFAULT -1,
    int_min_gpus       INT           NOT NULL DEFAULT 0,
    CONSTRAINT c_folder_resource_pk PRIMARY KEY (pk_folder_resource),
    CONSTRAINT c_folder_resource_pk_folder FOREIGN KEY (pk_folder) REFERENCES public.folder (pk_folder)
);

CREATE TABLE IF NOT EXISTS public.point (
    pk_point      VARCHAR(36)   NOT NULL,
    pk_dept       VARCHAR(36)   NOT NULL,
    pk_show       VARCHAR(36)   NOT NULL,
    str_ti_task   VARCHAR(36),
    int_cores     INT           NOT NULL DEFAULT 0,
    b_managed     BOOLEAN       NOT NULL DEFAULT false,
    int_min_cores INT           NOT NULL DEFAULT 0,
    float_tier    NUMERIC(16,2) NOT NULL DEFAULT 0,
    ts_updated    TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    int_gpus      INT           NOT NULL DEFAULT 0,
    int_min_gpus  INT           NOT NULL DEFAULT 0,
    CONSTRAINT c_point_pk PRIMARY KEY (pk_point),
    CONSTRAINT c_point_pk_show_dept UNIQUE (pk_show, pk_dept),
    CONSTRAINT c_point_pk_dept FOREIGN KEY (pk_dept) REFERENCES public.dept (pk_dept),
    CONSTRAINT c_point_pk_show FOREIGN KEY (pk_show) REFERENCES public.show (pk_show)
);

-- ----------------------------------------------------------------------------
-- Hosts (V1, V8, V11, V31).
-- Cores in centicores (x100); memory and GPU memory in KB.
-- ----------------------------------------------------------------------------
-- host.ts_created is TIMESTAMP WITHOUT time zone in Cuebot (unlike most).
CREATE TABLE IF NOT EXISTS public.host (
    pk_host          VARCHAR(36)  NOT NULL,
    pk_alloc         VARCHAR(36)  NOT NULL,
    str_name         VARCHAR(45)  NOT NULL,
    str_lock_state   VARCHAR(36)  NOT NULL,
    b_nimby          BOOLEAN      NOT NULL DEFAULT false,
    ts_created       TIMESTAMP(6) NOT NULL DEFAULT current_timestamp,
    int_cores        BIGINT       NOT NULL DEFAULT 0,
    int_procs        BIGINT       NOT NULL DEFAULT 0,
    int_cores_idle   BIGINT       NOT NULL DEFAULT 0,
    int_mem          BIGINT       NOT NULL DEFAULT 0,
    int_mem_idle     BIGINT       NOT NULL DEFAULT 0,
    b_unlock_boot    BOOLEAN      NOT NULL DEFAULT false,
    b_unlock_idle    BOOLEAN      NOT NULL DEFAULT false,
    b_reboot_idle    BOOLEAN      NOT NULL DEFAULT false,
    str_tags         VARCHAR(128),
    str_fqdn         VARCHAR(128),
    b_comment        BOOLEAN      NOT NULL DEFAULT false,
    int_thread_mode  INT          NOT NULL DEFAULT 0,
    str_lock_source  VARCHAR(128),
    int_gpu_mem      BIGINT       NOT NULL DEFAULT 0,
    int_gpu_mem_idle BIGINT       NOT NULL DEFAULT 0,
    int_gpus         BIGINT       NOT NULL DEFAULT 0,
    int_gpus_idle    BIGINT       NOT NULL DEFAULT 0,
    CONSTRAINT c_host_pk PRIMARY KEY (pk_host),
    CONSTRAINT c_host_uk UNIQUE (str_name),
    CONSTRAINT c_str_host_fqdn_uk UNIQUE (str_fqdn),
    CONSTRAINT c_host_pk_alloc FOREIGN KEY (pk_alloc) REFERENCES public.alloc (pk_alloc)
);

CREATE TABLE IF NOT EXISTS public.host_stat (
    pk_host_stat      VARCHAR(36) NOT NULL,
    pk_host           VARCHAR(36) NOT NULL,
    int_mem_total     BIGINT      NOT NULL DEFAULT 0,
    int_mem_free      BIGINT      NOT NULL DEFAULT 0,
    int_swap_total    BIGINT      NOT NULL DEFAULT 0,
    int_swap_free     BIGINT      NOT NULL DEFAULT 0,
    int_mcp_total     BIGINT      NOT NULL DEFAULT 0,
    int_mcp_free      BIGINT      NOT NULL DEFAULT 0,
    int_load          BIGINT      NOT NULL DEFAULT 0,
    ts_ping           TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    ts_booted         TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    str_state         VARCHAR(32) NOT NULL DEFAULT 'UP',
    str_os            VARCHAR(32) NOT NULL DEFAULT 'rhel40',
    int_gpu_mem_total BIGINT      NOT NULL DEFAULT 0,
    int_gpu_mem_free  BIGINT      NOT NULL DEFAULT 0,
    CONSTRAINT c_hoststat_pk PRIMARY KEY (pk_host_stat),
    CONSTRAINT c_host_stat_pk_host_uk UNIQUE (pk_host),
    CONSTRAINT c_host_stat_pk_host FOREIGN KEY (pk_host) REFERENCES public.host (pk_host)
);

-- No foreign key to host in Cuebot. The column default 'Hardware' is mixed
-- case; Cuebot's Java always writes the upper-case enum names
-- (MANUAL, HARDWARE, ALLOC, HOSTNAME).
CREATE TABLE IF NOT EXISTS public.host_tag (
    pk_host_tag  VARCHAR(36) NOT NULL,
    pk_host      VARCHAR(36) NOT NULL,
    str_tag      VARCHAR(45) NOT NULL,
    str_tag_type VARCHAR(24) NOT NULL DEFAULT 'Hardware',
    b_constant   BOOLEAN     NOT NULL DEFAULT false,
    CONSTRAINT c_host_tag_pk PRIMARY KEY (pk_host_tag)
);

-- Kept because the before_delete_host trigger deletes from it.
CREATE TABLE IF NOT EXISTS public.deed (
    pk_deed            VARCHAR(36) NOT NULL,
    pk_owner           VARCHAR(36) NOT NULL,
    pk_host            VARCHAR(36) NOT NULL,
    b_blackout         BOOLEAN     NOT NULL DEFAULT false,
    int_blackout_start INT,
    int_blackout_stop  INT,
    CONSTRAINT c_pk_deed PRIMARY KEY (pk_deed),
    CONSTRAINT c_deed_pk_host FOREIGN KEY (pk_host) REFERENCES public.host (pk_host)
);
CREATE UNIQUE INDEX IF NOT EXISTS i_deed_pk_host ON public.deed (pk_host);

-- ----------------------------------------------------------------------------
-- Limits (V2). Cuebot declares neither primary keys nor foreign keys here,
-- only plain indexes (V12, in 003).
-- ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.limit_record (
    pk_limit_record VARCHAR(36)  NOT NULL,
    str_name        VARCHAR(255) NOT NULL,
    int_max_value   INT,
    b_host_limit    BOOLEAN      NOT NULL DEFAULT false
);

-- ----------------------------------------------------------------------------
-- Jobs (V1, V3, V4, V6, V10, V11, V34, V37, V41).
-- ----------------------------------------------------------------------------
-- str_visible_name is unique (c_job_uk); Cuebot sets it to NULL when a job
-- finishes so the name can be reused.
CREATE TABLE IF NOT EXISTS public.job (
    pk_job           VARCHAR(36)   NOT NULL,
    pk_folder        VARCHAR(36)   NOT NULL,
    pk_show          VARCHAR(36)   NOT NULL,
    str_name         VARCHAR(255)  NOT NULL,
    str_visible_name VARCHAR(255),
    str_shot         VARCHAR(64)   NOT NULL,
    str_user         VARCHAR(32)   NOT NULL,
    str_state        VARCHAR(16)   NOT NULL,
    str_log_dir      VARCHAR(4000) NOT NULL DEFAULT '',
    int_uid          BIGINT,
    b_paused         BOOLEAN       NOT NULL DEFAULT false,
    b_autoeat        BOOLEAN       NOT NULL DEFAULT false,
    int_frame_count  INT           NOT NULL DEFAULT 0,
    int_layer_count  INT           NOT NULL DEFAULT 0,
    int_max_retries  SMALLINT      NOT NULL DEFAULT 3,
    b_auto_book      BOOLEAN       NOT NULL DEFAULT true,
    b_auto_unbook    BOOLEAN       NOT NULL DEFAULT true,
    b_comment        BOOLEAN       NOT NULL DEFAULT false,
    str_email        VARCHAR(256),
    pk_facility      VARCHAR(36)   NOT NULL,
    pk_dept          VARCHAR(36)   NOT NULL,
    ts_started       TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    ts_stopped       TIMESTAMP(6) WITH TIME ZONE,
    int_min_cores    INT           NOT NULL DEFAULT 100,
    int_max_cores    INT           NOT NULL DEFAULT 20000,
    str_show         VARCHAR(512)  NOT NULL DEFAULT 'none',
    ts_updated       TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    str_os           VARCHAR(12),
    int_min_gpus     INT           NOT NULL DEFAULT 0,
    int_max_gpus     INT           NOT NULL DEFAULT 100000,
    str_loki_url     VARCHAR(256),
    ts_eligible      TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    CONSTRAINT c_job_pk PRIMARY KEY (pk_job),
    CONSTRAINT c_job_uk UNIQUE (str_visible_name),
    CONSTRAINT c_job_pk_show FOREIGN KEY (pk_show) REFERENCES public.show (pk_show),
    CONSTRAINT c_job_pk_folder FOREIGN KEY (pk_folder) REFERENCES public.folder (pk_folder),
    CONSTRAINT c_job_pk_facility FOREIGN KEY (pk_facility) REFERENCES public.facility (pk_facility),
    CONSTRAINT c_job_pk_dept FOREIGN KEY (pk_dept) REFERENCES public.dept (pk_dept)
);

-- Written by after_insert_job (pk_job_stat = pk_job). Counters are per frame
-- state; there is no int_setup_count and, unlike layer_stat, no int_total_count.
CREATE TABLE IF NOT EXISTS public.job_stat (
    pk_job_stat          VARCHAR(36) NOT NULL,
    pk_job               VARCHAR(36) NOT NULL,
    int_waiting_count    BIGINT      NOT NULL DEFAULT 0,
    int_running_count    BIGINT      NOT NULL DEFAULT 0,
    int_dead_count       BIGINT      NOT NULL DEFAULT 0,
    int_depend_count     BIGINT      NOT NULL DEFAULT 0,
    int_eaten_count      BIGINT      NOT NULL DEFAULT 0,
    int_succeeded_count  BIGINT      NOT NULL DEFAULT 0,
    int_checkpoint_count BIGINT      NOT NULL DEFAULT 0,
    CONSTRAINT c_job_stat_pk PRIMARY KEY (pk_job_stat),
    CONSTRAINT c_job_stat_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);
-- Cuebot makes pk_job unique with a unique index, not a constraint.
CREATE UNIQUE INDEX IF NOT EXISTS i_job_stat_pk_job ON public.job_stat (pk_job);

-- Written by after_insert_job (pk_job_resource = pk_job) with the defaults
-- below (int_max_cores 10000, int_max_gpus 100, int_priority 1).
CREATE TABLE IF NOT EXISTS public.job_resource (
    pk_job_resource VARCHAR(36)   NOT NULL,
    pk_job          VARCHAR(36)   NOT NULL,
    int_cores       BIGINT        NOT NULL DEFAULT 0,
    int_max_rss     BIGINT        NOT NULL DEFAULT 0,
    int_max_vss     BIGINT        NOT NULL DEFAULT 0,
    int_min_cores   INT           NOT NULL DEFAULT 100,
    int_max_cores   INT           NOT NULL DEFAULT 10000,
    float_tier      NUMERIC(16,2) NOT NULL DEFAULT 0,
    int_priority    INT           NOT NULL DEFAULT 1,
    int_local_cores INT           NOT NULL DEFAULT 0,
    int_gpus        INT           NOT NULL DEFAULT 0,
    int_min_gpus    INT           NOT NULL DEFAULT 0,
    int_max_gpus    INT           NOT NULL DEFAULT 100,
    int_local_gpus  INT           NOT NULL DEFAULT 0,
    int_gpu_mem_max BIGINT        NOT NULL DEFAULT 0,
    int_max_pss     BIGINT        DEFAULT 0,
    CONSTRAINT c_job_resource_pk PRIMARY KEY (pk_job_resource),
    CONSTRAINT c_job_resource_uk UNIQUE (pk_job),
    CONSTRAINT c_job_resource_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);

-- Written by after_insert_job.
CREATE TABLE IF NOT EXISTS public.job_usage (
    pk_job_usage            VARCHAR(36) NOT NULL,
    pk_job                  VARCHAR(36) NOT NULL,
    int_core_time_success   BIGINT      NOT NULL DEFAULT 0,
    int_core_time_fail      BIGINT      NOT NULL DEFAULT 0,
    int_frame_success_count INT         NOT NULL DEFAULT 0,
    int_frame_fail_count    INT         NOT NULL DEFAULT 0,
    int_clock_time_fail     INT         NOT NULL DEFAULT 0,
    int_clock_time_high     INT         NOT NULL DEFAULT 0,
    int_clock_time_success  INT         NOT NULL DEFAULT 0,
    int_gpu_time_success    BIGINT      NOT NULL DEFAULT 0,
    int_gpu_time_fail       BIGINT      NOT NULL DEFAULT 0,
    CONSTRAINT c_job_usage_pk PRIMARY KEY (pk_job_usage),
    CONSTRAINT c_job_usage_pk_job_uniq UNIQUE (pk_job),
    CONSTRAINT c_job_usage_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);

-- Written by after_insert_job.
CREATE TABLE IF NOT EXISTS public.job_mem (
    pk_job_mem      VARCHAR(36) NOT NULL,
    pk_job          VARCHAR(36) NOT NULL,
    int_max_rss     BIGINT      NOT NULL DEFAULT 0,
    int_max_vss     BIGINT      NOT NULL DEFAULT 0,
    int_gpu_mem_max BIGINT      NOT NULL DEFAULT 0,
    int_max_pss     BIGINT      DEFAULT 0,
    CONSTRAINT c_job_mem_pk PRIMARY KEY (pk_job_mem),
    CONSTRAINT c_job_mem_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);
CREATE UNIQUE INDEX IF NOT EXISTS i_job_mem_pk_job ON public.job_mem (pk_job);

CREATE TABLE IF NOT EXISTS public.job_env (
    pk_job_env VARCHAR(36)   NOT NULL,
    pk_job     VARCHAR(36),
    str_key    VARCHAR(2048),
    str_value  VARCHAR(2048),
    CONSTRAINT c_job_env_pk PRIMARY KEY (pk_job_env),
    CONSTRAINT c_job_env_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);

-- Kept because before_delete_job deletes from it.
CREATE TABLE IF NOT EXISTS public.job_post (
    pk_job_post VARCHAR(36) NOT NULL,
    pk_job      VARCHAR(36) NOT NULL,
    pk_post_job VARCHAR(36) NOT NULL,
    CONSTRAINT c_job_post_pk PRIMARY KEY (pk_job_post),
    CONSTRAINT c_job_post_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job),
    CONSTRAINT c_job_post_pk_post_job FOREIGN KEY (pk_post_job) REFERENCES public.job (pk_job)
);

-- Kept because after_job_finished deletes from it.
CREATE TABLE IF NOT EXISTS public.job_local (
    pk_job_local  VARCHAR(36)  NOT NULL,
    pk_job        VARCHAR(36)  NOT NULL,
    pk_host       VARCHAR(36)  NOT NULL,
    str_source    VARCHAR(255) NOT NULL,
    ts_created    TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    int_cores     INT          NOT NULL DEFAULT 0,
    int_max_cores INT          NOT NULL,
    int_gpus      INT          NOT NULL DEFAULT 0,
    int_max_gpus  INT          NOT NULL DEFAULT 0,
    CONSTRAINT c_pk_job_local PRIMARY KEY (pk_job_local),
    CONSTRAINT c_job_local_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job),
    CONSTRAINT c_job_local_pk_host FOREIGN KEY (pk_host) REFERENCES public.host (pk_host)
);
CREATE UNIQUE INDEX IF NOT EXISTS i_job_local_pk_job ON public.job_local (pk_job);
CREATE UNIQUE INDEX IF NOT EXISTS i_job_local_pk_host ON public.job_local (pk_host);

-- Kept because before_delete_job deletes from it.
CREATE TABLE IF NOT EXISTS public.comments (
    pk_comment  VARCHAR(36)   NOT NULL,
    pk_job      VARCHAR(36),
    pk_host     VARCHAR(36),
    ts_created  TIMESTAMP(6)  NOT NULL DEFAULT current_timestamp,
    str_user    VARCHAR(36)   NOT NULL,
    str_subject VARCHAR(128)  NOT NULL,
    str_message VARCHAR(4000) NOT NULL,
    CONSTRAINT c_comment_pk PRIMARY KEY (pk_comment),
    CONSTRAINT c_comment_pk_host FOREIGN KEY (pk_host) REFERENCES public.host (pk_host),
    CONSTRAINT c_comment_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);

-- Written by after_insert_job unless config has DISABLE_HISTORY.
-- dt_last_modified has no default: the tbiu_job_history trigger sets it.
CREATE TABLE IF NOT EXISTS public.job_history (
    pk_job                VARCHAR(36)  NOT NULL,
    pk_show               VARCHAR(36)  NOT NULL,
    str_name              VARCHAR(512) NOT NULL,
    str_shot              VARCHAR(64)  NOT NULL,
    str_user              VARCHAR(36)  NOT NULL,
    int_core_time_success BIGINT       NOT NULL DEFAULT 0,
    int_core_time_fail    BIGINT       NOT NULL DEFAULT 0,
    int_frame_count       BIGINT       NOT NULL DEFAULT 0,
    int_layer_count       BIGINT       NOT NULL DEFAULT 0,
    int_waiting_count     BIGINT       NOT NULL DEFAULT 0,
    int_dead_count        BIGINT       NOT NULL DEFAULT 0,
    int_depend_count      BIGINT       NOT NULL DEFAULT 0,
    int_eaten_count       BIGINT       NOT NULL DEFAULT 0,
    int_succeeded_count   BIGINT       NOT NULL DEFAULT 0,
    int_running_count     BIGINT       NOT NULL DEFAULT 0,
    int_max_rss           BIGINT       NOT NULL DEFAULT 0,
    b_archived            BOOLEAN      NOT NULL DEFAULT false,
    pk_facility           VARCHAR(36)  NOT NULL,
    pk_dept               VARCHAR(36)  NOT NULL,
    int_ts_started        INT          NOT NULL,
    int_ts_stopped        INT          NOT NULL DEFAULT 0,
    dt_last_modified      DATE         NOT NULL,
    int_gpu_time_success  BIGINT       NOT NULL DEFAULT 0,
    int_gpu_time_fail     BIGINT       NOT NULL DEFAULT 0,
    int_gpu_mem_max       BIGINT       NOT NULL DEFAULT 0,
    CONSTRAINT c_job_history_pk PRIMARY KEY (pk_job),
    CONSTRAINT c_job_history_pk_facility FOREIGN KEY (pk_facility) REFERENCES public.facility (pk_facility),
    CONSTRAINT c_job_history_pk_dept FOREIGN KEY (pk_dept) REFERENCES public.dept (pk_dept),
    CONSTRAINT c_job_history_pk_show FOREIGN KEY (pk_show) REFERENCES public.show (pk_show)
);

-- ----------------------------------------------------------------------------
-- Layers (V1, V2, V7, V10, V11, V30, V37, V41, V43, V47).
-- ----------------------------------------------------------------------------
-- str_tags is '|'-separated (Cuebot writes " | "); str_services ','-separated.
CREATE TABLE IF NOT EXISTS public.layer (
    pk_layer               VARCHAR(36)   NOT NULL,
    pk_job                 VARCHAR(36)   NOT NULL,
    str_name               VARCHAR(256)  NOT NULL,
    str_cmd                VARCHAR(4000) NOT NULL,
    str_range              VARCHAR(4000) NOT NULL,
    int_chunk_size         BIGINT        NOT NULL DEFAULT 1,
    int_dispatch_order     BIGINT        NOT NULL DEFAULT 1,
    int_cores_min          BIGINT        NOT NULL DEFAULT 100,
    int_mem_min            BIGINT        NOT NULL DEFAULT 4194304,
    str_tags               VARCHAR(4000) NOT NULL DEFAULT '',
    str_type               VARCHAR(16)   NOT NULL,
    b_threadable           BOOLEAN       NOT NULL DEFAULT true,
    str_services           VARCHAR(128)  NOT NULL DEFAULT 'default',
    b_optimize             BOOLEAN       NOT NULL DEFAULT true,
    int_cores_max          INT           NOT NULL DEFAULT 0,
    int_gpu_mem_min        BIGINT        NOT NULL DEFAULT 0,
    int_timeout            INT           NOT NULL DEFAULT 0,
    int_timeout_llu        INT           NOT NULL DEFAULT 0,
    int_gpus_min           BIGINT        NOT NULL DEFAULT 0,
    int_gpus_max           BIGINT        NOT NULL DEFAULT 0,
    ts_eligible            TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    ts_start_after         TIMESTAMP(6) WITH TIME ZONE DEFAULT NULL,
    str_start_after_reason VARCHAR(255)  DEFAULT NULL,
    CONSTRAINT c_layer_pk PRIMARY KEY (pk_layer),
    CONSTRAINT c_layer_str_name_unq UNIQUE (str_name, pk_job),
    CONSTRAINT c_layer_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);

-- Written by after_insert_layer (pk_layer_stat = pk_layer). One counter per
-- frame state except SETUP, plus int_total_count (maintained by Java only).
CREATE TABLE IF NOT EXISTS public.layer_stat (
    pk_layer_stat        VARCHAR(36) NOT NULL,
    pk_layer             VARCHAR(36) NOT NULL,
    pk_job               VARCHAR(36) NOT NULL,
    int_total_count      BIGINT      NOT NULL DEFAULT 0,
    int_waiting_count    BIGINT      NOT NULL DEFAULT 0,
    int_running_count    BIGINT      NOT NULL DEFAULT 0,
    int_dead_count       BIGINT      NOT NULL DEFAULT 0,
    int_depend_count     BIGINT      NOT NULL DEFAULT 0,
    int_eaten_count      BIGINT      NOT NULL DEFAULT 0,
    int_succeeded_count  BIGINT      NOT NULL DEFAULT 0,
    int_checkpoint_count BIGINT      NOT NULL DEFAULT 0,
    ts_started           TIMESTAMP(6) WITH TIME ZONE,
    ts_stopped           TIMESTAMP(6) WITH TIME ZONE,
    CONSTRAINT c_layerstat_pk PRIMARY KEY (pk_layer_stat),
    CONSTRAINT c_layer_stat_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job),
    CONSTRAINT c_layer_stat_pk_layer FOREIGN KEY (pk_layer) REFERENCES public.layer (pk_layer)
);
CREATE UNIQUE INDEX IF NOT EXISTS i_layer_stat_pk_layer ON public.layer_stat (pk_layer);

-- Written by after_insert_layer (pk_layer_resource = pk_layer).
CREATE TABLE IF NOT EXISTS public.layer_resource (
    pk_layer_resource VARCHAR(36) NOT NULL,
    pk_layer          VARCHAR(36) NOT NULL,
    pk_job            VARCHAR(36) NOT NULL,
    int_cores         BIGINT      NOT NULL DEFAULT 0,
    int_max_rss       BIGINT      NOT NULL DEFAULT 0,
    int_max_vss       BIGINT      NOT NULL DEFAULT 0,
    int_gpus          INT         NOT NULL DEFAULT 0,
    int_gpu_mem_max   BIGINT      NOT NULL DEFAULT 0,
    int_max_pss       BIGINT      DEFAULT 0,
    CONSTRAINT c_layerresource_pk PRIMARY KEY (pk_layer_resource),
    CONSTRAINT c_layerresource_uk UNIQUE (pk_layer),
    CONSTRAINT c_layer_resource_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job),
    CONSTRAINT c_layer_resource_pk_layer FOREIGN KEY (pk_layer) REFERENCES public.layer (pk_layer)
);

-- Written by after_insert_layer.
CREATE TABLE IF NOT EXISTS public.layer_usage (
    pk_layer_usage          VARCHAR(36) NOT NULL,
    pk_layer                VARCHAR(36) NOT NULL,
    pk_job                  VARCHAR(36) NOT NULL,
    int_core_time_success   BIGINT      NOT NULL DEFAULT 0,
    int_core_time_fail      BIGINT      NOT NULL DEFAULT 0,
    int_frame_success_count INT         NOT NULL DEFAULT 0,
    int_frame_fail_count    INT         NOT NULL DEFAULT 0,
    int_clock_time_fail     INT         NOT NULL DEFAULT 0,
    int_clock_time_high     INT         NOT NULL DEFAULT 0,
    int_clock_time_low      INT         NOT NULL DEFAULT 0,
    int_clock_time_success  INT         NOT NULL DEFAULT 0,
    int_gpu_time_success    BIGINT      NOT NULL DEFAULT 0,
    int_gpu_time_fail       BIGINT      NOT NULL DEFAULT 0,
    CONSTRAINT c_layer_usage_pk PRIMARY KEY (pk_layer_usage),
    CONSTRAINT c_layer_usage_pk_layer_uk UNIQUE (pk_layer),
    CONSTRAINT c_layer_usage_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job),
    CONSTRAINT c_layer_usage_pk_layer FOREIGN KEY (pk_layer) REFERENCES public.layer (pk_layer)
);

-- Written by after_insert_layer.
CREATE TABLE IF NOT EXISTS public.layer_mem (
    pk_layer_mem    VARCHAR(36) NOT NULL,
    pk_job          VARCHAR(36) NOT NULL,
    pk_layer        VARCHAR(36) NOT NULL,
    int_max_rss     BIGINT      NOT NULL DEFAULT 0,
    int_max_vss     BIGINT      NOT NULL DEFAULT 0,
    int_gpu_mem_max BIGINT      NOT NULL DEFAULT 0,
    int_max_pss     BIGINT      DEFAULT 0,
    CONSTRAINT c_layer_mem_pk PRIMARY KEY (pk_layer_mem),
    CONSTRAINT c_layer_mem_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job),
    CONSTRAINT c_layer_mem_pk_layer FOREIGN KEY (pk_layer) REFERENCES public.layer (pk_layer)
);
CREATE UNIQUE INDEX IF NOT EXISTS i_layer_mem_pk_layer ON public.layer_mem (pk_layer);

CREATE TABLE IF NOT EXISTS public.layer_env (
    pk_layer_env VARCHAR(36)   NOT NULL,
    pk_layer     VARCHAR(36),
    pk_job       VARCHAR(36),
    str_key      VARCHAR(2048),
    str_value    VARCHAR(2048),
    CONSTRAINT c_layer_env_pk PRIMARY KEY (pk_layer_env),
    CONSTRAINT c_layer_env_pk_layer FOREIGN KEY (pk_layer) REFERENCES public.layer (pk_layer),
    CONSTRAINT c_layer_env_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);

-- Kept because before_delete_layer deletes from it.
CREATE TABLE IF NOT EXISTS public.layer_output (
    pk_layer_output VARCHAR(36)   NOT NULL,
    pk_layer        VARCHAR(36)   NOT NULL,
    pk_job          VARCHAR(36)   NOT NULL,
    str_filespec    VARCHAR(2048) NOT NULL,
    ser_order       SERIAL        NOT NULL,
    CONSTRAINT c_pk_layer_output PRIMARY KEY (pk_layer_output),
    CONSTRAINT c_layer_output_pk_layer FOREIGN KEY (pk_layer) REFERENCES public.layer (pk_layer),
    CONSTRAINT c_layer_output_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job)
);
CREATE UNIQUE INDEX IF NOT EXISTS i_layer_output_unique ON public.layer_output (pk_layer, str_filespec);

-- V2: no primary key, no foreign keys (only indexes, see 003).
CREATE TABLE IF NOT EXISTS public.layer_limit (
    pk_layer_limit  VARCHAR(36) NOT NULL,
    pk_layer        VARCHAR(36) NOT NULL,
    pk_limit_record VARCHAR(36) NOT NULL
);

-- Written by after_insert_layer unless config has DISABLE_HISTORY.
CREATE TABLE IF NOT EXISTS public.layer_history (
    pk_layer              VARCHAR(36)  NOT NULL,
    pk_job                VARCHAR(36)  NOT NULL,
    str_name              VARCHAR(512) NOT NULL,
    str_type              VARCHAR(16)  NOT NULL,
    int_cores_min         BIGINT       NOT NULL DEFAULT 100,
    int_mem_min           BIGINT       NOT NULL DEFAULT 4194304,
    int_core_time_success BIGINT       NOT NULL DEFAULT 0,
    int_core_time_fail    BIGINT       NOT NULL DEFAULT 0,
    int_frame_count       BIGINT       NOT NULL DEFAULT 0,
    int_layer_count       BIGINT       NOT NULL DEFAULT 0,
    int_waiting_count     BIGINT       NOT NULL DEFAULT 0,
    int_dead_count        BIGINT       NOT NULL DEFAULT 0,
    int_depend_count      BIGINT       NOT NULL DEFAULT 0,
    int_eaten_count       BIGINT       NOT NULL DEFAULT 0,
    int_succeeded_count   BIGINT       NOT NULL DEFAULT 0,
    int_running_count     BIGINT       NOT NULL DEFAULT 0,
    int_max_rss           BIGINT       NOT NULL DEFAULT 0,
    b_archived            BOOLEAN      NOT NULL DEFAULT false,
    dt_last_modified      DATE         NOT NULL,
    str_services          VARCHAR(128),
    int_gpus_min          INT          NOT NULL DEFAULT 0,
    int_gpu_time_success  BIGINT       NOT NULL DEFAULT 0,
    int_gpu_time_fail     BIGINT       NOT NULL DEFAULT 0,
    int_gpu_mem_min       BIGINT       NOT NULL DEFAULT 0,
    int_gpu_mem_max       BIGINT       NOT NULL DEFAULT 0,
    CONSTRAINT c_layer_history_pk PRIMARY KEY (pk_layer),
    CONSTRAINT c_layer_history_pk_job FOREIGN KEY (pk_job) REFERENCES public.job_history (pk_job) ON DELETE CASCADE
);

-- ----------------------------------------------------------------------------
-- Frames (V1, V7, V11, V37, V41).
-- States: SETUP, WAITING, DEPEND, RUNNING, SUCCEEDED, DEAD, EATEN, CHECKPOINT.
-- Names are NNNN-layer and unique per job (c_frame_str_name_unq).
-- Cuebot inserts int_dispatch_order = position within the layer and
-- int_layer_order = the layer's int_dispatch_order.
-- ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.frame (
    pk_frame                 VARCHAR(36)  NOT NULL,
    pk_layer                 VARCHAR(36)  NOT NULL,
    pk_job                   VARCHAR(36)  NOT NULL,
    str_name                 VARCHAR(256) NOT NULL,
    str_state                VARCHAR(24)  NOT NULL,
    int_number               BIGINT       NOT NULL,
    int_depend_count         BIGINT       NOT NULL DEFAULT 0,
    int_exit_status          BIGINT       NOT NULL DEFAULT -1,
    int_retries              BIGINT       NOT NULL DEFAULT 0,
    int_mem_reserved         BIGINT       NOT NULL DEFAULT 0,
    int_mem_max_used         BIGINT       NOT NULL DEFAULT 0,
    int_mem_used             BIGINT       NOT NULL DEFAULT 0,
    int_dispatch_order       BIGINT       NOT NULL DEFAULT 0,
    str_host                 VARCHAR(256),
    int_cores                INT          NOT NULL DEFAULT 0,
    int_layer_order          INT          NOT NULL,
    ts_started               TIMESTAMP(6) WITH TIME ZONE,
    ts_stopped               TIMESTAMP(6) WITH TIME ZONE,
    ts_last_run              TIMESTAMP(6) WITH TIME ZONE,
    ts_updated               TIMESTAMP(6) WITH TIME ZONE,
    int_version              INT          DEFAULT 0,
    str_checkpoint_state     VARCHAR(12)  NOT NULL DEFAULT 'DISABLED',
    int_checkpoint_count     SMALLINT     NOT NULL DEFAULT 0,
    int_gpu_mem_reserved     BIGINT       NOT NULL DEFAULT 0,
    int_total_past_core_time INT          NOT NULL DEFAULT 0,
    ts_llu                   TIMESTAMP(6) WITH TIME ZONE,
    int_gpu_mem_used         BIGINT       NOT NULL DEFAULT 0,
    int_gpu_mem_max_used     BIGINT       NOT NULL DEFAULT 0,
    int_gpus                 INT          NOT NULL DEFAULT 0,
    int_total_past_gpu_time  INT          NOT NULL DEFAULT 0,
    int_pss_max_used         BIGINT       DEFAULT 0,
    int_pss_used             BIGINT       DEFAULT 0,
    ts_eligible              TIMESTAMP(6) WITH TIME ZONE DEFAULT NULL,
    CONSTRAINT c_frame_pk PRIMARY KEY (pk_frame),
    CONSTRAINT c_frame_str_name_unq UNIQUE (str_name, pk_job),
    CONSTRAINT c_frame_pk_job FOREIGN KEY (pk_job) REFERENCES public.job (pk_job),
    CONSTRAINT c_frame_pk_layer FOREIGN KEY (pk_layer) REFERENCES public.layer (pk_layer)
);

-- V26. Kept because before_delete_job deletes from it. No primary key in Cuebot.
CREATE TABLE IF NOT EXISTS public.frame_state_display_overrides (
    pk_frame_override VARCHAR(36) NOT NULL,
    pk_frame          VARCHAR(36) NOT NULL,
    str_frame_state   VARCHAR(24) NOT NULL,
    str_override_text VARCHAR(24) NOT NULL,
    str_rgb           VARCHAR(24) NOT NULL,
    CONSTRAINT c_frame_state_override UNIQUE (pk_frame, str_frame_state),
    CONSTRAINT c_frame_state_overrides_pk_frame FOREIGN KEY (pk_frame) REFERENCES public.frame (pk_frame)
);

-- Written by the frame_history_open trigger (a row per run of a frame).
-- Deviation: the key default is gen_random_uuid() instead of uuid_generate_v1().
CREATE TABLE IF NOT EXISTS public.frame_history (
    pk_frame_history     VARCHAR(36)  NOT NULL DEFAULT gen_random_uuid(),
    pk_frame             VARCHAR(36)  NOT NULL,
    pk_layer             VARCHAR(36)  NOT NULL,
    pk_job               VARCHAR(36)  NOT NULL,
    str_name             VARCHAR(256) NOT NULL,
    str_state            VARCHAR(24)  NOT NULL,
    int_mem_reserved     BIGINT       NOT NULL DEFAULT 0,
    int_mem_max_used     BIGINT       NOT NULL DEFAULT 0,
    int_cores            INT          NOT NULL DEFAULT 100,
    str_host             VARCHAR(64)  DEFAULT NULL,
    int_exit_status      SMALLINT     NOT NULL DEFAULT -1,
    pk_alloc             VARCHAR(36),
    int_ts_started       INT          NOT NULL,
    int_ts_stopped       INT          NOT NULL DEFAULT 0,
    int_checkpoint_count INT          NOT NULL DEFAULT 0,
    dt_last_modified     DATE         NOT NULL,
    int_gpus             INT          NOT NULL DEFAULT 0,
    int_gpu_mem_reserved BIGINT       NOT NULL DEFAULT 0,
    int_gpu_mem_max_used BIGINT       NOT NULL DEFAULT 0,
    CONSTRAINT c_frame_history_pk PRIMARY KEY (pk_frame_history),
    CONSTRAINT c_frame_history_pk_job FOREIGN KEY (pk_job) REFERENCES public.job_history (pk_job) ON DELETE CASCADE,
    CONSTRAINT c_frame_history_pk_layer FOREIGN KEY (pk_layer) REFERENCES public.layer_history (pk_layer) ON DELETE CASCADE,
    CONSTRAINT c_frame_history_pk_alloc FOREIGN KEY (pk_alloc) REFERENCES public.alloc (pk_alloc)
);

-- ----------------------------------------------------------------------------
-- Procs: one per frame running on a host (V1, V9, V11, V14, V29, V37).
-- c_proc_uk UNIQUE (pk_frame) is what makes "nothing is booked twice" hold
-- (the scheduler inserts with ON CONFLICT (pk_frame) DO NOTHING).
-- Only pk_frame and pk_host have foreign keys in Cuebot.
-- ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.proc (
    pk_proc                  VARCHAR(36)  NOT NULL,
    pk_host                  VARCHAR(36)  NOT NULL,
    pk_job                   VARCHAR(36),
    pk_show                  VARCHAR(36),
    pk_layer                 VARCHAR(36),
    pk_frame                 VARCHAR(36),
    int_cores_reserved       BIGINT       NOT NULL,
    int_mem_reserved         BIGINT       NOT NULL,
    int_mem_used             BIGINT       NOT NULL DEFAULT 0,
    int_mem_max_used         BIGINT       NOT NULL DEFAULT 0,
    b_unbooked               BOOLEAN      NOT NULL DEFAULT false,
    int_mem_pre_reserved     BIGINT       NOT NULL DEFAULT 0,
    int_virt_used            BIGINT       NOT NULL DEFAULT 0,
    int_virt_max_used        BIGINT       NOT NULL DEFAULT 0,
    str_redirect             VARCHAR(265),
    b_local                  BOOLEAN      NOT NULL DEFAULT false,
    ts_ping                  TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    ts_booked                TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    ts_dispatched            TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT current_timestamp,
    int_gpu_mem_reserved     BIGINT       NOT NULL DEFAULT 0,
    int_gpus_reserved        INT          NOT NULL DEFAULT 0,
    int_gpu_mem_used         BIGINT       NOT NULL DEFAULT 0,
    int_gpu_mem_max_used     BIGINT       NOT NULL DEFAULT 0,
    int_gpu_mem_pre_reserved BIGINT       NOT NULL DEFAULT 0,
    bytea_children           BYTEA,
    int_swap_used            BIGINT       NOT NULL DEFAULT 0,
    int_pss_max_used         BIGINT       DEFAULT 0,
    int_pss_used             BIGINT       DEFAULT 0,
    CONSTRAINT c_proc_pk PRIMARY KEY (pk_proc),
    CONSTRAINT c_proc_uk UNIQUE (pk_frame),
    CONSTRAINT c_proc_pk_frame FOREIGN KEY (pk_frame) REFERENCES public.frame (pk_frame),
    CONSTRAINT c_proc_pk_host FOREIGN KEY (pk_host) REFERENCES public.host (pk_host)
);

-- ----------------------------------------------------------------------------
-- Dependencies (V1). Kept because before_delete_job deletes from it; the
-- frame depend counters it drives live on frame.int_depend_count.
-- No foreign keys in Cuebot.
-- ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.depend (
    pk_depend          VARCHAR(36) NOT NULL,
    pk_parent          VARCHAR(36),
    pk_job_depend_on   VARCHAR(36) NOT NULL,
    pk_job_depend_er   VARCHAR(36) NOT NULL,
    pk_frame_depend_on VARCHAR(36),
    pk_frame_depend_er VARCHAR(36),
    pk_layer_depend_on VARCHAR(36),
    pk_layer_depend_er VARCHAR(36),
    str_type           VARCHAR(36) NOT NULL,
    b_active           BOOLEAN     NOT NULL DEFAULT true,
    b_any              BOOLEAN     NOT NULL DEFAULT false,
    ts_created         TIMESTAMP(6) NOT NULL DEFAULT current_timestamp,
    ts_satisfied       TIMESTAMP(6),
    str_target         VARCHAR(20) NOT NULL DEFAULT 'Internal',
    str_signature      VARCHAR(36) NOT NULL,
    b_composite        BOOLEAN     NOT NULL DEFAULT false,
    CONSTRAINT c_depend_pk PRIMARY KEY (pk_depend)
);
CREATE UNIQUE INDEX IF NOT EXISTS i_depend_signature ON public.depend (str_signature);

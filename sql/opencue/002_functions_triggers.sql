-- =============================================================================
-- stagehand: OpenCue-compatible schema, part 2 of 3 -- functions and triggers.
--
-- What this is
--   Cuebot's helper functions, composite types and row triggers on the tables
--   of 001_tables.sql, with the behaviour they have after Cuebot's Flyway
--   migrations V1 .. V47: same trigger names (PostgreSQL fires triggers of the
--   same kind in name order, so names are part of the behaviour), same timing
--   and WHEN conditions, same function names, same effects and the same error
--   messages. The bodies are written afresh.
--
-- When it is applied
--   ONLY to databases that do not have Cuebot's schema (tests, benchmarks,
--   demo). Never run it against a Cuebot database: it would replace Cuebot's
--   own functions.
--
-- Idempotent: CREATE OR REPLACE FUNCTION / TRIGGER (PostgreSQL >= 14); the
-- composite types are created only when missing.
--
-- Where each part comes from (the last migration that defines it wins)
--   epoch                                   V28
--   tier, soft_tier                         V1
--   recalculate_subs                        V45 (skips scheduler-managed shows)
--   JobStatType                             V1 + V11 (attributes appended)
--   LayerStatType                           V33 (re-created, new attribute order)
--   frame: update_frame_wait_to_dep, update_frame_eaten,
--          update_frame_checkpoint_state    V1
--          update_frame_dep_to_wait         V41 (stamps ts_eligible)
--          set_frame_ts_eligible_on_insert  V41
--          set_frame_ts_eligible_setup_to_wait V42
--          frame_history_open               V13 (DISABLE_HISTORY switch; GPU columns V11)
--          update_frame_status_counts       V43 (adds layer_stat.ts_started/ts_stopped)
--   host:  verify_host_resources            V11   before_delete_host     V1
--   job:   after_insert_job                 V13   before_delete_job      V32
--          after_job_finished               V33   after_job_moved        V11
--          after_job_dept_update            V11
--   job_resource: verify_job_resources      V11   tier_job               V1
--   job_local: verify_job_local             V1
--   layer: after_insert_layer               V13   before_delete_layer    V33
--          before_delete_layer_drop_limit   V2
--   folder: before_insert_folder, after_insert_folder, before_delete_folder V1
--   folder_resource: tier_folder V1         point: point_tier V1
--   subscription: verify_subscription, tier_subscription V1
--   proc:  before_insert_proc, upgrade_proc_memory_usage V1
--          update_proc_update_layer         V11
--   *_history: tbiu_job_history, tbiu_layer_history, tbiu_frame_history V1
--
-- Behaviour worth knowing (all inherited from Cuebot)
--   * update_frame_status_counts fires AFTER UPDATE OF a frame when the state
--     changes and the OLD state is not SETUP: it decrements
--     int_<old>_count and increments int_<new>_count on layer_stat and
--     job_stat. Counters exist for WAITING, RUNNING, DEAD, DEPEND, EATEN,
--     SUCCEEDED and CHECKPOINT; there is no int_setup_count, so moving a
--     frame INTO SETUP from another state raises an error. Nothing counts
--     frames on INSERT or on SETUP -> WAITING: the inserter sets the counts.
--   * The trigger bypass idiom: verify_subscription only checks when
--     int_burst is unchanged and int_cores grows; verify_job_resources only
--     when int_max_cores (resp. int_max_gpus) is unchanged and int_cores
--     (resp. int_gpus) grows. Changing the limit in the same UPDATE skips it.
--   * JobStatType keeps Cuebot's V1+V11 attribute order while the job
--     history triggers select the GPU time columns in 3rd/4th position, so
--     the job_history counters written at job finish/delete are shifted, as
--     in Cuebot. (V33 fixed this for LayerStatType only.)
-- =============================================================================

-- ----------------------------------------------------------------------------
-- Helper functions
-- ----------------------------------------------------------------------------

-- Seconds since 1970-01-01 UTC, truncated to an integer (V28).
CREATE OR REPLACE FUNCTION public.epoch(TIMESTAMP WITH TIME ZONE)
RETURNS NUMERIC
LANGUAGE plpgsql
AS $fn$
DECLARE
    seconds INTEGER;
BEGIN
    seconds := extract(epoch FROM $1);
    RETURN seconds;
END;
$fn$;

-- Hard tier: used by job_resource and subscription (V1).
CREATE OR REPLACE FUNCTION public.tier(NUMERIC, NUMERIC)
RETURNS NUMERIC
LANGUAGE plpgsql
AS $fn$
DECLARE
    cores     ALIAS FOR $1;
    min_cores ALIAS FOR $2;
BEGIN
    IF min_cores = 0 THEN
        RETURN (cores / 100) + 1;
    END IF;
    IF cores = 0 THEN
        RETURN min_cores * -1;
    END IF;
    RETURN cores / min_cores;
END;
$fn$;

-- Soft tier: used by folder_resource and point (V1).
CREATE OR REPLACE FUNCTION public.soft_tier(NUMERIC, NUMERIC)
RETURNS NUMERIC
LANGUAGE plpgsql
AS $fn$
DECLARE
    cores     ALIAS FOR $1;
    min_cores ALIAS FOR $2;
BEGIN
    IF cores IS NULL THEN
        RETURN 0;
    END IF;
    IF min_cores = 0 OR cores >= min_cores THEN
        RETURN 1;
    END IF;
    IF cores = 0 THEN
        RETURN min_cores * -1;
    END IF;
    RETURN cores / min_cores;
END;
$fn$;

-- Cuebot's maintenance recount of subscription.int_cores / int_gpus from
-- proc, skipping scheduler-managed shows (V45). It uses the burst bypass:
-- set int_burst = int_cores together with the new value, then restore it.
CREATE OR REPLACE FUNCTION public.recalculate_subs()
RETURNS VOID
LANGUAGE plpgsql
AS $fn$
DECLARE
    r         RECORD;
    cur_burst BIGINT;
BEGIN
    UPDATE subscription SET int_cores = 0
     WHERE pk_show IN (SELECT pk_show FROM show WHERE b_scheduler_managed = false);
    UPDATE subscription SET int_gpus = 0
     WHERE pk_show IN (SELECT pk_show FROM show WHERE b_scheduler_managed = false);

    FOR r IN
        SELECT show.str_name AS show_name,
               proc.pk_show,
               alloc.pk_alloc,
               alloc.str_name AS alloc_name,
               sum(proc.int_cores_reserved) AS c,
               sum(proc.int_gpus_reserved) AS d
          FROM show, proc, host, alloc
         WHERE show.pk_show = proc.pk_show
           AND proc.pk_host = host.pk_host
           AND host.pk_alloc = alloc.pk_alloc
           AND proc.b_local = false
           AND show.b_scheduler_managed = false
         GROUP BY show.str_name, proc.pk_show, alloc.pk_alloc, alloc.str_name
    LOOP
        BEGIN
            SELECT int_burst INTO cur_burst
              FROM subscription WHERE pk_alloc = r.pk_alloc AND pk_show = r.pk_show;
            UPDATE subscription SET int_cores = r.c, int_burst = r.c, int_gpus = r.d
             WHERE pk_alloc = r.pk_alloc AND pk_show = r.pk_show;
            UPDATE subscription SET int_burst = cur_burst
             WHERE pk_alloc = r.pk_alloc AND pk_show = r.pk_show;
        EXCEPTION
            WHEN NO_DATA_FOUND THEN
                NULL;
            WHEN DATA_EXCEPTION THEN
                RAISE DATA_EXCEPTION USING MESSAGE =
                    r.show_name || ' ' || r.alloc_name || ' could not be fixed (over burst)';
        END;
    END LOOP;
END;
$fn$;

-- ----------------------------------------------------------------------------
-- Composite types used by the history triggers
-- ----------------------------------------------------------------------------
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                    WHERE n.nspname = 'public' AND t.typname = 'jobstattype') THEN
        CREATE TYPE public.jobstattype AS (
            int_core_time_success BIGINT,
            int_core_time_fail    BIGINT,
            int_waiting_count     BIGINT,
            int_dead_count        BIGINT,
            int_depend_count      BIGINT,
            int_eaten_count       BIGINT,
            int_succeeded_count   BIGINT,
            int_running_count     BIGINT,
            int_max_rss           BIGINT,
            int_gpu_time_success  BIGINT,
            int_gpu_time_fail     BIGINT,
            int_gpu_mem_max       BIGINT
        );
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                    WHERE n.nspname = 'public' AND t.typname = 'layerstattype') THEN
        CREATE TYPE public.layerstattype AS (
            int_cores_min         BIGINT,
            int_mem_min           BIGINT,
            int_core_time_success BIGINT,
            int_core_time_fail    BIGINT,
            int_gpu_time_success  BIGINT,
            int_gpu_time_fail     BIGINT,
            int_total_count       BIGINT,
            int_waiting_count     BIGINT,
            int_dead_count        BIGINT,
            int_depend_count      BIGINT,
            int_eaten_count       BIGINT,
            int_succeeded_count   BIGINT,
            int_running_count     BIGINT,
            int_max_rss           BIGINT,
            int_gpu_mem_max       BIGINT
        );
    END IF;
END;
$do$;

-- ----------------------------------------------------------------------------
-- History tables: stamp dt_last_modified (V1)
-- ----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.trigger__tbiu_job_history()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.dt_last_modified := current_timestamp;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE FUNCTION public.trigger__tbiu_layer_history()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.dt_last_modified := current_timestamp;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE FUNCTION public.trigger__tbiu_frame_history()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.dt_last_modified := current_timestamp;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER tbiu_job_history
    BEFORE INSERT OR UPDATE ON public.job_history
    FOR EACH ROW EXECUTE FUNCTION public.trigger__tbiu_job_history();

CREATE OR REPLACE TRIGGER tbiu_layer_history
    BEFORE INSERT OR UPDATE ON public.layer_history
    FOR EACH ROW EXECUTE FUNCTION public.trigger__tbiu_layer_history();

CREATE OR REPLACE TRIGGER tbiu_frame_history
    BEFORE INSERT OR UPDATE ON public.frame_history
    FOR EACH ROW EXECUTE FUNCTION public.trigger__tbiu_frame_history();

-- ----------------------------------------------------------------------------
-- Folders (V1): level + resource rows on insert, cleanup on delete,
-- root folders are the default folder.
-- ----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.trigger__before_insert_folder()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.pk_parent_folder IS NULL THEN
        NEW.b_default := true;
    END IF;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE FUNCTION public.trigger__after_insert_folder()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    new_level INT := 0;
BEGIN
    IF NEW.pk_parent_folder IS NOT NULL THEN
        SELECT folder_level.int_level + 1 INTO new_level
          FROM folder_level WHERE pk_folder = NEW.pk_parent_folder;
    END IF;
    INSERT INTO folder_level (pk_folder_level, pk_folder, int_level)
    VALUES (NEW.pk_folder, NEW.pk_folder, new_level);
    INSERT INTO folder_resource (pk_folder_resource, pk_folder)
    VALUES (NEW.pk_folder, NEW.pk_folder);
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE FUNCTION public.trigger__before_delete_folder()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM folder_level WHERE pk_folder = OLD.pk_folder;
    DELETE FROM folder_resource WHERE pk_folder = OLD.pk_folder;
    RETURN OLD;
END;
$fn$;

CREATE OR REPLACE FUNCTION public.trigger__tier_folder()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.float_tier := soft_tier(NEW.int_cores, NEW.int_min_cores);
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER before_insert_folder
    BEFORE INSERT ON public.folder
    FOR EACH ROW EXECUTE FUNCTION public.trigger__before_insert_folder();

CREATE OR REPLACE TRIGGER after_insert_folder
    AFTER INSERT ON public.folder
    FOR EACH ROW EXECUTE FUNCTION public.trigger__after_insert_folder();

CREATE OR REPLACE TRIGGER before_delete_folder
    BEFORE DELETE ON public.folder
    FOR EACH ROW EXECUTE FUNCTION public.trigger__before_delete_folder();

CREATE OR REPLACE TRIGGER tier_folder
    BEFORE UPDATE ON public.folder_resource
    FOR EACH ROW EXECUTE FUNCTION public.trigger__tier_folder();

-- ----------------------------------------------------------------------------
-- Points and subscriptions (V1)
-- ----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.trigger__point_tier()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.float_tier := soft_tier(NEW.int_cores, NEW.int_min_cores);
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER point_tier
    BEFORE UPDATE ON public.point
    FOR EACH ROW EXECUTE FUNCTION public.trigger__point_tier();

CREATE OR REPLACE FUNCTION public.trigger__tier_subscription()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.float_tier := tier(NEW.int_cores, NEW.int_size);
    RETURN NEW;
END;
$fn$;

-- Only checked when the burst is unchanged and the cores grow, so lowering
-- a burst below the current usage, or the "set int_burst together with
-- int_cores" bypass, never raises.
CREATE OR REPLACE FUNCTION public.trigger__verify_subscription()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.int_cores > NEW.int_burst THEN
        RAISE EXCEPTION 'subscription has exceeded burst size';
    END IF;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER tier_subscription
    BEFORE UPDATE ON public.subscription
    FOR EACH ROW EXECUTE FUNCTION public.trigger__tier_subscription();

CREATE OR REPLACE TRIGGER verify_subscription
    BEFORE UPDATE ON public.subscription
    FOR EACH ROW
    WHEN (NEW.int_burst = OLD.int_burst AND NEW.int_cores > OLD.int_cores)
    EXECUTE FUNCTION public.trigger__verify_subscription();

-- ----------------------------------------------------------------------------
-- Hosts (V1, V11)
-- ----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.trigger__verify_host_resources()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.int_cores_idle < 0 THEN
        RAISE EXCEPTION 'unable to allocate additional core units';
    END IF;
    IF NEW.int_mem_idle < 0 THEN
        RAISE EXCEPTION 'unable to allocate additional memory';
    END IF;
    IF NEW.int_gpus_idle < 0 THEN
        RAISE EXCEPTION 'unable to allocate additional GPU units';
    END IF;
    IF NEW.int_gpu_mem_idle < 0 THEN
        RAISE EXCEPTION 'unable to allocate additional GPU memory';
    END IF;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER verify_host_resources
    BEFORE UPDATE ON public.host
    FOR EACH ROW
    WHEN (NEW.int_cores_idle != OLD.int_cores_idle
          OR NEW.int_mem_idle != OLD.int_mem_idle
          OR NEW.int_gpus_idle != OLD.int_gpus_idle
          OR NEW.int_gpu_mem_idle != OLD.int_gpu_mem_idle)
    EXECUTE FUNCTION public.trigger__verify_host_resources();

CREATE OR REPLACE FUNCTION public.trigger__before_delete_host()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM host_stat WHERE pk_host = OLD.pk_host;
    DELETE FROM host_tag WHERE pk_host = OLD.pk_host;
    DELETE FROM deed WHERE pk_host = OLD.pk_host;
    RETURN OLD;
END;
$fn$;

CREATE OR REPLACE TRIGGER before_delete_host
    BEFORE DELETE ON public.host
    FOR EACH ROW EXECUTE FUNCTION public.trigger__before_delete_host();

-- ----------------------------------------------------------------------------
-- Jobs (V1, V11, V13, V32, V33)
-- ----------------------------------------------------------------------------
-- Creates the per-job stat/resource/usage/mem rows, keyed by pk_job, and the
-- history row unless history is disabled.
CREATE OR REPLACE FUNCTION public.trigger__after_insert_job()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO job_stat (pk_job_stat, pk_job) VALUES (NEW.pk_job, NEW.pk_job);
    INSERT INTO job_resource (pk_job_resource, pk_job) VALUES (NEW.pk_job, NEW.pk_job);
    INSERT INTO job_usage (pk_job_usage, pk_job) VALUES (NEW.pk_job, NEW.pk_job);
    INSERT INTO job_mem (pk_job_mem, pk_job) VALUES (NEW.pk_job, NEW.pk_job);

    IF NOT EXISTS (SELECT FROM config WHERE str_key = 'DISABLE_HISTORY') THEN
        INSERT INTO job_history
            (pk_job, pk_show, pk_facility, pk_dept, str_name, str_shot, str_user, int_ts_started)
        VALUES
            (NEW.pk_job, NEW.pk_show, NEW.pk_facility, NEW.pk_dept,
             NEW.str_name, NEW.str_shot, NEW.str_user, epoch(current_timestamp));
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER after_insert_job
    AFTER INSERT ON public.job
    FOR EACH ROW EXECUTE FUNCTION public.trigger__after_insert_job();

-- Moves the job's running cores/GPUs between folders.
CREATE OR REPLACE FUNCTION public.trigger__after_job_moved()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    core_count INT;
    gpu_count  INT;
BEGIN
    SELECT int_cores, int_gpus INTO core_count, gpu_count
      FROM job_resource WHERE pk_job = NEW.pk_job;

    IF core_count > 0 THEN
        UPDATE folder_resource SET int_cores = int_cores + core_count WHERE pk_folder = NEW.pk_folder;
        UPDATE folder_resource SET int_cores = int_cores - core_count WHERE pk_folder = OLD.pk_folder;
    END IF;
    IF gpu_count > 0 THEN
        UPDATE folder_resource SET int_gpus = int_gpus + gpu_count WHERE pk_folder = NEW.pk_folder;
        UPDATE folder_resource SET int_gpus = int_gpus - gpu_count WHERE pk_folder = OLD.pk_folder;
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER after_job_moved
    AFTER UPDATE ON public.job
    FOR EACH ROW
    WHEN (NEW.pk_folder != OLD.pk_folder)
    EXECUTE FUNCTION public.trigger__after_job_moved();

-- Moves the job's running cores/GPUs between points (departments).
CREATE OR REPLACE FUNCTION public.trigger__after_job_dept_update()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    running_cores INT;
    running_gpus  INT;
BEGIN
    SELECT int_cores, int_gpus INTO running_cores, running_gpus
      FROM job_resource WHERE pk_job = NEW.pk_job;

    IF running_cores > 0 THEN
        UPDATE point SET int_cores = int_cores + running_cores
         WHERE pk_dept = NEW.pk_dept AND pk_show = NEW.pk_show;
        UPDATE point SET int_cores = int_cores - running_cores
         WHERE pk_dept = OLD.pk_dept AND pk_show = OLD.pk_show;
    END IF;
    IF running_gpus > 0 THEN
        UPDATE point SET int_gpus = int_gpus + running_gpus
         WHERE pk_dept = NEW.pk_dept AND pk_show = NEW.pk_show;
        UPDATE point SET int_gpus = int_gpus - running_gpus
         WHERE pk_dept = OLD.pk_dept AND pk_show = OLD.pk_show;
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER after_job_dept_update
    AFTER UPDATE ON public.job
    FOR EACH ROW
    WHEN (NEW.pk_dept != OLD.pk_dept AND NEW.str_state = 'PENDING')
    EXECUTE FUNCTION public.trigger__after_job_dept_update();

-- PENDING -> FINISHED: copy the job and layer counters into the history
-- tables and drop local core assignments (V33 version: no DISABLE_HISTORY
-- check). The job SELECT lists the GPU times 3rd/4th while JobStatType has
-- them 10th/11th, so the job_history counters are shifted exactly as in
-- Cuebot; the layer part uses V33's corrected LayerStatType order.
CREATE OR REPLACE FUNCTION public.trigger__after_job_finished()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    ts        INT := cast(epoch(current_timestamp) AS INTEGER);
    js        JobStatType;
    ls        LayerStatType;
    one_layer RECORD;
BEGIN
    SELECT job_usage.int_core_time_success,
           job_usage.int_core_time_fail,
           job_usage.int_gpu_time_success,
           job_usage.int_gpu_time_fail,
           job_stat.int_waiting_count,
           job_stat.int_dead_count,
           job_stat.int_depend_count,
           job_stat.int_eaten_count,
           job_stat.int_succeeded_count,
           job_stat.int_running_count,
           job_mem.int_max_rss,
           job_mem.int_gpu_mem_max
      INTO js
      FROM job_mem, job_usage, job_stat
     WHERE job_usage.pk_job = job_mem.pk_job
       AND job_stat.pk_job = job_mem.pk_job
       AND job_mem.pk_job = NEW.pk_job;

    UPDATE job_history SET
        pk_dept               = NEW.pk_dept,
        int_core_time_success = js.int_core_time_success,
        int_core_time_fail    = js.int_core_time_fail,
        int_gpu_time_success  = js.int_gpu_time_success,
        int_gpu_time_fail     = js.int_gpu_time_fail,
        int_frame_count       = NEW.int_frame_count,
        int_layer_count       = NEW.int_layer_count,
        int_waiting_count     = js.int_waiting_count,
        int_dead_count        = js.int_dead_count,
        int_depend_count      = js.int_depend_count,
        int_eaten_count       = js.int_eaten_count,
        int_succeeded_count   = js.int_succeeded_count,
        int_running_count     = js.int_running_count,
        int_max_rss           = js.int_max_rss,
        int_gpu_mem_max       = js.int_gpu_mem_max,
        int_ts_stopped        = ts
     WHERE pk_job = NEW.pk_job;

    FOR one_layer IN SELECT pk_layer FROM layer WHERE pk_job = NEW.pk_job LOOP
        SELECT layer.int_cores_min,
               layer.int_mem_min,
               layer_usage.int_core_time_success,
               layer_usage.int_core_time_fail,
               layer_usage.int_gpu_time_success,
               layer_usage.int_gpu_time_fail,
               layer_stat.int_total_count,
               layer_stat.int_waiting_count,
               layer_stat.int_dead_count,
               layer_stat.int_depend_count,
               layer_stat.int_eaten_count,
               layer_stat.int_succeeded_count,
               layer_stat.int_running_count,
               layer_mem.int_max_rss,
               layer_mem.int_gpu_mem_max
          INTO ls
          FROM layer, layer_mem, layer_usage, layer_stat
         WHERE layer_mem.pk_layer = layer.pk_layer
           AND layer_usage.pk_layer = layer.pk_layer
           AND layer_stat.pk_layer = layer.pk_layer
           AND layer.pk_layer = one_layer.pk_layer;

        UPDATE layer_history SET
            int_cores_min         = ls.int_cores_min,
            int_mem_min           = ls.int_mem_min,
            int_core_time_success = ls.int_core_time_success,
            int_core_time_fail    = ls.int_core_time_fail,
            int_gpu_time_success  = ls.int_gpu_time_success,
            int_gpu_time_fail     = ls.int_gpu_time_fail,
            int_frame_count       = ls.int_total_count,
            int_waiting_count     = ls.int_waiting_count,
            int_dead_count        = ls.int_dead_count,
            int_depend_count      = ls.int_depend_count,
            int_eaten_count       = ls.int_eaten_count,
            int_succeeded_count   = ls.int_succeeded_count,
            int_running_count     = ls.int_running_count,
            int_max_rss           = ls.int_max_rss,
            int_gpu_mem_max       = ls.int_gpu_mem_max
         WHERE pk_layer = one_layer.pk_layer;
    END LOOP;

    DELETE FROM job_local WHERE pk_job = NEW.pk_job;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER after_job_finished
    AFTER UPDATE ON public.job
    FOR EACH ROW
    WHEN (OLD.str_state = 'PENDING' AND NEW.str_state = 'FINISHED')
    EXECUTE FUNCTION public.trigger__after_job_finished();

-- Deleting a job archives its history row and deletes everything hanging
-- off it (V32 version).
CREATE OR REPLACE FUNCTION public.trigger__before_delete_job()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    js JobStatType;
BEGIN
    IF NOT EXISTS (SELECT FROM config WHERE str_key = 'DISABLE_HISTORY') THEN
        SELECT job_usage.int_core_time_success,
               job_usage.int_core_time_fail,
               job_usage.int_gpu_time_success,
               job_usage.int_gpu_time_fail,
               job_stat.int_waiting_count,
               job_stat.int_dead_count,
               job_stat.int_depend_count,
               job_stat.int_eaten_count,
               job_stat.int_succeeded_count,
               job_stat.int_running_count,
               job_mem.int_max_rss,
               job_mem.int_gpu_mem_max
          INTO js
          FROM job_mem, job_usage, job_stat
         WHERE job_usage.pk_job = job_mem.pk_job
           AND job_stat.pk_job = job_mem.pk_job
           AND job_mem.pk_job = OLD.pk_job;

        UPDATE job_history SET
            pk_dept               = OLD.pk_dept,
            int_core_time_success = js.int_core_time_success,
            int_core_time_fail    = js.int_core_time_fail,
            int_gpu_time_success  = js.int_gpu_time_success,
            int_gpu_time_fail     = js.int_gpu_time_fail,
            int_frame_count       = OLD.int_frame_count,
            int_layer_count       = OLD.int_layer_count,
            int_waiting_count     = js.int_waiting_count,
            int_dead_count        = js.int_dead_count,
            int_depend_count      = js.int_depend_count,
            int_eaten_count       = js.int_eaten_count,
            int_succeeded_count   = js.int_succeeded_count,
            int_running_count     = js.int_running_count,
            int_max_rss           = js.int_max_rss,
            int_gpu_mem_max       = js.int_gpu_mem_max,
            b_archived            = true,
            int_ts_stopped        = COALESCE(epoch(OLD.ts_stopped), epoch(current_timestamp))
         WHERE pk_job = OLD.pk_job;
    END IF;

    DELETE FROM depend WHERE pk_job_depend_on = OLD.pk_job OR pk_job_depend_er = OLD.pk_job;
    DELETE FROM frame_state_display_overrides
     WHERE pk_frame IN (SELECT f.pk_frame FROM frame f WHERE f.pk_job = OLD.pk_job);
    DELETE FROM frame WHERE pk_job = OLD.pk_job;
    DELETE FROM layer WHERE pk_job = OLD.pk_job;
    DELETE FROM job_env WHERE pk_job = OLD.pk_job;
    DELETE FROM job_stat WHERE pk_job = OLD.pk_job;
    DELETE FROM job_resource WHERE pk_job = OLD.pk_job;
    DELETE FROM job_usage WHERE pk_job = OLD.pk_job;
    DELETE FROM job_mem WHERE pk_job = OLD.pk_job;
    DELETE FROM job_post WHERE pk_job = OLD.pk_job;
    DELETE FROM comments WHERE pk_job = OLD.pk_job;
    RETURN OLD;
END;
$fn$;

CREATE OR REPLACE TRIGGER before_delete_job
    BEFORE DELETE ON public.job
    FOR EACH ROW EXECUTE FUNCTION public.trigger__before_delete_job();

-- ----------------------------------------------------------------------------
-- job_resource (V1, V11) and job_local (V1)
-- ----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.trigger__tier_job()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.float_tier := tier(NEW.int_cores, NEW.int_min_cores);
    RETURN NEW;
END;
$fn$;

-- Fires when cores grow with int_max_cores unchanged, or GPUs grow with
-- int_max_gpus unchanged; then both limits are checked.
CREATE OR REPLACE FUNCTION public.trigger__verify_job_resources()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.int_cores > NEW.int_max_cores THEN
        RAISE EXCEPTION 'job has exceeded max cores';
    END IF;
    IF NEW.int_gpus > NEW.int_max_gpus THEN
        RAISE EXCEPTION 'job has exceeded max GPU units';
    END IF;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER tier_job
    BEFORE UPDATE ON public.job_resource
    FOR EACH ROW EXECUTE FUNCTION public.trigger__tier_job();

CREATE OR REPLACE TRIGGER verify_job_resources
    BEFORE UPDATE ON public.job_resource
    FOR EACH ROW
    WHEN ((NEW.int_max_cores = OLD.int_max_cores AND NEW.int_cores > OLD.int_cores)
          OR (NEW.int_max_gpus = OLD.int_max_gpus AND NEW.int_gpus > OLD.int_gpus))
    EXECUTE FUNCTION public.trigger__verify_job_resources();

CREATE OR REPLACE FUNCTION public.trigger__verify_job_local()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.int_cores > NEW.int_max_cores THEN
        RAISE EXCEPTION 'job local has exceeded max cores';
    END IF;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER verify_job_local
    BEFORE UPDATE ON public.job_local
    FOR EACH ROW
    WHEN (NEW.int_max_cores = OLD.int_max_cores AND NEW.int_cores > OLD.int_cores)
    EXECUTE FUNCTION public.trigger__verify_job_local();

-- ----------------------------------------------------------------------------
-- Layers (V2, V11, V13, V33)
-- ----------------------------------------------------------------------------
-- Creates the per-layer stat/resource/usage/mem rows, keyed by pk_layer, and
-- the history row unless history is disabled.
CREATE OR REPLACE FUNCTION public.trigger__after_insert_layer()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO layer_stat (pk_layer_stat, pk_layer, pk_job) VALUES (NEW.pk_layer, NEW.pk_layer, NEW.pk_job);
    INSERT INTO layer_resource (pk_layer_resource, pk_layer, pk_job) VALUES (NEW.pk_layer, NEW.pk_layer, NEW.pk_job);
    INSERT INTO layer_usage (pk_layer_usage, pk_layer, pk_job) VALUES (NEW.pk_layer, NEW.pk_layer, NEW.pk_job);
    INSERT INTO layer_mem (pk_layer_mem, pk_layer, pk_job) VALUES (NEW.pk_layer, NEW.pk_layer, NEW.pk_job);

    IF NOT EXISTS (SELECT FROM config WHERE str_key = 'DISABLE_HISTORY') THEN
        INSERT INTO layer_history
            (pk_layer, pk_job, str_name, str_type, int_cores_min, int_mem_min,
             int_gpus_min, int_gpu_mem_min, b_archived, str_services)
        VALUES
            (NEW.pk_layer, NEW.pk_job, NEW.str_name, NEW.str_type, NEW.int_cores_min, NEW.int_mem_min,
             NEW.int_gpus_min, NEW.int_gpu_mem_min, false, NEW.str_services);
    END IF;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER after_insert_layer
    AFTER INSERT ON public.layer
    FOR EACH ROW EXECUTE FUNCTION public.trigger__after_insert_layer();

-- V33 version (no DISABLE_HISTORY check): archive, then delete the rows
-- hanging off the layer.
CREATE OR REPLACE FUNCTION public.trigger__before_delete_layer()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    ls LayerStatType;
BEGIN
    SELECT layer.int_cores_min,
           layer.int_mem_min,
           layer_usage.int_core_time_success,
           layer_usage.int_core_time_fail,
           layer_usage.int_gpu_time_success,
           layer_usage.int_gpu_time_fail,
           layer_stat.int_total_count,
           layer_stat.int_waiting_count,
           layer_stat.int_dead_count,
           layer_stat.int_depend_count,
           layer_stat.int_eaten_count,
           layer_stat.int_succeeded_count,
           layer_stat.int_running_count,
           layer_mem.int_max_rss,
           layer_mem.int_gpu_mem_max
      INTO ls
      FROM layer, layer_mem, layer_usage, layer_stat
     WHERE layer_mem.pk_layer = layer.pk_layer
       AND layer_usage.pk_layer = layer.pk_layer
       AND layer_stat.pk_layer = layer.pk_layer
       AND layer.pk_layer = OLD.pk_layer;

    UPDATE layer_history SET
        int_cores_min         = ls.int_cores_min,
        int_mem_min           = ls.int_mem_min,
        int_core_time_success = ls.int_core_time_success,
        int_core_time_fail    = ls.int_core_time_fail,
        int_gpu_time_success  = ls.int_gpu_time_success,
        int_gpu_time_fail     = ls.int_gpu_time_fail,
        int_frame_count       = ls.int_total_count,
        int_waiting_count     = ls.int_waiting_count,
        int_dead_count        = ls.int_dead_count,
        int_depend_count      = ls.int_depend_count,
        int_eaten_count       = ls.int_eaten_count,
        int_succeeded_count   = ls.int_succeeded_count,
        int_running_count     = ls.int_running_count,
        int_max_rss           = ls.int_max_rss,
        int_gpu_mem_max       = ls.int_gpu_mem_max,
        b_archived            = true
     WHERE pk_layer = OLD.pk_layer;

    DELETE FROM layer_resource WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_stat WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_usage WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_env WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_mem WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_output WHERE pk_layer = OLD.pk_layer;
    RETURN OLD;
END;
$fn$;

CREATE OR REPLACE TRIGGER before_delete_layer
    BEFORE DELETE ON public.layer
    FOR EACH ROW EXECUTE FUNCTION public.trigger__before_delete_layer();

CREATE OR REPLACE FUNCTION public.trigger__before_delete_layer_drop_limit()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM layer_limit WHERE pk_layer = OLD.pk_layer;
    RETURN OLD;
END;
$fn$;

CREATE OR REPLACE TRIGGER before_delete_layer_drop_limit
    BEFORE DELETE ON public.layer
    FOR EACH ROW EXECUTE FUNCTION public.trigger__before_delete_layer_drop_limit();

-- ----------------------------------------------------------------------------
-- Frames (V1, V11, V13, V41, V42, V43)
--
-- BEFORE UPDATE triggers run in name order, each seeing the NEW row left by
-- the previous one:
--   set_frame_ts_eligible_setup_to_wait, update_frame_checkpoint_state,
--   update_frame_dep_to_wait, update_frame_eaten, update_frame_wait_to_dep.
-- AFTER UPDATE: frame_history_open, then update_frame_status_counts.
-- ----------------------------------------------------------------------------

-- V41: a frame inserted directly in WAITING is eligible now. (Cuebot itself
-- inserts in SETUP, so this rarely fires there.)
CREATE OR REPLACE FUNCTION public.trigger__set_frame_ts_eligible_on_insert()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.str_state = 'WAITING' AND NEW.ts_eligible IS NULL THEN
        NEW.ts_eligible := current_timestamp;
    END IF;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER set_frame_ts_eligible_on_insert
    BEFORE INSERT ON public.frame
    FOR EACH ROW EXECUTE FUNCTION public.trigger__set_frame_ts_eligible_on_insert();

-- V42: SETUP -> WAITING (job activation) stamps ts_eligible.
CREATE OR REPLACE FUNCTION public.trigger__set_frame_ts_eligible_setup_to_wait()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.ts_eligible := current_timestamp;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER set_frame_ts_eligible_setup_to_wait
    BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN (OLD.str_state = 'SETUP' AND NEW.str_state = 'WAITING')
    EXECUTE FUNCTION public.trigger__set_frame_ts_eligible_setup_to_wait();

-- RUNNING -> WAITING of a checkpointing frame becomes CHECKPOINT.
CREATE OR REPLACE FUNCTION public.trigger__update_frame_checkpoint_state()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.str_state := 'CHECKPOINT';
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER update_frame_checkpoint_state
    BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN (NEW.str_state = 'WAITING' AND OLD.str_state = 'RUNNING'
          AND NEW.str_checkpoint_state IN ('ENABLED', 'COPYING'))
    EXECUTE FUNCTION public.trigger__update_frame_checkpoint_state();

-- DEPEND frame whose depend count drops to 0 becomes WAITING (V41: and
-- eligible now).
CREATE OR REPLACE FUNCTION public.trigger__update_frame_dep_to_wait()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.str_state := 'WAITING';
    NEW.ts_updated := current_timestamp;
    NEW.ts_eligible := current_timestamp;
    NEW.int_version := NEW.int_version + 1;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER update_frame_dep_to_wait
    BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN (OLD.int_depend_count > 0 AND NEW.int_depend_count < 1 AND OLD.str_state = 'DEPEND')
    EXECUTE FUNCTION public.trigger__update_frame_dep_to_wait();

-- Eating a SUCCEEDED frame leaves it SUCCEEDED.
CREATE OR REPLACE FUNCTION public.trigger__update_frame_eaten()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.str_state := 'SUCCEEDED';
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER update_frame_eaten
    BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN (NEW.str_state = 'EATEN' AND OLD.str_state = 'SUCCEEDED')
    EXECUTE FUNCTION public.trigger__update_frame_eaten();

-- A frame that still has dependencies cannot become DEAD, SUCCEEDED,
-- WAITING or CHECKPOINT: it becomes DEPEND.
CREATE OR REPLACE FUNCTION public.trigger__update_frame_wait_to_dep()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.str_state := 'DEPEND';
    NEW.ts_updated := current_timestamp;
    NEW.int_version := NEW.int_version + 1;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER update_frame_wait_to_dep
    BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN (NEW.int_depend_count > 0 AND NEW.str_state IN ('DEAD', 'SUCCEEDED', 'WAITING', 'CHECKPOINT'))
    EXECUTE FUNCTION public.trigger__update_frame_wait_to_dep();

-- frame_history: leaving RUNNING closes the open row (or deletes it when the
-- exit status is 299, the "frame cleared / launch failed" code); entering
-- RUNNING opens a new row with the host's allocation. Skipped when config
-- has DISABLE_HISTORY (V13).
CREATE OR REPLACE FUNCTION public.trigger__frame_history_open()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    host_alloc       VARCHAR(36) := NULL;
    checkpoint_count INT := 0;
BEGIN
    IF EXISTS (SELECT FROM config WHERE str_key = 'DISABLE_HISTORY') THEN
        RETURN NULL;
    END IF;

    IF OLD.str_state = 'RUNNING' THEN
        IF NEW.int_exit_status = 299 THEN
            DELETE FROM frame_history WHERE int_ts_stopped = 0 AND pk_frame = NEW.pk_frame;
        ELSE
            IF NEW.str_state = 'CHECKPOINT' THEN
                checkpoint_count := 1;
            END IF;
            UPDATE frame_history SET
                int_mem_max_used     = NEW.int_mem_max_used,
                int_gpu_mem_max_used = NEW.int_gpu_mem_max_used,
                int_ts_stopped       = epoch(current_timestamp),
                int_exit_status      = NEW.int_exit_status,
                int_checkpoint_count = checkpoint_count
             WHERE int_ts_stopped = 0 AND pk_frame = NEW.pk_frame;
        END IF;
    END IF;

    IF NEW.str_state = 'RUNNING' THEN
        SELECT pk_alloc INTO host_alloc FROM host WHERE str_name = NEW.str_host;
        INSERT INTO frame_history
            (pk_frame, pk_layer, pk_job, str_name, str_state, int_cores, int_mem_reserved,
             int_gpus, int_gpu_mem_reserved, str_host, int_ts_started, pk_alloc)
        VALUES
            (NEW.pk_frame, NEW.pk_layer, NEW.pk_job, NEW.str_name, 'RUNNING', NEW.int_cores,
             NEW.int_mem_reserved, NEW.int_gpus, NEW.int_gpu_mem_reserved, NEW.str_host,
             epoch(current_timestamp), host_alloc);
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER frame_history_open
    AFTER UPDATE ON public.frame
    FOR EACH ROW
    WHEN (NEW.str_state != OLD.str_state)
    EXECUTE FUNCTION public.trigger__frame_history_open();

-- The per-state frame counters on layer_stat and job_stat (V1, V43).
-- The column names are built from the state names: int_<state>_count.
-- Also keeps layer_stat.ts_started (first frame entering RUNNING) and
-- layer_stat.ts_stopped (latest frame leaving RUNNING).
CREATE OR REPLACE FUNCTION public.trigger__update_frame_status_counts()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    old_col VARCHAR(32) := 'int_' || OLD.str_state || '_count';
    new_col VARCHAR(32) := 'int_' || NEW.str_state || '_count';
BEGIN
    EXECUTE 'UPDATE layer_stat SET ' || old_col || ' = ' || old_col || ' - 1, '
         || new_col || ' = ' || new_col || ' + 1 WHERE pk_layer = $1'
      USING NEW.pk_layer;
    EXECUTE 'UPDATE job_stat SET ' || old_col || ' = ' || old_col || ' - 1, '
         || new_col || ' = ' || new_col || ' + 1 WHERE pk_job = $1'
      USING NEW.pk_job;

    IF NEW.str_state = 'RUNNING' THEN
        UPDATE layer_stat
           SET ts_started = COALESCE(ts_started, NEW.ts_started, current_timestamp)
         WHERE pk_layer = NEW.pk_layer;
    END IF;
    IF OLD.str_state = 'RUNNING' THEN
        UPDATE layer_stat
           SET ts_stopped = COALESCE(NEW.ts_stopped, current_timestamp)
         WHERE pk_layer = NEW.pk_layer;
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER update_frame_status_counts
    AFTER UPDATE ON public.frame
    FOR EACH ROW
    WHEN (OLD.str_state != 'SETUP' AND OLD.str_state != NEW.str_state)
    EXECUTE FUNCTION public.trigger__update_frame_status_counts();

-- ----------------------------------------------------------------------------
-- Procs (V1, V11)
-- ----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.trigger__before_insert_proc()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.int_cores_reserved <= 0 THEN
        RAISE EXCEPTION 'failed to allocate proc, tried to allocate 0 cores';
    END IF;
    RETURN NEW;
END;
$fn$;

CREATE OR REPLACE TRIGGER before_insert_proc
    BEFORE INSERT ON public.proc
    FOR EACH ROW EXECUTE FUNCTION public.trigger__before_insert_proc();

-- A proc moved to another layer moves its cores/GPUs between layer_resource
-- rows (locking the two layer_stat rows in a fixed order first).
CREATE OR REPLACE FUNCTION public.trigger__update_proc_update_layer()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
DECLARE
    lr RECORD;
BEGIN
    FOR lr IN
        SELECT pk_layer FROM layer_stat
         WHERE pk_layer IN (OLD.pk_layer, NEW.pk_layer)
         ORDER BY layer_stat.pk_layer DESC
    LOOP
        IF lr.pk_layer = OLD.pk_layer THEN
            UPDATE layer_resource SET
                int_cores = int_cores - OLD.int_cores_reserved,
                int_gpus  = int_gpus - OLD.int_gpus_reserved
             WHERE pk_layer = OLD.pk_layer;
        ELSE
            UPDATE layer_resource SET
                int_cores = int_cores + NEW.int_cores_reserved,
                int_gpus  = int_gpus + NEW.int_gpus_reserved
             WHERE pk_layer = NEW.pk_layer;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER update_proc_update_layer
    AFTER UPDATE ON public.proc
    FOR EACH ROW
    WHEN (NEW.pk_layer != OLD.pk_layer)
    EXECUTE FUNCTION public.trigger__update_proc_update_layer();

-- Growing (or shrinking) a proc's memory reservation takes it from (or
-- returns it to) the host's idle memory; verify_host_resources guards it.
CREATE OR REPLACE FUNCTION public.trigger__upgrade_proc_memory_usage()
RETURNS TRIGGER LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE host
       SET int_mem_idle = int_mem_idle - (NEW.int_mem_reserved - OLD.int_mem_reserved)
     WHERE pk_host = NEW.pk_host;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER upgrade_proc_memory_usage
    AFTER UPDATE ON public.proc
    FOR EACH ROW
    WHEN (NEW.int_mem_reserved != OLD.int_mem_reserved)
    EXECUTE FUNCTION public.trigger__upgrade_proc_memory_usage();

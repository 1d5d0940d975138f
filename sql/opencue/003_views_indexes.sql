-- =============================================================================
-- stagehand: OpenCue-compatible schema, part 3 of 3 -- views and indexes.
--
-- What this is
--   Cuebot's views over the tables of 001_tables.sql and Cuebot's plain
--   (non-unique) indexes on them, as they stand after Cuebot's Flyway
--   migrations V1 .. V47, with Cuebot's index names. Primary keys, unique
--   constraints and unique indexes are in 001.
--
-- When it is applied
--   ONLY to databases that do not have Cuebot's schema (tests, benchmarks,
--   demo). A Cuebot database already has all of this.
--
-- Idempotent: CREATE OR REPLACE VIEW, CREATE INDEX IF NOT EXISTS.
--
-- Where each part comes from
--   vs_waiting                      V1 (the scheduler's bookable-show filter)
--   vs_show_resource, vs_job_resource, vs_alloc_usage, vs_folder_counts
--                                   V11 (GPU columns added)
--   vs_show_stat                    V1
--   indexes                         V1 (renamed by V11), V11, V12, V18, V37,
--                                   V39, V40, V44 (scheduler pending query),
--                                   V47 (i_layer_start_after)
--   Cuebot's index list is reproduced as is, including the pairs that index
--   the same column twice because a V1 index followed a renamed column
--   (i_host_int_gpu / i_host_int_gpu_mem, i_host_int_gpu_idle /
--   i_host_int_gpu_mem_idle, i_layer_int_gpu_mem_min / i_layer_int_gpus_mem_min_1):
--   they matter for write cost (and HOT updates), so benchmarks see what a
--   Cuebot database does.
-- =============================================================================

-- ----------------------------------------------------------------------------
-- Views
-- ----------------------------------------------------------------------------

-- Shows that have at least one PENDING, unpaused job with waiting frames and
-- at least one core (100 centicores) of headroom under the job's max cores,
-- measured with the lagged job_resource.int_cores. A show whose jobs all
-- have int_max_cores <= 0 is therefore never listed.
CREATE OR REPLACE VIEW public.vs_waiting (pk_show) AS
    SELECT job.pk_show
      FROM job_resource jr, job_stat, job
     WHERE job_stat.pk_job = job.pk_job
       AND jr.pk_job = job.pk_job
       AND job.str_state = 'PENDING'
       AND job.b_paused = false
       AND jr.int_max_cores - jr.int_cores >= 100
       AND job_stat.int_waiting_count != 0
     GROUP BY job.pk_show;

CREATE OR REPLACE VIEW public.vs_show_resource (pk_show, int_cores, int_gpus) AS
    SELECT job.pk_show,
           SUM(int_cores) AS int_cores,
           SUM(int_gpus) AS int_gpus
      FROM job, job_resource
     WHERE job.pk_job = job_resource.pk_job
       AND job.str_state = 'PENDING'
     GROUP BY job.pk_show;

CREATE OR REPLACE VIEW public.vs_show_stat
    (pk_show, int_pending_count, int_running_count, int_dead_count, int_job_count) AS
    SELECT job.pk_show,
           SUM(int_waiting_count + int_depend_count) AS int_pending_count,
           SUM(int_running_count) AS int_running_count,
           SUM(int_dead_count) AS int_dead_count,
           COUNT(1) AS int_job_count
      FROM job_stat, job
     WHERE job_stat.pk_job = job.pk_job
       AND job.str_state = 'PENDING'
     GROUP BY job.pk_show;

CREATE OR REPLACE VIEW public.vs_job_resource
    (pk_job, int_procs, int_cores, int_gpus, int_mem_reserved) AS
    SELECT job.pk_job,
           COUNT(proc.pk_proc) AS int_procs,
           COALESCE(SUM(int_cores_reserved), 0) AS int_cores,
           COALESCE(SUM(int_gpus_reserved), 0) AS int_gpus,
           COALESCE(SUM(int_mem_reserved), 0) AS int_mem_reserved
      FROM job LEFT JOIN proc ON (proc.pk_job = job.pk_job)
     GROUP BY job.pk_job;

CREATE OR REPLACE VIEW public.vs_alloc_usage
    (pk_alloc, int_cores, int_idle_cores, int_running_cores, int_locked_cores,
     int_available_cores, int_gpus, int_idle_gpus, int_running_gpus, int_locked_gpus,
     int_available_gpus, int_hosts, int_locked_hosts, int_down_hosts) AS
    SELECT alloc.pk_alloc,
           COALESCE(SUM(host.int_cores), 0) AS int_cores,
           COALESCE(SUM(host.int_cores_idle), 0) AS int_idle_cores,
           COALESCE(SUM(host.int_cores - host.int_cores_idle), 0) AS int_running_cores,
           COALESCE((SELECT SUM(int_cores) FROM host
                      WHERE host.pk_alloc = alloc.pk_alloc
                        AND (str_lock_state = 'NIMBY_LOCKED' OR str_lock_state = 'LOCKED')), 0)
               AS int_locked_cores,
           COALESCE((SELECT SUM(int_cores_idle) FROM host h, host_stat hs
                      WHERE h.pk_host = hs.pk_host AND h.pk_alloc = alloc.pk_alloc
                        AND h.str_lock_state = 'OPEN' AND hs.str_state = 'UP'), 0)
               AS int_available_cores,
           COALESCE(SUM(host.int_gpus), 0) AS int_gpus,
           COALESCE(SUM(host.int_gpus_idle), 0) AS int_idle_gpus,
           COALESCE(SUM(host.int_gpus - host.int_gpus_idle), 0) AS int_running_gpus,
           COALESCE((SELECT SUM(int_gpus) FROM host
                      WHERE host.pk_alloc = alloc.pk_alloc
                        AND (str_lock_state = 'NIMBY_LOCKED' OR str_lock_state = 'LOCKED')), 0)
               AS int_locked_gpus,
           COALESCE((SELECT SUM(int_gpus_idle) FROM host h, host_stat hs
                      WHERE h.pk_host = hs.pk_host AND h.pk_alloc = alloc.pk_alloc
                        AND h.str_lock_state = 'OPEN' AND hs.str_state = 'UP'), 0)
               AS int_available_gpus,
           COUNT(host.pk_host) AS int_hosts,
           (SELECT COUNT(*) FROM host
             WHERE host.pk_alloc = alloc.pk_alloc AND str_lock_state = 'LOCKED') AS int_locked_hosts,
           (SELECT COUNT(*) FROM host h, host_stat hs
             WHERE h.pk_host = hs.pk_host AND h.pk_alloc = alloc.pk_alloc
               AND hs.str_state = 'DOWN') AS int_down_hosts
      FROM alloc LEFT JOIN host ON (alloc.pk_alloc = host.pk_alloc)
     GROUP BY alloc.pk_alloc;

CREATE OR REPLACE VIEW public.vs_folder_counts
    (pk_folder, int_depend_count, int_waiting_count, int_running_count, int_dead_count,
     int_cores, int_gpus, int_job_count) AS
    SELECT folder.pk_folder,
           COALESCE(SUM(int_depend_count), 0) AS int_depend_count,
           COALESCE(SUM(int_waiting_count), 0) AS int_waiting_count,
           COALESCE(SUM(int_running_count), 0) AS int_running_count,
           COALESCE(SUM(int_dead_count), 0) AS int_dead_count,
           COALESCE(SUM(int_cores), 0) AS int_cores,
           COALESCE(SUM(int_gpus), 0) AS int_gpus,
           COALESCE(COUNT(job.pk_job), 0) AS int_job_count
      FROM folder
           LEFT JOIN job ON (folder.pk_folder = job.pk_folder AND job.str_state = 'PENDING')
           LEFT JOIN job_stat ON (job.pk_job = job_stat.pk_job)
           LEFT JOIN job_resource ON (job.pk_job = job_resource.pk_job)
     GROUP BY folder.pk_folder;

-- ----------------------------------------------------------------------------
-- Indexes used by the scheduler's queries (V44, V47)
-- ----------------------------------------------------------------------------

-- Tag overlap test: string_to_array(REPLACE(str_tags,' ',''),'|') && $tags.
CREATE INDEX IF NOT EXISTS idx_layer_tags_array
    ON public.layer USING gin (string_to_array(REPLACE(str_tags, ' ', ''), '|'));

-- Bookable jobs of a show in a facility.
CREATE INDEX IF NOT EXISTS idx_job_pending_lookup
    ON public.job (pk_show, pk_facility, str_state, b_paused)
    WHERE str_state = 'PENDING' AND b_paused = false;

-- Layers that have waiting frames.
CREATE INDEX IF NOT EXISTS idx_layer_stat_waiting
    ON public.layer_stat (pk_layer)
    WHERE int_waiting_count > 0;

-- Layers whose frames may not start before ts_start_after.
CREATE INDEX IF NOT EXISTS i_layer_start_after
    ON public.layer (ts_start_after)
    WHERE ts_start_after IS NOT NULL;

-- ----------------------------------------------------------------------------
-- The other Cuebot indexes, by table
-- ----------------------------------------------------------------------------

-- alloc
CREATE INDEX IF NOT EXISTS i_alloc_pk_facility ON public.alloc (pk_facility);

-- subscription
CREATE INDEX IF NOT EXISTS i_sub_tier ON public.subscription (float_tier);
CREATE INDEX IF NOT EXISTS i_subscription_pkalloc ON public.subscription (pk_alloc);

-- folder, folder_resource
CREATE INDEX IF NOT EXISTS i_folder_pkparentfolder ON public.folder (pk_parent_folder);
CREATE INDEX IF NOT EXISTS i_folder_pkshow ON public.folder (pk_show);
CREATE INDEX IF NOT EXISTS i_folder_strname ON public.folder (str_name);
CREATE INDEX IF NOT EXISTS i_folder_res_int_max_cores ON public.folder_resource (int_max_cores);
CREATE INDEX IF NOT EXISTS i_folder_res_int_max_gpus ON public.folder_resource (int_max_gpus);
CREATE INDEX IF NOT EXISTS i_folder_resource_fl_tier ON public.folder_resource (float_tier);
CREATE INDEX IF NOT EXISTS i_folder_resource_int_cores ON public.folder_resource (int_cores);
CREATE INDEX IF NOT EXISTS i_folderresource_pkfolder ON public.folder_resource (pk_folder);

-- point
CREATE INDEX IF NOT EXISTS i_point_pk_dept ON public.point (pk_dept);
CREATE INDEX IF NOT EXISTS i_point_pk_show ON public.point (pk_show);
CREATE INDEX IF NOT EXISTS i_point_tier ON public.point (float_tier);

-- host, host_stat, host_tag, deed
CREATE INDEX IF NOT EXISTS i_host_pkalloc ON public.host (pk_alloc);
CREATE INDEX IF NOT EXISTS i_host_strlockstate ON public.host (str_lock_state);
CREATE INDEX IF NOT EXISTS i_host_str_tags ON public.host (str_tags);
CREATE INDEX IF NOT EXISTS i_host_int_gpu ON public.host (int_gpu_mem);
CREATE INDEX IF NOT EXISTS i_host_int_gpu_idle ON public.host (int_gpu_mem_idle);
CREATE INDEX IF NOT EXISTS i_host_int_gpu_mem ON public.host (int_gpu_mem);
CREATE INDEX IF NOT EXISTS i_host_int_gpu_mem_idle ON public.host (int_gpu_mem_idle);
CREATE INDEX IF NOT EXISTS i_host_int_gpus ON public.host (int_gpus);
CREATE INDEX IF NOT EXISTS i_host_int_gpus_idle ON public.host (int_gpus_idle);
CREATE INDEX IF NOT EXISTS i_host_stat_int_gpu_mem_total ON public.host_stat (int_gpu_mem_total);
CREATE INDEX IF NOT EXISTS i_host_stat_int_gpu_mem_free ON public.host_stat (int_gpu_mem_free);
CREATE INDEX IF NOT EXISTS i_host_stat_str_os ON public.host_stat (str_os);
CREATE INDEX IF NOT EXISTS i_host_tag_pk_host ON public.host_tag (pk_host);
CREATE INDEX IF NOT EXISTS i_host_str_tag_type ON public.host_tag (str_tag_type);
CREATE INDEX IF NOT EXISTS i_deed_pk_owner ON public.deed (pk_owner);

-- limit_record, layer_limit (V12, V18)
CREATE INDEX IF NOT EXISTS i_limit_record_pk_limit_record ON public.limit_record (pk_limit_record);
CREATE INDEX IF NOT EXISTS i_layer_limit_pk_layer ON public.layer_limit (pk_layer);
CREATE INDEX IF NOT EXISTS i_layer_limit_pk_limit_record ON public.layer_limit (pk_limit_record);

-- job
CREATE INDEX IF NOT EXISTS i_booking_3 ON public.job (str_state, b_paused, pk_show, pk_facility);
CREATE INDEX IF NOT EXISTS i_job_str_os ON public.job (str_os);
CREATE INDEX IF NOT EXISTS i_job_pk_dept ON public.job (pk_dept);
CREATE INDEX IF NOT EXISTS i_job_pk_facility ON public.job (pk_facility);
CREATE INDEX IF NOT EXISTS i_job_str_shot ON public.job (str_shot);
CREATE INDEX IF NOT EXISTS i_job_pkgroup ON public.job (pk_folder);
CREATE INDEX IF NOT EXISTS i_job_pkshow ON public.job (pk_show);
CREATE INDEX IF NOT EXISTS i_job_str_name ON public.job (str_name);
CREATE INDEX IF NOT EXISTS i_job_str_state ON public.job (str_state);
CREATE INDEX IF NOT EXISTS i_job_int_min_cores ON public.job (int_min_cores);
CREATE INDEX IF NOT EXISTS i_job_ts_updated ON public.job (ts_updated);
CREATE INDEX IF NOT EXISTS i_job_active_pkjob ON public.job (pk_job) WHERE str_state <> 'FINISHED';

-- job_stat, job_resource, job_mem, job_env, job_post, comments
CREATE INDEX IF NOT EXISTS i_job_stat_int_waiting_count ON public.job_stat (int_waiting_count);
CREATE INDEX IF NOT EXISTS i_job_resource_min_max ON public.job_resource (int_min_cores, int_max_cores);
CREATE INDEX IF NOT EXISTS i_job_tier ON public.job_resource (float_tier);
CREATE INDEX IF NOT EXISTS i_job_resource_cores ON public.job_resource (int_cores);
CREATE INDEX IF NOT EXISTS i_job_resource_max_c ON public.job_resource (int_max_cores);
CREATE INDEX IF NOT EXISTS i_job_resource_gpus_min_max ON public.job_resource (int_min_gpus, int_max_gpus);
CREATE INDEX IF NOT EXISTS i_job_resource_gpus ON public.job_resource (int_gpus);
CREATE INDEX IF NOT EXISTS i_job_resource_max_gpus ON public.job_resource (int_max_gpus);
CREATE INDEX IF NOT EXISTS i_job_resource_int_priority ON public.job_resource (int_priority);
CREATE INDEX IF NOT EXISTS i_job_mem_int_max_rss ON public.job_mem (int_max_rss);
CREATE INDEX IF NOT EXISTS i_max_pss_job ON public.job_mem (int_max_pss);
CREATE INDEX IF NOT EXISTS i_job_env_pk_job ON public.job_env (pk_job);
CREATE INDEX IF NOT EXISTS i_job_post_pk_job ON public.job_post (pk_job);
CREATE INDEX IF NOT EXISTS i_job_post_pk_post_job ON public.job_post (pk_post_job);
CREATE INDEX IF NOT EXISTS i_comment_pk_job ON public.comments (pk_job);
CREATE INDEX IF NOT EXISTS i_comment_pk_host ON public.comments (pk_host);

-- job_history
CREATE INDEX IF NOT EXISTS i_job_history_pk_show ON public.job_history (pk_show);
CREATE INDEX IF NOT EXISTS i_job_history_b_archived ON public.job_history (b_archived);
CREATE INDEX IF NOT EXISTS i_job_history_ts_start_stop ON public.job_history (int_ts_started, int_ts_stopped);
CREATE INDEX IF NOT EXISTS i_job_history_str_name ON public.job_history (str_name);
CREATE INDEX IF NOT EXISTS i_job_history_str_shot ON public.job_history (str_shot);
CREATE INDEX IF NOT EXISTS i_job_history_str_user ON public.job_history (str_user);
CREATE INDEX IF NOT EXISTS i_job_history_pk_dept ON public.job_history (pk_dept);
CREATE INDEX IF NOT EXISTS i_job_history_pk_facility ON public.job_history (pk_facility);

-- layer
CREATE INDEX IF NOT EXISTS i_layer_b_threadable ON public.layer (b_threadable);
CREATE INDEX IF NOT EXISTS i_layer_cores_mem ON public.layer (int_cores_min, int_mem_min);
CREATE INDEX IF NOT EXISTS i_layer_cores_mem_thread ON public.layer (int_cores_min, int_mem_min, b_threadable);
CREATE INDEX IF NOT EXISTS i_layer_mem_min ON public.layer (int_mem_min);
CREATE INDEX IF NOT EXISTS i_layer_int_dispatch_order ON public.layer (int_dispatch_order);
CREATE INDEX IF NOT EXISTS i_layer_pkjob ON public.layer (pk_job);
CREATE INDEX IF NOT EXISTS i_layer_strname ON public.layer (str_name);
CREATE INDEX IF NOT EXISTS i_layer_int_gpu_mem_min ON public.layer (int_gpu_mem_min);
CREATE INDEX IF NOT EXISTS i_layer_cores_gpus_mem
    ON public.layer (int_cores_min, int_gpus_min, int_mem_min, int_gpu_mem_min);
CREATE INDEX IF NOT EXISTS i_layer_cores_gpus_mem_thread
    ON public.layer (int_cores_min, int_gpus_min, int_mem_min, int_gpu_mem_min, b_threadable);
CREATE INDEX IF NOT EXISTS i_layer_int_gpus_min ON public.layer (int_gpus_min);
CREATE INDEX IF NOT EXISTS i_layer_int_gpus_mem_min_1 ON public.layer (int_gpu_mem_min);
CREATE INDEX IF NOT EXISTS i_layer_int_cores_max ON public.layer (int_cores_max);
CREATE INDEX IF NOT EXISTS i_layer_str_tags ON public.layer (str_tags);

-- layer_stat, layer_resource, layer_usage, layer_mem, layer_env, layer_output
CREATE INDEX IF NOT EXISTS i_layerstat_pkjob ON public.layer_stat (pk_job);
CREATE INDEX IF NOT EXISTS i_layerstat_int_waiting_count ON public.layer_stat
    ((CASE WHEN int_waiting_count > 0 THEN 1 ELSE NULL END),
     (CASE WHEN int_waiting_count > 0 THEN pk_layer ELSE NULL END));
CREATE INDEX IF NOT EXISTS i_layer_resource_pk_job ON public.layer_resource (pk_job);
CREATE INDEX IF NOT EXISTS i_layer_usage_pk_job ON public.layer_usage (pk_job);
CREATE INDEX IF NOT EXISTS i_layer_mem_pk_job ON public.layer_mem (pk_job);
CREATE INDEX IF NOT EXISTS i_layer_mem_int_max_rss ON public.layer_mem (int_max_rss);
CREATE INDEX IF NOT EXISTS i_max_pss_layer ON public.layer_mem (int_max_pss);
CREATE INDEX IF NOT EXISTS i_layer_env_pk_job ON public.layer_env (pk_job);
CREATE INDEX IF NOT EXISTS i_layer_env_pk_layer ON public.layer_env (pk_layer);
CREATE INDEX IF NOT EXISTS i_layer_output_pk_layer ON public.layer_output (pk_layer);
CREATE INDEX IF NOT EXISTS i_layer_output_pk_job ON public.layer_output (pk_job);

-- layer_history
CREATE INDEX IF NOT EXISTS i_layer_history_str_name ON public.layer_history (str_name);
CREATE INDEX IF NOT EXISTS i_layer_history_str_type ON public.layer_history (str_type);
CREATE INDEX IF NOT EXISTS i_layer_history_pk_job ON public.layer_history (pk_job);
CREATE INDEX IF NOT EXISTS i_layer_history_b_archived ON public.layer_history (b_archived);

-- frame
CREATE INDEX IF NOT EXISTS i_frame_state_job ON public.frame (str_state, pk_job);
CREATE INDEX IF NOT EXISTS i_frame_dispatch_idx ON public.frame (int_dispatch_order, int_layer_order);
CREATE INDEX IF NOT EXISTS i_frame_pk_job ON public.frame (pk_job);
CREATE INDEX IF NOT EXISTS i_frame_pkjoblayer ON public.frame (pk_layer);
CREATE INDEX IF NOT EXISTS i_frame_int_gpu_mem_reserved ON public.frame (int_gpu_mem_reserved);
CREATE INDEX IF NOT EXISTS i_frame_depend_candidates ON public.frame (pk_job, pk_layer, pk_frame)
    WHERE str_state = 'DEPEND' AND int_depend_count > 0;

-- frame_history
CREATE INDEX IF NOT EXISTS i_frame_history_ts_start_stop ON public.frame_history (int_ts_started, int_ts_stopped);
CREATE INDEX IF NOT EXISTS i_frame_history_int_exit_stat ON public.frame_history (int_exit_status);
CREATE INDEX IF NOT EXISTS i_frame_history_int_ts_stopped ON public.frame_history (int_ts_stopped);
CREATE INDEX IF NOT EXISTS i_frame_history_pk_alloc ON public.frame_history (pk_alloc);
CREATE INDEX IF NOT EXISTS i_frame_history_pk_frame ON public.frame_history (pk_frame);
CREATE INDEX IF NOT EXISTS i_frame_history_pk_job ON public.frame_history (pk_job);
CREATE INDEX IF NOT EXISTS i_frame_history_pk_layer ON public.frame_history (pk_layer);
CREATE INDEX IF NOT EXISTS i_frame_history_str_state ON public.frame_history (str_state);

-- proc
CREATE INDEX IF NOT EXISTS i_proc_pkhost ON public.proc (pk_host);
CREATE INDEX IF NOT EXISTS i_proc_pkjob ON public.proc (pk_job);
CREATE INDEX IF NOT EXISTS i_proc_pklayer ON public.proc (pk_layer);
CREATE INDEX IF NOT EXISTS i_proc_pkshow ON public.proc (pk_show);
CREATE INDEX IF NOT EXISTS i_proc_int_gpu_mem_reserved ON public.proc (int_gpu_mem_reserved);

-- depend
CREATE INDEX IF NOT EXISTS i_depend_on_layer ON public.depend (pk_layer_depend_on);
CREATE INDEX IF NOT EXISTS i_depend_er_layer ON public.depend (pk_layer_depend_er);
CREATE INDEX IF NOT EXISTS i_depend_str_target ON public.depend (str_target);
CREATE INDEX IF NOT EXISTS i_depend_on_frame ON public.depend (pk_frame_depend_on);
CREATE INDEX IF NOT EXISTS i_depend_str_type ON public.depend (str_type);
CREATE INDEX IF NOT EXISTS i_depend_er_frame ON public.depend (pk_frame_depend_er);
CREATE INDEX IF NOT EXISTS i_depend_b_composite ON public.depend (b_composite);
CREATE INDEX IF NOT EXISTS i_depend_pkparent ON public.depend (pk_parent);
CREATE INDEX IF NOT EXISTS i_depend_pk_on_job ON public.depend (pk_job_depend_on);
CREATE INDEX IF NOT EXISTS i_depend_pk_er_job ON public.depend (pk_job_depend_er);
CREATE INDEX IF NOT EXISTS i_depend_active_er_job_frame ON public.depend (pk_job_depend_er, pk_frame_depend_er)
    WHERE b_active = true AND pk_frame_depend_er IS NOT NULL;
CREATE INDEX IF NOT EXISTS i_depend_active_er_job_layer ON public.depend (pk_job_depend_er, pk_layer_depend_er)
    WHERE b_active = true AND pk_frame_depend_er IS NULL AND pk_layer_depend_er IS NOT NULL;
CREATE INDEX IF NOT EXISTS i_depend_active_er_job_only ON public.depend (pk_job_depend_er)
    WHERE b_active = true AND pk_frame_depend_er IS NULL AND pk_layer_depend_er IS NULL;

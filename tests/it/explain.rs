//! `stagehand explain` on real PostgreSQL: one test per reason a frame waits, name
//! resolution, and `GET /explain` of a running service once.

use std::time::{Duration, Instant};

use stagehand::{
    explain::{ExplainError, Explanation, Target, explain},
    model::{CORE, TagType, ThreadMode},
    service::Service,
    sim::{
        instances::http_get,
        seed::{FarmSpec, GB, JobSpec, LayerSpec, ShowSpec, SubSpec},
    },
};

use crate::common::{Farm, TestDb, job, small_farm};

/// A live instance holding every show of the farm, as a running service's lease keeper would
/// record it: without one, every answer starts with `not_held`.
fn hold_leases(farm: &Farm) {
    let mut c = farm.client();
    let instance = uuid::Uuid::new_v4();
    c.execute(
        "INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid)
         VALUES ($1, 'it-instance', 'localhost', 4242)",
        &[&instance],
    )
    .unwrap();
    c.execute(
        "INSERT INTO stagehand.show_lease (pk_show, pk_instance, int_epoch)
         SELECT pk_show, $1, 7 FROM show",
        &[&instance],
    )
    .unwrap();
}

fn ask(farm: &Farm, target: Target) -> Explanation {
    let config = farm.shared.config.load();
    explain(&mut farm.client(), &config, &target).expect("explained")
}

/// The reasons of the first layer's first group, as codes.
fn codes(e: &Explanation) -> Vec<&str> {
    e.layers[0].groups[0]
        .reasons
        .iter()
        .map(|w| w.code.as_str())
        .collect()
}

fn why<'e>(e: &'e Explanation, code: &str) -> &'e stagehand::explain::Why {
    e.layers
        .iter()
        .flat_map(|l| &l.groups)
        .flat_map(|g| &g.reasons)
        .find(|w| w.code == code)
        .unwrap_or_else(|| panic!("no {code} in {}", e.to_text()))
}

fn layer(name: &str) -> Target {
    Target::Layer(name.to_owned())
}

fn one_job(layer: LayerSpec) -> FarmSpec {
    small_farm(1, 8, 32, &[], vec![job("j", vec![layer])])
}

#[test]
fn a_waiting_frame_with_a_free_host_is_bookable_and_names_resolve() {
    let farm = Farm::new(&one_job(LayerSpec::simple("l", "1-3", "general")), |_| {});
    hold_leases(&farm);
    let e = ask(&farm, layer("j/l"));
    assert_eq!(codes(&e), ["bookable"], "{}", e.to_text());
    assert_eq!(e.layers[0].groups[0].frames, 3);
    assert_eq!(e.layers[0].groups[0].sample[0], "0001-l");
    let lease = e.show.lease.as_ref().unwrap();
    assert_eq!(lease.instance.as_deref(), Some("it-instance"));
    assert!(lease.alive && lease.epoch == 7);
    assert!(e.to_text().contains("held by instance it-instance"));
    // Jobs by name or id, layers as job/layer or id, frames as job/NNNN-layer or id.
    let job_id = &farm.seeded.jobs[0];
    let layer_id = &farm.seeded.layers[0][0];
    assert_eq!(ask(&farm, Target::Job(job_id.clone())).job.name, "j");
    assert_eq!(ask(&farm, Target::Job("j".into())).layers.len(), 1);
    assert_eq!(ask(&farm, layer(layer_id)).layers[0].name, "l");
    let f = ask(&farm, Target::Frame("j/0002-l".into()));
    assert_eq!(f.layers[0].groups[0].sample, ["0002-l"]);
    let frame_id: String = farm
        .client()
        .query_one("SELECT pk_frame FROM frame WHERE str_name = '0002-l'", &[])
        .unwrap()
        .get(0);
    let f = ask(&farm, Target::Frame(frame_id));
    assert_eq!(f.layers[0].groups[0].sample, ["0002-l"]);
    let config = farm.shared.config.load();
    for missing in [layer("j/nope"), Target::Job("nope".into()), layer("nope")] {
        let err = explain(&mut farm.client(), &config, &missing).unwrap_err();
        assert!(matches!(err, ExplainError::NotFound { .. }), "{err}");
    }
}

#[test]
fn a_show_stagehand_does_not_manage_says_so() {
    let mut spec = one_job(LayerSpec::simple("l", "1", "general"));
    spec.shows[0].managed = false;
    let farm = Farm::new(&spec, |_| {});
    let e = ask(&farm, layer("j/l"));
    assert_eq!(codes(&e), ["not_managed"]);
    assert!(
        e.to_text().contains("not managed by stagehand"),
        "{}",
        e.to_text()
    );
}

#[test]
fn a_show_no_live_instance_holds_waits_for_a_lease() {
    let farm = Farm::new(&one_job(LayerSpec::simple("l", "1", "general")), |_| {});
    let e = ask(&farm, layer("j/l"));
    assert_eq!(codes(&e)[0], "not_held");
    assert!(
        why(&e, "not_held")
            .text
            .contains("no stagehand instance is running")
    );
    hold_leases(&farm);
    farm.client()
        .execute(
            "UPDATE stagehand.instance SET ts_heartbeat = now() - interval '1 hour'",
            &[],
        )
        .unwrap();
    // A second, live instance: the show is still held by the stale one.
    farm.client()
        .execute(
            "INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid)
             VALUES (gen_random_uuid(), 'other', 'localhost', 1)",
            &[],
        )
        .unwrap();
    let e = ask(&farm, layer("j/l"));
    let text = &why(&e, "not_held").text;
    assert!(
        text.contains("it-instance") && text.contains("heartbeat"),
        "{text}"
    );
}

#[test]
fn paused_or_finished_jobs_and_start_after_times_hold_frames() {
    let farm = Farm::new(&one_job(LayerSpec::simple("l", "1-2", "general")), |_| {});
    hold_leases(&farm);
    farm.client()
        .batch_execute(
            "UPDATE job SET b_paused = true;
             UPDATE layer SET ts_start_after = now() + interval '1 hour',
                              str_start_after_reason = 'plate not delivered'",
        )
        .unwrap();
    let e = ask(&farm, layer("j/l"));
    assert_eq!(codes(&e), ["job_paused", "start_after"], "{}", e.to_text());
    let start = why(&e, "start_after");
    assert!(start.text.contains("plate not delivered"), "{}", start.text);
    assert!(start.facts["in_secs"].as_f64().unwrap() > 3500.0);
    farm.client()
        .execute(
            "UPDATE job SET str_state = 'FINISHED', b_paused = false",
            &[],
        )
        .unwrap();
    let e = ask(&farm, layer("j/l"));
    assert_eq!(codes(&e), ["not_pending", "start_after"], "{}", e.to_text());
}

#[test]
fn depend_frames_name_what_they_wait_on() {
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![
            job("up", vec![LayerSpec::simple("sim", "1", "general")]),
            job("j", vec![LayerSpec::simple("l", "1-2", "general")]),
        ],
    );
    let farm = Farm::new(&spec, |_| {});
    hold_leases(&farm);
    let (up, j) = (&farm.seeded.jobs[0], &farm.seeded.jobs[1]);
    let (up_layer, l) = (&farm.seeded.layers[0][0], &farm.seeded.layers[1][0]);
    farm.client()
        .execute(
            "INSERT INTO depend (pk_depend, pk_job_depend_on, pk_job_depend_er, pk_layer_depend_on,
                                 pk_layer_depend_er, str_type, str_signature)
             VALUES (gen_random_uuid()::text, $1, $2, $3, $4, 'LAYER_ON_LAYER', gen_random_uuid()::text)",
            &[up, j, up_layer, l],
        )
        .unwrap();
    farm.client()
        .execute(
            "UPDATE frame SET str_state = 'DEPEND', int_depend_count = 1 WHERE pk_layer = $1",
            &[l],
        )
        .unwrap();
    let e = ask(&farm, Target::Frame("j/0001-l".into()));
    assert_eq!(codes(&e), ["depends"]);
    assert!(
        why(&e, "depends").text.contains("LAYER_ON_LAYER up/sim"),
        "{}",
        e.to_text()
    );
    let e = ask(&farm, layer("j/l"));
    assert_eq!(e.layers[0].groups[0].frames, 2);
    assert_eq!(codes(&e), ["depends"]);
}

#[test]
fn job_and_folder_caps_give_their_numbers() {
    let mut capped = job("j", vec![LayerSpec::simple("l", "1-3", "general")]);
    capped.max_cores = 1;
    let farm = Farm::new(&small_farm(1, 8, 32, &[], vec![capped]), |_| {});
    hold_leases(&farm);
    assert_eq!(farm.drain(), 1);
    let e = ask(&farm, layer("j/l"));
    assert_eq!(codes(&e), ["job_cap"], "{}", e.to_text());
    let cap = why(&e, "job_cap");
    assert_eq!(cap.facts["cap"], "job");
    assert_eq!(
        (cap.facts["booked"].as_i64(), cap.facts["max"].as_i64()),
        (Some(100), Some(100))
    );
    assert!(cap.text.contains("1.00 of 1.00"), "{}", cap.text);

    let mut spec = one_job(LayerSpec::simple("l", "1-3", "general"));
    spec.shows[0].folder_max_cores = 2;
    let farm = Farm::new(&spec, |_| {});
    hold_leases(&farm);
    assert_eq!(farm.drain(), 2);
    let e = ask(&farm, layer("j/l"));
    let cap = why(&e, "job_cap");
    assert_eq!(cap.facts["cap"], "folder", "{}", e.to_text());
    assert!(cap.text.contains("2.00 of 2.00"), "{}", cap.text);
}

#[test]
fn a_job_gpu_cap_gives_its_numbers() {
    let mut l = LayerSpec::simple("l", "1-2", "general");
    l.gpus = 1;
    let mut capped = job("j", vec![l]);
    capped.max_gpus = 1;
    let mut spec = small_farm(1, 8, 32, &[], vec![capped]);
    spec.hosts[0].gpus = 2;
    spec.hosts[0].gpu_mem_kb = 16 * GB;
    let farm = Farm::new(&spec, |_| {});
    hold_leases(&farm);
    assert_eq!(farm.drain(), 1);
    let e = ask(&farm, layer("j/l"));
    let cap = why(&e, "job_cap");
    assert_eq!(cap.facts["resource"], "GPUs", "{}", e.to_text());
    assert!(cap.text.contains("1 of 1 booked"), "{}", cap.text);
}

#[test]
fn a_full_limit_is_named_with_running_over_max() {
    let mut spec = small_farm(2, 8, 32, &[], Vec::new());
    spec.limits = vec![("nuke-license".into(), 1)];
    let mut l = LayerSpec::simple("comp", "1-3", "general");
    l.limits = vec![0];
    spec.jobs = vec![job("j", vec![l])];
    let farm = Farm::new(&spec, |_| {});
    hold_leases(&farm);
    assert_eq!(farm.drain(), 1);
    let e = ask(&farm, layer("j/comp"));
    assert_eq!(codes(&e), ["limit"], "{}", e.to_text());
    assert!(
        why(&e, "limit")
            .text
            .contains("nuke-license is full: 1 of 1 running")
    );
}

#[test]
fn a_subscription_at_its_burst_gives_its_numbers() {
    // At burst: a 2-core subscription with two frames running.
    let mut spec = FarmSpec::single(1, 8, 32, 2);
    spec.jobs = vec![job("j", vec![LayerSpec::simple("l", "1-3", "general")])];
    let farm = Farm::new(&spec, |_| {});
    hold_leases(&farm);
    assert_eq!(farm.drain(), 2);
    let e = ask(&farm, layer("j/l"));
    assert_eq!(codes(&e), ["subscription"], "{}", e.to_text());
    let sub = why(&e, "subscription");
    assert!(
        sub.text.contains("at its burst") && sub.text.contains("2.00 of 2.00"),
        "{}",
        sub.text
    );
}

/// Show 0 ran past its size of 2 cores while show 1 (size 4) was paused; now show 1 waits
/// with nothing booked, further behind its own size.
#[test]
fn a_subscription_past_its_size_yields_to_a_hungrier_show() {
    let mut spec = FarmSpec::single(1, 16, 64, 8);
    spec.shows[0].subs[0].size = 2;
    spec.shows.push(ShowSpec {
        name: "othershow".into(),
        managed: true,
        subs: vec![SubSpec {
            alloc: 0,
            size: 4,
            burst: 8,
        }],
        folder_max_cores: 0,
    });
    let other = JobSpec::simple(
        1,
        "o".into(),
        100,
        vec![LayerSpec::simple("l", "1-3", "general")],
    );
    let mine = job(
        "j",
        vec![
            LayerSpec::simple("l", "1-3", "general"),
            LayerSpec::simple("more", "1", "general"),
        ],
    );
    spec.jobs = vec![mine, other];
    let farm = Farm::new(&spec, |_| {});
    hold_leases(&farm);
    farm.client()
        .batch_execute(
            "UPDATE job SET b_paused = true WHERE str_name = 'o';
             UPDATE layer SET ts_start_after = now() + interval '1 hour' WHERE str_name = 'more'",
        )
        .unwrap();
    assert_eq!(farm.drain(), 3);
    farm.client()
        .batch_execute(
            "UPDATE job SET b_paused = false WHERE str_name = 'o';
             UPDATE layer SET ts_start_after = NULL WHERE str_name = 'more'",
        )
        .unwrap();
    let e = ask(&farm, layer("j/more"));
    assert_eq!(codes(&e), ["subscription"], "{}", e.to_text());
    let sub = why(&e, "subscription");
    assert!(
        sub.text.contains("yields to show othershow"),
        "{}",
        sub.text
    );
    assert_eq!(sub.facts["yields_to"]["size"].as_f64(), Some(4.0));
    assert_eq!(sub.facts["booked"].as_f64(), Some(3.0));
}

#[test]
fn reserved_hosts_and_draining_frames_name_the_host_and_times() {
    let mut wide = LayerSpec::simple("wide", "1", "general");
    wide.cores_min = i64::from(8 * CORE);
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![
            job("w", vec![wide]),
            job("n", vec![LayerSpec::simple("narrow", "1-2", "general")]),
        ],
    );
    let farm = Farm::new(&spec, |_| {});
    hold_leases(&farm);
    farm.client()
        .execute(
            "INSERT INTO stagehand.host_reservation (pk_host, pk_frame, pk_layer, pk_show, int_cores,
                                                     int_mem, ts_shadow, ts_expires)
             SELECT $1, f.pk_frame, f.pk_layer, $2, 800, $3, now() + interval '1 minute',
                    now() + interval '10 minutes'
               FROM frame f WHERE f.pk_layer = $4",
            &[
                &farm.seeded.hosts[0],
                &farm.seeded.shows[0],
                &(GB as i64),
                &farm.seeded.layers[0][0],
            ],
        )
        .unwrap();
    let e = ask(&farm, layer("n/narrow"));
    assert_eq!(codes(&e), ["reserved"], "{}", e.to_text());
    let text = &why(&e, "reserved").text;
    assert!(text.contains("host000 for w/0001-wide"), "{text}");
    let e = ask(&farm, Target::Frame("w/0001-wide".into()));
    assert_eq!(codes(&e), ["draining"], "{}", e.to_text());
    let drain = why(&e, "draining");
    assert_eq!(drain.facts["host"], "host000");
    assert!(drain.facts["expires_in_secs"].as_f64().unwrap() > 500.0);
    let e = ask(&farm, layer("w/wide"));
    assert_eq!(codes(&e), ["draining"], "layer view too: {}", e.to_text());
}

/// A change to a one-host farm that leaves its frame no host.
type Tweak = Box<dyn Fn(&mut FarmSpec)>;

#[test]
fn no_host_fits_lists_what_the_closest_lack() {
    let cases: Vec<(&str, Tweak)> = vec![
        (
            "cores: 8.00 idle of 8.00, needs 16.00",
            Box::new(|s| s.jobs[0].layers[0].cores_min = i64::from(16 * CORE)),
        ),
        (
            "memory: 32.0 GB idle of 32.0 GB, needs 64.0 GB",
            Box::new(|s| s.jobs[0].layers[0].mem_kb = 64 * GB),
        ),
        (
            "GPUs: 0 idle of 0, needs 1",
            Box::new(|s| s.jobs[0].layers[0].gpus = 1),
        ),
        (
            "GPU memory: 0.0 GB idle",
            Box::new(|s| s.jobs[0].layers[0].gpu_mem_kb = GB),
        ),
        (
            "runs linux, the job needs rocky9",
            Box::new(|s| s.jobs[0].os = "rocky9".into()),
        ),
        (
            "thread mode ALL",
            Box::new(|s| {
                s.hosts[0].thread_mode = ThreadMode::All;
                s.jobs[0].layers[0].threadable = false;
            }),
        ),
    ];
    for (lack, tweak) in cases {
        let mut spec = one_job(LayerSpec::simple("l", "1", "general"));
        tweak(&mut spec);
        let farm = Farm::new(&spec, |_| {});
        hold_leases(&farm);
        let e = ask(&farm, layer("j/l"));
        assert_eq!(codes(&e), ["no_host"], "{lack}: {}", e.to_text());
        let no_host = why(&e, "no_host");
        assert_eq!(no_host.facts["hosts_with_tags"], 1);
        let lacks = no_host.facts["closest"][0]["lacks"].to_string();
        assert!(lacks.contains(lack), "{lack}: {lacks}");
    }
}

#[test]
fn os_lists_missing_tags_and_locked_hosts() {
    // A comma list of OSes matches any entry.
    let mut spec = one_job(LayerSpec::simple("l", "1", "general"));
    spec.jobs[0].os = "rocky9".into();
    spec.hosts[0].os = "centos7,rocky9".into();
    let farm = Farm::new(&spec, |_| {});
    hold_leases(&farm);
    assert_eq!(codes(&ask(&farm, layer("j/l"))), ["bookable"]);
    // No host carries the tag at all; a locked host says so.
    let farm = Farm::new(
        &small_farm(
            1,
            8,
            32,
            &[("fx", TagType::Manual)],
            vec![job("j", vec![LayerSpec::simple("l", "1", "nowhere")])],
        ),
        |_| {},
    );
    hold_leases(&farm);
    assert!(
        why(&ask(&farm, layer("j/l")), "no_host")
            .text
            .contains("no host carries")
    );
    let farm = Farm::new(&one_job(LayerSpec::simple("l", "1", "general")), |_| {});
    hold_leases(&farm);
    farm.client()
        .execute("UPDATE host SET str_lock_state = 'LOCKED'", &[])
        .unwrap();
    let e = ask(&farm, layer("j/l"));
    assert!(
        why(&e, "no_host").facts["closest"][0]["lacks"]
            .to_string()
            .contains("is LOCKED")
    );
}

#[test]
fn a_running_frame_is_not_waiting() {
    let farm = Farm::new(&one_job(LayerSpec::simple("l", "1", "general")), |_| {});
    hold_leases(&farm);
    assert_eq!(farm.drain(), 1);
    let e = ask(&farm, Target::Frame("j/0001-l".into()));
    assert_eq!(codes(&e), ["not_waiting"]);
    assert!(why(&e, "not_waiting").text.contains("RUNNING on host000"));
    assert!(ask(&farm, layer("j/l")).layers[0].groups.is_empty());
}

/// A service on a farm whose one layer (two 64-core frames) no 8-core host fits.
fn service_with_a_layer_no_host_fits(db: &TestDb) -> (Service, stagehand::config::Config) {
    let mut big = LayerSpec::simple("big", "1-2", "general");
    big.cores_min = i64::from(64 * CORE);
    let spec = small_farm(1, 8, 32, &[], vec![job("j", vec![big])]);
    stagehand::sim::seed::seed(&mut db.client(), &spec).unwrap();
    let mut config = db.config();
    config.rqd.dry_run = true;
    config.hosts.refresh_interval = Duration::from_millis(200);
    config.scheduler.active_scan_interval = Duration::from_millis(200);
    config.accounting.recompute_interval = Duration::from_millis(300);
    config.cluster.lease_renew_interval = Duration::from_millis(200);
    config.cluster.lease_duration = Duration::from_secs(2);
    config.database.transaction_idle_timeout = Duration::from_secs(1);
    let service = Service::start(config.clone()).unwrap();
    config.http.listen = service.http_address();
    (service, config)
}

/// `stagehand explain --config <config> <args>`: its standard output.
fn run_cli(config: &stagehand::config::Config, args: &[&str]) -> String {
    let file = std::env::temp_dir().join(format!(
        "stagehand-explain-{}-{}.toml",
        std::process::id(),
        args.len()
    ));
    std::fs::write(&file, toml::to_string(config).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stagehand"))
        .arg("explain")
        .arg("--config")
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_explain_endpoint_adds_the_instances_last_pass() {
    let db = TestDb::new();
    let (service, config) = service_with_a_layer_no_host_fits(&db);
    let addr = service.http_address();
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let (code, body) = http_get(&addr, "/explain?layer=j%2Fbig").unwrap();
        assert_eq!(code, 200, "{body}");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        if !doc["layers"][0]["last_pass"].is_null() || Instant::now() > deadline {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let layer = &doc["layers"][0];
    assert_eq!(layer["last_pass"]["reason"], "no_host", "{doc}");
    assert_eq!(layer["last_pass"]["frames"], 2);
    assert_eq!(layer["groups"][0]["reasons"][0]["code"], "no_host");
    assert_eq!(doc["instance"]["holds_show"], true, "{doc}");
    assert!(
        layer["clusters"].as_array().is_some_and(|c| !c.is_empty()),
        "{doc}"
    );
    assert_eq!(http_get(&addr, "/explain").unwrap().0, 400);
    assert_eq!(http_get(&addr, "/explain?job=nope").unwrap().0, 404);
    // The command line asks the instance at `[http] listen`, or with --database-only the
    // database alone.
    let text = run_cli(&config, &["layer", "j/big"]);
    assert!(
        text.contains("asked instance") && text.contains("last pass"),
        "{text}"
    );
    assert!(text.contains("because [no_host]"), "{text}");
    let json = run_cli(
        &config,
        &["--json", "--database-only", "frame", "j/0001-big"],
    );
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(doc["instance"].is_null(), "{doc}");
    assert_eq!(
        doc["layers"][0]["groups"][0]["reasons"][0]["code"],
        "no_host"
    );
    service.shutdown(Duration::from_secs(5));
}

//! Unit tests of the configuration module.

use super::*;

#[test]
fn empty_file_is_the_default() {
    let config = Config::parse("", "test").unwrap();
    assert_eq!(config, Config::default());
    config.validate().unwrap();
}

#[test]
fn shipped_file_equals_defaults() {
    let text = include_str!("../../conf/stagehand.toml");
    let config = Config::parse(text, "conf/stagehand.toml").unwrap();
    assert_eq!(
        config,
        Config::default(),
        "conf/stagehand.toml drifted from Config::default()"
    );
}

#[test]
fn unknown_key_is_named() {
    let err = Config::parse("[scheduler]\nworker_thread = 3\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("scheduler.worker_thread"), "{err}");
    assert!(err.contains("f.toml:2"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn bad_type_is_named() {
    let err = Config::parse("[rqd]\nport = \"eight\"\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rqd.port"), "{err}");
}

#[test]
fn bad_value_is_named() {
    let config = Config::parse("[scheduler]\nworker_threads = 0\n", "f.toml").unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.starts_with("scheduler.worker_threads = 0"), "{err}");
    let config = Config::parse("[service]\nshutdown_grace = \"0s\"\n", "f.toml").unwrap();
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("service.shutdown_grace")
    );
}

#[test]
fn durations_are_humane() {
    let config = Config::parse("[accounting]\nrecompute_interval = \"1m 30s\"\n", "f").unwrap();
    assert_eq!(
        config.accounting.recompute_interval,
        Duration::from_secs(90)
    );
    assert!(Config::parse("[accounting]\nrecompute_interval = \"soon\"\n", "f").is_err());
}

#[test]
fn cold_keys_are_kept_on_reload() {
    let old = Config::default();
    let mut new = Config::default();
    new.scheduler.worker_threads = 9;
    new.scheduler.empty_sleep = Duration::from_secs(1);
    assert_eq!(old.cold_changes(&new), vec!["scheduler.worker_threads"]);
    let applied = old.with_cold_keys_of(new);
    assert_eq!(applied.scheduler.worker_threads, 4);
    assert_eq!(applied.scheduler.empty_sleep, Duration::from_secs(1));
}

#[test]
fn endpoint_template() {
    let mut config = Config::default();
    assert_eq!(config.rqd_endpoint("render01"), "render01:8444");
    config.rqd.endpoint = "127.0.0.1:{port}".into();
    config.rqd.port = 9000;
    assert_eq!(config.rqd_endpoint("render01"), "127.0.0.1:9000");
}

/// Every duration key of the schema as `section.key`, found in the serialized defaults (so a
/// new duration key is covered without being listed here).
fn duration_keys() -> Vec<(String, String)> {
    let text = toml::to_string(&Config::default()).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let mut keys = Vec::new();
    for (section, value) in &table {
        for (key, value) in value.as_table().into_iter().flatten() {
            if value
                .as_str()
                .is_some_and(|v| humantime::parse_duration(v).is_ok())
            {
                keys.push((section.clone(), key.clone()));
            }
        }
    }
    keys
}

#[test]
fn huge_durations_are_rejected_naming_the_key() {
    let keys = duration_keys();
    assert_eq!(keys.len(), 25, "{keys:?}");
    for (section, key) in keys {
        // `400000000000y` fits a Duration but panics `Instant + Duration` in every timer.
        for value in ["400000000000y", "31days"] {
            let text = format!("[{section}]\n{key} = \"{value}\"\n");
            let config = Config::parse(&text, "f.toml").unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{section}.{key} = ")),
                "{text}: {err}"
            );
        }
        let text = format!("[{section}]\n{key} = \"30days\"\n");
        if let Err(err) = Config::parse(&text, "f.toml").unwrap().validate() {
            // 30 days is allowed; only a cross-key rule may refuse it.
            assert!(err.to_string().contains("must be"), "{text}: {err}");
        }
    }
}

#[test]
fn check_config_names_a_huge_duration() {
    let path = std::env::temp_dir().join(format!("stagehand-huge-{}.toml", std::process::id()));
    fs::write(&path, "[scheduler]\nempty_sleep = \"400000000000y\"\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    let _ = fs::remove_file(&path);
    assert!(err.starts_with("scheduler.empty_sleep = "), "{err}");
    assert!(err.contains("at most 30days"), "{err}");
}

#[test]
fn duration_overflow_is_an_error_not_a_panic() {
    for value in [
        // humantime builds `Duration::new(u64::MAX, 1_000_000_000)` here and panics.
        "18446744073709551615s 1000000000ns",
        "18446744073709551615s 999999999ns 1ns",
        "18446744073709551616s",
        "600000000000y",
        "99999999999999999999999999999999999999999h",
        "1.99999999999999999999999999999999999s",
    ] {
        let text = format!("[hosts]\nping_timeout = \"{value}\"\n");
        let result = std::panic::catch_unwind(|| Config::parse(&text, "f.toml"));
        let err = result.expect("no panic").expect_err(value).to_string();
        assert!(
            err.contains("f.toml:2: hosts.ping_timeout"),
            "{value}: {err}"
        );
    }
}

#[test]
fn durations_keep_humantime_syntax() {
    for (value, secs, nanos) in [
        ("1m 30s", 90, 0),
        ("1m30s", 90, 0),
        ("2h 37min", 9420, 0),
        ("500ms", 0, 500_000_000),
        ("1.5h", 5400, 0),
        ("4.2s", 4, 200_000_000),
        ("1day 2hours", 93_600, 0),
        ("3w", 1_814_400, 0),
        ("1M", 2_630_016, 0),
        ("1y", 31_557_600, 0),
        ("7 secs", 7, 0),
        ("250us", 0, 250_000),
        ("0", 0, 0),
    ] {
        let text = format!("[hosts]\nping_timeout = \"{value}\"\n");
        let config = Config::parse(&text, "f").unwrap();
        assert_eq!(
            config.hosts.ping_timeout,
            Duration::new(secs, nanos),
            "{value}"
        );
    }
    for value in ["", "5", "5 parsecs", "s", "1.s", "-1s", "1.5ns", "1h-"] {
        let text = format!("[hosts]\nping_timeout = \"{value}\"\n");
        assert!(Config::parse(&text, "f").is_err(), "{value:?}");
    }
}

/// Every section's rules, each broken alone: the whole message is part of the interface
/// (operators grep logs for it), so it must not drift when the validators move.
#[test]
fn each_rule_names_its_key_value_and_reason() {
    for (text, expected) in [
        (
            "[database]\nurl = \" \"\n",
            "database.url = \"\": must name a database (or set STAGEHAND_DATABASE_URL)",
        ),
        (
            "[database]\nurl = \"host='unterminated\"\n",
            "database.url = <hidden>: is not a valid PostgreSQL connection string",
        ),
        (
            "[database]\npool_size = 0\n",
            "database.pool_size = 0: must be between 1 and 1000",
        ),
        (
            "[database]\ntransaction_idle_timeout = \"15s\"\n",
            "database.transaction_idle_timeout = 15s: must be shorter than cluster.lease_duration",
        ),
        (
            "[scheduler]\nbatch_size = 0\n",
            "scheduler.batch_size = 0: must be between 1 and 100000",
        ),
        (
            "[scheduler.placement]\nkind = \"scored\"\nmax_candidates = 0\n",
            "scheduler.placement = Scored { max_candidates: 0, weights: Weights { cores: 1.0, \
             mem: 1.0, gpus: 2.0, gpu_mem: 1.0, gpu_count_reservation: 2.0, \
             gpu_mem_reservation: 2.0 } }: max_candidates must be between 1 and 100000",
        ),
        (
            "[reservations]\nmax_reservations = 0\n",
            "reservations.max_reservations = 0: must be between 1 and 100000",
        ),
        (
            "[reservations]\ncandidates = 10001\n",
            "reservations.candidates = 10001: must be between 1 and 10000",
        ),
    ] {
        assert_message(text, expected);
    }
}

/// The rules of the sections added for scheduling quality, each broken alone.
#[test]
fn each_quality_rule_names_its_key_value_and_reason() {
    for (text, expected) in [
        (
            "[memory]\nmin_frames = 0\n",
            "memory.min_frames = 0: must be between 1 and 1000000",
        ),
        (
            "[memory]\nheadroom = -0.1\n",
            "memory.headroom = -0.1: must be between 0 and 10",
        ),
        (
            "[memory]\nfloor_kb = 1024\n",
            "memory.floor_kb = 1024: must be at least 65536 (64 MB)",
        ),
        (
            "[licenses]\nprovider = \"https://lic/\"\n",
            "licenses.provider = https://lic/: must be an http:// URL or the path of an executable",
        ),
        (
            "[licenses]\npoll_interval = \"5m\"\n",
            "licenses.stale_after = 5m: must be longer than licenses.poll_interval",
        ),
        (
            "[licenses]\ndenied_exit_statuses = [330, 0]\n",
            "licenses.denied_exit_statuses = 0: 0 is success, not a denial",
        ),
        (
            "[licenses.headroom]\n\"a,b\" = 1\n",
            "licenses.headroom = a,b: license names are non-empty, without commas or blanks",
        ),
    ] {
        assert_message(text, expected);
    }
}

/// The rules of the remaining sections, each broken alone.
#[test]
fn each_service_rule_names_its_key_value_and_reason() {
    for (text, expected) in [
        (
            "[rqd]\nport = 0\n",
            "rqd.port = 0: must be between 1 and 65535",
        ),
        (
            "[rqd]\nendpoint = \"localhost\"\n",
            "rqd.endpoint = localhost: must be an address template such as \"{host}:{port}\"",
        ),
        (
            "[rqd]\nlaunch_threads = 0\n",
            "rqd.launch_threads = 0: must be between 1 and 1024",
        ),
        (
            "[rqd]\nmemory_soft_limit = 0.5\n",
            "rqd.memory_soft_limit = 0.5: must be at least 1.0",
        ),
        (
            "[rqd]\nmemory_hard_limit = 1.5\n",
            "rqd.memory_hard_limit = 1.5: must be at least rqd.memory_soft_limit",
        ),
        (
            "[cluster]\nlease_renew_interval = \"8s\"\n",
            "cluster.lease_renew_interval = 8s: must be at most half of cluster.lease_duration",
        ),
        (
            "[http]\nlisten = \"localhost:9090\"\n",
            "http.listen = localhost:9090: must be an address such as 127.0.0.1:9090",
        ),
        (
            "[hosts]\nping_timeout = \"0s\"\n",
            "hosts.ping_timeout = 0s: must be greater than zero",
        ),
    ] {
        assert_message(text, expected);
    }
}

/// `text` parses and fails validation with exactly `expected`.
fn assert_message(text: &str, expected: &str) {
    let config = Config::parse(text, "f.toml").unwrap();
    let err = config.validate().expect_err(text).to_string();
    assert_eq!(err, expected, "{text}");
}

/// Sections are checked in order (durations first), so the first broken rule is reported.
#[test]
fn the_first_broken_rule_is_reported() {
    let text = "[http]\nlisten = \"x\"\n[rqd]\nport = 0\n[scheduler]\nworker_threads = 0\n";
    let err = Config::parse(text, "f").unwrap().validate().unwrap_err();
    assert!(
        err.to_string().starts_with("scheduler.worker_threads"),
        "{err}"
    );
    let text = "[database]\npool_size = 0\n[service]\nshutdown_grace = \"0s\"\n";
    let err = Config::parse(text, "f").unwrap().validate().unwrap_err();
    assert!(
        err.to_string().starts_with("service.shutdown_grace"),
        "{err}"
    );
}

#[test]
fn a_pool_smaller_than_the_kept_connections_is_refused() {
    let text = "[database]\npool_size = 6\n[scheduler]\nworker_threads = 4\n";
    let err = Config::parse(text, "f.toml")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("database.pool_size"), "{err}");
    assert!(err.contains("worker_threads + 3 (7)"), "{err}");
    let enough = "[database]\npool_size = 7\n[scheduler]\nworker_threads = 4\n";
    Config::parse(enough, "f.toml").unwrap().validate().unwrap();
}

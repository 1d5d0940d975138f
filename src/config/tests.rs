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

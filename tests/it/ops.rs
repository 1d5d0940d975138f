//! What an operator installs and watches: the Grafana dashboard's queries name only metrics a
//! running instance exports, and the Debian package installs, configures and purges cleanly.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use stagehand::sim::{
    fake_rqd::Behaviour,
    farm::SimFarm,
    instances::{Instance, metric_sum},
    pg::PgOptions,
    workload,
};

use crate::service::wait;

const DASHBOARD: &str = "conf/grafana/stagehand.json";

/// The namespaces of the series stagehand exports: its own, OpenCue's scheduler names, and the
/// process collector's. The dashboard queries nothing else.
const NAMESPACES: [&str; 3] = ["stagehand_", "scheduler_", "process_"];

/// Families whose series appear only once their event happened, which the busy instance of
/// this test need not produce (a healthy run has no guard losses or lost commits). `/metrics`
/// leaves a labelled family out until it has a child, so where one of these is absent the test
/// asks the library's registry instead (see `registered`). Any other absent series fails.
const EVENT_ONLY: [(&str, &str); 7] = [
    (
        "stagehand_guard_losses_total",
        "another writer took the row between planning and commit",
    ),
    (
        "stagehand_commit_outcome_unknown_total",
        "a COMMIT whose answer was lost",
    ),
    (
        "stagehand_orphaned_launches_total",
        "an instance died between booking and launch",
    ),
    (
        "stagehand_bad_input_total",
        "a frame range that does not parse",
    ),
    (
        "stagehand_db_errors_total",
        "a failed statement or connection",
    ),
    (
        "stagehand_wide_frame_reservation_events_total",
        "a frame wider than any free host",
    ),
    (
        "stagehand_counter_drift_total",
        "in-memory counters that drifted from SUM(proc)",
    ),
];

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stagehand"))
}

/// Every PromQL expression of the dashboard: panel targets (rows nest their panels) and the
/// template variables' queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The series names an expression selects: identifiers in stagehand's namespaces outside
/// quoted strings (label values) — label names and functions never carry those prefixes.
fn series_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' {
            // Skip the string, escapes included.
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => drop(chars.next()),
                    '"' => break,
                    _ => {}
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, c)) = chars.peek() {
                if !(c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    break;
                }
                end = i + c.len_utf8();
                chars.next();
            }
            let word = &expr[start..end];
            if NAMESPACES.iter().any(|p| word.starts_with(p)) {
                names.insert(word.to_owned());
            }
        }
    }
    names
}

/// The exposition's sample names and each family's type (from its `# TYPE` line).
fn exported(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut samples = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_owned(), kind.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (samples, types)
}

/// The family a series belongs to: a histogram's `_bucket`, `_sum` and `_count` series are
/// its family's; any other name is its own family.
fn family<'a>(series: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base;
            }
        }
    }
    series
}

/// True when the library registers a family of that name. The registry lists no descriptors,
/// but it refuses a second collector whose name is taken with other help text: a probe under
/// the name is refused exactly when the name is registered (and removed again when it is not).
fn registered(name: &str) -> bool {
    stagehand::metrics::init();
    let probe = prometheus::IntCounter::new(name, "probe of the ops test").unwrap();
    match stagehand::metrics::REGISTRY.register(Box::new(probe.clone())) {
        Err(_) => true,
        Ok(()) => {
            let _ = stagehand::metrics::REGISTRY.unregister(Box::new(probe));
            false
        }
    }
}

/// Runs a real instance on a simulated farm with the fake RQD over gRPC until the labelled
/// families have children: launches refused at first (launch failures, undos), then
/// accepted; bookings, passes, sleeps, leases, refreshes, a recompute, cap refusals (a small
/// folder cap) and one SIGHUP reload.
/// Returns its `/metrics` text.
fn metrics_of_a_busy_instance() -> String {
    let spec = workload::steady(0.01, 7, 30);
    let farm = SimFarm::start(&spec, &PgOptions::default(), true, 0).unwrap();
    // One folder capped at two cores: its jobs' frames are refused by the folder cap in
    // memory (`scheduler_accounting_limit_exceeded_total{table="folder"}`).
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE folder_resource SET int_max_cores = 200
              WHERE pk_folder = (SELECT pk_folder FROM job ORDER BY str_name LIMIT 1)",
            &[],
        )
        .unwrap();
    let rqd = farm.rqd.as_ref().expect("the fake RQD fleet");
    rqd.set_behaviour(Behaviour::Refuse(grpcio::RpcStatusCode::UNAVAILABLE));
    let instance = Instance::spawn(&binary(), &farm.config(false), "ops").unwrap();
    assert!(instance.wait_ready(Duration::from_secs(30)), "ready");
    let launches = |result_ok: bool| {
        let text = instance.metrics();
        let ok = metric_sum(&text, "stagehand_rqd_launches_total{result=\"ok\"}");
        if result_ok {
            ok
        } else {
            metric_sum(&text, "stagehand_rqd_launches_total") - ok
        }
    };
    assert!(
        wait(Duration::from_secs(30), || launches(false) > 0.0),
        "a refused launch"
    );
    rqd.set_behaviour(Behaviour::Accept);
    instance.signal(libc::SIGHUP);
    let settled = wait(Duration::from_secs(60), || {
        let text = instance.metrics();
        launches(true) >= 10.0
            && metric_sum(&text, "stagehand_compensations_total") > 0.0
            && metric_sum(&text, "stagehand_config_reloads_total") > 0.0
            && metric_sum(&text, "scheduler_recompute_cycle_duration_seconds_count") > 0.0
            && metric_sum(&text, "stagehand_waiting_frames") > 0.0
            && metric_sum(&text, "scheduler_accounting_limit_exceeded_total") > 0.0
    });
    let text = instance.metrics();
    assert!(settled, "the instance booked, launched and undid:\n{text}");
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    text
}

/// Every series the dashboard queries is exported by `/metrics` of a running instance, with
/// the right suffixes (a histogram is queried through `_bucket`, `_sum` or `_count`, a
/// counter or gauge by its own name); of the families that appear only after a rare event
/// (`EVENT_ONLY`), the absent ones are at least registered.
#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 40, "{} queries", queries.len());
    let mut wanted = BTreeSet::new();
    for q in &queries {
        let names = series_names(q);
        assert!(!names.is_empty(), "a query with no stagehand series: {q}");
        wanted.extend(names);
    }

    assert!(
        !registered("stagehand_no_such_metric_total"),
        "the probe tells names apart"
    );
    let text = metrics_of_a_busy_instance();
    let (samples, types) = exported(&text);
    let mut missing = Vec::new();
    let mut event_only = BTreeSet::new();
    for series in &wanted {
        let fam = family(series, &types);
        if types.get(series.as_str()).is_some_and(|t| t == "histogram") {
            missing.push(format!("{series}: a histogram, query _bucket/_sum/_count"));
        } else if samples.contains(series) {
            continue;
        } else if EVENT_ONLY.iter().any(|(n, _)| *n == fam) && registered(fam) {
            event_only.insert(fam.to_owned());
        } else {
            missing.push(format!("{series}: not in /metrics"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}\n/metrics:\n{text}");
    println!(
        "dashboard: {} series checked, registered only (event-only): {event_only:?}",
        wanted.len()
    );
}

/// The dashboard's queries parse as PromQL: each becomes a recording rule that `promtool
/// check rules` validates (Grafana's variables replaced by values), when promtool is here.
#[test]
fn the_dashboard_queries_parse_as_promql() {
    if Command::new("promtool").arg("--version").output().is_err() {
        println!("skipped: promtool is not installed (Debian package prometheus)");
        return;
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries(&dashboard).iter().enumerate() {
        if q.starts_with("label_values(") {
            continue;
        }
        let expr = q
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let path = std::env::temp_dir().join(format!("stagehand-dashboard-{}.yml", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The package `scripts/package.sh` built for this target directory, or `STAGEHAND_DEB`.
fn built_package() -> PathBuf {
    if let Ok(path) = std::env::var("STAGEHAND_DEB") {
        return PathBuf::from(path);
    }
    // The test runs as <target>/release/deps/it-<hash>; cargo deb writes <target>/debian.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("the target directory");
    target
        .join("debian")
        .join(format!("stagehand_{}_amd64.deb", env!("CARGO_PKG_VERSION")))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The control fields, the conffile and the files with their modes, as `dpkg-deb` reads them.
fn check_package_metadata(deb: &Path) {
    let info = run(Command::new("dpkg-deb").arg("--info").arg(deb));
    for field in [
        "Package: stagehand".to_owned(),
        format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Architecture: amd64".to_owned(),
        "Section: admin".to_owned(),
    ] {
        assert!(info.contains(&field), "{field} in\n{info}");
    }
    assert!(
        info.contains("Depends:") && info.contains("passwd"),
        "{info}"
    );
    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(deb)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/stagehand/stagehand.toml");
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/stagehand"),
        ("-rw-r----- root/root", "./etc/stagehand/stagehand.toml"),
        (
            "-rw-r--r-- root/root",
            "./usr/lib/systemd/system/stagehand.service",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/stagehand/README.md",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/stagehand/grafana/stagehand.json",
        ),
    ] {
        let line = contents
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} in\n{contents}"));
        let owner = line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(owner.replace("0/0", "root/root"), mode, "{line}");
    }
}

/// A throwaway root for `dpkg --root`: an empty dpkg database, the account files the
/// postinst writes to, and a policy-rc.d that forbids every service action (the systemd
/// snippets must never touch the machine's own services). Removed on drop.
struct Root(PathBuf);

impl Root {
    fn new() -> Root {
        let root = std::env::temp_dir().join(format!("stagehand-deb-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in [
            "etc",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "usr/sbin",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for (file, text) in [
            ("var/lib/dpkg/status", ""),
            ("var/lib/dpkg/available", ""),
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
            ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
            ("etc/gshadow", "root:*::\n"),
            ("usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n"),
        ] {
            std::fs::write(root.join(file), text).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("usr/sbin/policy-rc.d"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        Root(root)
    }

    /// `dpkg --root` with the maintainer scripts run outside a chroot (the root has no shell
    /// of its own); they see DPKG_ROOT and write inside it. Dependencies are not installed
    /// in the throwaway root, hence --force-depends.
    fn dpkg(&self, args: &[&str]) -> String {
        run(Command::new("dpkg")
            .arg(format!("--root={}", self.0.display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args))
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.0.join(path)).unwrap_or_default()
    }

    fn stagehand_entry(&self, file: &str) -> Option<String> {
        self.read(file)
            .lines()
            .find(|l| l.starts_with("stagehand:"))
            .map(str::to_owned)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// After `dpkg -i`: the system user, the configuration readable by its group only, the files
/// as in the repository, the unit registered with deb-systemd-helper but not enabled, and a
/// production binary (no simulator) that accepts the packaged configuration.
fn check_installed(root: &Root) {
    use std::os::unix::fs::MetadataExt;
    let user = root.stagehand_entry("etc/passwd").expect("user stagehand");
    let fields: Vec<&str> = user.split(':').collect();
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "a system uid: {user}"
    );
    assert_eq!(fields[5..], ["/nonexistent", "/usr/sbin/nologin"], "{user}");
    let group = root.stagehand_entry("etc/group").expect("group stagehand");
    let gid: u32 = group.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(fields[3].parse::<u32>().unwrap(), gid, "primary group");
    for (path, mode) in [
        ("etc/stagehand", 0o750),
        ("etc/stagehand/stagehand.toml", 0o640),
    ] {
        let meta = std::fs::metadata(root.0.join(path)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (0, gid, mode),
            "{path}"
        );
    }
    for (installed, source) in [
        ("etc/stagehand/stagehand.toml", "conf/stagehand.toml"),
        (
            "usr/lib/systemd/system/stagehand.service",
            "conf/stagehand.service",
        ),
        ("usr/share/stagehand/grafana/stagehand.json", DASHBOARD),
    ] {
        assert!(
            root.read(installed) == std::fs::read_to_string(source).unwrap(),
            "/{installed} differs from {source}: a stale package? run scripts/package.sh"
        );
    }
    let unit = root.read("usr/lib/systemd/system/stagehand.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/stagehand run --config /etc/stagehand/stagehand.toml")
    );
    assert!(unit.contains("User=stagehand"));
    assert!(
        root.0
            .join("var/lib/systemd/deb-systemd-helper-enabled/stagehand.service.dsh-also")
            .exists(),
        "unit state recorded for deb-systemd-helper"
    );
    assert!(
        !root
            .0
            .join("etc/systemd/system/multi-user.target.wants/stagehand.service")
            .exists(),
        "not enabled before it is configured"
    );
    let bin = root.0.join("usr/bin/stagehand");
    let help = run(Command::new(&bin).arg("--help"));
    assert!(
        help.contains("check-config") && help.contains("migrate"),
        "{help}"
    );
    assert!(
        !help.contains("demo") && !help.contains("bench"),
        "no simulator: {help}"
    );
    run(Command::new(&bin)
        .args(["check-config", "--config"])
        .arg(root.0.join("etc/stagehand/stagehand.toml")));
}

/// The Debian package: its metadata and contents, then an install into a throwaway root
/// (twice: the postinst is idempotent), a remove that keeps the configuration, and a purge
/// that removes it and the user. Needs the package built (`scripts/package.sh`; CI does it
/// before the tests) and, for the install, root.
#[test]
fn the_debian_package_installs_and_purges_in_a_throwaway_root() {
    let deb = built_package();
    if !deb.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI builds {} before the tests (.ci/run: scripts/package.sh)",
            deb.display()
        );
        println!(
            "skipped: {} not built; run scripts/package.sh",
            deb.display()
        );
        return;
    }
    check_package_metadata(&deb);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("install skipped: dpkg --root needs root");
        return;
    }
    let host_has_user = Command::new("getent")
        .args(["passwd", "stagehand"])
        .status()
        .is_ok_and(|s| s.success());
    let root = Root::new();
    let deb = deb.to_str().unwrap();
    root.dpkg(&["-i", deb]);
    check_installed(&root);
    root.dpkg(&["-i", deb]);
    check_installed(&root);
    assert_eq!(root.read("etc/passwd").matches("stagehand:").count(), 1);

    std::fs::write(
        root.0.join("etc/stagehand/environment"),
        "STAGEHAND_DATABASE_URL=x\n",
    )
    .unwrap();
    root.dpkg(&["--remove", "stagehand"]);
    assert!(!root.0.join("usr/bin/stagehand").exists());
    assert!(
        root.0.join("etc/stagehand/stagehand.toml").exists(),
        "remove keeps conffiles"
    );
    assert!(
        root.stagehand_entry("etc/passwd").is_some(),
        "remove keeps the user"
    );

    root.dpkg(&["--purge", "stagehand"]);
    assert!(
        !root.0.join("etc/stagehand").exists(),
        "purge removes /etc/stagehand"
    );
    assert_eq!(
        root.stagehand_entry("etc/passwd"),
        None,
        "purge removes the user"
    );
    assert_eq!(root.stagehand_entry("etc/group"), None, "and its group");
    let still = Command::new("getent")
        .args(["passwd", "stagehand"])
        .status()
        .is_ok_and(|s| s.success());
    assert_eq!(
        still, host_has_user,
        "the machine's own accounts are untouched"
    );
}

//! The status page in a real browser: a running instance books a simulated 300-host farm
//! (the demo's shape, with a show, job and layer of very long names), headless Chromium loads
//! `/` at 1,280 × 900, and the DOM it renders must hold the key figures and report (through
//! the page's own script) a scroll width within the window, with every `<details>` closed
//! and open. Then the database goes away and the page still answers, saying so.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use stagehand::{
    service::Service,
    sim::{
        farm::SimFarm,
        instances::http_get,
        pg::PgOptions,
        seed::{JobSpec, LayerSpec, ShowSpec, SubSpec},
        workload,
    },
};

use crate::service::wait;

/// As long as a folder name (derived from it) may be: 36 characters.
const LONG_SHOW: &str = "a-show-whose-name-is-36-chars-longer";
const INSTANCE: &str = "page-test-instance-with-a-long-name.render.example.com";

/// The browser, or `None` (with a message) when it is absent and CI is unset.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .filter(|s| s.success())
            .map(|_| PathBuf::from(name))
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required under CI (scripts/setup.sh installs it)"
        );
        eprintln!("SKIPPED: chromium is not installed (scripts/setup.sh installs it)");
    }
    found
}

/// The DOM of `url` after its scripts ran, as headless Chromium renders it at 1,280 px.
fn dump_dom(browser: &PathBuf, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("stagehand-page-{}", std::process::id()));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--window-size=1280,900",
            "--virtual-time-budget=2000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The integer value of attribute `name` in `dom`.
fn attribute(dom: &str, name: &str) -> i64 {
    let key = format!("{name}=\"");
    let start = dom
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in the DOM"))
        + key.len();
    let end = dom[start..].find('"').unwrap() + start;
    dom[start..end].parse().unwrap()
}

/// The text of the element with `id` up to its first `</div>`: the section it opens.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let key = format!("id=\"{id}\"");
    let start = dom.find(&key).unwrap_or_else(|| panic!("#{id} in the DOM"));
    let rest = &dom[start..];
    &rest[..rest.find("</table>").map_or(rest.len(), |e| e + 8)]
}

/// The demo's farm at 300 hosts plus a show, job and layer whose names are far too long.
fn farm_spec() -> stagehand::sim::seed::FarmSpec {
    let mut spec = workload::demo(300, 40, 2026, 0.2);
    spec.shows.push(ShowSpec {
        name: LONG_SHOW.into(),
        managed: true,
        subs: vec![SubSpec {
            alloc: 0,
            size: 50,
            burst: 100,
        }],
        folder_max_cores: 0,
    });
    let layer = LayerSpec::simple(
        "a-layer-name-as-long-as-a-pipeline-would-ever-generate-for-one-render-pass",
        "1-400",
        "general",
    );
    spec.jobs.push(JobSpec::simple(
        spec.shows.len() - 1,
        format!("{LONG_SHOW}-shot0420-lighting-v0042-with-a-very-long-job-name-for-the-page"),
        100,
        vec![layer],
    ));
    spec
}

#[test]
fn the_status_page_fits_1280_pixels_in_chromium_and_survives_the_database() {
    let Some(browser) = chromium() else {
        return;
    };
    let mut farm = SimFarm::start(&farm_spec(), &PgOptions::default(), true, 0).unwrap();
    let mut config = farm.config(false);
    config.cluster.instance_name = INSTANCE.into();
    let service = Service::start(config).unwrap();
    let addr = service.http_address();
    assert!(
        wait(Duration::from_secs(60), || {
            service.shared().stats.totals().0 >= 200
        }),
        "the instance books"
    );
    // A compensated launch, as `db::compensation` leaves it, for the failures table; in a
    // job paused a few passes earlier, so that no pass books the frame again meanwhile.
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    let job: String = client
        .query_one(
            "UPDATE job SET b_paused = true
              WHERE pk_job = (SELECT f.pk_job FROM frame f WHERE f.str_state = 'WAITING'
                               GROUP BY f.pk_job ORDER BY count(*) DESC, f.pk_job LIMIT 1)
             RETURNING pk_job",
            &[],
        )
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_secs(3));
    let row = client
        .query_one(
            "UPDATE frame f SET int_exit_status = 299, ts_stopped = now(), str_host = 'lrg001'
              WHERE pk_frame = (SELECT pk_frame FROM frame WHERE pk_job = $1
                                   AND str_state = 'WAITING' ORDER BY str_name LIMIT 1)
             RETURNING pk_frame, (SELECT str_name FROM job WHERE pk_job = f.pk_job) || '/' || str_name",
            &[&job],
        )
        .unwrap();
    let (id, failed): (String, String) = (row.get(0), row.get(1));
    std::thread::sleep(stagehand::page::CACHE_FOR);

    let dom = dump_dom(&browser, &format!("http://{addr}/"));
    if let Some(path) = std::env::var_os("STAGEHAND_PAGE_DOM") {
        std::fs::write(path, &dom).unwrap();
    }
    assert!(dom.contains("cores busy"), "farm totals: {dom}");
    assert!(section(&dom, "farm").contains("stranded cores"));
    let shows = section(&dom, "shows");
    assert!(
        shows.contains(">feature<") && shows.contains(LONG_SHOW),
        "{shows}"
    );
    assert!(
        section(&dom, "instances").contains(INSTANCE),
        "instance by name"
    );
    let state: String = client
        .query_one("SELECT str_state FROM frame WHERE pk_frame = $1", &[&id])
        .unwrap()
        .get(0);
    assert!(
        section(&dom, "failures").contains(&failed),
        "launch failure of {failed} ({state} now)"
    );
    assert!(
        dom.contains("href=\"/explain?layer="),
        "layers link their explanation"
    );
    assert!(dom.contains("<details id=\"clusters-"), "chunks collapse");
    assert!(dom.contains("<svg"), "the sparkline");
    let (shown, open) = (
        attribute(&dom, "data-scroll-width"),
        attribute(&dom, "data-scroll-width-open"),
    );
    assert!(
        shown <= 1280 && open <= 1280,
        "fits 1,280 px: {shown} px as shown, {open} px with every <details> open"
    );

    // Without its database the page still renders, from memory, and says why.
    farm.cluster.stop().unwrap();
    std::thread::sleep(stagehand::page::CACHE_FOR);
    let (code, page) = http_get(&addr, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("database unreachable") && page.contains("cores busy"));
    assert!(page.contains(INSTANCE));
    let _ = service.shutdown(Duration::from_secs(10));
}

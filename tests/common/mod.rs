//! Fixtures shared by the integration tests: a real PostgreSQL server for the whole run and a
//! fresh, migrated database per test.
//!
//! The server is `STAGEHAND_TEST_PG` (a connection string without `dbname`, for a server where
//! databases may be created) when set; otherwise a private cluster started on first use
//! (`stagehand::sim::pg`) and removed when the test process exits. Each [`TestDb`] is a copy
//! of a template that has the whole `sql/` applied, and is dropped with the test.

#![allow(dead_code)]

use std::sync::{
    Mutex, OnceLock,
    atomic::{AtomicU32, Ordering},
};

use stagehand::{
    config::Config,
    db,
    sim::pg::{PgCluster, PgOptions},
};

static CLUSTER: Mutex<Option<PgCluster>> = Mutex::new(None);
static SERVER: OnceLock<String> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);
const TEMPLATE: &str = "stagehand_template";

extern "C" fn stop_cluster() {
    if let Ok(mut cluster) = CLUSTER.lock() {
        drop(cluster.take());
    }
}

/// The server connection string without a database name.
fn server() -> &'static str {
    SERVER.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        let base = match std::env::var("STAGEHAND_TEST_PG") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                let cluster = PgCluster::start(&PgOptions::default())
                    .expect("start a private PostgreSQL cluster");
                let base = format!("host=127.0.0.1 port={} user=postgres", cluster.port());
                *CLUSTER.lock().unwrap() = Some(cluster);
                // SAFETY: registering a plain extern "C" function; it runs once at exit.
                unsafe { libc::atexit(stop_cluster) };
                base
            }
        };
        let mut admin =
            postgres::Client::connect(&format!("{base} dbname=postgres"), postgres::NoTls)
                .expect("connect to the test server");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
            .unwrap();
        let mut template =
            postgres::Client::connect(&format!("{base} dbname={TEMPLATE}"), postgres::NoTls)
                .unwrap();
        db::migrate::apply_all(&mut template).expect("apply sql/ to the template database");
        drop(template);
        base
    })
}

/// A fresh database with the whole schema, dropped at the end of the test.
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Creates the database from the migrated template.
    pub fn new() -> TestDb {
        let base = server();
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin =
            postgres::Client::connect(&format!("{base} dbname=postgres"), postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .unwrap();
        TestDb {
            url: format!("{base} dbname={name}"),
            name,
        }
    }

    /// The connection string.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }

    /// A configuration pointing at this database, with test-friendly pacing.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.database.url = self.url.clone();
        config.database.pool_size = 8;
        config.scheduler.worker_threads = 2;
        config.http.listen = "127.0.0.1:0".into();
        config
    }

    /// A pool on this database.
    pub fn pool(&self) -> db::Pool {
        db::pool(&self.config().database).expect("build the pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) =
            postgres::Client::connect(&format!("{} dbname=postgres", server()), postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

//! A private, throwaway PostgreSQL cluster for the demo, the benchmarks and the tests.
//!
//! `initdb` into a temporary directory, a server listening on 127.0.0.1 only (and a unix
//! socket inside that directory), trust authentication for the local user `postgres`. Run as
//! root, the server runs as an unprivileged user (`STAGEHAND_PG_USER`, default `nobody`)
//! because PostgreSQL refuses to run as root. Dropping the [`PgCluster`] stops the server and
//! removes the directory unless it was asked to keep it.

use std::{
    fs,
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Why the private cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries not found (looked in $STAGEHAND_PG_BIN, /usr/lib/postgresql/*/bin, pg_config); \
         install them, e.g. `apt-get install -y postgresql`"
    )]
    NoBinaries,
    /// The unprivileged user to run the server as does not exist.
    #[error("user {0:?} not found: set STAGEHAND_PG_USER to an unprivileged user")]
    NoUser(String),
    /// A file-system or process error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A PostgreSQL tool failed.
    #[error("{tool} failed: {output}")]
    Tool {
        /// The program.
        tool: String,
        /// What it printed.
        output: String,
    },
    /// The server did not accept connections in time.
    #[error("the server did not start within {0:?}; log: {1}")]
    Timeout(Duration, String),
    /// A statement failed.
    #[error("database error: {0}")]
    Sql(#[from] postgres::Error),
}

/// How durable the cluster is: tests and the demo trade crash safety for speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `fsync = off`, `synchronous_commit = off`: fast, loses data on a machine crash.
    Fast,
    /// PostgreSQL's defaults (fsync and synchronous commit on), as a production server.
    Default,
}

/// Options for [`PgCluster::start`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Durability settings.
    pub durability: Durability,
    /// Keep the data directory (and print where) instead of removing it on drop.
    pub keep: bool,
    /// `max_connections` of the server.
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            durability: Durability::Fast,
            keep: false,
            max_connections: 300,
        }
    }
}

/// A running private PostgreSQL server.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    keep: bool,
    stopped: bool,
}

impl PgCluster {
    /// Creates and starts a cluster in a new temporary directory.
    pub fn start(options: &PgOptions) -> Result<PgCluster, PgError> {
        let bin = find_bindir().ok_or(PgError::NoBinaries)?;
        let run_as = unprivileged_user()?;
        let dir = make_temp_dir()?;
        let cluster = PgCluster {
            dir,
            bin,
            port: 0,
            run_as,
            keep: options.keep,
            stopped: true,
        };
        if let Some((uid, gid)) = run_as {
            chown(&cluster.dir, uid, gid)?;
        }
        let data = cluster.dir.join("data");
        cluster.init(&data, options)?;
        cluster.listen(&data)
    }

    /// `initdb` into `data`, then the server settings appended to its `postgresql.conf`.
    fn init(&self, data: &Path, options: &PgOptions) -> Result<(), PgError> {
        self.tool("initdb", |c| {
            c.arg("-D").arg(data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ]);
        })?;
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = {}\n\
             shared_buffers = 256MB\nlog_min_messages = warning\nlog_line_prefix = '%m [%p] '\n\
             max_wal_size = 2GB\ntimezone = 'UTC'\n",
            self.dir.display(),
            options.max_connections
        );
        if self.has_pg_stat_statements() {
            // Lets the benchmarks count statements per booked frame.
            conf.push_str(
                "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = top\n",
            );
        }
        if options.durability == Durability::Fast {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        append(&data.join("postgresql.conf"), &conf)
    }

    /// Starts the server of `data` on a free port and waits until it accepts connections.
    fn listen(mut self, data: &Path) -> Result<PgCluster, PgError> {
        // A free port can be taken between probing and binding; try a few.
        let mut last_error = None;
        for _ in 0..5 {
            self.port = free_port()?;
            let log = self.dir.join("server.log");
            let port = self.port;
            match self.tool("pg_ctl", |c| {
                c.arg("-D")
                    .arg(data)
                    .arg("-l")
                    .arg(&log)
                    .args(["-w", "-t", "30", "-o"]);
                c.arg(format!("-p {port}")).arg("start");
            }) {
                Ok(()) => {
                    self.stopped = false;
                    self.wait_ready(Duration::from_secs(30))?;
                    return Ok(self);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(PgError::NoBinaries))
    }

    /// True when the server has the `pg_stat_statements` module (loaded at start).
    pub(crate) fn has_pg_stat_statements(&self) -> bool {
        self.bin
            .parent()
            .map(|p| p.join("lib/pg_stat_statements.so").exists())
            .unwrap_or(false)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, socket and server log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection string for database `dbname` as the superuser `postgres`.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Creates a database (optionally from a template) and returns its connection string.
    pub fn create_database(&self, name: &str, template: Option<&str>) -> Result<String, PgError> {
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        client.batch_execute(&sql)?;
        Ok(self.url(name))
    }

    /// Stops the server immediately (in-flight transactions are aborted, as in a crash).
    pub fn stop(&mut self) -> Result<(), PgError> {
        self.pg_ctl_mode("stop", "immediate")?;
        self.stopped = true;
        Ok(())
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&mut self) -> Result<(), PgError> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let port = self.port;
        self.tool("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "30", "-o"]);
            c.arg(format!("-p {port}")).arg("start");
        })?;
        self.stopped = false;
        self.wait_ready(Duration::from_secs(30))
    }

    fn pg_ctl_mode(&self, action: &str, mode: &str) -> Result<(), PgError> {
        let data = self.dir.join("data");
        self.tool("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-w", "-t", "30", "-m", mode, action]);
        })
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), PgError> {
        let deadline = Instant::now() + limit;
        loop {
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
                Ok(_) => return Ok(()),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(_) => {
                    let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                    return Err(PgError::Timeout(limit, log));
                }
            }
        }
    }

    /// Runs one PostgreSQL tool as the server's user and fails with its output.
    fn tool(&self, name: &str, args: impl FnOnce(&mut Command)) -> Result<(), PgError> {
        let mut command = Command::new(self.bin.join(name));
        args(&mut command);
        command.current_dir(&self.dir).stdin(Stdio::null());
        // Keep the server out of the caller's process group so a Ctrl-C meant for the demo
        // reaches the demo, which then stops the server in order.
        command.process_group(0);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        let output = command.output().map_err(|source| PgError::Io {
            what: format!("running {name}"),
            source,
        })?;
        if output.status.success() {
            Ok(())
        } else {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            Err(PgError::Tool {
                tool: name.to_owned(),
                output: text.trim().to_owned(),
            })
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.pg_ctl_mode("stop", "fast");
        }
        if self.keep {
            eprintln!("kept PostgreSQL data directory {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The server binaries: `$STAGEHAND_PG_BIN`, the newest `/usr/lib/postgresql/N/bin`, or
/// `pg_config --bindir`.
pub(crate) fn find_bindir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("STAGEHAND_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    dir.join("initdb").exists().then_some(dir)
}

/// The (uid, gid) to run the server as when running as root; `None` otherwise.
fn unprivileged_user() -> Result<Option<(u32, u32)>, PgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::env::var("STAGEHAND_PG_USER").unwrap_or_else(|_| "nobody".to_owned());
    let c_name = std::ffi::CString::new(name.clone()).map_err(|_| PgError::NoUser(name.clone()))?;
    // SAFETY: getpwnam reads a NUL-terminated string and returns a pointer into static storage
    // (or null), which is read at once, before any other call that could overwrite it.
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if entry.is_null() {
        return Err(PgError::NoUser(name));
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    if uid == 0 {
        return Err(PgError::NoUser(name));
    }
    Ok(Some((uid, gid)))
}

fn make_temp_dir() -> Result<PathBuf, PgError> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "stagehand-pg-{}-{}-{attempt}",
            std::process::id(),
            nanos
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                    PgError::Io {
                        what: format!("chmod {}", dir.display()),
                        source,
                    }
                })?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(PgError::Io {
                    what: format!("creating {}", dir.display()),
                    source,
                });
            }
        }
    }
    Err(PgError::Io {
        what: "creating a temporary directory".into(),
        source: std::io::Error::other("no free name"),
    })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), PgError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| PgError::Io {
        what: format!("chown {}", path.display()),
        source,
    })
}

fn append(path: &Path, text: &str) -> Result<(), PgError> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|source| PgError::Io {
            what: format!("opening {}", path.display()),
            source,
        })?;
    file.write_all(text.as_bytes())
        .map_err(|source| PgError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
}

fn free_port() -> Result<u16, PgError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| PgError::Io {
        what: "probing a free port".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| PgError::Io {
            what: "probing a free port".into(),
            source,
        })
}

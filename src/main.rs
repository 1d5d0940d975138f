//! The `stagehand` command: parses the command line and hands over to the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
#[cfg(feature = "sim")]
use stagehand::sim;
use stagehand::{config::Config, db, explain, service};

/// A distributed frame scheduler for OpenCue render farms.
#[derive(Parser, Debug)]
#[command(name = "stagehand", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scheduler until SIGTERM or SIGINT.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/stagehand/stagehand.toml")]
        config: PathBuf,
    },
    /// Check a configuration file: exit 0, or 1 with one line naming the bad key.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/stagehand/stagehand.toml")]
        config: PathBuf,
    },
    /// Create stagehand's own schema (and, on an empty database, the OpenCue tables).
    Migrate {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/stagehand/stagehand.toml")]
        config: PathBuf,
    },
    /// Recount Cuebot's usage counters of shows (subscriptions, jobs, folders, layers,
    /// departments) from their procs. A running instance does it for each show handed back
    /// to Cuebot; run this after handing shows back while no instance runs.
    Recount {
        /// The configuration file (for the database).
        #[arg(long, short, default_value = "/etc/stagehand/stagehand.toml")]
        config: PathBuf,
        /// Show names.
        #[arg(required = true)]
        shows: Vec<String>,
    },
    /// Explain why the frames of a job, a layer or a frame are waiting.
    Explain {
        /// The configuration file (for the database and the rules to check against).
        #[arg(long, short, default_value = "/etc/stagehand/stagehand.toml")]
        config: PathBuf,
        /// Print the JSON that `GET /explain` returns instead of text.
        #[arg(long)]
        json: bool,
        /// Answer from the database alone, without asking the instance at `[http] listen`.
        #[arg(long)]
        database_only: bool,
        /// What to explain.
        kind: ExplainKind,
        /// A job name or id; a layer as `job/layer` or its id; a frame as `job/NNNN-layer`
        /// or its id.
        name: String,
    },
    /// Run the live demo: a private PostgreSQL, a simulated farm and stagehand booking it.
    #[cfg(feature = "sim")]
    Demo(sim::demo::DemoArgs),
    /// Run a benchmark workload and print its figures.
    #[cfg(feature = "sim")]
    Bench(sim::bench::BenchArgs),
}

/// What `stagehand explain` explains.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExplainKind {
    Job,
    Layer,
    Frame,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Migrate { config } => migrate(&config),
        Command::Recount { config, shows } => recount(&config, &shows),
        Command::Explain {
            config,
            json,
            database_only,
            kind,
            name,
        } => explain(&config, json, !database_only, kind, name),
        #[cfg(feature = "sim")]
        Command::Demo(args) => sim::demo::run(&args).map_err(anyhow::Error::from),
        #[cfg(feature = "sim")]
        Command::Bench(args) => sim::bench::run(&args).map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("stagehand: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn check_config(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn migrate(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    service::init_logging(log::LevelFilter::Info);
    let config = Config::load(path)?;
    let mut client = db::connect(&config.database).context("connecting to the database")?;
    let report = db::migrate::migrate(&mut client)?;
    if report.created_compat_schema {
        log::info!("created the OpenCue-compatible schema (the database had none)");
    }
    if report.applied.is_empty() {
        log::info!("stagehand schema is up to date");
    } else {
        log::info!("applied stagehand migrations {:?}", report.applied);
    }
    Ok(ExitCode::SUCCESS)
}

fn recount(path: &std::path::Path, names: &[String]) -> anyhow::Result<ExitCode> {
    service::init_logging(log::LevelFilter::Info);
    let config = Config::load(path)?;
    let mut client = db::connect(&config.database).context("connecting to the database")?;
    let shows = db::recompute::show_ids(&mut client, names)?;
    let written = db::recompute::recount_handed_back(&mut client, &shows)?;
    log::info!("recounted {names:?}: rows written {written:?}");
    Ok(ExitCode::SUCCESS)
}

/// `stagehand explain`: the instance at `[http] listen` answers when it runs (its answer has
/// its passes' view), else the database alone.
fn explain(
    path: &std::path::Path,
    json: bool,
    ask_instance: bool,
    kind: ExplainKind,
    name: String,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let target = match kind {
        ExplainKind::Job => explain::Target::Job(name),
        ExplainKind::Layer => explain::Target::Layer(name),
        ExplainKind::Frame => explain::Target::Frame(name),
    };
    let from_instance = ask_instance
        .then(|| explain::instance::ask_instance(&config.http.listen, &target))
        .flatten();
    let explanation = match from_instance {
        Some(e) => e,
        None => {
            let mut client = db::connect(&config.database).context("connecting to the database")?;
            explain::explain(&mut client, &config, &target)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", explanation.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    service::init_logging(config.service.log_level);
    let outcome = service::run(path.to_path_buf(), config)?;
    // A second signal during shutdown exits at once (signal-hook's conditional shutdown);
    // reaching here means shutdown completed or its grace period ran out.
    if outcome.clean {
        Ok(ExitCode::SUCCESS)
    } else {
        log::warn!("shutdown grace ran out with work still in flight");
        std::thread::sleep(Duration::from_millis(10));
        Ok(ExitCode::from(1))
    }
}

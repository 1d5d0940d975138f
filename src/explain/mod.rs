//! "Why is my frame waiting?": `stagehand explain job|layer|frame NAME` and `GET /explain`.
//!
//! An explanation is built from the database as it is now ([`explain`]), so it answers for
//! any show, one stagehand does not manage or one held by another instance included; a running
//! instance adds what only it knows ([`instance::annotate`]): when a pass last left the layer
//! and why, its clusters' turns, its own cap counters.
//!
//! For each layer the WAITING frames are grouped by why they wait: the reasons that hold back
//! the whole layer (`reasons`: show not managed or not held, job paused or not pending,
//! start-after, job and folder caps, full limits), then what the hosts say (`hosts`:
//! subscriptions at burst or yielding, reservations for wide frames, or no host fits and what
//! the closest ones lack). A frame holding a reservation, and DEPEND frames, get groups of
//! their own. The checks mirror the pass's ([`crate::pipeline::matcher`]) and the booking
//! guards', but read the database rather than the in-memory hints, so they show what the
//! next pass will find, not what the last one did (that is `last_pass`).

mod hosts;
pub mod instance;
mod reasons;
mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    config::Config,
    db::{
        self, DbError,
        explain::{JobRow, LayerRow, LimitRow, SubRow},
    },
    model::Resources,
    sizing::{self, LayerShape},
};

/// Frames named per group: enough to recognise them, few enough to read.
const SAMPLE: usize = 5;

/// What to explain, as Cuebot names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A job: its name or `pk_job`.
    Job(String),
    /// A layer: `job/layer` or `pk_layer`.
    Layer(String),
    /// A frame: `job/NNNN-layer` or `pk_frame`.
    Frame(String),
}

impl Target {
    /// The target of a query string `job=…`, `layer=…` or `frame=…` (percent-encoded).
    pub fn from_query(query: &str) -> Option<Target> {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let value = percent_decode(value)?;
            if value.is_empty() {
                return None;
            }
            match key {
                "job" => Some(Target::Job(value)),
                "layer" => Some(Target::Layer(value)),
                "frame" => Some(Target::Frame(value)),
                _ => None,
            }
        })
    }

    /// `job`, `layer` or `frame`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Job(_) => "job",
            Target::Layer(_) => "layer",
            Target::Frame(_) => "frame",
        }
    }

    /// The name or id asked for.
    pub fn name(&self) -> &str {
        match self {
            Target::Job(n) | Target::Layer(n) | Target::Frame(n) => n,
        }
    }
}

/// `%XX` and `+` decoded; `None` when the result is not UTF-8 or an escape is malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Why an explanation could not be given.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Nothing has that name.
    #[error(
        "no {kind} {name:?} (jobs by name or id, layers as job/layer, frames as job/NNNN-layer)"
    )]
    NotFound {
        /// `job`, `layer` or `frame`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
}

/// One reason frames wait, with its figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Why {
    /// A stable label: `not_managed`, `not_held`, `job_paused`, `not_pending`, `not_waiting`,
    /// `start_after`, `depends`, `job_cap`, `limit`, `no_license`, `subscription`, `reserved`,
    /// `draining`, `no_host`, or `bookable` (nothing holds it back: the next pass should book it). The
    /// labels the passes record (`stagehand_waiting_frames{reason}`) are among them.
    pub code: String,
    /// One sentence with the numbers.
    pub text: String,
    /// The numbers, for machines.
    pub facts: Value,
}

impl Why {
    fn new(code: &str, text: String, facts: Value) -> Why {
        Why {
            code: code.to_owned(),
            text,
            facts,
        }
    }
}

/// Frames of a layer that wait for the same reasons.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    /// How many.
    pub frames: i64,
    /// The first few, by name.
    pub sample: Vec<String>,
    /// Why, the most fundamental first.
    pub reasons: Vec<Why>,
}

/// What the running instance's passes last recorded for a layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastPass {
    /// The reason label the pass recorded.
    pub reason: String,
    /// Frames it left waiting.
    pub frames: i64,
    /// Seconds since that pass.
    pub secs_ago: f64,
}

/// A cluster of the running instance that covers a layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterTurn {
    /// The cluster key.
    pub key: String,
    /// Its state in the feed.
    pub state: String,
    /// Seconds until its next turn (0: ready).
    pub next_turn_secs: f64,
}

/// One layer's explanation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerExplanation {
    /// `layer.pk_layer`.
    pub id: String,
    /// `layer.str_name`.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Frames per state, now.
    pub frames: BTreeMap<String, i64>,
    /// The WAITING (and DEPEND) frames grouped by why.
    pub groups: Vec<Group>,
    /// Instance side: what the last pass that reached the layer recorded (`None`: no pass
    /// recorded a reason within the last two minutes, or asked without an instance).
    pub last_pass: Option<LastPass>,
    /// Instance side: the clusters that cover the layer and their turns.
    pub clusters: Vec<ClusterTurn>,
}

/// Who holds the show's lease.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseFacts {
    /// Instance name (`None`: the lease is free).
    pub instance: Option<String>,
    /// The instance's host and process.
    pub host: Option<String>,
    /// See `host`.
    pub pid: Option<i32>,
    /// Seconds since its heartbeat.
    pub heartbeat_age_secs: Option<f64>,
    /// The fencing epoch.
    pub epoch: i64,
    /// The holder heartbeats within `[cluster] lease_duration`.
    pub alive: bool,
}

/// A subscription of the show, in cores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubFacts {
    /// `alloc.pk_alloc`.
    pub alloc: String,
    /// `alloc.str_name`.
    pub alloc_name: String,
    /// Size, burst and what the show's procs hold on it now, in cores.
    pub size: f64,
    /// See `size`.
    pub burst: f64,
    /// See `size`.
    pub booked: f64,
}

/// The show of the job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShowFacts {
    /// `show.pk_show`.
    pub id: String,
    /// `show.str_name`.
    pub name: String,
    /// `show.b_scheduler_managed`.
    pub managed: bool,
    /// `show.b_active`.
    pub active: bool,
    /// Its lease (`None`: never leased).
    pub lease: Option<LeaseFacts>,
    /// stagehand instances heartbeating now.
    pub live_instances: i64,
    /// Its subscriptions.
    pub subscriptions: Vec<SubFacts>,
}

/// The job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobFacts {
    /// `job.pk_job`.
    pub id: String,
    /// `job.str_name`.
    pub name: String,
    /// `job.str_state`.
    pub state: String,
    /// `job.b_paused`.
    pub paused: bool,
    /// Its folder's name.
    pub folder: String,
    /// Cores its procs hold now, and its cap (≤ 0: none).
    pub cores: f64,
    /// See `cores`.
    pub max_cores: f64,
}

/// Instance side: the instance that answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceFacts {
    /// Its name (`None` when it runs without leases).
    pub name: Option<String>,
    /// Whether it holds the show, and at which epoch.
    pub holds_show: bool,
    /// See `holds_show`.
    pub epoch: Option<i64>,
    /// Its cap counters of the show's subscriptions: booked and headroom, in cores.
    pub counters: Vec<Value>,
}

/// Why the frames of a job, a layer or one frame wait.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Explanation {
    /// What was asked: `job`, `layer` or `frame` and the name.
    pub asked: String,
    /// The show.
    pub show: ShowFacts,
    /// The job.
    pub job: JobFacts,
    /// Its layers (the one asked for).
    pub layers: Vec<LayerExplanation>,
    /// Instance side (`None` when asked from the command line).
    pub instance: Option<InstanceFacts>,
}

impl Explanation {
    /// The explanation as text for a terminal.
    pub fn to_text(&self) -> String {
        text::render(self)
    }

    /// The first reason of the first group: the short answer (for summaries).
    pub fn headline(&self) -> Option<&Why> {
        self.layers
            .iter()
            .flat_map(|l| l.groups.iter())
            .find_map(|g| g.reasons.first())
    }
}

/// What every check of one explanation reads.
struct Ctx<'a> {
    config: &'a Config,
    job: &'a JobRow,
    show: &'a ShowFacts,
    subs: &'a [SubRow],
    /// Per layer, the licenses it needs and their rooms (`None`: the provider does not
    /// report it); empty with `[licenses]` off.
    licenses: reasons::LayerLicenses,
}

/// A layer's frames as the sizing rules see them (memory from history as the booking pass
/// books it), and the least any host is asked for.
fn shape_of(layer: &LayerRow, config: &Config) -> (LayerShape, Resources) {
    let selfish = layer.services.split(',').any(|s| {
        config
            .scheduler
            .selfish_services
            .contains(&s.trim().to_owned())
    });
    // Memory as the booking pass sizes it: from history when `[memory]` says so.
    let mut columns = layer.columns;
    let asked = columns.mem_min.max(0) as u64;
    if let Some(kb) = sizing::booked_memory(asked, &layer.history, &config.memory) {
        columns.mem_min = kb as i64;
    }
    let shape = LayerShape::from_columns(&columns, selfish);
    let floor = sizing::floor(&shape);
    (shape, floor)
}

/// Explains `target` from the database, as seen with `config`.
pub fn explain(
    conn: &mut impl postgres::GenericClient,
    config: &Config,
    target: &Target,
) -> Result<Explanation, ExplainError> {
    let (job, layer, frame) = resolve(conn, target)?;
    let lease_secs = config.cluster.lease_duration.as_secs_f64();
    let (lease, live) = db::explain::lease(conn, &job.show, lease_secs)?;
    let subs = db::explain::subscriptions(conn, &job.show)?;
    let show = reasons::show_facts(&job, lease, live, &subs, lease_secs);
    let min_history = i64::from(config.reservations.min_history);
    let rows = db::explain::layers(conn, &job.id, layer.as_deref(), min_history)?;
    let ids: Vec<String> = rows.iter().map(|l| l.id.clone()).collect();
    let ctx = Ctx {
        config,
        job: &job,
        show: &show,
        subs: &subs,
        licenses: reasons::layer_licenses(conn, config, &ids)?,
    };
    let limits = db::explain::limits(conn, &ids)?;
    let mut layers = Vec::with_capacity(rows.len());
    for row in &rows {
        layers.push(explain_layer(conn, &ctx, row, &limits, frame.as_deref())?);
    }
    Ok(Explanation {
        asked: format!("{} {}", target.kind(), target.name()),
        job: JobFacts {
            id: job.id.clone(),
            name: job.name.clone(),
            state: job.state.clone(),
            paused: job.paused,
            folder: job.folder_name.clone(),
            cores: cores(job.cores),
            max_cores: cores(job.max_cores),
        },
        show,
        layers,
        instance: None,
    })
}

/// The frames that have waited longest, one per layer, at most `limit` (of managed shows
/// first).
pub fn longest_waiting_frames(
    conn: &mut impl postgres::GenericClient,
    limit: i64,
) -> Result<Vec<Target>, ExplainError> {
    Ok(db::explain::longest_waiting(conn, limit)?
        .into_iter()
        .map(Target::Frame)
        .collect())
}

/// The job, and the layer and frame keys, that `target` names.
fn resolve(
    conn: &mut impl postgres::GenericClient,
    target: &Target,
) -> Result<(JobRow, Option<String>, Option<String>), ExplainError> {
    let not_found = || ExplainError::NotFound {
        kind: target.kind(),
        name: target.name().to_owned(),
    };
    // `job/rest` names within a job; a bare key is an id (or, for a job, its name).
    let (job_key, layer, frame) = match target {
        Target::Job(name) => (name.clone(), None, None),
        Target::Layer(name) => match name.rsplit_once('/') {
            Some((job, layer)) => {
                let job = db::explain::job(conn, job)?.ok_or_else(not_found)?;
                let layer = db::explain::layer_by_name(conn, &job.id, layer)?;
                return Ok((job, Some(layer.ok_or_else(not_found)?), None));
            }
            None => {
                let (job, layer) = db::explain::layer_by_id(conn, name)?.ok_or_else(not_found)?;
                (job, Some(layer), None)
            }
        },
        Target::Frame(name) => {
            let found = match name.rsplit_once('/') {
                Some((job, frame)) => match db::explain::job(conn, job)? {
                    Some(job) => db::explain::frame(conn, Some(&job.id), frame)?,
                    None => None,
                },
                None => db::explain::frame(conn, None, name)?,
            };
            let (job, layer, frame) = found.ok_or_else(not_found)?;
            (job, Some(layer), Some(frame))
        }
    };
    let job = db::explain::job(conn, &job_key)?.ok_or_else(not_found)?;
    Ok((job, layer, frame))
}

/// One layer: its frames by state and by why they wait.
fn explain_layer(
    conn: &mut impl postgres::GenericClient,
    ctx: &Ctx<'_>,
    layer: &LayerRow,
    limits: &[LimitRow],
    only_frame: Option<&str>,
) -> Result<LayerExplanation, ExplainError> {
    let (shape, floor) = shape_of(layer, ctx.config);
    let blocking = reasons::layer_reasons(ctx, layer, limits, &floor);
    let frames: BTreeMap<String, i64> = layer.states.iter().cloned().collect();
    let groups = match only_frame {
        Some(frame) => vec![frame_group(conn, ctx, layer, &shape, frame, blocking)?],
        None => layer_groups(conn, ctx, layer, &shape, &frames, blocking)?,
    };
    Ok(LayerExplanation {
        id: layer.id.clone(),
        name: layer.name.clone(),
        tags: layer.tags.clone(),
        frames,
        groups,
        last_pass: None,
        clusters: Vec::new(),
    })
}

/// The reasons that hold back a WAITING frame of the layer: the layer's own, then the
/// hosts' (skipped for a show stagehand does not book, and "a host fits" only when nothing
/// else holds it back).
fn waiting_reasons(
    conn: &mut impl postgres::GenericClient,
    ctx: &Ctx<'_>,
    layer: &LayerRow,
    shape: &LayerShape,
    frame: Option<&str>,
    mut blocking: Vec<Why>,
) -> Result<Vec<Why>, ExplainError> {
    if blocking.iter().any(|w| w.code == "not_managed") {
        return Ok(blocking);
    }
    for why in hosts::host_reasons(conn, ctx, layer, shape, frame)? {
        if why.code != "bookable" || blocking.is_empty() {
            blocking.push(why);
        }
    }
    Ok(blocking)
}

/// The group of one frame asked for by name.
fn frame_group(
    conn: &mut impl postgres::GenericClient,
    ctx: &Ctx<'_>,
    layer: &LayerRow,
    shape: &LayerShape,
    frame: &str,
    blocking: Vec<Why>,
) -> Result<Group, ExplainError> {
    let rows = db::explain::frames(conn, &layer.id, Some(frame), &[], 1)?;
    let Some(row) = rows.first() else {
        return Err(ExplainError::NotFound {
            kind: "frame",
            name: frame.to_owned(),
        });
    };
    let reasons = match row.state.as_str() {
        "WAITING" => {
            let mut reasons = Vec::new();
            let held = db::explain::reservations(conn, &[], &layer.id)?;
            if let Some(r) = held.iter().find(|r| r.frame == row.id) {
                reasons.push(reasons::draining(r));
                reasons.extend(blocking);
            } else {
                reasons = waiting_reasons(conn, ctx, layer, shape, Some(&row.id), blocking)?;
            }
            reasons
        }
        "DEPEND" => {
            let on = db::explain::depends(conn, &layer.id, Some(&row.id))?;
            let mut reasons = vec![reasons::depends(&on)];
            reasons.extend(blocking);
            reasons
        }
        state => vec![reasons::not_waiting(state, row.host.as_deref())],
    };
    Ok(Group {
        frames: 1,
        sample: vec![row.name.clone()],
        reasons,
    })
}

/// A layer's groups: the frames draining a host each, the rest of its WAITING frames, its
/// DEPEND frames.
fn layer_groups(
    conn: &mut impl postgres::GenericClient,
    ctx: &Ctx<'_>,
    layer: &LayerRow,
    shape: &LayerShape,
    frames: &BTreeMap<String, i64>,
    blocking: Vec<Why>,
) -> Result<Vec<Group>, ExplainError> {
    let mut groups = Vec::new();
    let waiting = frames.get("WAITING").copied().unwrap_or(0);
    if waiting > 0 {
        let held = db::explain::reservations(conn, &[], &layer.id)?;
        // Reservations of frames no longer WAITING are dropped by every host refresh.
        let draining = &held;
        for r in draining {
            let mut reasons = vec![reasons::draining(r)];
            reasons.extend(blocking.iter().cloned());
            let name = r.frame_name.rsplit('/').next().unwrap_or(&r.frame_name);
            groups.push(Group {
                frames: 1,
                sample: vec![name.to_owned()],
                reasons,
            });
        }
        let rest = waiting - draining.len() as i64;
        if rest > 0 {
            let limit = (SAMPLE + draining.len()) as i64;
            let sample: Vec<String> =
                db::explain::frames(conn, &layer.id, None, &["WAITING"], limit)?
                    .into_iter()
                    .filter(|f| !draining.iter().any(|r| r.frame == f.id))
                    .take(SAMPLE)
                    .map(|f| f.name)
                    .collect();
            let reasons = waiting_reasons(conn, ctx, layer, shape, None, blocking.clone())?;
            groups.push(Group {
                frames: rest,
                sample,
                reasons,
            });
        }
    }
    let depend = frames.get("DEPEND").copied().unwrap_or(0);
    if depend > 0 {
        let sample = db::explain::frames(conn, &layer.id, None, &["DEPEND"], SAMPLE as i64)?;
        let on = db::explain::depends(conn, &layer.id, None)?;
        let mut reasons = vec![reasons::depends(&on)];
        reasons.extend(blocking);
        groups.push(Group {
            frames: depend,
            sample: sample.into_iter().map(|f| f.name).collect(),
            reasons,
        });
    }
    Ok(groups)
}

/// Centicores as cores.
fn cores(centicores: i64) -> f64 {
    centicores as f64 / 100.0
}

/// KB as GB, for text.
fn gb(kb: u64) -> String {
    format!("{:.1} GB", kb as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_targets_decode() {
        assert_eq!(
            Target::from_query("job=a%2Fb+c"),
            Some(Target::Job("a/b c".into()))
        );
        assert_eq!(
            Target::from_query("x=1&layer=j%2Fl"),
            Some(Target::Layer("j/l".into()))
        );
        assert_eq!(
            Target::from_query("frame=j/0001-l"),
            Some(Target::Frame("j/0001-l".into()))
        );
        assert_eq!(Target::from_query("job="), None);
        assert_eq!(Target::from_query("job=%zz"), None);
        assert_eq!(Target::from_query(""), None);
    }
}

//! Dependencies as Cuebot writes them (`DependManagerService.createDepend`, `DependDaoJdbc`):
//! a `depend` row per dependency (type `<ER>_ON_<ON>`, both jobs, the layers and frames its
//! scopes name, active, target `Internal` within a job and `External` across jobs, a unique
//! signature), then one added to `int_depend_count` of every frame it holds — the depending
//! frame, every frame of the depending layer or job — and those frames made DEPEND. Cuebot's
//! triggers do the rest: a WAITING frame whose count rises becomes DEPEND
//! (`update_frame_wait_to_dep`) and the state counters of `layer_stat`/`job_stat` follow.
//!
//! Targets are named (job, layer, frame number), so a scenario can add depends to a farm
//! [`seed`](super::seed) has just written, before anything books it. Cuebot's FRAME_BY_FRAME
//! is a composite of FRAME_ON_FRAME children; [`frame_by_frame`] writes the children alone
//! (what the completion satisfies and counts).

use postgres::GenericClient;

use crate::db::DbError;

/// One end of a dependency: a job, one of its layers, or one frame of that layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependTarget {
    /// `job.str_name`.
    pub job: String,
    /// `layer.str_name`, for a layer or frame scope.
    pub layer: Option<String>,
    /// `frame.int_number`, for a frame scope (needs `layer`).
    pub frame: Option<i32>,
}

impl DependTarget {
    /// The whole job `job`.
    pub fn job(job: &str) -> DependTarget {
        DependTarget {
            job: job.into(),
            layer: None,
            frame: None,
        }
    }

    /// Layer `layer` of job `job`.
    pub fn layer(job: &str, layer: &str) -> DependTarget {
        DependTarget {
            layer: Some(layer.into()),
            ..DependTarget::job(job)
        }
    }

    /// Frame `number` of layer `layer` of job `job`.
    pub fn frame(job: &str, layer: &str, number: i32) -> DependTarget {
        DependTarget {
            frame: Some(number),
            ..DependTarget::layer(job, layer)
        }
    }

    /// Cuebot's scope word: `JOB`, `LAYER` or `FRAME`.
    fn scope(&self) -> &'static str {
        match (&self.layer, self.frame) {
            (Some(_), Some(_)) => "FRAME",
            (Some(_), None) => "LAYER",
            _ => "JOB",
        }
    }
}

/// `er` waits until `on` is done (a frame SUCCEEDED, a layer's frames all succeeded, a job
/// FINISHED).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependSpec {
    /// What waits.
    pub er: DependTarget,
    /// What it waits for.
    pub on: DependTarget,
}

impl DependSpec {
    /// Cuebot's `str_type`: `LAYER_ON_LAYER`, `FRAME_ON_FRAME`, …
    pub fn kind(&self) -> String {
        format!("{}_ON_{}", self.er.scope(), self.on.scope())
    }
}

/// FRAME_BY_FRAME: frame N of layer `er` waits for frame N of layer `on`, for every N of
/// `numbers` (each a FRAME_ON_FRAME).
pub fn frame_by_frame(
    er: (&str, &str),
    on: (&str, &str),
    numbers: impl IntoIterator<Item = i32>,
) -> Vec<DependSpec> {
    numbers
        .into_iter()
        .map(|n| DependSpec {
            er: DependTarget::frame(er.0, er.1, n),
            on: DependTarget::frame(on.0, on.1, n),
        })
        .collect()
}

/// Writes `depends` as Cuebot does; returns the frames made to wait (counted once each).
pub fn seed_depends(
    client: &mut impl GenericClient,
    depends: &[DependSpec],
) -> Result<u64, DbError> {
    let mut tx = client.transaction()?;
    let mut ids = Vec::with_capacity(depends.len());
    for d in depends {
        ids.push(insert_depend(&mut tx, d)?);
    }
    // One per active depend on each frame it holds; the trigger makes WAITING frames DEPEND.
    let held = tx.execute(
        "UPDATE frame f SET int_depend_count = f.int_depend_count + t.n
           FROM (SELECT w.pk_frame, count(*) AS n
                   FROM depend d
                   JOIN frame w ON (d.pk_frame_depend_er IS NOT NULL AND w.pk_frame = d.pk_frame_depend_er)
                                OR (d.pk_frame_depend_er IS NULL AND d.pk_layer_depend_er IS NOT NULL
                                    AND w.pk_layer = d.pk_layer_depend_er)
                                OR (d.pk_frame_depend_er IS NULL AND d.pk_layer_depend_er IS NULL
                                    AND w.pk_job = d.pk_job_depend_er)
                  WHERE d.pk_depend = ANY($1)
                  GROUP BY w.pk_frame) t
          WHERE f.pk_frame = t.pk_frame",
        &[&ids],
    )?;
    // Cuebot's updateFrameState, for frames not WAITING (the trigger covers those).
    tx.execute(
        "UPDATE frame SET str_state = 'DEPEND'
          WHERE int_depend_count != 0 AND str_state NOT IN ('SUCCEEDED', 'EATEN', 'RUNNING', 'DEPEND')",
        &[],
    )?;
    tx.commit()?;
    Ok(held)
}

/// Inserts one `depend` row, its ends resolved by name; returns its key.
fn insert_depend(tx: &mut postgres::Transaction<'_>, d: &DependSpec) -> Result<String, DbError> {
    let (er, on) = (resolve(tx, &d.er)?, resolve(tx, &d.on)?);
    let target = if er.0 == on.0 { "Internal" } else { "External" };
    let id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO depend (pk_depend, pk_job_depend_er, pk_layer_depend_er, pk_frame_depend_er,
                             pk_job_depend_on, pk_layer_depend_on, pk_frame_depend_on, str_type,
                             b_any, str_target, b_active, str_signature, b_composite)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, $9, true, $1, false)",
        &[
            &id,
            &er.0,
            &er.1,
            &er.2,
            &on.0,
            &on.1,
            &on.2,
            &d.kind(),
            &target,
        ],
    )?;
    Ok(id)
}

/// The keys (job, layer, frame) of a target; an unknown name is a schema error.
fn resolve(
    tx: &mut postgres::Transaction<'_>,
    t: &DependTarget,
) -> Result<(String, Option<String>, Option<String>), DbError> {
    let row = tx
        .query_opt(
            "SELECT j.pk_job, l.pk_layer, f.pk_frame
               FROM job j
               LEFT JOIN layer l ON l.pk_job = j.pk_job AND l.str_name = $2
               LEFT JOIN frame f ON f.pk_layer = l.pk_layer AND f.int_number = $3
              WHERE j.str_name = $1 AND j.str_state = 'PENDING'",
            &[&t.job, &t.layer, &t.frame.map(i64::from)],
        )?
        .ok_or_else(|| DbError::Schema(format!("depend target: no pending job {}", t.job)))?;
    let (layer, frame): (Option<String>, Option<String>) = (row.get(1), row.get(2));
    if t.layer.is_some() && layer.is_none() || t.frame.is_some() && frame.is_none() {
        return Err(DbError::Schema(format!("depend target {t:?} not found")));
    }
    Ok((row.get(0), layer, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_is_named_from_both_scopes_as_cuebot_names_it() {
        let on = |er: DependTarget, on: DependTarget| DependSpec { er, on }.kind();
        assert_eq!(
            on(DependTarget::job("a"), DependTarget::job("b")),
            "JOB_ON_JOB"
        );
        assert_eq!(
            on(DependTarget::layer("a", "c"), DependTarget::job("b")),
            "LAYER_ON_JOB"
        );
        let fbf = frame_by_frame(("a", "r"), ("a", "s"), 1..=3);
        assert_eq!(fbf.len(), 3);
        assert_eq!(fbf[2].kind(), "FRAME_ON_FRAME");
        assert_eq!(fbf[2].on, DependTarget::frame("a", "s", 3));
    }
}

//! Waiting for a scenario's frames to finish, sampling the database on the way.

use std::time::{Duration, Instant};

use crate::sim::{SimError, scenario::Run};

/// Polls every `every` until all `total` frames SUCCEEDED or `limit` passed, calling
/// `sample` with the client at each poll first; returns the frames that succeeded and the
/// seconds it took.
pub(super) fn until_done(
    run: &mut Run,
    total: i64,
    limit: Duration,
    every: Duration,
    mut sample: impl FnMut(&mut postgres::Client) -> Result<(), SimError>,
) -> Result<(i64, f64), SimError> {
    let started = Instant::now();
    let mut succeeded = 0i64;
    while started.elapsed() < limit && succeeded < total {
        std::thread::sleep(every);
        sample(&mut run.client)?;
        succeeded = run
            .client
            .query_one(
                "SELECT count(*) FROM frame WHERE str_state = 'SUCCEEDED'",
                &[],
            )?
            .get(0);
    }
    Ok((succeeded, started.elapsed().as_secs_f64()))
}

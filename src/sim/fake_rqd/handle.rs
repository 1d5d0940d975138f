//! [`RqdHandle`]: a view of the fleet that other threads can share (the grpcio server is not
//! `Sync`): its record, its behaviour, its completion queue.

use std::{
    cmp::Reverse,
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;

use super::{Behaviour, CompletionQueue, DoubleRun, Record};

/// A shareable view of the fleet: its record, its behaviour and its completion queue.
#[derive(Clone)]
pub struct RqdHandle {
    pub(super) record: Arc<Mutex<Record>>,
    pub(super) behaviour: Arc<Mutex<Behaviour>>,
    pub(super) queue: Option<Arc<CompletionQueue>>,
    pub(super) completed: Arc<AtomicU64>,
}

impl RqdHandle {
    /// Changes how launches are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock() = behaviour;
    }

    /// Makes `KillRunningFrame` fail (UNAVAILABLE) without killing, or work again.
    pub fn set_refuse_kills(&self, refuse: bool) {
        self.record.lock().refuse_kills = refuse;
    }

    /// Frames running now, with the procs running each.
    pub fn running(&self) -> HashMap<String, Vec<String>> {
        self.record.lock().running.clone()
    }

    /// Every launch that arrived while another proc still ran the same frame.
    pub fn double_runs(&self) -> Vec<DoubleRun> {
        self.record.lock().double_runs.clone()
    }

    /// The `resource_id` (proc) of every launch received so far.
    pub(crate) fn launched_procs(&self) -> std::collections::HashSet<String> {
        let record = self.record.lock();
        record
            .launches
            .iter()
            .map(|l| l.resource_id.clone())
            .collect()
    }

    /// Number of launches received.
    pub fn launch_count(&self) -> usize {
        self.record.lock().launches.len()
    }

    /// For each frame: (launches received, kills received).
    pub fn frame_history(&self) -> HashMap<String, (usize, usize)> {
        let record = self.record.lock();
        let mut out: HashMap<String, (usize, usize)> = HashMap::new();
        for l in &record.launches {
            out.entry(l.frame_id.clone()).or_default().0 += 1;
        }
        for (frame, _) in &record.kills {
            out.entry(frame.clone()).or_default().1 += 1;
        }
        out
    }

    /// Procs whose launch was refused, and procs that ended on RQD while the database had
    /// no such proc.
    pub(crate) fn refused_and_unknown(
        &self,
    ) -> (
        std::collections::HashSet<String>,
        std::collections::HashSet<String>,
    ) {
        let record = self.record.lock();
        (record.refused.clone(), record.unknown.clone())
    }

    /// Procs whose launch arrived after the client's deadline had passed.
    pub(crate) fn late_launches(&self) -> std::collections::HashSet<String> {
        self.record.lock().late.clone()
    }

    /// Frames completed in the database so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Cuebot's kill through RQD, in process (the chaos stand-in's kills): the frame stops
    /// running unless kills are refused; returns whether it was killed.
    pub(crate) fn kill_frame(&self, frame: &str, message: &str) -> bool {
        self.record.lock().kill(frame, message)
    }

    /// Procs whose completion is still to come (running, their report in flight, or being
    /// retried).
    pub(crate) fn pending_procs(&self) -> std::collections::HashSet<String> {
        let mut procs: std::collections::HashSet<String> = self
            .queue
            .as_ref()
            .map(|q| {
                q.lock()
                    .iter()
                    .map(|Reverse((_, c))| c.proc.clone())
                    .collect()
            })
            .unwrap_or_default();
        procs.extend(self.record.lock().reporting.iter().cloned());
        procs
    }

    /// How long the completion report in flight has been running (and for how many procs).
    pub fn reporting(&self) -> Option<(usize, Duration)> {
        let record = self.record.lock();
        record
            .reporting_since
            .map(|t| (record.reporting.len(), t.elapsed()))
    }
}

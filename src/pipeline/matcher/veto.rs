//! A candidate host's vetoes for one frame of a pass, in the order the pass applies them,
//! and what a frame no host took tells its layer: the reason it stops, or a wide-frame
//! reservation when room is all it lacks.

use super::{LayerPlan, Matcher, Stop};
use crate::{
    db::{self, jobs::FrameWork},
    index::{HostView, Request},
    metrics,
    model::Resources,
    pipeline::{
        waiting::Reason,
        wide::{self, WideFrame},
    },
    sizing::{self, HostShape},
};

impl Matcher<'_> {
    /// The vetoes, in order, of one candidate host, and what the frame takes on it when none
    /// applies: the host's allocation must be the cluster's and not full this pass; the
    /// frame's licenses must have a seat for it there (a seated host, once none is free); the
    /// sizing rules must fit; GPU hosts keep room for GPU frames; a wide-frame reservation
    /// on the host must admit it; the show's subscription must have the headroom and not
    /// owe a hungrier show. `Err(Some(reason))` names a refusal worth reporting.
    pub(super) fn size_on(
        &self,
        plan: &LayerPlan<'_>,
        frame: &FrameWork,
        host: &HostView<'_>,
        job_remaining: Option<u32>,
        now: f64,
    ) -> Result<Resources, Option<Reason>> {
        let alloc = host.alloc;
        if !self.allocs.contains(alloc) {
            return Err(None);
        }
        if !plan.licenses.is_empty() && !self.seats.fits_on(plan.licenses, host.name) {
            return Err(Some(Reason::NoLicense));
        }
        if self.full_allocs.contains(alloc) {
            return Err(Some(Reason::Subscription));
        }
        let on = HostShape {
            thread_mode: host.thread_mode,
            total: host.total,
            free: host.free,
        };
        let amount =
            sizing::amount_for(&plan.shape, &on, job_remaining, &plan.rules).map_err(|_| None)?;
        if !sizing::leaves_gpu_room(&host.free, &amount, &plan.gpu_room) {
            return Err(None);
        }
        if let Some(hold) = self.holds.on_host(host.id) {
            if !hold.admits(&frame.id, &host.free, &amount, plan.layer.est_secs, now) {
                return Err(Some(Reason::Reserved));
            }
        }
        let (ledger, show) = (&self.shared.ledger, &plan.job.show);
        let cores = i64::from(amount.cores);
        if ledger.sub_headroom(show, alloc) < cores || ledger.should_yield(show, alloc, cores) {
            return Err(Some(Reason::Subscription));
        }
        Ok(amount)
    }

    /// No host took `frame`: say why its layer stops, taking a wide-frame reservation when
    /// room is all it lacks.
    pub(super) fn no_host(
        &mut self,
        plan: &LayerPlan<'_>,
        request: &Request<'_>,
        frame: &FrameWork,
        veto: Option<Reason>,
    ) -> Result<Stop, db::DbError> {
        metrics::NO_CANDIDATE.inc();
        metrics::CHECKOUT_OUTCOME
            .with_label_values(&["no_match"])
            .inc();
        if self.holds.holds_frame(&frame.id) {
            return Ok(Stop::NoHost(Reason::Draining));
        }
        let reason = veto.unwrap_or(Reason::NoHost);
        if reason != Reason::NoHost {
            return Ok(Stop::NoHost(reason));
        }
        let wide = WideFrame {
            frame: &frame.id,
            name: &frame.name,
            layer: &plan.layer.id,
            show: &plan.job.show,
            waited_secs: frame.waited_secs,
        };
        // A reservation that cannot be taken now is tried again next pass; it must not cost
        // the pass the frames it can still book.
        let taken = wide::reserve(
            self.shared,
            self.conn,
            self.config,
            &self.allocs,
            &wide,
            request,
        )
        .unwrap_or_else(|e| {
            metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
            log::warn!("could not reserve a host for frame {}: {e}", frame.name);
            None
        });
        if let Some(hold) = taken {
            self.holds = self.shared.holds.snapshot();
            debug_assert!(self.holds.holds_frame(&hold.frame));
            return Ok(Stop::NoHost(Reason::Draining));
        }
        Ok(Stop::NoHost(reason))
    }
}

//! Tests of the cluster feed: its events, its turns and what it publishes.

use super::*;
use crate::{
    accounting::Ledger, cluster::ClusterTagRow, db::jobs::SubscriptionRow, ids::AllocId,
    index::HostIndex,
};

/// A feed on a pool that never connects (nothing here reads the database), with
/// `workers` booking threads, `leases` as given and two awake alloc clusters of show `s`;
/// with the booking threads' end of the work channel, which must stay open.
fn feed(
    workers: usize,
    leases: Option<Arc<crate::lease::Leases>>,
) -> (Feed, Receiver<Arc<Cluster>>) {
    let config = Arc::new(ArcSwap::from_pointee(Config::default()));
    let ledger = Ledger::new();
    let ctx = FeedContext {
        config: Arc::clone(&config),
        pool: db::pool(&config.load().database).expect("a pool that connects lazily"),
        capacity: HostIndex::new().capacity(),
        caps: ledger.caps_view(),
        stop: Arc::new(AtomicBool::new(false)),
        status: Arc::new(ArcSwap::from_pointee(Vec::new())),
        loaded: Arc::new(AtomicBool::new(false)),
        leases,
        hungry: None,
    };
    let (mut feed, work, _outcomes) = Feed::new(ctx, workers);
    let rows: Vec<ClusterTagRow> = ["a1", "a2"]
        .iter()
        .map(|a| ClusterTagRow {
            facility: "f".into(),
            show: "s".into(),
            show_name: "s".into(),
            tag: format!("t{a}"),
            tag_type: TagType::Alloc,
            alloc: Some((*a).into()),
        })
        .collect();
    let subs: Vec<SubscriptionRow> = ["a1", "a2"]
        .iter()
        .map(|a| SubscriptionRow {
            show: "s".into(),
            alloc: (*a).into(),
            facility: "f".into(),
            size: 100,
            burst: 100,
        })
        .collect();
    let options = BuildOptions {
        ignore_tags: vec![],
        manual_chunk: 50,
        hostname_chunk: 50,
    };
    feed.replace(build(&rows, &subs, &options));
    // Nothing else is due for a minute: what next_event returns is the clusters' doing.
    let later = Instant::now() + Duration::from_secs(60);
    (feed.next_reload, feed.next_scan, feed.next_probe) = (later, later, later);
    (feed, work)
}

#[test]
fn a_ready_cluster_is_the_next_event() {
    let (feed, _work) = feed(4, None);
    assert!(feed.next_event() <= Instant::now());
}

/// Ready clusters behind a full work channel cannot be handed out before a pass ends:
/// the loop must wait for that, not wake every millisecond.
#[test]
fn ready_clusters_behind_a_full_channel_are_no_event() {
    let (mut feed, _work) = feed(1, None);
    feed.dispatch();
    assert!(feed.work.is_full());
    assert_eq!(feed.turns.values().filter(|t| t.idle()).count(), 1);
    assert!(feed.next_event() > Instant::now() + Duration::from_secs(30));
}

/// With leases, a cluster of a show this instance does not hold never gets a turn here:
/// its being ready is no event either.
#[test]
fn clusters_of_a_show_held_elsewhere_are_no_event() {
    let config = Arc::new(ArcSwap::from_pointee(Config::default()));
    let leases = crate::lease::Leases::new(config, Ledger::new(), crate::lease::LeaseBoard::new());
    let (mut feed, _work) = feed(4, Some(leases));
    feed.dispatch();
    assert_eq!(feed.work.len(), 0);
    assert!(feed.next_event() > Instant::now() + Duration::from_secs(30));
}

/// A cluster whose last pass found all its work held back by its own caps, limits,
/// start times or licenses does not make its show hungry on its allocation: a show past
/// its size would give way there for room the held show cannot use. Its other
/// allocation's cluster, whose pass stopped for room, still does.
#[test]
fn a_show_whose_work_is_held_back_is_not_hungry_there() {
    let board = crate::accounting::hungry::HungryBoard::new();
    let (mut feed, _work) = feed(4, None);
    feed.ctx.hungry = Some(Arc::clone(&board));
    for turn in feed.turns.values_mut() {
        turn.waiting = 5;
    }
    let a1: AllocId = "a1".into();
    for (key, ending) in feed
        .turns
        .iter()
        .map(|(k, t)| {
            let held = t.cluster.allocs.contains(&a1);
            (
                k.clone(),
                if held {
                    Ending::HeldBack
                } else {
                    Ending::Plain
                },
            )
        })
        .collect::<Vec<_>>()
    {
        let outcome = PassOutcome {
            key,
            result: PassResult::Saturated,
            capacity_gen: 0,
            ending,
        };
        feed.settle(outcome, &Config::default());
    }
    feed.publish_hungry();
    let hungry = board.view().load();
    assert!(hungry.get(&a1).is_none_or(|shows| shows.is_empty()));
    assert_eq!(
        hungry.get(&AllocId::from("a2")),
        Some(&vec![ShowId::from("s")])
    );
}

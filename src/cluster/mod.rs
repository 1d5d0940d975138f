//! Clusters: the unit of work a booking thread takes.
//!
//! A cluster is a show in a facility with the host tags it books through: one per allocation
//! tag, plus the show's MANUAL, HOSTNAME and HARDWARE tags chunked into groups (OpenCue's
//! cluster model). Two clusters may cover the same layer (an ALLOC and a MANUAL tag); the
//! booking guards make that safe, the feed only makes it rare.

pub mod feed;
mod turn;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    db::jobs::{ClusterTagRow, SubscriptionRow},
    ids::{AllocId, FacilityId, ShowId},
    model::TagType,
};

/// One unit of booking work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Stable identity: facility, show, tag type and tags.
    pub key: String,
    /// `facility.pk_facility`.
    pub facility: FacilityId,
    /// `show.pk_show`.
    pub show: ShowId,
    /// `show.str_name`.
    pub show_name: String,
    /// The type of its tags.
    pub kind: TagType,
    /// Host tags, sorted.
    pub tags: Vec<String>,
    /// Allocations of the facility the show is subscribed to with a burst above zero: the
    /// only hosts this cluster may book.
    pub allocs: BTreeSet<AllocId>,
}

/// How clusters are built from the tag rows.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Tags never turned into clusters.
    pub ignore_tags: Vec<String>,
    /// MANUAL and HARDWARE tags per cluster.
    pub manual_chunk: usize,
    /// HOSTNAME tags per cluster.
    pub hostname_chunk: usize,
}

/// The allocations each (facility, show) may book: subscribed with a burst above zero.
type ShowAllocs<'r> = HashMap<(&'r FacilityId, &'r ShowId), BTreeSet<AllocId>>;

/// MANUAL, HARDWARE and HOSTNAME tags grouped per (facility, show, show name, kind).
type TagGroups<'r> = BTreeMap<(&'r FacilityId, &'r ShowId, &'r str, TagType), BTreeSet<&'r str>>;

/// Builds the cluster set. Deterministic: the same rows give the same clusters in the same
/// order, so a reload that changes nothing changes nothing. An ALLOC tag is a cluster of its
/// own (when the show subscribes to that allocation); the other kinds are grouped per show
/// and cut into chunks of the configured size.
pub fn build(
    rows: &[ClusterTagRow],
    subs: &[SubscriptionRow],
    options: &BuildOptions,
) -> Vec<Cluster> {
    let mut allocs: ShowAllocs<'_> = HashMap::new();
    for s in subs.iter().filter(|s| s.burst > 0) {
        allocs
            .entry((&s.facility, &s.show))
            .or_default()
            .insert(s.alloc.clone());
    }
    let mut clusters = Vec::new();
    let mut groups: TagGroups<'_> = BTreeMap::new();
    for row in rows {
        if options.ignore_tags.iter().any(|t| t == &row.tag) || row.tag.trim().is_empty() {
            continue;
        }
        let Some(show_allocs) = allocs.get(&(&row.facility, &row.show)) else {
            continue;
        };
        match (row.tag_type, &row.alloc) {
            (TagType::Alloc, Some(alloc)) if show_allocs.contains(alloc) => {
                clusters.push(alloc_cluster(row, alloc));
            }
            (TagType::Alloc, _) => {}
            (kind, _) => {
                let key = (&row.facility, &row.show, row.show_name.as_str(), kind);
                groups.entry(key).or_default().insert(row.tag.as_str());
            }
        }
    }
    chunk_groups(groups, &allocs, options, &mut clusters);
    clusters.sort_by(|a, b| a.key.cmp(&b.key));
    clusters.dedup_by(|a, b| a.key == b.key);
    clusters
}

/// The cluster of one ALLOC tag.
fn alloc_cluster(row: &ClusterTagRow, alloc: &AllocId) -> Cluster {
    Cluster {
        key: format!("{}/{}/alloc/{}", row.facility, row.show, row.tag),
        facility: row.facility.clone(),
        show: row.show.clone(),
        show_name: row.show_name.clone(),
        kind: TagType::Alloc,
        tags: vec![row.tag.clone()],
        allocs: BTreeSet::from([alloc.clone()]),
    }
}

/// Cuts each group of tags into clusters of the configured chunk size, each booking on all
/// the show's allocations.
fn chunk_groups(
    groups: TagGroups<'_>,
    allocs: &ShowAllocs<'_>,
    options: &BuildOptions,
    clusters: &mut Vec<Cluster>,
) {
    for ((facility, show, show_name, kind), tags) in groups {
        let chunk = if kind == TagType::Hostname {
            options.hostname_chunk
        } else {
            options.manual_chunk
        }
        .max(1);
        let tags: Vec<&str> = tags.into_iter().collect();
        for part in tags.chunks(chunk) {
            clusters.push(Cluster {
                key: format!("{facility}/{show}/{}/{}", kind.label(), part.join(",")),
                facility: facility.clone(),
                show: show.clone(),
                show_name: show_name.to_owned(),
                kind,
                tags: part.iter().map(|t| (*t).to_owned()).collect(),
                allocs: allocs.get(&(facility, show)).cloned().unwrap_or_default(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(show: &str, tag: &str, kind: TagType, alloc: Option<&str>) -> ClusterTagRow {
        ClusterTagRow {
            facility: "f".into(),
            show: show.into(),
            show_name: show.into(),
            tag: tag.into(),
            tag_type: kind,
            alloc: alloc.map(Into::into),
        }
    }

    fn sub(show: &str, alloc: &str, burst: i64) -> SubscriptionRow {
        SubscriptionRow {
            show: show.into(),
            alloc: alloc.into(),
            facility: "f".into(),
            size: burst,
            burst,
        }
    }

    #[test]
    fn alloc_tags_make_one_cluster_each_and_manual_tags_are_chunked() {
        let rows = vec![
            row("s", "general", TagType::Alloc, Some("a1")),
            row("s", "gpu", TagType::Alloc, Some("a2")),
            row("s", "m1", TagType::Manual, None),
            row("s", "m2", TagType::Manual, None),
            row("s", "m3", TagType::Manual, None),
            row("s", "host01", TagType::Hostname, None),
        ];
        let subs = vec![sub("s", "a1", 100), sub("s", "a2", 0)];
        let options = BuildOptions {
            ignore_tags: vec!["m3".into()],
            manual_chunk: 1,
            hostname_chunk: 50,
        };
        let clusters = build(&rows, &subs, &options);
        let keys: Vec<&str> = clusters.iter().map(|c| c.key.as_str()).collect();
        // a2 has burst 0: no cluster; m3 ignored; m1 and m2 in chunks of one.
        assert_eq!(
            keys,
            vec![
                "f/s/alloc/general",
                "f/s/hostname/host01",
                "f/s/manual/m1",
                "f/s/manual/m2"
            ]
        );
        assert!(
            clusters
                .iter()
                .all(|c| c.allocs == BTreeSet::from([AllocId::from("a1")]))
        );
    }

    #[test]
    fn shows_without_subscriptions_get_no_clusters() {
        let rows = vec![row("s", "m1", TagType::Manual, None)];
        let options = BuildOptions {
            ignore_tags: vec![],
            manual_chunk: 50,
            hostname_chunk: 50,
        };
        assert!(build(&rows, &[], &options).is_empty());
    }
}

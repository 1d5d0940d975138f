//! Typed keys of Cuebot's rows: one newtype per table, so a job id can never be passed where a
//! show id is meant, and so the hot path never allocates to look one up.
//!
//! Cuebot's primary keys are `VARCHAR(36)` UUID strings. Each id here is an `Arc<str>` inside:
//! a clone is a reference-count increment, not a copy, so the ledger, the index and the batch
//! can key maps by ids and clone them per candidate or per charge for free. The ids convert to
//! and from SQL text directly (`ToSql`/`FromSql`), so rows read into them and statements bind
//! them without going through `String`; `Borrow<str>` lets a `HashMap<JobId, _>` be probed
//! with a plain `&str`.

use std::{borrow::Borrow, error::Error, fmt, ops::Deref, sync::Arc};

use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// Declares one id type: an `Arc<str>` newtype with the conversions every id shares.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as text, as the database spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name(Arc::from(s))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(Arc::from(s))
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<$name, Box<dyn Error + Sync + Send>> {
                <&str as FromSql>::from_sql(ty, raw).map($name::from)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }

        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut postgres::types::private::BytesMut,
            ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                <&str as ToSql>::to_sql(&&*self.0, ty, out)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }

            to_sql_checked!();
        }
    };
}

id_type!(
    /// `host.pk_host`.
    HostId
);
id_type!(
    /// `alloc.pk_alloc`.
    AllocId
);
id_type!(
    /// `show.pk_show`.
    ShowId
);
id_type!(
    /// `folder.pk_folder`.
    FolderId
);
id_type!(
    /// `job.pk_job`.
    JobId
);
id_type!(
    /// `layer.pk_layer`.
    LayerId
);
id_type!(
    /// `frame.pk_frame`.
    FrameId
);
id_type!(
    /// `proc.pk_proc`: also RQD's `resource_id` of the frame it runs.
    ProcId
);
id_type!(
    /// `limit_record.pk_limit_record`.
    LimitId
);
id_type!(
    /// `facility.pk_facility`.
    FacilityId
);

impl ProcId {
    /// A fresh proc key (a v4 UUID, as Cuebot makes them).
    pub(crate) fn fresh() -> ProcId {
        ProcId::from(uuid::Uuid::new_v4().to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn clones_share_the_text() {
        let a = HostId::from("h-1");
        let b = a.clone();
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(a, "h-1");
        assert_eq!(format!("{a} {a:?}"), "h-1 \"h-1\"");
    }

    #[test]
    fn maps_keyed_by_ids_take_str_lookups() {
        let mut m: HashMap<JobId, i32> = HashMap::new();
        m.insert(JobId::from("j"), 1);
        assert_eq!(m.get("j"), Some(&1));
    }

    #[test]
    fn fresh_procs_differ() {
        assert_ne!(ProcId::fresh(), ProcId::fresh());
        assert_eq!(ProcId::fresh().len(), 36);
    }
}

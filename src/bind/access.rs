//! What the access rules decided for one reading user, carried with the bound model so
//! that the rewrite and the catalog can act on it. [`crate::access`] decides it and words
//! the errors; this module only holds the outcome.

use std::collections::{BTreeMap, BTreeSet};

/// Why a view or metric is not available to a user (what the access rules decided;
/// [`crate::access`] decides it and words the error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The user's roles do not grant it (or it depends on something they do not grant).
    Permission {
        /// The user's roles, for the message.
        roles: Vec<String>,
    },
    /// A draft, visible only to modelers and its owner.
    Draft,
    /// Retired; use the replacement.
    Retired {
        /// The metric to use instead.
        replacement: Option<String>,
    },
    /// The view's rows cannot be limited to those the user may see.
    RowsNotLimitable {
        /// The dimensions of the row filter the view's facts cannot reach.
        dimensions: Vec<String>,
    },
}

/// The access rules' outcome for the reading user.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Metrics the reading user may not query, and why.
    pub denied_metrics: BTreeMap<String, Denial>,
    /// Views the reading user may not query, and why.
    pub denied_views: BTreeMap<String, Denial>,
    /// Dimensions the reading user sees masked.
    pub masked_dimensions: BTreeSet<String>,
    /// The reading user may read the audit trail (`kp.audit`).
    pub may_read_audit: bool,
}

//! The server's runtime: what a running kpitables process holds beside the per-statement
//! pipeline. The served model and its reloads (`serving`), the sessions and their
//! queues (`activity`), LISTEN/NOTIFY (`notify`), the audit trail (`audit`), the model's
//! history (`history`), alerts and data quality on their schedules (`alerts`), the
//! allocator (`memory`), and the live tables that show this state to SQL (`live`:
//! `pg_stat_activity`, `kp.audit`, `kp.changes`, `kp.model_errors`, through the
//! catalog's [`crate::catalog::live::LiveSource`]). [`serve`] composes them.
//!
//! Invariant: the layers below (engine, catalog, rewrite, ...) name no type of this wing;
//! it reaches them through their own interfaces (`Engine`, `LiveSource`). Only the
//! protocol front-ends (`wire`, `http`) and `main` import it.

pub mod activity;
pub mod alerts;
pub mod audit;
pub mod history;
pub mod live;
pub mod memory;
pub mod notify;
pub mod serving;

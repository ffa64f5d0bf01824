//! kpitables: a metrics center that speaks the PostgreSQL wire protocol.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! wire (pgwire: startup/auth, messages)  ──► session (user, settings)
//!   └► sql (parse, classify, compat) ──► rewrite (views → base tables, metric semantics)
//!        └► engine (DataFusion plan + execute over sources) ──► wire::encode (Arrow → rows)
//! model (TOML → plain data, validated) ──► bind (expressions resolved, views laid out)
//!   ──► catalog (pg_catalog / information_schema from the model)
//! ```
//!
//! See `ARCHITECTURE.md` for the code map and invariants.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod aggregates;
pub mod bind;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod error;
pub mod http;
pub mod import;
pub mod model;
pub mod operators;
pub mod percentiles;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod sources;
pub mod sql;
pub mod telemetry;
pub mod temp;
pub mod time_zone;
pub mod types;
pub mod wire;

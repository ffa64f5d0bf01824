//! Importers: models written for other semantic layers, turned into kpitables model text.
//!
//! An importer reads files and writes TOML that the model stage loads like any model; it
//! imports no stage of the query pipeline.

pub mod metricflow;

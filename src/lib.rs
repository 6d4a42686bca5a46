//! dcb: policy-driven incremental MongoDB backups.
//!
//! Data flows one way: policy files → [`policy`] (load, validate) → [`plan`] (jobs) →
//! export → storage, retention, state, alerts.

pub mod alert;
pub mod audit;
pub mod bson_stream;
pub mod catalog;
pub mod chain;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod diag;
pub mod discover;
pub mod document;
pub mod drill;
pub mod duration;
pub mod error;
pub mod events;
pub mod export;
pub mod health;
pub mod heap;
pub mod host;
pub mod http;
pub mod human;
pub mod lease;
pub mod listing;
pub mod logging;
pub mod metrics;
pub mod mongo;
pub mod names;
pub mod online;
pub mod page;
pub mod percent;
pub mod plan;
pub mod policy;
pub mod redact;
pub mod restore;
pub mod retention;
pub mod reverify;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod schema;
pub mod serve;
pub mod state;
pub mod status;
pub mod storage;
pub mod unpack;
pub mod verify;
pub mod window;
pub mod yaml;

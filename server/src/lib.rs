//! A rankd node: the gRPC services, the batching scheduler, metrics and configuration.
//!
//! Request path: tonic → [`stack::serving_stack`] (metrics, error mapping, deadline, load
//! shed, concurrency limit) → [`service::RankService`] (validation) →
//! [`scheduler::Scheduler`] (bounded queue, dynamic batching on dedicated threads) →
//! `rankd_kernels::Ranker` → response. A call this node cannot serve itself goes once to a
//! healthy peer instead ([`forward`], chosen from the heartbeat peer table). The Open
//! Inference Protocol ([`oip`], KServe v2 / Triton gRPC) sends each row of a ModelInfer batch
//! down the same path.

pub mod admin;
pub mod admin_cluster;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cluster;
pub mod compression;
pub mod config;
pub mod download;
pub mod error;
pub mod fault;
pub mod fault_admin;
pub mod forward;
pub mod gpu_memory;
pub mod health;
pub mod heartbeat_stream;
pub mod host;
pub mod metrics;
pub mod model;
pub mod node;
pub mod node_state;
pub mod oip;
pub mod quality;
pub mod scheduler;
pub mod service;
pub mod stack;
pub mod telemetry;
pub mod tls;

pub use config::{Config, ConfigError};
pub use node::{run, StartError};

//! openmono: run coding agents with local models in a sealed box.
//!
//! The pipeline, one module per stage: `playbook` (KDL text → typed, spanned playbook),
//! `graph` (petgraph DAG of the resources), `plan` (the ordered steps `apply` takes),
//! `engine` (executes a plan on a Docker engine, then tears it all down) and `agent`
//! (the loop that runs inside the agent container).

pub mod agent;
pub mod doctor;
pub mod gguf;
pub mod graph;
mod graph_error;
pub mod graph_format;
pub mod init;
mod matrix;
pub mod playbook;

pub use graph_error::GraphError;
pub mod plan;
mod plan_error;
pub mod replay;
pub mod runs;
pub mod sandbox;
pub mod saved_plan;
pub mod step;

pub use plan_error::PlanError;
pub mod cli;
pub mod engine;

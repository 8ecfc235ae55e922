//! The executor and everything that talks to a Docker engine. `docker.rs` and
//! `swarm.rs` are the only files that import bollard, so that other engines can stand
//! behind the same calls.

mod build_context;
mod docker;
mod endpoint;
mod engine_error;
mod executor;
pub mod gc;
mod progress;
pub mod report;
pub mod run_dir;
mod ssh;
mod swarm;

pub use docker::{
    BindMount, Capacity, ContainerSpec, Engine, EngineFacts, EngineObject, HealthVerdict, Liveness,
    ObjectKind, Stream,
};
pub use endpoint::{ContextChoice, DEFAULT_ENGINE, Endpoint, Environment, Origin, TlsFiles};
pub use engine_error::EngineError;
pub(crate) use executor::error_chain;
pub use executor::{
    ApplyOptions, DEFAULT_JOBS, Lost, REAP_AGE, RUN_LABEL, SELF_PATH, Travelled, apply,
    host_files_elsewhere,
};
pub use progress::{Output, Progress, input_label, input_object};
pub use report::{CheckReport, Report, TaskReport, TaskStatus};
pub use swarm::{NODE_ENGINE_LABEL, SwarmNode};

/// Locks a mutex; a panic elsewhere while it was held does not make its data unusable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

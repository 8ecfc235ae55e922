//! Integration tests: the real `openmono` binary, and for `apply` the real Docker engine,
//! the real images and the real model that `images/setup` provides.

mod apply;
mod bad;
mod diagnostics;
mod docs;
mod errors;
mod examples;
mod faults;
mod fixture_model;
mod isolation;
mod plan;
mod remote;
mod scenarios;
mod support;
mod swarm;

//! `openmono supervise [--timeout SECS] -- PROGRAM ARGS…`: runs a task's process inside
//! the box in its own process group, passes its output through, and kills the whole
//! group when the task's time is up (exit code 124, as coreutils' `timeout`). It is how
//! `apply` enforces a task's `timeout` without reaching into the container from outside.

use std::{
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::Duration,
};

use super::shell::{Exit, wait_until};

/// The exit code of a task whose time ran out.
pub const TIMED_OUT: i32 = 124;

/// Runs `argv` to its end or to `timeout`; returns the exit code to exit with.
#[must_use]
pub fn supervise(timeout: Option<Duration>, argv: &[String]) -> i32 {
    let Some((program, rest)) = argv.split_first() else {
        eprintln!("openmono supervise: no command given");
        return 2;
    };
    let spawned = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("openmono: cannot start `{program}`: {e}");
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    match wait_until(&mut child, timeout) {
        Exit::Code(code) => code,
        Exit::Signal(signal) => 128 + signal,
        Exit::TimedOut(after) => {
            eprintln!(
                "openmono: timed out after {}s; the task's processes were killed",
                after.as_secs()
            );
            TIMED_OUT
        }
        Exit::Lost(why) | Exit::NotStarted(why) => {
            eprintln!("openmono: lost the task's process: {why}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn passes_the_exit_code_through() {
        assert_eq!(supervise(None, &sh("exit 7")), 7);
        assert_eq!(supervise(Some(Duration::from_secs(5)), &sh("true")), 0);
    }

    #[test]
    fn a_missing_program_is_127() {
        assert_eq!(supervise(None, &["/no/such/program".into()]), 127);
    }

    #[test]
    fn the_timeout_kills_the_group_and_returns_124() {
        let started = std::time::Instant::now();
        let code = supervise(Some(Duration::from_millis(300)), &sh("sleep 30 & sleep 30"));
        assert_eq!(code, TIMED_OUT);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

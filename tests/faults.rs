//! Fault injection against the real engine: signals at random moments of `apply`, and
//! runs side by side. After each, nothing of the run may be left on the engine.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Duration,
};

use crate::support::{Project, assert_nothing_left, assert_run_gone, docker};

/// A playbook with something of every kind to remove, and steps that take a while.
pub fn playbook(name: &str) -> String {
    format!(
        "playbook \"{name}\"\nnetwork \"n\"\nvolume \"v\"\ncontainer \"a\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n    volume \"v\" \"/v\"\n}}\ncontainer \"b\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n}}\ntask \"first\" {{\n    run \"a\" \"sleep 0.5; echo a > /v/a\"\n}}\ntask \"second\" after=\"first\" {{\n    run \"b\" \"sleep 0.5\"\n}}\n"
    )
}

/// A small random number generator, seeded from the OS; the seed is printed so that a
/// failing trial can be told apart.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn next(state: &mut u64) -> u64 {
    // xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Runs `command`, sends it `signal` after `delay`, and waits for it: how it ended,
/// and what it wrote to stderr.
pub fn signal_after(
    mut command: std::process::Command,
    signal: libc::c_int,
    delay: Duration,
) -> (std::process::ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(delay);
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: a signal to the child we spawned (perhaps already exited, not reaped).
    unsafe { libc::kill(pid, signal) };
    let status = child.wait().expect("wait");
    (status, lines.join().expect("stderr").join("\n"))
}

#[test]
fn signals_at_random_moments_leave_nothing_behind() {
    if !docker() {
        return;
    }
    let trials: u64 = std::env::var("OPENMONO_FAULT_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(12);
    let mut state = random_seed() | 1;
    eprintln!("fault injection: {trials} trials, seed {state:#x}");
    let project = Project::new();
    for trial in 0..trials {
        let name = format!("fault-{}-{trial}", std::process::id());
        project.file("openmono.kdl", &playbook(&name));
        let signal = [libc::SIGINT, libc::SIGTERM, libc::SIGKILL][(next(&mut state) % 3) as usize];
        // From at once to past the end of the run (3 to 5 seconds here).
        let delay = Duration::from_millis(next(&mut state) % 7000);
        let (status, stderr) = signal_after(project.command(&["apply"]), signal, delay);
        let what = format!("trial {trial}: signal {signal} after {delay:?}");
        match status.code() {
            // Done before the signal, or stopped by it and torn down.
            Some(0 | 130) => {}
            // Killed: by SIGKILL, or by another signal before openmono could catch it
            // (it was still starting: no run had begun).
            None => assert!(
                signal == libc::SIGKILL || !stderr.contains("] Run "),
                "{what}: {stderr}"
            ),
            Some(code) => panic!("{what}: exit code {code}\n{stderr}"),
        }
        if signal == libc::SIGKILL {
            project.run(&["gc"]).expect_code(0);
        }
        assert_nothing_left(&format!("dev.openmono.playbook={name}"));
        eprintln!("{what}: {status}, nothing left");
    }
}

#[test]
fn two_runs_of_one_playbook_at_once_do_not_collide() {
    if !docker() {
        return;
    }
    let name = format!("twins-{}", std::process::id());
    let project = Project::new();
    project.file("openmono.kdl", &playbook(&name));
    let children: Vec<_> = (0..2)
        .map(|_| {
            project
                .command(&["apply"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(0), "{stdout}");
        assert!(
            stdout.contains("Teardown removed 2 container(s), 1 network(s) and 1 volume(s)."),
            "{stdout}"
        );
        let id = stdout
            .strip_prefix("Run ")
            .and_then(|rest| rest.split_whitespace().next())
            .expect("run id")
            .to_owned();
        assert_run_gone(&id);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    assert_nothing_left(&format!("dev.openmono.playbook={name}"));
}

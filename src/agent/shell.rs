//! The `shell` tool: runs one `sh -c COMMAND` for the model and reports what happened.
//!
//! In goes a command line and a working directory; out comes a [`ShellOutput`] whose
//! [`ShellOutput::to_model_text`] is what the model reads. Nothing here fails: a command
//! that cannot start, times out or is killed is still an answer for the model.
//!
//! Each command runs in its own process group with stdin closed and stdout and stderr
//! sharing one pipe (so their lines stay in order). On timeout the whole group is killed,
//! children included. A command may leave a background child that keeps the pipe open
//! (`server &`); the call does not wait for that pipe to close, only for the command
//! itself plus a short grace, and the child is left running.

use std::fmt::{self, Write as _};
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Runs shell commands with a time limit and an output cap.
#[derive(Debug, Clone)]
pub struct Shell {
    /// Most bytes of output kept for the model; the rest is counted, not kept.
    cap: usize,
    /// How long to keep reading the pipe after the command ended, for output still in
    /// flight; past it, whatever holds the pipe open is left behind.
    grace: Duration,
    /// How long a command may run before its process group is killed.
    timeout: Duration,
    /// When the task's time runs out: no command runs past it.
    deadline: Option<Instant>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// Waiting for it failed; it was killed to be sure.
    Lost(String),
    /// It could not be started at all.
    NotStarted(String),
    /// A signal ended it.
    Signal(i32),
    /// It ran past the time limit and its process group was killed.
    TimedOut(Duration),
}

/// The result of one command.
#[derive(Debug, Clone)]
pub struct ShellOutput {
    pub exit: Exit,
    /// stdout and stderr together, at most the shell's cap in bytes.
    pub output: String,
    /// How many bytes the command wrote in all.
    pub total_bytes: u64,
    /// Whether `output` holds less than the command wrote.
    pub truncated: bool,
}

/// The bytes read from a command's pipe so far, shared with the thread reading it.
#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    total: u64,
}

impl Shell {
    /// Default for [`Shell::cap`]: enough for a build log's head, small enough to leave
    /// the model room for many turns.
    pub const OUTPUT_CAP: usize = 16 * 1024;

    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self {
            cap: Self::OUTPUT_CAP,
            grace: Duration::from_millis(250),
            timeout,
            deadline: None,
        }
    }

    /// The same shell, whose commands are also killed at `deadline`.
    #[must_use]
    pub fn with_deadline(self, deadline: Option<Instant>) -> Self {
        Self { deadline, ..self }
    }

    /// The same shell with another output cap.
    #[must_use]
    pub fn with_cap(self, cap: usize) -> Self {
        Self { cap, ..self }
    }

    /// Runs `command` in `workdir` and waits for it, at most for the time limit.
    #[must_use]
    pub fn run(&self, command: &str, workdir: &Path) -> ShellOutput {
        let (reader, writer) = match io::pipe() {
            Ok(pipe) => pipe,
            Err(error) => return ShellOutput::not_started(&error),
        };
        let writer_for_stderr = match writer.try_clone() {
            Ok(writer) => writer,
            Err(error) => return ShellOutput::not_started(&error),
        };
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(command)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer_for_stderr)
            // Its own group, so that a timeout can kill everything the command started.
            .process_group(0);
        let spawned = shell.spawn();
        // The Command still holds our copies of the pipe's write end; while they live,
        // the reader would never see end-of-file.
        drop(shell);
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => return ShellOutput::not_started(&error),
        };
        let (captured, done) = self.capture(reader);
        let exit = self.wait(&mut child);
        // Past the grace, the pipe is held by something the command left running; take
        // what arrived and leave the reading thread to drain it until that ends.
        let _ = done.recv_timeout(self.grace);
        let captured = captured.lock().unwrap_or_else(PoisonError::into_inner);
        ShellOutput {
            exit,
            output: decode(&captured.bytes),
            total_bytes: captured.total,
            truncated: captured.total > captured.bytes.len() as u64,
        }
    }

    /// Reads the pipe on a thread, keeping the first `cap` bytes and counting the rest;
    /// the receiver hears when the pipe has closed.
    fn capture(&self, mut reader: io::PipeReader) -> (Arc<Mutex<Captured>>, mpsc::Receiver<()>) {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let (done_tx, done_rx) = mpsc::channel();
        let shared = Arc::clone(&captured);
        let cap = self.cap;
        thread::spawn(move || {
            let mut buffer = [0_u8; 8192];
            loop {
                let n = match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut captured = shared.lock().unwrap_or_else(PoisonError::into_inner);
                let room = cap.saturating_sub(captured.bytes.len()).min(n);
                captured.bytes.extend_from_slice(&buffer[..room]);
                captured.total += n as u64;
            }
            let _ = done_tx.send(());
        });
        (captured, done_rx)
    }

    fn wait(&self, child: &mut Child) -> Exit {
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        wait_until(
            child,
            Some(left.map_or(self.timeout, |l| l.min(self.timeout))),
        )
    }
}

/// Waits for a child that leads its own process group until `timeout` (none: for ever),
/// then kills the whole group.
pub fn wait_until(child: &mut Child, timeout: Option<Duration>) -> Exit {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    // Start polling fast so quick commands return quickly, then back off.
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Exit::from_status(status),
            Ok(None) => {}
            Err(error) => {
                kill_group(child);
                let _ = child.wait();
                return Exit::Lost(error.to_string());
            }
        }
        let now = Instant::now();
        if let Some(deadline) = deadline {
            if now >= deadline {
                kill_group(child);
                // Reap the shell so it does not linger as a zombie.
                let _ = child.wait();
                return Exit::TimedOut(timeout.unwrap_or_default());
            }
            pause = pause.min(deadline - now);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// Sends SIGKILL to the child's whole process group (its id, since it leads the group).
fn kill_group(child: &Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The group is
    // the one `process_group(0)` made for this child, which we have not reaped yet, so
    // its id cannot have been reused.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Turns output bytes into text, dropping a character the cap cut in half rather than
/// showing it as a replacement character.
fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(error) if error.error_len().is_none() => {
            String::from_utf8_lossy(&bytes[..error.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

impl Exit {
    fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Lost(format!("unknown exit status {status}")),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Lost(error) => write!(f, "lost track of the command: {error}"),
            Self::NotStarted(error) => write!(f, "could not start: {error}"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
            Self::TimedOut(limit) => write!(
                f,
                "timed out after {limit:?}; the command and its children were killed"
            ),
        }
    }
}

impl ShellOutput {
    fn not_started(error: &io::Error) -> Self {
        Self {
            exit: Exit::NotStarted(error.to_string()),
            output: String::new(),
            total_bytes: 0,
            truncated: false,
        }
    }

    /// The exit code, when the command exited on its own.
    #[must_use]
    pub fn exit_code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(code) => Some(code),
            _ => None,
        }
    }

    /// What the model reads: the status line first (so it survives any shortening of
    /// this text), then the output, then a note if the output was cut.
    #[must_use]
    pub fn to_model_text(&self) -> String {
        let mut text = self.exit.to_string();
        text.push('\n');
        if self.output.is_empty() {
            text.push_str("(no output)");
        } else {
            text.push_str(&self.output);
        }
        if self.truncated {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            // Writing to a String cannot fail.
            let _ = write!(
                text,
                "[output truncated: showing the first {} of {} bytes]",
                self.output.len(),
                self.total_bytes
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(timeout_ms: u64) -> Shell {
        Shell::new(Duration::from_millis(timeout_ms))
    }

    fn run(shell: &Shell, command: &str) -> (ShellOutput, Duration) {
        let start = Instant::now();
        let output = shell.run(command, Path::new("/"));
        (output, start.elapsed())
    }

    /// Whether a process runs; a zombie waiting for its reaper does not count.
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) => !matches!(
                stat.rsplit(')')
                    .next()
                    .map(str::trim_start)
                    .and_then(|s| s.chars().next()),
                Some('Z' | 'X')
            ),
            Err(_) => false,
        }
    }

    fn first_pid(output: &str) -> i32 {
        output
            .lines()
            .find_map(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {output:?}"))
    }

    #[test]
    fn reports_exit_code_and_output_in_order() {
        let (out, _) = run(&shell(10_000), "echo out; echo err >&2; echo more; exit 3");
        assert_eq!(out.exit, Exit::Code(3));
        assert_eq!(out.exit_code(), Some(3));
        assert_eq!(out.output, "out\nerr\nmore\n");
        assert!(!out.truncated);
        assert_eq!(out.to_model_text(), "exit code 3\nout\nerr\nmore\n");
    }

    #[test]
    fn runs_in_the_given_directory_with_empty_stdin() {
        let out = shell(10_000).run("pwd; cat; echo end", Path::new("/tmp"));
        assert_eq!(out.exit, Exit::Code(0));
        assert_eq!(out.output, "/tmp\nend\n");
    }

    #[test]
    fn empty_output_says_so() {
        let (out, _) = run(&shell(10_000), "true");
        assert_eq!(out.to_model_text(), "exit code 0\n(no output)");
    }

    #[test]
    fn timeout_kills_the_whole_group_and_returns_promptly() {
        let (out, elapsed) = run(&shell(500), "sleep 30 & echo $!; wait");
        assert_eq!(out.exit, Exit::TimedOut(Duration::from_millis(500)));
        assert_eq!(out.exit_code(), None);
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        assert!(out.to_model_text().starts_with("timed out after 500ms"));
        let sleeper = first_pid(&out.output);
        let start = Instant::now();
        while alive(sleeper) && start.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !alive(sleeper),
            "the background sleep {sleeper} survived the timeout"
        );
    }

    #[test]
    fn background_child_holding_the_pipe_does_not_block() {
        let (out, elapsed) = run(&shell(10_000), "sleep 30 & echo $!; echo started");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        assert_eq!(out.exit, Exit::Code(0));
        assert!(out.output.ends_with("started\n"), "{:?}", out.output);
        let sleeper = first_pid(&out.output);
        // Background work outlives the call on purpose (a server the model started).
        assert!(alive(sleeper));
        // SAFETY: plain syscall on a pid this test started.
        unsafe {
            libc::kill(sleeper, libc::SIGKILL);
        }
    }

    #[test]
    fn output_is_capped_keeping_the_head() {
        let (out, _) = run(
            &shell(10_000).with_cap(1000),
            "yes | head -c 100000; echo tail >&2",
        );
        assert_eq!(out.exit, Exit::Code(0));
        assert!(out.truncated);
        assert_eq!(out.output.len(), 1000);
        assert!(out.output.starts_with("y\ny\n"));
        assert_eq!(out.total_bytes, 100_005);
        assert!(
            out.to_model_text()
                .ends_with("\n[output truncated: showing the first 1000 of 100005 bytes]")
        );
    }

    #[test]
    fn cap_does_not_split_a_character() {
        // "é" is two bytes; a cap of 3 cuts the second one in half.
        let (out, _) = run(&shell(10_000).with_cap(3), "printf 'éé'");
        assert_eq!(out.output, "é");
        assert!(out.truncated);
    }

    #[test]
    fn command_not_found_exits_127() {
        let (out, _) = run(&shell(10_000), "openmono-no-such-command-here");
        assert_eq!(out.exit, Exit::Code(127));
        assert!(out.output.contains("not found"), "{:?}", out.output);
    }

    #[test]
    fn signals_are_reported() {
        let (out, _) = run(&shell(10_000), "kill -9 $$");
        assert_eq!(out.exit, Exit::Signal(9));
        assert_eq!(out.to_model_text(), "killed by signal 9\n(no output)");
    }

    #[test]
    fn a_missing_directory_means_it_could_not_start() {
        let out = shell(10_000).run("true", Path::new("/openmono/no/such/dir"));
        assert!(matches!(out.exit, Exit::NotStarted(_)), "{:?}", out.exit);
        assert!(out.to_model_text().starts_with("could not start: "));
    }
}

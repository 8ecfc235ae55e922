//! A task's `check` with `retries`, run by the agent itself between rounds.
//!
//! In go the check's command line, how many retries the task allows and a time limit;
//! after each final answer of a round that still has a retry behind it, [`Check::run`]
//! runs the command with the shell tool's machinery (its own process group, stdin
//! closed, output capped, the group killed on timeout) and [`Check::feedback`] words a
//! failure for the model. The last round's check is the host's: it runs the check once
//! more after the agent and its exit status decides the task.

use std::path::Path;
use std::time::Duration;

use super::shell::{Shell, ShellOutput};

/// The check the agent runs between rounds.
#[derive(Debug, Clone)]
pub struct Check {
    command: String,
    /// How many more rounds the agent gets after the first, while the check fails.
    retries: u32,
    shell: Shell,
}

impl Check {
    /// Most bytes of a check's output sent back to the model: enough for a failing
    /// test's message, small enough to leave a small model room for another round.
    pub const OUTPUT_CAP: usize = 8 * 1024;

    #[must_use]
    pub fn new(command: String, retries: u32, timeout: Duration) -> Self {
        Self {
            command,
            retries,
            shell: Shell::new(timeout).with_cap(Self::OUTPUT_CAP),
        }
    }

    /// Whether the agent checks after round `round` (from 1): only when a failure can
    /// still lead to another round.
    #[must_use]
    pub fn after_round(&self, round: u32) -> bool {
        round <= self.retries
    }

    /// Runs the check in `workdir`.
    #[must_use]
    pub fn run(&self, workdir: &Path) -> ShellOutput {
        self.shell.run(&self.command, workdir)
    }

    /// The user message that hands a failure of round `round` back to the model.
    #[must_use]
    pub fn feedback(&self, round: u32, output: &ShellOutput) -> String {
        let left = self.retries + 1 - round;
        let rounds = if left == 1 { "round" } else { "rounds" };
        format!(
            "The task is not done yet: its check `{}` failed.\n{}\n\nFix what the check \
             reports, then reply with a short final answer again. You have {left} more \
             {rounds}; the check runs again after your answer.",
            self.command,
            output.to_model_text().trim_end()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_with_a_retry_behind_them_are_checked() {
        let check = Check::new("true".into(), 2, Duration::from_secs(5));
        let checked: Vec<bool> = (1..=4).map(|round| check.after_round(round)).collect();
        assert_eq!(checked, [true, true, false, false]);
        let never = Check::new("true".into(), 0, Duration::from_secs(5));
        assert!(!never.after_round(1));
    }

    #[test]
    fn the_feedback_quotes_the_command_its_exit_and_its_output() {
        let check = Check::new("echo bad; exit 4".into(), 2, Duration::from_secs(5));
        let output = check.run(Path::new("/"));
        assert_eq!(output.exit_code(), Some(4));
        assert_eq!(
            check.feedback(1, &output),
            "The task is not done yet: its check `echo bad; exit 4` failed.\nexit code 4\n\
             bad\n\nFix what the check reports, then reply with a short final answer \
             again. You have 2 more rounds; the check runs again after your answer."
        );
        assert!(
            check
                .feedback(2, &output)
                .ends_with("You have 1 more round; the check runs again after your answer.")
        );
    }

    #[test]
    fn long_output_is_capped_and_a_hanging_check_is_killed() {
        let check = Check::new("yes | head -c 100000".into(), 1, Duration::from_secs(5));
        let output = check.run(Path::new("/"));
        assert_eq!(output.output.len(), Check::OUTPUT_CAP);
        assert!(output.to_model_text().ends_with(&format!(
            "[output truncated: showing the first {} of 100000 bytes]",
            Check::OUTPUT_CAP
        )));
        let slow = Check::new("sleep 30".into(), 1, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let output = slow.run(Path::new("/"));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(output.exit_code(), None);
        assert!(
            output
                .to_model_text()
                .starts_with("timed out after 300ms; the command and its children were killed")
        );
    }
}

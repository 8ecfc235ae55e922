//! What the user sees while a run works: on a terminal, a spinner per step with its
//! elapsed time; elsewhere, plain timestamped lines. Only this file touches indicatif.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one run, on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The last detail printed in plain mode, so that a repeated one is not.
    last_detail: std::cell::RefCell<String>,
    start: Instant,
    step_start: Instant,
    terminal: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            bar: None,
            last_detail: std::cell::RefCell::default(),
            start: Instant::now(),
            step_start: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Prints a line that stays, above any spinner.
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => self.plain(text),
        }
    }

    pub fn start_step(&mut self, label: &str) {
        self.step_start = Instant::now();
        if self.terminal {
            let bar = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(bar);
        } else {
            self.plain(&format!("▶ {label}"));
        }
    }

    /// A passing detail of the current step: the spinner shows it; plain output prints it.
    pub fn detail(&self, text: &str) {
        // Details can come from inside the box: never let them drive the terminal.
        let text = super::report::printable(text);
        let text = text.as_str();
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_owned());
        } else {
            let mut last = self.last_detail.borrow_mut();
            if *last != text {
                text.clone_into(&mut last);
                self.plain(&format!("  {text}"));
            }
        }
    }

    pub fn finish_step(&mut self, label: &str, ok: bool, note: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mark = if ok { "✓" } else { "✗" };
        let took = self.step_start.elapsed().as_secs_f64();
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(": {note}")
        };
        self.plain(&format!("{mark} {label} ({took:.1}s){note}"));
    }

    fn plain(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = writeln!(err, "{text}");
        } else {
            let _ = writeln!(err, "[{:>7.1}s] {text}", self.start.elapsed().as_secs_f64());
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

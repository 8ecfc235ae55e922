//! What the user sees while a run works: on a terminal, a spinner per running step with
//! its elapsed time; elsewhere, plain timestamped lines. Only this file touches indicatif.
//! Steps run at the same time, so each has its own [`StepProgress`].

use std::{
    io::{IsTerminal, Write},
    sync::Mutex,
    time::{Duration, Instant},
};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Progress of one run, on stderr.
pub struct Progress {
    /// On a terminal: the spinners of the running steps.
    bars: Option<MultiProgress>,
    start: Instant,
}

/// One running step's line.
pub struct StepProgress<'a> {
    bar: Option<ProgressBar>,
    label: String,
    /// The last detail printed in plain mode, so that a repeated one is not.
    last_detail: Mutex<String>,
    progress: &'a Progress,
    start: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            bars: std::io::stderr().is_terminal().then(MultiProgress::new),
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Prints a line that stays, above any spinner.
    pub fn line(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                if bars.println(text).is_err() {
                    eprintln!("{text}");
                }
            }
            None => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "[{:>7.1}s] {text}",
                    self.start.elapsed().as_secs_f64()
                );
            }
        }
    }

    pub fn start_step(&self, label: &str) -> StepProgress<'_> {
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(
                ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            );
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            self.line(&format!("▶ {label}"));
        }
        StepProgress {
            bar,
            label: label.to_owned(),
            last_detail: Mutex::default(),
            progress: self,
            start: Instant::now(),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl StepProgress<'_> {
    /// A passing detail of the step: the spinner shows it; plain output prints it once.
    pub fn detail(&self, text: &str) {
        // Details can come from inside the box: never let them drive the terminal.
        let text = super::report::printable(text);
        if let Some(bar) = &self.bar {
            bar.set_message(text);
            return;
        }
        let mut last = self
            .last_detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last != text {
            self.progress.line(&format!("  {}: {text}", self.label));
            *last = text;
        }
    }

    pub fn finish(self, ok: bool, note: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            if let Some(bars) = &self.progress.bars {
                bars.remove(bar);
            }
        }
        let mark = if ok { "✓" } else { "✗" };
        let took = self.start.elapsed().as_secs_f64();
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(": {note}")
        };
        self.progress
            .line(&format!("{mark} {} ({took:.1}s){note}", self.label));
    }
}

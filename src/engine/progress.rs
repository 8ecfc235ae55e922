//! What the user sees while a run works: on a terminal, a spinner per running step with
//! its elapsed time; elsewhere, plain timestamped lines; with `--output json`, one event
//! per line on stdout (the schema is in the book's command reference). Only this file
//! touches indicatif. Steps run at the same time, so each has its own [`StepProgress`].

use std::{
    io::{IsTerminal, Write},
    sync::Mutex,
    time::{Duration, Instant},
};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Spinners on a terminal, timestamped lines elsewhere.
    #[default]
    Text,
    /// JSON events on stdout.
    Json,
}

/// Progress of one run.
pub struct Progress {
    /// On a terminal in text mode: the spinners of the running steps.
    bars: Option<MultiProgress>,
    /// Whether the output of tasks is shown as it comes (`--follow`).
    follow: bool,
    /// A matrix run's input: before every line as `name=value …`, in every event as an
    /// object.
    input: Option<(String, Value)>,
    json: bool,
    start: Instant,
}

/// One running step's line.
pub struct StepProgress<'a> {
    bar: Option<ProgressBar>,
    label: String,
    /// The last detail shown, so that a repeated one is not.
    last_detail: Mutex<String>,
    progress: &'a Progress,
    start: Instant,
    /// The step's number in the plan (from 1); none for teardown.
    step: Option<usize>,
}

impl Progress {
    pub fn new(output: Output, follow: bool, input: Option<&[(String, String)]>) -> Self {
        let json = output == Output::Json;
        Self {
            bars: (!json && input.is_none() && std::io::stderr().is_terminal())
                .then(MultiProgress::new),
            follow,
            input: input.map(|vars| (input_label(vars), input_object(vars))),
            json,
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Prints a line that stays, above any spinner; in JSON, a `message` event.
    pub fn line(&self, text: &str) {
        if self.json {
            self.event("message", json!({ "text": text }));
            return;
        }
        if let Some(bars) = &self.bars {
            if bars.println(text).is_err() {
                eprintln!("{text}");
            }
            return;
        }
        let input = self
            .input
            .as_ref()
            .map_or(String::new(), |(label, _)| format!("[{label}] "));
        let _ = writeln!(
            std::io::stderr().lock(),
            "[{:>7.1}s] {input}{text}",
            self.start.elapsed().as_secs_f64()
        );
    }

    /// Writes one JSON event: `{"event": kind, "time": seconds since the start, …fields}`.
    pub fn event(&self, kind: &str, fields: Value) {
        let mut event = json!({ "event": kind, "time": round(self.start.elapsed()) });
        if let (Some((_, input)), Some(event)) = (&self.input, event.as_object_mut()) {
            event.insert("input".to_owned(), input.clone());
        }
        if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), fields) {
            event.extend(fields);
        }
        let mut out = std::io::stdout().lock();
        // A reader that went away cannot be told; the run goes on and tears down.
        let _ = writeln!(out, "{event}").and_then(|()| out.flush());
    }

    /// Whether output is shown as it comes (`--follow`).
    pub fn follows(&self) -> bool {
        self.follow
    }

    /// A line of output from a task or a container, shown only with `--follow`.
    pub fn output(&self, step: Option<usize>, name: &str, line: &str) {
        if !self.follow {
            return;
        }
        if self.json {
            self.event(
                "output",
                json!({ "step": step, "name": name, "line": line }),
            );
        } else {
            let line = super::report::printable(line);
            self.line(&format!("{name} | {line}"));
        }
    }

    /// Starts step `step` (its number in the plan; none for teardown).
    pub fn start_step(&self, label: &str, step: Option<usize>) -> StepProgress<'_> {
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
        if self.json {
            self.event("step-started", json!({ "step": step, "label": label }));
        } else if bar.is_none() {
            self.line(&format!("▶ {label}"));
        }
        StepProgress {
            bar,
            label: label.to_owned(),
            last_detail: Mutex::default(),
            progress: self,
            start: Instant::now(),
            step,
        }
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
        if *last == text {
            return;
        }
        if self.progress.json {
            self.progress.event(
                "step-detail",
                json!({ "step": self.step, "label": self.label, "text": text }),
            );
        } else {
            self.progress.line(&format!("  {}: {text}", self.label));
        }
        *last = text;
    }

    /// A line of output from the step's task, shown only with `--follow`.
    pub fn output(&self, name: &str, line: &str) {
        self.progress.output(self.step, name, line);
    }

    pub fn finish(self, ok: bool, note: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            if let Some(bars) = &self.progress.bars {
                bars.remove(bar);
            }
        }
        let took = self.start.elapsed();
        if self.progress.json {
            self.progress.event(
                "step-finished",
                json!({
                    "step": self.step,
                    "label": self.label,
                    "ok": ok,
                    "note": note,
                    "seconds": round(took),
                }),
            );
            return;
        }
        let mark = if ok { "✓" } else { "✗" };
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(": {note}")
        };
        self.progress.line(&format!(
            "{mark} {} ({:.1}s){note}",
            self.label,
            took.as_secs_f64()
        ));
    }
}

/// Seconds with millisecond precision, for JSON.
fn round(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A matrix input as lines show it: `lang=rust os=debian`.
pub fn input_label(vars: &[(String, String)]) -> String {
    vars.iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A matrix input as events carry it: `{"lang": "rust", "os": "debian"}`.
pub fn input_object(vars: &[(String, String)]) -> Value {
    Value::Object(
        vars.iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect(),
    )
}

//! Any bytes as a playbook: parse → decode → render → graph → plan, and the rendered
//! diagnostics, must never panic. And the parser's fast path must agree with kdl's
//! parser: it declines the text, or builds the very document kdl builds, spans included.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use openmono::{
    plan::Plan,
    playbook::{self, Inputs, Source},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    playbook::check_against_kdl(text);
    let dir = std::env::temp_dir();
    let source = Source::from_text(Path::new("fuzz.kdl"), dir.clone(), text.to_owned());
    let mut decoded = match playbook::decode(&source) {
        Ok(decoded) => decoded.playbook,
        Err(problems) => {
            render(&problems);
            return;
        }
    };
    let inputs = Inputs {
        cwd: dir,
        run_id: "fuzz".into(),
        environment: Vec::new(),
        values: Vec::new(),
    };
    if let Err(errors) = playbook::render(&mut decoded, &inputs) {
        render(&playbook::Problems::new(decoded.source.named(), errors));
        return;
    }
    match Plan::new(&decoded) {
        Ok(plan) => {
            let _ = plan.to_string();
        }
        Err(e) => render(&e),
    }
});

/// As the command line prints them (with its guard against the report handler's own
/// panics on very long lines).
fn render(diagnostic: &dyn miette::Diagnostic) {
    let _ = openmono::cli::render_diagnostic(diagnostic);
}

//! `openmono init` and the built-in default playbook: one commented starter, with the
//! check that fits the project in the current folder (`cargo test`, `npm test`, …).

use std::path::Path;

/// The file `init` writes and `apply` reads by default.
pub const PLAYBOOK: &str = "openmono.kdl";

/// How to test the kinds of project openmono recognises, by the file that marks them.
const CHECKS: [(&str, &str); 6] = [
    ("Cargo.toml", "cargo test --offline"),
    ("package.json", "npm test"),
    ("go.mod", "go test ./..."),
    ("pyproject.toml", "python3 -m pytest -q"),
    ("requirements.txt", "python3 -m pytest -q"),
    ("Makefile", "make test"),
];

/// The command that tests the project in `dir`, if openmono recognises it.
pub fn check_for(dir: &Path) -> Option<&'static str> {
    CHECKS
        .iter()
        .find(|(marker, _)| dir.join(marker).is_file())
        .map(|(_, check)| *check)
}

/// A starter playbook for the project in `dir`, named after the folder.
pub fn starter(dir: &Path) -> String {
    // A name starts with a letter and holds letters, digits, `-` and `_`.
    let name: String = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .chars()
        .skip_while(|c| !c.is_ascii_alphabetic())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let name = if name.is_empty() {
        "project".to_owned()
    } else {
        name
    };
    let check = match check_for(dir) {
        Some(check) => format!("    check \"{check}\" // the task succeeds when this exits 0\n"),
        None => "    // check \"make test\" // the task succeeds when this exits 0\n".to_owned(),
    };
    format!(
        r#"// An agent with a local model works on this project inside a sealed box.
// `openmono plan` shows every step; `openmono apply` runs them and removes it all after.
playbook "{name}" {{
    description "An agent fixes this project, in a box it cannot leave"
}}

// The model file; set it with `--var model=PATH` or OPENMONO_VAR_model=PATH.
var "model" type="path" default="models/model.gguf" description="the GGUF model file"

network "sandbox" // internal: no route out, the host is unreachable

model "coder" {{
    gguf "{{{{ var.model }}}}"
    network "sandbox"
    context 8192
}}

container "agent" {{
    image "openmono/agent:latest"
    network "sandbox"
    workspace "." // this folder, at /workspace, the only host mount
    limits memory="4GiB" pids=512
}}

task "fix" {{
    agent "agent" model="coder"
    prompt "Run the tests, find what fails, and fix it. Keep changes small."
{check}    max-steps 30
    timeout "30m"
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_fits_the_project() {
        let dir = tempfile::tempdir().expect("temp");
        assert_eq!(check_for(dir.path()), None);
        std::fs::write(dir.path().join("Makefile"), "test:\n").expect("write");
        assert_eq!(check_for(dir.path()), Some("make test"));
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").expect("write");
        assert_eq!(check_for(dir.path()), Some("cargo test --offline"));
        assert!(starter(dir.path()).contains("    check \"cargo test --offline\""));
    }
}

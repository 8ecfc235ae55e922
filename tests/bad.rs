//! Every playbook in `tests/bad/` is wrong in some way (or, named `warn-*`, suspicious); the whole rendered diagnostic
//! (no colour, fixed width) is kept beside it as `NAME.txt`. `OPENMONO_BLESS=1` rewrites
//! the snapshots; review the diff before committing it.

use std::path::PathBuf;

use crate::support::{Project, root, tiny_gguf};

#[test]
fn every_bad_playbook_gets_its_exact_diagnostic() {
    let dir = root().join("tests/bad");
    let mut playbooks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/bad")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
        .collect();
    playbooks.sort();
    assert!(
        playbooks.len() >= 60,
        "only {} bad playbooks",
        playbooks.len()
    );
    let bless = std::env::var_os("OPENMONO_BLESS").is_some();
    let mut differ = Vec::new();
    for playbook in &playbooks {
        let name = playbook
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let project = Project::new();
        project.file(&name, &std::fs::read_to_string(playbook).expect("read"));
        // A model file that reads, for the problems that are not about it; one that is
        // not a GGUF; one whose header is cut short.
        std::fs::write(project.path().join("m.gguf"), tiny_gguf()).expect("m.gguf");
        project.file("text.gguf", "just some text\n");
        std::fs::write(project.path().join("cut.gguf"), &tiny_gguf()[..30]).expect("cut.gguf");
        // Replay scripts: one that reads, one with a mistake on its second line.
        project.file("ok.jsonl", "{\"content\": \"Done.\"}\n");
        project.file(
            "bad.jsonl",
            "{\"content\": \"Done.\"}\n{\"contents\": \"typo\"}\n",
        );
        // For mounts: a folder of the project, and a symlink that leads out of it.
        project.file("data/readme", "data");
        std::os::unix::fs::symlink("/usr", project.path().join("outside")).expect("symlink");
        // For workspaces: a symlink that leads to a system folder, and a hidden folder of
        // the home folder.
        std::os::unix::fs::symlink("/etc", project.path().join("etc-link")).expect("symlink");
        project.file(".ssh/known_hosts", "");
        // The project is the home folder, so that a refused home reads the same on
        // every machine.
        let run = crate::support::Run::from(
            project
                .command(&["plan", &name])
                .env("HOME", project.path())
                .output()
                .expect("run openmono"),
        );
        // `warn-*` playbooks plan, with warnings; the others do not plan at all.
        let code = if name.starts_with("warn-") { 0 } else { 2 };
        assert_eq!(run.code, Some(code), "{name}:\n{}", run.stdout);
        assert!(!run.stderr.contains("panicked"), "{name}: {}", run.stderr);
        let snapshot = playbook.with_extension("txt");
        if bless {
            std::fs::write(&snapshot, &run.stderr).expect("write snapshot");
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if expected != run.stderr {
            differ.push(format!(
                "{name}:\n--- expected\n{expected}\n--- got\n{}",
                run.stderr
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} snapshot(s) differ (OPENMONO_BLESS=1 rewrites them):\n{}",
        differ.len(),
        differ.join("\n")
    );
}

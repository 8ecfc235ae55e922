//! Docs cannot rot: every playbook in `playbooks/` plans, every `kdl` code block in the
//! README, `grammar/` and `book/` decodes and has a sound graph.

use std::path::{Path, PathBuf};

use openmono::{
    graph,
    playbook::{self, Source},
};

use crate::support::{Project, root};

/// The `kdl` code blocks of a Markdown file, with the line each starts on.
fn kdl_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```kdl" => current = Some((i + 1, String::new())),
            Some((start, block)) if line.trim_start() == "```" => {
                blocks.push((*start, std::mem::take(block)));
                current = None;
            }
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("grammar/rules.md")];
    let book = root().join("book/src");
    for entry in std::fs::read_dir(&book).expect("book/src") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_kdl_block_in_the_docs_decodes_and_builds_its_graph() {
    let mut seen = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        for (line, block) in kdl_blocks(&text) {
            let name = format!("{}:{line}", file.display());
            let source = Source::from_text(Path::new(&name), root(), block);
            let decoded = playbook::decode(&source)
                .unwrap_or_else(|e| panic!("{name}: {:?}", miette::Report::new(e)));
            if let Err(errors) = graph::build(&decoded.playbook) {
                panic!("{name}: {errors:#?}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} kdl blocks found");
}

#[test]
fn every_example_playbook_plans() {
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("playbooks")).expect("playbooks/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "kdl") {
            continue;
        }
        let run = Project::new().run(&["plan", path.to_str().expect("utf-8 path")]);
        assert_eq!(run.code, Some(0), "{}:\n{}", path.display(), run.stderr);
        let run = Project::new().run(&["fmt", "--check", path.to_str().expect("utf-8 path")]);
        assert_eq!(
            run.code,
            Some(0),
            "{} is not formatted: {}",
            path.display(),
            run.stderr
        );
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} example playbooks");
}

#[test]
fn the_grammar_reference_is_generated_from_the_code() {
    let path = root().join("grammar/README.md");
    let generated = openmono::playbook::grammar::markdown();
    if std::env::var_os("OPENMONO_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write grammar");
    }
    let checked_in = std::fs::read_to_string(&path).expect("grammar/README.md");
    assert!(
        checked_in == generated,
        "grammar/README.md differs from the language table; run `OPENMONO_BLESS=1 cargo test grammar` and commit it"
    );
}

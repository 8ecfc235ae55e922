//! Docs cannot rot: every playbook in `playbooks/` plans, every `kdl` code block in the
//! README, `grammar/` and `book/` decodes and has a sound graph, the book builds, and the
//! commands of their `sh` blocks work as printed.
//!
//! Marks in HTML comments just above a block's fence (readers do not see them) say how a
//! block is tested: `<!-- test: exit 2 -->` (its exit status, 0 unless marked),
//! `<!-- test: engine -->` (it needs the Docker engine), `<!-- test: file PATH -->` (a
//! `kdl` block written to PATH for the blocks after it), `<!-- test: output -->` (a `text`
//! block that the `sh` block before it prints, paths as on the reader's machine: the
//! clone at `/root/openmono`, the home folder `/root`; wrapped lines joined), `<!-- test: skip WHY -->` (it
//! cannot run in a test: it installs, builds or runs a model).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use openmono::{
    graph,
    playbook::{self, Source},
};

use crate::support::{Project, docker, root, skip_without, unwrapped};

/// A fenced code block of a Markdown file, with the `<!-- test: … -->` marks on the lines
/// just above its fence (comments: readers of the page do not see them).
struct Block {
    /// The fence's info string: `sh`, `kdl`, `text`…
    info: String,
    /// The line of the opening fence, from 1.
    line: usize,
    marks: Vec<String>,
    text: String,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut marks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            None => {
                if let Some(mark) = trimmed
                    .strip_prefix("<!-- test: ")
                    .and_then(|m| m.strip_suffix(" -->"))
                {
                    marks.push(mark.to_owned());
                } else if let Some(info) = trimmed.strip_prefix("```") {
                    current = Some(Block {
                        info: info.trim().to_owned(),
                        line: i + 1,
                        marks: std::mem::take(&mut marks),
                        text: String::new(),
                    });
                } else {
                    marks.clear();
                }
            }
            Some(_) if trimmed == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    blocks
}

/// The text with each `{{#include PATH}}` line (mdBook's) replaced by the file, relative
/// to `dir`.
fn expand_includes(text: &str, dir: &Path) -> String {
    text.lines()
        .map(|line| {
            match line
                .trim()
                .strip_prefix("{{#include ")
                .and_then(|l| l.strip_suffix("}}"))
            {
                Some(path) => std::fs::read_to_string(dir.join(path.trim()))
                    .unwrap_or_else(|e| panic!("{{{{#include {path}}}}}: {e}")),
                None => format!("{line}\n"),
            }
        })
        .collect()
}

/// The `kdl` code blocks of a Markdown file, includes expanded, with their lines.
fn kdl_blocks(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).expect("read");
    let dir = file.parent().expect("in a folder");
    blocks(&text)
        .into_iter()
        .filter(|b| b.info == "kdl")
        .map(|b| (b.line, expand_includes(&b.text, dir)))
        .collect()
}

/// Every Markdown file of the book's source, in every folder.
fn book_chapters(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("book/src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            book_chapters(&path, files);
        } else if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("grammar/rules.md")];
    book_chapters(&root().join("book/src"), &mut files);
    files.sort();
    files
}

#[test]
fn every_kdl_block_in_the_docs_decodes_and_builds_its_graph() {
    let mut seen = 0;
    for file in markdown_files() {
        for (line, block) in kdl_blocks(&file) {
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

/// mdBook, where `book/install-mdbook` puts it, else from `PATH`.
fn mdbook() -> Option<PathBuf> {
    let cache = std::env::var_os("OPENMONO_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/openmono"), PathBuf::from);
    let cached = cache.join("tools/bin/mdbook");
    if cached.is_file() {
        return Some(cached);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("mdbook"))
        .find(|path| path.is_file())
}

/// The chapters `SUMMARY.md` links, as paths relative to `book/src`.
fn summary_chapters() -> Vec<String> {
    let summary = std::fs::read_to_string(root().join("book/src/SUMMARY.md")).expect("SUMMARY");
    summary
        .lines()
        .filter_map(|line| line.split_once("](")?.1.strip_suffix(')'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_book_builds_with_every_chapter_in_its_summary() {
    let Some(mdbook) = mdbook() else {
        skip_without("mdbook is not installed", "run book/install-mdbook");
        return;
    };
    let out = tempfile::tempdir().expect("temp dir");
    let built = Command::new(&mdbook)
        .arg("build")
        .arg("-d")
        .arg(out.path())
        .arg(root().join("book"))
        .output()
        .expect("run mdbook");
    let log = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "mdbook build failed:\n{log}");
    assert!(
        !log.contains("[WARN]") && !log.contains("[ERROR]"),
        "mdbook complained:\n{log}"
    );
    let chapters = summary_chapters();
    assert!(chapters.len() >= 13, "only {} chapters", chapters.len());
    for chapter in &chapters {
        let source = std::fs::read_to_string(root().join("book/src").join(chapter))
            .unwrap_or_else(|e| panic!("{chapter}: {e}"));
        let title = source
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or_else(|| panic!("{chapter} has no `# ` title"));
        let page = out.path().join(chapter).with_extension("html");
        let html =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(
            html.contains(&format!("\">{title}</a></h1>")),
            "{chapter}: its title `{title}` is not in the page"
        );
        assert_links_resolve(&page, &html, chapter);
    }
    // Every page of the source is in the book: none is left out of the summary.
    let mut pages = Vec::new();
    book_chapters(&root().join("book/src"), &mut pages);
    for page in pages {
        let relative = page.strip_prefix(root().join("book/src")).expect("in src");
        let relative = relative.to_str().expect("utf-8");
        assert!(
            relative == "SUMMARY.md" || chapters.iter().any(|c| c == relative),
            "book/src/{relative} is not in SUMMARY.md"
        );
    }
}

/// Every relative link of a built page leads to a page of the book, and to a heading
/// there when it names one.
#[track_caller]
fn assert_links_resolve(page: &Path, html: &str, chapter: &str) {
    for link in html.split("href=\"").skip(1) {
        let link = &link[..link.find('"').expect("a closing quote")];
        if link.contains("://") || link.starts_with("mailto:") {
            continue;
        }
        let (file, fragment) = link.split_once('#').unwrap_or((link, ""));
        let target = if file.is_empty() {
            page.to_owned()
        } else {
            page.parent().expect("in a folder").join(file)
        };
        let bytes = std::fs::read(&target)
            .unwrap_or_else(|e| panic!("{chapter}: the link `{link}` leads nowhere: {e}"));
        assert!(
            fragment.is_empty()
                || String::from_utf8_lossy(&bytes).contains(&format!("id=\"{fragment}\"")),
            "{chapter}: the link `{link}` names no heading of its page"
        );
    }
}

/// What a test of a doc's examples does with one block, from its marks.
#[derive(Debug, Default)]
struct Marks {
    /// The expected exit status of the block's last command (or of the first that fails).
    exit: i32,
    /// The block needs a Docker engine; without one it is skipped like other Docker tests.
    engine: bool,
    /// A `kdl` block to write to this path before the commands that follow it.
    file: Option<String>,
    /// A `text` block that the output of the `sh` block before it holds, word for word.
    output: bool,
    /// Why the block cannot run in a test.
    skip: Option<String>,
}

impl Marks {
    #[track_caller]
    fn parse(marks: &[String], place: &str) -> Self {
        let mut parsed = Self::default();
        for mark in marks {
            match mark.split_once(' ').unwrap_or((mark, "")) {
                ("exit", code) => parsed.exit = code.parse().expect("exit CODE"),
                ("engine", "") => parsed.engine = true,
                ("file", path) if !path.is_empty() => parsed.file = Some(path.to_owned()),
                ("output", "") => parsed.output = true,
                ("skip", why) if !why.is_empty() => parsed.skip = Some(why.to_owned()),
                _ => panic!(
                    "{place}: unknown mark `{mark}` (known: `exit N`, `engine`, `file PATH`, `output`, `skip WHY`)"
                ),
            }
        }
        parsed
    }
}

/// Copies a folder, leaving out build output, git's data and the (large) models.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if ["target", ".git", "models"].iter().any(|n| name == *n) {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&source, &target);
        } else {
            std::fs::copy(&source, &target).expect("copy");
        }
    }
}

/// A fresh machine for one Markdown file's examples: a copy of the repository named
/// `openmono` with the real models, the binary where the README builds it and on `PATH`
/// as `openmono`, and an empty home folder.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let sandbox = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let clone = sandbox.clone_dir();
        copy_tree(&root(), &clone);
        std::os::unix::fs::symlink(root().join("models"), clone.join("models")).expect("models");
        let binary = Path::new(env!("CARGO_BIN_EXE_openmono"));
        for dir in [
            clone.join("target/x86_64-unknown-linux-gnu/release"),
            sandbox.dir.path().join("bin"),
        ] {
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::os::unix::fs::symlink(binary, dir.join("openmono")).expect("binary");
        }
        // A block left unmarked by mistake must not change this machine: what installs,
        // builds or starts an engine fails here instead.
        for tool in [
            "apt-get",
            "cargo",
            "debootstrap",
            "dockerd",
            "sudo",
            "systemctl",
        ] {
            let stub = sandbox.dir.path().join("bin").join(tool);
            std::fs::write(
                &stub,
                format!("#!/bin/sh\necho '{tool}: not in a test of the docs; mark the block `<!-- test: skip WHY -->`' >&2\nexit 97\n"),
            )
            .expect("stub");
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::create_dir(sandbox.home()).expect("home");
        sandbox.cd(&clone);
        sandbox
    }

    fn clone_dir(&self) -> PathBuf {
        self.dir.path().join("openmono")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The file that carries the working folder from one block to the next.
    fn cwd_file(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    fn cd(&self, dir: &Path) {
        std::fs::write(self.cwd_file(), dir.as_os_str().as_encoded_bytes()).expect("cwd");
    }

    fn cwd(&self) -> PathBuf {
        PathBuf::from(
            std::fs::read_to_string(self.cwd_file())
                .expect("cwd")
                .trim_end(),
        )
    }

    /// A path as a reader would type it: `~/` is the home folder; relative to the folder
    /// the examples have reached.
    fn resolve(&self, path: &str) -> PathBuf {
        match path.strip_prefix("~/") {
            Some(rest) => self.home().join(rest),
            None => self.cwd().join(path),
        }
    }

    /// Output as the docs print it: the clone at `/root/openmono` (the models in it),
    /// the home folder at `/root`, the engine the default one (commands that need no
    /// engine run with `DOCKER_HOST` at a socket that is not there, see [`Self::run`]).
    fn as_printed(&self, output: &[u8]) -> String {
        String::from_utf8_lossy(output)
            .replace(self.clone_dir().to_str().expect("utf-8"), "/root/openmono")
            .replace(root().to_str().expect("utf-8"), "/root/openmono")
            .replace(self.home().to_str().expect("utf-8"), "/root")
            .replace(
                &format!("  Engine: {NO_ENGINE} from DOCKER_HOST\n"),
                "  Engine: unix:///var/run/docker.sock (the default: no --engine, DOCKER_HOST or context)\n",
            )
    }

    /// Runs a block's commands with bash, as a reader would paste them (stopping at the
    /// first that fails), in the folder the examples have reached; the folder they end in
    /// is where the next block starts.
    fn run(&self, commands: &str, engine: bool) -> std::process::Output {
        let cwd = self.cwd_file();
        let script = format!(
            "cd \"$(cat '{cwd}')\" || exit 99\ntrap 'pwd > \"{cwd}\"' EXIT\nset -e\n{commands}",
            cwd = cwd.display()
        );
        let path = std::env::join_paths(std::iter::once(self.dir.path().join("bin")).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .expect("PATH");
        let mut command = Command::new("timeout");
        command
            .args(["300", "bash", "-c", &script])
            .env("PATH", path)
            .env("HOME", self.home())
            .env_remove("OPENMONO_STATE_DIR")
            .env_remove("XDG_STATE_HOME")
            .env_remove("NO_COLOR");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPENMONO_VAR_") {
                command.env_remove(name);
            }
        }
        if !engine {
            // What needs no engine must work without one.
            command.env("DOCKER_HOST", NO_ENGINE);
        }
        command.output().expect("run bash")
    }
}

/// Where commands that need no engine find none.
const NO_ENGINE: &str = "unix:///nonexistent/docker.sock";

#[test]
fn every_command_in_the_readme_and_the_book_works_as_printed() {
    let mut ran = 0;
    let mut outputs = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        let dir = file.parent().expect("in a folder");
        let sandbox = Sandbox::new();
        // What the last `sh` block printed (stdout, stderr); `None` when it did not run.
        let mut printed: Option<(String, String)> = None;
        for block in blocks(&text) {
            let place = format!("{}:{}", file.display(), block.line);
            let marks = Marks::parse(&block.marks, &place);
            if marks.output {
                let Some((stdout, stderr)) = &printed else {
                    continue;
                };
                let doc = unwrapped(&block.text);
                assert!(
                    unwrapped(stdout).contains(&doc) || unwrapped(stderr).contains(&doc),
                    "{place}: the command before it prints something else\n--- the doc\n{}--- stdout\n{stdout}--- stderr\n{stderr}",
                    block.text
                );
                outputs += 1;
                continue;
            }
            if block.info == "sh" {
                printed = None;
            }
            if marks.skip.is_some() || (block.info != "sh" && marks.file.is_none()) {
                continue;
            }
            if let Some(path) = &marks.file {
                let path = sandbox.resolve(path);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, expand_includes(&block.text, dir)).expect("write");
                continue;
            }
            if marks.engine && !docker() {
                continue;
            }
            let output = sandbox.run(&block.text, marks.engine);
            let (stdout, stderr) = (
                sandbox.as_printed(&output.stdout),
                sandbox.as_printed(&output.stderr),
            );
            assert_eq!(
                output.status.code(),
                Some(marks.exit),
                "{place}: the example exits differently than the doc says (mark it `<!-- test: exit N -->`, or `<!-- test: skip WHY -->` if it cannot run in a test)\n--- commands\n{}--- stdout\n{stdout}--- stderr\n{stderr}",
                block.text,
            );
            printed = Some((stdout, stderr));
            ran += 1;
        }
    }
    assert!(ran >= 20, "only {ran} examples ran");
    assert!(outputs >= 5, "only {outputs} outputs compared");
}

//! parse → decode → render → graph → plan on generated playbooks of 10 to 10,000
//! resources: time per playbook and peak heap, and `docker-compose config` on an
//! equivalent compose file in the same run as the peer (when it is installed).
//!
//! Run: `cargo bench --bench pipeline`. Results go to stdout as a Markdown table.
//! `cargo bench --bench pipeline -- playbooks/hello-agent.kdl` measures a real playbook
//! instead: its parse by kdl alone and by openmono (whose fast path reads playbooks that
//! are valid KDL), and its parse → plan.

// A bench builds text and prints numbers; precision to the last byte does not matter.
#![allow(clippy::format_push_string, clippy::cast_precision_loss)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    path::Path,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use openmono::{
    plan::Plan,
    playbook::{self, Inputs, Source},
};

/// Counts live heap bytes and remembers the highest mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same pointer and layout as alloc.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A playbook with about `n` resources: networks, containers, and a chain of tasks.
fn playbook(n: usize) -> String {
    let groups = n.div_ceil(10);
    let mut text = String::from("playbook \"bench\"\nvar \"cmd\" default=\"make test\"\n");
    for g in 0..groups {
        text.push_str(&format!("network \"net{g}\"\n"));
        for c in 0..3 {
            text.push_str(&format!(
                "container \"c{g}-{c}\" {{\n    image \"openmono/agent:latest\"\n    network \"net{g}\"\n    env \"GROUP\" \"{g}\"\n    limits memory=\"1GiB\" pids=256\n}}\n"
            ));
        }
        for t in 0..6 {
            let after = if t == 0 {
                String::new()
            } else {
                format!(" after=\"t{g}-{}\"", t - 1)
            };
            text.push_str(&format!(
                "task \"t{g}-{t}\"{after} {{\n    run \"c{g}-{}\" \"{{{{ var.cmd }}}} {t}\"\n}}\n",
                t % 3
            ));
        }
    }
    text
}

/// The same resources as a compose file: a network per group, a service per container.
fn compose(n: usize) -> String {
    let groups = n.div_ceil(10);
    let mut text = String::from("version: \"3.8\"\nservices:\n");
    for g in 0..groups {
        for c in 0..3 {
            text.push_str(&format!(
                "  c{g}-{c}:\n    image: openmono/agent:latest\n    networks: [net{g}]\n    environment:\n      GROUP: \"{g}\"\n    mem_limit: 1g\n    pids_limit: 256\n    command: [\"make\", \"test\"]\n"
            ));
        }
    }
    text.push_str("networks:\n");
    for g in 0..groups {
        text.push_str(&format!("  net{g}:\n    internal: true\n"));
    }
    text
}

fn pipeline(text: &str) -> Plan {
    let source = Source::from_text(
        Path::new("bench.kdl"),
        std::env::temp_dir(),
        text.to_owned(),
    );
    plan(&source)
}

/// decode (parse included) → render → graph → plan.
fn plan(source: &Source) -> Plan {
    let mut decoded = playbook::decode(source).expect("decodes").playbook;
    let inputs = Inputs {
        cwd: std::env::temp_dir(),
        run_id: "bench".into(),
        environment: Vec::new(),
        values: Vec::new(),
    };
    playbook::render(&mut decoded, &inputs).expect("renders");
    Plan::new(&decoded).expect("plans")
}

/// The median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn compose_config(text: &str) -> Option<Duration> {
    let dir = std::env::temp_dir().join(format!("openmono-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, text).ok()?;
    let run = || {
        Command::new("docker-compose")
            .arg("-f")
            .arg(&file)
            .arg("config")
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    run()?;
    let time = median(5, || {
        run();
    });
    let _ = std::fs::remove_dir_all(&dir);
    Some(time)
}

/// A playbook file, read once: its parse by kdl and by openmono, and parse → plan.
fn measure_file(path: &Path) {
    let source = Source::read(path).expect("reads the playbook");
    let text = source.text.as_str();
    let micros = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    let kdl = median(201, || {
        std::hint::black_box(kdl::KdlDocument::parse_v2(text)).expect("parses");
    });
    let openmono = median(201, || {
        std::hint::black_box(playbook::parse(text, 0)).expect("parses");
    });
    let whole = median(201, || {
        std::hint::black_box(plan(&source));
    });
    println!(
        "| {} | {} | {} | {} |",
        path.display(),
        micros(kdl),
        micros(openmono),
        micros(whole)
    );
}

fn main() {
    // `cargo bench --bench pipeline -- 1000 --no-peer` measures one size alone (for a
    // profiler); by default every size, with the peer.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let peer = !args.iter().any(|a| a == "--no-peer");
    // Any other argument names a playbook file.
    let files: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .collect();
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() && files.is_empty() {
        sizes = vec![10, 100, 1_000, 10_000];
    }
    if !files.is_empty() {
        println!("| playbook | parse (kdl) | parse (openmono) | openmono parse→plan |");
        println!("| --- | ---: | ---: | ---: |");
        for file in files {
            measure_file(Path::new(file));
        }
    }
    if sizes.is_empty() {
        return;
    }
    println!("| resources | openmono parse→plan | peak heap | docker-compose config | ratio |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let text = playbook(n);
        let runs = if n >= 10_000 { 5 } else { 21 };
        let plan = pipeline(&text);
        assert!(
            plan.steps.len() >= n * 9 / 10,
            "the playbook has about {n} resources"
        );
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let time = median(runs, || {
            std::hint::black_box(pipeline(&text));
        });
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let (peer, ratio) = match peer.then(|| compose_config(&compose(n))).flatten() {
            Some(t) => (
                format!("{:.2} ms", t.as_secs_f64() * 1e3),
                format!("{:.3}", time.as_secs_f64() / t.as_secs_f64()),
            ),
            None => ("not installed".to_owned(), "—".to_owned()),
        };
        println!(
            "| {n} | {:.3} ms | {:.1} MiB | {peer} | {ratio} |",
            time.as_secs_f64() * 1e3,
            peak as f64 / f64::from(1 << 20)
        );
    }
}

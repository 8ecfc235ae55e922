//! `openmono apply --matrix NAME=A,B,C`, or a playbook's `matrix "NAME" "A" "B" "C"`:
//! one playbook over many inputs. Each input (a value of each matrix var; with several,
//! every combination) is an independent run: its own run id, its own networks and
//! containers, its own teardown. At most `--matrix-jobs` run at the same time; one
//! summary of all comes at the end. `--var` fixes a var of the playbook's matrix, and
//! `--matrix` replaces its values.
//!
//! Every input is planned before any runs, so a playbook that does not plan for one of
//! them starts none. A signal stops the runs under way (each tears down) and starts no
//! more.

use std::{
    fmt::Write as _,
    path::Path,
    process::ExitCode,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use futures_util::StreamExt;

use crate::{
    cli::{Vars, exit, load_playbook, plan_playbook, print_err, print_out, report, runtime},
    engine::{self, ApplyOptions, Output, Report, SwarmNode, input_label, input_object},
    plan::Plan,
    playbook::{Inputs, Playbook, VarType},
};

/// The most runs one matrix may make.
pub(crate) const MAX_RUNS: usize = 1000;

/// The playbook's `matrix` vars that `inputs` leave open (no `--var` or
/// `OPENMONO_VAR_…` gives them), each with its values. A `path` var's values are made
/// absolute against the playbook's folder, as its `default` is.
pub(crate) fn open_axes(playbook: &Playbook, inputs: &Inputs) -> Vec<(String, Vec<String>)> {
    playbook
        .matrix
        .iter()
        .filter(|(var, _)| inputs.given(&var.value).is_none())
        .map(|(var, values)| {
            let path = playbook
                .vars
                .iter()
                .any(|v| v.name.value == var.value && v.ty == VarType::Path);
            let values = values
                .iter()
                .map(|v| {
                    if path {
                        let dir = playbook.source.dir_at(v.span.offset());
                        dir.join(&v.value).display().to_string()
                    } else {
                        v.value.clone()
                    }
                })
                .collect();
            (var.value.clone(), values)
        })
        .collect()
}

/// How many runs `axes` make; `Err` says why there would be too many.
pub(crate) fn runs(axes: &[(String, Vec<String>)]) -> Result<usize, String> {
    axes.iter()
        .try_fold(1usize, |n, (_, values)| n.checked_mul(values.len()))
        .filter(|&n| n <= MAX_RUNS)
        .ok_or_else(|| {
            let sizes: Vec<String> = axes
                .iter()
                .map(|(name, values)| format!("{} values of `{name}`", values.len()))
                .collect();
            format!(
                "the matrix makes more than {MAX_RUNS} runs ({}): give fewer values, or fix some vars with --var",
                sizes.join(" × ")
            )
        })
}

/// The matrix `apply` runs: the open vars of the playbook's own matrix (when `file` is
/// a playbook that decodes; one that does not is reported by the planning), with
/// `--matrix` (`given`) replacing a var's values or adding a var. `Err`: a `--matrix`
/// of a var the playbook does not have.
pub(crate) fn effective(
    file: &Path,
    vars: &Vars,
    given: Vec<(String, Vec<String>)>,
) -> Result<Vec<(String, Vec<String>)>, String> {
    let decoded = (file.extension().is_none_or(|e| e != "json") && file.exists())
        .then(|| crate::playbook::load(file).ok())
        .flatten();
    let own = match &decoded {
        Some(decoded) => {
            let playbook = &decoded.playbook;
            if let Some((name, _)) = given
                .iter()
                .find(|(name, _)| !playbook.vars.iter().any(|v| v.name.value == *name))
            {
                return Err(format!(
                    "--matrix {name}=…: the playbook has no var `{name}` (declare it: `var \"{name}\"`)"
                ));
            }
            open_axes(playbook, &vars.inputs(""))
        }
        None => Vec::new(),
    };
    let mut matrix: Vec<(String, Vec<String>)> = own
        .into_iter()
        .map(|(name, values)| {
            let values = given
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(values, |(_, v)| v.clone());
            (name, values)
        })
        .collect();
    let added: Vec<_> = given
        .into_iter()
        .filter(|(name, _)| !matrix.iter().any(|(n, _)| n == name))
        .collect();
    matrix.extend(added);
    runs(&matrix)?;
    Ok(matrix)
}

/// What `plan` says of the open matrix `axes`: how many runs `apply` makes, and the
/// first input, the one it plans.
pub(crate) fn plan_note(axes: &[(String, Vec<String>)]) -> String {
    let runs = runs(axes).unwrap_or(MAX_RUNS);
    let each: Vec<String> = axes
        .iter()
        .map(|(name, values)| format!("{name} = {}", values.join(", ")))
        .collect();
    let first: Vec<String> = axes
        .iter()
        .map(|(name, values)| format!("{name}={}", values[0]))
        .collect();
    format!(
        "{}: `apply` makes {runs} run(s), each apart; this plan is for {} (`--var` plans another)",
        each.join("; "),
        first.join(" ")
    )
}

/// One input of the matrix: its vars, in the order the command line gave them.
type Input = Vec<(String, String)>;

/// One run of the matrix: its input as the lines show it, its plan, its options.
type Run = (String, Plan, ApplyOptions);

/// How one run ended: its report, or why it could not run; none when it never started.
type Ended = Option<Result<Report, engine::EngineError>>;

/// Applies the playbook `file` once for every input of `matrix`, `jobs` at a time.
pub(crate) fn apply(
    file: &Path,
    options: &ApplyOptions,
    vars: &Vars,
    matrix: &[(String, Vec<String>)],
    jobs: usize,
) -> ExitCode {
    if let Err(problem) = check(file, vars, matrix) {
        print_err(&format!("error: {problem}\n"));
        return ExitCode::from(exit::PLAYBOOK);
    }
    let runs = match plan_all(file, options, vars, matrix) {
        Ok(runs) => runs,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let mut images: Vec<&String> = runs
        .iter()
        .flat_map(|(_, plan, _)| plan.engine_images())
        .collect();
    images.sort();
    images.dedup();
    let ended = runtime.block_on(async {
        let spread = spread_over(&options.endpoint, &images).await;
        reap(&spread.engines).await;
        if let Some(problem) = unplaceable(&runs, &spread.nodes) {
            print_err(&format!("error: {problem}\n"));
            return None;
        }
        Some(run_all(&runs, jobs, &spread.nodes).await)
    });
    match ended {
        Some(ended) => ExitCode::from(summarize(&runs, ended, options.output == Output::Json)),
        None => ExitCode::from(exit::ENVIRONMENT),
    }
}

/// Where a matrix's runs may go: the nodes they are spread over, and the engines the
/// matrix reaps on before them (the one connected to, and each labelled node's that
/// answers).
#[derive(Default)]
struct Spread {
    nodes: Vec<SwarmNode>,
    engines: Vec<engine::Engine>,
}

/// Removes what killed runs left, once for the whole matrix, on every engine its runs
/// may use, as `apply` does before one run: each object goes from the engine that has
/// it, every box before any network.
async fn reap(engines: &[engine::Engine]) {
    // An engine that does not answer is each run's to report.
    let reaped = engine::gc::collect(engines, false, engine::REAP_AGE, engine::gc::PATIENCE);
    if let Ok(dead) = reaped.await {
        for line in engine::gc::reaped_lines(&dead) {
            print_err(&format!("{line}\n"));
        }
    }
}

/// Why the runs cannot start on a swarm: one needs labels that no node taking runs has
/// (the warnings before say which nodes take none, and why).
fn unplaceable(runs: &[Run], nodes: &[SwarmNode]) -> Option<String> {
    if nodes.is_empty() {
        return None;
    }
    runs.iter().find_map(|(label, plan, _)| {
        let wanted = plan.placement();
        (!nodes.iter().any(|node| node.fits(&wanted))).then(|| {
            let labels: Vec<String> = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "no node of the swarm that takes this matrix's runs has the labels that the run {label} asks for ({}): no run started",
                labels.join(", ")
            )
        })
    })
}

/// The swarm nodes that runs are spread over when the engine is a swarm manager: its
/// own node, and the nodes whose label names their own engine, when that engine
/// answers as that node and has the `images` the runs need. None on a plain engine, or
/// one that does not answer (each run says why). The engines: the one connected to,
/// and every labelled node's that answers.
async fn spread_over(endpoint: &engine::Endpoint, images: &[&String]) -> Spread {
    let Ok(manager) = engine::Engine::connect(endpoint).await else {
        return Spread::default();
    };
    let mut engines = vec![manager.clone()];
    let Ok(nodes) = manager.run_nodes().await else {
        return Spread {
            nodes: Vec::new(),
            engines,
        };
    };
    let mut usable = Vec::new();
    for node in nodes {
        match node {
            Ok(node) => match manager.on_node(&node).await {
                Ok(engine) => {
                    if node.engine.is_some() {
                        engines.push(engine.clone());
                    }
                    let mut lacking = Vec::new();
                    for image in images {
                        if !engine.image_exists(image).await.unwrap_or(false) {
                            lacking.push(format!("`{image}`"));
                        }
                    }
                    if lacking.is_empty() {
                        usable.push(node);
                    } else {
                        print_err(&format!(
                            "warning: swarm node {node} takes no runs of this matrix: its engine has no {} {} (copy one there: `docker save IMAGE | docker -H ENGINE load`)\n",
                            if lacking.len() == 1 {
                                "image"
                            } else {
                                "images"
                            },
                            lacking.join(", ")
                        ));
                    }
                }
                Err(e) => print_err(&format!(
                    "warning: swarm node {node} takes no runs of this matrix: {}\n",
                    engine::error_chain(&e)
                )),
            },
            Err(why) => print_err(&format!(
                "warning: {why}; it takes no runs of this matrix\n"
            )),
        }
    }
    Spread {
        nodes: usable,
        engines,
    }
}

/// The node of `nodes` for a run whose containers need the node labels `wanted` (their
/// `placement`s; a run stays on one node): of those that have them, the one with the
/// fewest runs under way (`busy`), the first of those; counted as busier by one.
/// `None` when there are no nodes to choose from, or none fits (the run goes to the
/// node connected to, whose swarm then says why).
fn place(
    nodes: &[SwarmNode],
    busy: &Mutex<Vec<usize>>,
    wanted: &[(String, String)],
) -> Option<usize> {
    let mut busy = crate::engine::lock(busy);
    let chosen = (0..nodes.len())
        .filter(|&i| nodes[i].fits(wanted))
        .min_by_key(|&i| busy[i])?;
    busy[chosen] += 1;
    Some(chosen)
}

/// A matrix: each var with its values.
pub(crate) type Axes = Vec<(String, Vec<String>)>;

/// `plan --matrix`: the vars that plan the matrix's first input (each var's first value
/// given), and the matrix that `apply` with the same flags runs.
pub(crate) fn for_plan(file: &Path, vars: &Vars, given: Axes) -> Result<(Vars, Axes), String> {
    check(file, vars, &given)?;
    let axes = effective(file, vars, given)?;
    runs(&axes)?;
    let mut first = vars.clone();
    first.values.extend(
        axes.iter()
            .map(|(name, values)| (name.clone(), values[0].clone())),
    );
    Ok((first, axes))
}

/// What makes a matrix wrong before any planning: a saved plan, or a var set twice.
fn check(file: &Path, vars: &Vars, matrix: &[(String, Vec<String>)]) -> Result<(), String> {
    if file.extension().is_some_and(|e| e == "json") {
        return Err(
            "a saved plan runs exactly as it was made; --matrix cannot change its vars".into(),
        );
    }
    for (i, (name, _)) in matrix.iter().enumerate() {
        if matrix[..i].iter().any(|(n, _)| n == name) {
            return Err(format!(
                "--matrix sets `{name}` twice: give all its values in one, `{name}=A,B,…`"
            ));
        }
        if vars.values.iter().any(|(n, _)| n == name) {
            return Err(format!(
                "`{name}` is set by both --var and --matrix: keep one"
            ));
        }
    }
    Ok(())
}

/// Plans every input of `axes` but the first (which the caller planned), as `apply`
/// would before starting any: the first that does not plan is reported, with its input.
pub(crate) fn plan_other_inputs(
    file: &Path,
    vars: &Vars,
    axes: &[(String, Vec<String>)],
) -> Result<(), ExitCode> {
    let inputs = combinations(axes);
    if inputs.len() < 2 {
        return Ok(());
    }
    // Read once (its warnings were said with the first input).
    let playbook = crate::playbook::load(file)
        .map_err(|e| report(&e, exit::PLAYBOOK))?
        .playbook;
    for input in inputs.into_iter().skip(1) {
        let mut vars = vars.clone();
        vars.values
            .retain(|(name, _)| !input.iter().any(|(axis, _)| axis == name));
        vars.values.extend(input.iter().cloned());
        let inputs = vars.inputs(crate::cli::PLAN_RUN_ID);
        plan_playbook(playbook.clone(), &inputs).inspect_err(|_| {
            print_err(&format!(
                "(with the matrix input {}: `apply` would start no run)\n",
                input_label(&input)
            ));
        })?;
    }
    Ok(())
}

/// Plans every input; the first that does not plan stops them all.
fn plan_all(
    file: &Path,
    options: &ApplyOptions,
    vars: &Vars,
    matrix: &[(String, Vec<String>)],
) -> Result<Vec<Run>, ExitCode> {
    let mut runs = Vec::new();
    // Read once: each input renders and plans its own copy.
    let playbook = load_playbook(file, &vars.inputs(""))?;
    for input in combinations(matrix) {
        let label = input_label(&input);
        let run_id = engine::run_dir::new_run_id();
        let mut vars = vars.clone();
        vars.values.extend(input.iter().cloned());
        let (plan, _) =
            plan_playbook(playbook.clone(), &vars.inputs(&run_id)).inspect_err(|_| {
                print_err(&format!(
                    "(with the matrix input {label}; no run started)\n"
                ));
            })?;
        let options = ApplyOptions {
            input: Some(input),
            run_id,
            ..options.clone()
        };
        runs.push((label, plan, options));
    }
    Ok(runs)
}

/// Applies the runs, `jobs` at a time, each on the least busy of `nodes` that fits it
/// (if any); the results in the runs' order, with the node each ran on.
async fn run_all(
    runs: &[Run],
    jobs: usize,
    nodes: &[SwarmNode],
) -> Vec<(Ended, Option<SwarmNode>)> {
    let stopped = AtomicBool::new(false);
    let stopped = &stopped;
    let busy = &Mutex::new(vec![0; nodes.len()]);
    let mut results: Vec<(usize, Ended, Option<SwarmNode>)> =
        futures_util::stream::iter(runs.iter().enumerate().map(|(i, (_, plan, options))| {
            async move {
                // After a signal, the inputs that have not started do not start.
                if stopped.load(Ordering::SeqCst) {
                    return (i, None, None);
                }
                let wanted = plan.placement();
                let placed = place(nodes, busy, &wanted);
                let options = ApplyOptions {
                    node: placed.map(|n| nodes[n].clone()),
                    ..options.clone()
                };
                let result = engine::apply(plan, &options).await;
                if let Some(n) = placed {
                    crate::engine::lock(busy)[n] -= 1;
                }
                if result.as_ref().is_ok_and(|r| r.interrupted) {
                    stopped.store(true, Ordering::SeqCst);
                }
                (i, Some(result), options.node)
            }
        }))
        .buffer_unordered(jobs)
        .collect()
        .await;
    results.sort_by_key(|(i, ..)| *i);
    results
        .into_iter()
        .map(|(_, ended, node)| (ended, node))
        .collect()
}

/// Prints each run's report and then the summary of all; returns the exit code: the
/// worst of the runs'.
fn summarize(runs: &[Run], ended: Vec<(Ended, Option<SwarmNode>)>, json: bool) -> u8 {
    let mut summary = Vec::new();
    let mut code = exit::SUCCESS;
    // Where each ran is worth saying on a swarm (its runs have nodes).
    let spread = ended.iter().any(|(_, node)| node.is_some());
    for ((label, _, options), (ended, node)) in runs.iter().zip(ended) {
        // A run that never began, or could not, has no run id to look up.
        let run_id = matches!(ended, Some(Ok(_))).then_some(options.run_id.as_str());
        let (mark, note, this) = match ended {
            None => (
                "-",
                "not run: the matrix was interrupted".to_owned(),
                exit::INTERRUPTED,
            ),
            Some(Err(error)) => {
                print_err(&format!("matrix input {label}:\n"));
                let _ = report(&error, exit::ENVIRONMENT);
                ("✗", "could not run".to_owned(), exit::ENVIRONMENT)
            }
            Some(Ok(run)) => {
                if json {
                    let mut line = run.to_json();
                    if let Some(object) = line.as_object_mut() {
                        object.insert("input".to_owned(), input_json(options));
                    }
                    let _ = print_out(&format!("{line}\n"));
                } else {
                    let _ = print_out(&format!("── {label} ──\n{run}\n"));
                }
                ended_as(&run)
            }
        };
        code = code.max(this);
        let ran_on = node.filter(|_| spread && run_id.is_some());
        summary.push((
            mark,
            label.as_str(),
            input_json(options),
            run_id,
            ran_on,
            note,
        ));
    }
    let succeeded = summary.iter().filter(|(mark, ..)| *mark == "✓").count();
    if json {
        let runs: Vec<serde_json::Value> = summary
            .iter()
            .map(|(mark, _, input, run_id, node, note)| {
                let mut run = serde_json::json!({ "input": input, "run_id": run_id, "succeeded": *mark == "✓", "note": note });
                if let (Some(node), Some(object)) = (node, run.as_object_mut()) {
                    object.insert("node".to_owned(), serde_json::json!({ "id": node.id, "hostname": node.hostname }));
                }
                run
            })
            .collect();
        let _ = print_out(&format!(
            "{}\n",
            serde_json::json!({ "event": "matrix", "runs": runs })
        ));
    } else {
        let width = summary
            .iter()
            .map(|(_, l, ..)| l.chars().count())
            .max()
            .unwrap_or(0);
        let mut text = format!(
            "Matrix of {} run(s): {succeeded} succeeded, {} did not\n",
            summary.len(),
            summary.len() - succeeded
        );
        for (mark, input, _, run_id, node, note) in &summary {
            let _ = match (run_id, node) {
                (None, _) => writeln!(text, "  {mark} {input:width$}  {note}"),
                (Some(id), None) => writeln!(text, "  {mark} {input:width$}  run {id}: {note}"),
                (Some(id), Some(node)) => {
                    writeln!(text, "  {mark} {input:width$}  run {id} on {node}: {note}")
                }
            };
        }
        let _ = print_out(&text);
    }
    code
}

/// A run's mark, note and exit code in the summary.
fn ended_as(run: &Report) -> (&'static str, String, u8) {
    let took = run.elapsed.as_secs_f64();
    if run.interrupted {
        (
            "✗",
            format!("interrupted after {took:.1}s"),
            exit::INTERRUPTED,
        )
    } else if run.succeeded() {
        ("✓", format!("succeeded in {took:.1}s"), exit::SUCCESS)
    } else {
        let why = run
            .failure
            .clone()
            .unwrap_or_else(|| "teardown left objects behind".to_owned());
        (
            "✗",
            format!("failed in {took:.1}s: {why}"),
            exit::RUN_FAILED,
        )
    }
}

/// Every combination of the matrix's values, the first var's changing slowest.
fn combinations(matrix: &[(String, Vec<String>)]) -> Vec<Input> {
    matrix
        .iter()
        .fold(vec![Vec::new()], |inputs, (name, values)| {
            inputs
                .iter()
                .flat_map(|input| {
                    values.iter().map(move |value| {
                        let mut next = input.clone();
                        next.push((name.clone(), value.clone()));
                        next
                    })
                })
                .collect()
        })
}

/// A run's input as JSON carries it.
fn input_json(options: &ApplyOptions) -> serde_json::Value {
    input_object(options.input.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, labels: &[(&str, &str)]) -> SwarmNode {
        SwarmNode {
            id: id.to_owned(),
            hostname: format!("host-{id}"),
            engine: None,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_run_goes_to_the_least_busy_node_that_has_its_labels() {
        let nodes = [
            node("a", &[]),
            node("b", &[("gpu", "yes")]),
            node("c", &[("gpu", "yes"), ("disk", "ssd")]),
        ];
        let busy = Mutex::new(vec![0; 3]);
        // Equally busy: the first; then the others, in turn.
        assert_eq!(place(&nodes, &busy, &[]), Some(0));
        assert_eq!(place(&nodes, &busy, &[]), Some(1));
        assert_eq!(place(&nodes, &busy, &[]), Some(2));
        assert_eq!(place(&nodes, &busy, &[]), Some(0));
        assert_eq!(*busy.lock().unwrap(), [2, 1, 1]);
        let gpu = [("gpu".to_owned(), "yes".to_owned())];
        assert_eq!(place(&nodes, &busy, &gpu), Some(1));
        assert_eq!(place(&nodes, &busy, &gpu), Some(2));
        let both = [gpu[0].clone(), ("disk".to_owned(), "ssd".to_owned())];
        assert_eq!(place(&nodes, &busy, &both), Some(2));
        // No node has it, or there are no nodes: the node connected to takes it.
        let none = [("gpu".to_owned(), "no".to_owned())];
        assert_eq!(place(&nodes, &busy, &none), None);
        assert_eq!(place(&[], &Mutex::new(Vec::new()), &[]), None);
        assert_eq!(*busy.lock().unwrap(), [2, 2, 3]);
    }

    #[test]
    fn every_combination_in_order() {
        let matrix = vec![
            ("lang".to_owned(), vec!["rust".to_owned(), "go".to_owned()]),
            ("os".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
        ];
        let labels: Vec<String> = combinations(&matrix)
            .iter()
            .map(|i| input_label(i))
            .collect();
        assert_eq!(
            labels,
            [
                "lang=rust os=a",
                "lang=rust os=b",
                "lang=go os=a",
                "lang=go os=b"
            ]
        );
    }
}

//! The command line: clap definitions, and the mapping from outcomes to exit codes.
//! Nothing else lives here.

use std::{fmt::Write as _, io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser, Subcommand};
use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::{
    agent::{self, AgentArgs},
    engine::{self, ApplyOptions},
    graph_format::{GraphFormat, render},
    plan::Plan,
    playbook::{self, Inputs},
};

/// Exit codes, as documented in `openmono --help`.
pub mod exit {
    /// Everything worked.
    pub const SUCCESS: u8 = 0;
    /// The run failed: a step or task failed, or teardown left something behind.
    pub const RUN_FAILED: u8 = 1;
    /// The playbook has problems (or the command line was wrong).
    pub const PLAYBOOK: u8 = 2;
    /// The environment is not ready: no engine, no permission to use it, a missing image.
    pub const ENVIRONMENT: u8 = 3;
    /// Interrupted by Ctrl-C or SIGTERM; everything was torn down.
    pub const INTERRUPTED: u8 = 130;
}

/// Exit codes and where state goes, for every command's `--help`.
macro_rules! footer {
    () => {
        "Exit codes: 0 success, 1 the run or the command failed, 2 the playbook has problems,
3 the environment is not ready (no Docker engine, no permission to use it, an image
missing), 130 interrupted.
Runs keep their logs in $OPENMONO_STATE_DIR, else $XDG_STATE_HOME/openmono, else
~/.local/state/openmono. The engine: --engine, else DOCKER_HOST, else DOCKER_CONTEXT,
else the current Docker context, else the local socket."
    };
}

const AFTER_HELP: &str = concat!(
    "Examples:
  openmono plan                          # what `apply` would do with ./openmono.kdl
  openmono apply playbooks/hello-agent.kdl
  openmono validate playbooks/*.kdl

",
    footer!()
);

/// Run coding agents with local models in a sealed box.
#[derive(Parser, Debug)]
#[command(name = "openmono", version, about, after_help = AFTER_HELP)]
pub struct Arguments {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show every step `apply` would take, teardown included; touches nothing
    #[command(after_help = concat!("Example:\n  openmono plan playbooks/hello-agent.kdl\n\n", footer!()))]
    Plan(PlanArgs),
    /// Run the playbook on the Docker engine, then remove everything it created
    #[command(after_help = concat!("Example:\n  openmono apply playbooks/hello-agent.kdl\n\n", footer!()))]
    Apply {
        /// The playbook, or a plan saved by `openmono plan --out` (a `.json` file); when
        /// openmono.kdl is not there, the built-in starter of `init`
        #[arg(default_value = "openmono.kdl")]
        file: PathBuf,
        /// Seconds a model may take to load before the run fails
        #[arg(long, default_value_t = 300, env = "OPENMONO_MODEL_TIMEOUT",
              value_parser = clap::value_parser!(u64).range(1..=playbook::units::MAX_DURATION_SECS))]
        model_timeout: u64,
        /// How many steps may run at the same time; steps wait for what they need
        #[arg(long, short = 'j', default_value_t = engine::DEFAULT_JOBS, env = "OPENMONO_JOBS",
              value_parser = clap::builder::TypedValueParser::map(
                  clap::value_parser!(u16).range(1..=1024), usize::from))]
        jobs: usize,
        /// `text`: progress on stderr and a report on stdout; `json`: one event per line
        /// on stdout, the report the last
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Show each task's output as it comes, prefixed with the task's name
        #[arg(long)]
        follow: bool,
        /// Run the playbook once for each value of a var, each an independent run with
        /// networks of its own (repeatable: every combination runs); replaces the values
        /// of the playbook's own `matrix` for that var
        #[arg(long, value_name = "NAME=A,B,…", value_parser = parse_matrix)]
        matrix: Vec<(String, Vec<String>)>,
        /// How many runs of a matrix go at the same time
        #[arg(long, default_value_t = 2, value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u16).range(1..=64), usize::from))]
        matrix_jobs: usize,
        #[command(flatten)]
        engine: EngineArg,
        #[command(flatten)]
        vars: Vars,
    },
    /// Check playbooks without running anything: exit 0, or the diagnostics
    #[command(after_help = concat!("Example:\n  openmono validate playbooks/*.kdl\n\n", footer!()))]
    Validate {
        /// The playbooks (when openmono.kdl is not there: the built-in starter of `init`)
        #[arg(default_value = "openmono.kdl", num_args = 1..)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        vars: Vars,
    },
    /// Print the playbook's resource graph (dependencies point at dependents)
    #[command(
        after_help = concat!("Examples:\n  openmono graph playbooks/hello-agent.kdl | dot -Tsvg > graph.svg\n  openmono graph --format mermaid\n\n", footer!())
    )]
    Graph {
        /// The playbook
        #[arg(default_value = "openmono.kdl")]
        file: PathBuf,
        /// The output format
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Rewrite playbooks in one layout, keeping comments; --check only reports
    #[command(after_help = concat!("Examples:\n  openmono fmt openmono.kdl\n  openmono fmt --check playbooks/*.kdl   # exit 1 if any would change\n\n", footer!()))]
    Fmt {
        /// The playbooks
        #[arg(default_value = "openmono.kdl", num_args = 1..)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 and name the files that are not in the layout
        #[arg(long)]
        check: bool,
    },
    /// Write a commented starter playbook, openmono.kdl, for the project in this folder
    #[command(after_help = concat!("Example:\n  openmono init && openmono plan --var model=models/my-model.gguf\n\n", footer!()))]
    Init {
        /// Replace an openmono.kdl that is already there
        #[arg(long)]
        force: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout
    #[command(after_help = concat!("Examples:\n  openmono completions bash > ~/.local/share/bash-completion/completions/openmono\n  openmono completions zsh > ~/.zfunc/_openmono\n\n", footer!()))]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) on stdout
    #[command(after_help = concat!("Example:\n  openmono man > ~/.local/share/man/man1/openmono.1\n\n", footer!()))]
    Man,
    /// Check the engine and this machine for what weakens the sandbox or stops a run
    #[command(after_help = concat!("Examples:\n  openmono doctor\n  openmono doctor --engine tcp://gpu-box:2376   # with DOCKER_TLS_VERIFY=1\n\nExit code 0 when nothing is in the way (warnings included), 3 when something is.\n\n", footer!()))]
    Doctor {
        #[command(flatten)]
        engine: EngineArg,
    },
    /// Remove what runs left behind when openmono was killed; live runs are spared
    #[command(after_help = concat!("Examples:\n  openmono gc --dry-run   # list what would go\n  openmono gc\n\n", footer!()))]
    Gc {
        /// List what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        engine: EngineArg,
    },
    /// List past runs, newest first; `runs show ID` prints one run's report
    #[command(after_help = concat!("Examples:\n  openmono runs\n  openmono runs show 3f9a2c1b7e\n\n", footer!()))]
    Runs {
        #[command(subcommand)]
        show: Option<RunsCommand>,
    },
    /// Run an agent loop (inside the agent container; started by `apply`)
    #[command(hide = true)]
    Agent(AgentArgs),
    /// Serve a scripted model: replay a script's replies over the OpenAI-compatible API
    #[command(after_help = concat!("Examples:\n  openmono replay session.jsonl --listen 127.0.0.1:8080\n  openmono replay ~/.local/state/openmono/runs/3f9a2c1b7e/fix.jsonl   # a recorded run\n\n", footer!()))]
    Replay(crate::replay::ReplayArgs),
    /// Ask a URL once: exit 0 on 200, 1 on 503, 2 otherwise (inside the box)
    #[command(hide = true)]
    Probe {
        url: String,
        #[arg(long, default_value_t = 2)]
        timeout: u64,
        /// Ask until 200 (exit 0) or this many seconds have passed (exit 2)
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Run a task's command, killing its process group at the timeout (inside the box)
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Wait and reap children as a container's first process (inside the box)
    #[command(hide = true)]
    SandboxInit,
    /// Delete the default routes of the box this runs in (from a helper sharing its network)
    #[command(hide = true)]
    SealRoutes,
    /// Probe for a way out of the box: routes, host addresses, a name (inside the box)
    #[command(hide = true)]
    SelfTest(agent::self_test::SelfTestArgs),
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// Print a run's report and its agents' transcripts
    Show {
        /// The run's id, as `apply` and `openmono runs` print it
        id: String,
    },
    /// Bring back a workspace that a run on an engine elsewhere could not (the
    /// connection broke): its volume was kept for this
    #[command(after_help = concat!("Example:\n  openmono runs fetch 2d0ea7721e --engine tcp://gpu-box:2376\n\n", footer!()))]
    Fetch {
        /// The run's id
        id: String,
        #[command(flatten)]
        engine: EngineArg,
    },
}

/// How `apply` shows what it does.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum OutputFormat {
    Text,
    Json,
}

/// The engine to use, when not the one Docker's own tools would choose.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EngineArg {
    #[arg(
        long,
        value_name = "URL|CONTEXT",
        help = "The engine: a URL (unix:///PATH, tcp://HOST:PORT with TLS, ssh://[USER@]HOST[:PORT]) or a context's name"
    )]
    pub engine: Option<String>,
}

impl EngineArg {
    /// The engine chosen as the docker CLI chooses: this flag, then `DOCKER_HOST`,
    /// `DOCKER_CONTEXT`, the current context, the local socket. A wrong choice is a
    /// diagnostic, and exit code 3.
    fn endpoint(&self) -> Result<engine::Endpoint, ExitCode> {
        engine::Endpoint::choose(self.engine.as_deref(), &engine::Environment::from_process())
            .map_err(|e| report(&e, exit::ENVIRONMENT))
    }
}

/// `openmono plan`'s arguments.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The playbook (when openmono.kdl is not there: the built-in starter of `init`)
    #[arg(default_value = "openmono.kdl")]
    file: PathBuf,
    /// Also save the plan to this file, for `openmono apply FILE` to run exactly it
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Exit 0 when there is nothing to do, 2 when there are steps, 1 on any error
    #[arg(long)]
    detailed_exitcode: bool,
    /// The matrix `apply --matrix` would run (repeatable); the plan shows its first
    /// input and says how many runs it makes
    #[arg(long, value_name = "NAME=A,B,…", value_parser = parse_matrix)]
    matrix: Vec<(String, Vec<String>)>,
    #[command(flatten)]
    engine: EngineArg,
    #[command(flatten)]
    vars: Vars,
}

/// The values of a playbook's `var`s.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Vars {
    /// Set a var (repeatable); `OPENMONO_VAR_NAME=VALUE` in the environment does too
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub values: Vec<(String, String)>,
}

fn parse_matrix(text: &str) -> Result<(String, Vec<String>), String> {
    let (name, values) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=A,B,…"))?;
    let values: Vec<String> = values.split(',').map(str::to_owned).collect();
    if name.is_empty() || values.iter().any(String::is_empty) {
        return Err(format!(
            "`{text}` is not NAME=A,B,…: the name and every value must be non-empty"
        ));
    }
    if let Some(twice) = values
        .iter()
        .enumerate()
        .find_map(|(i, v)| values[..i].contains(v).then_some(v))
    {
        return Err(format!("`{text}` gives `{twice}` twice: each value once"));
    }
    Ok((name.to_owned(), values))
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

impl Vars {
    /// What the templates get: `OPENMONO_VAR_…` first, then `--var`, which wins.
    pub(crate) fn inputs(&self, run_id: &str) -> Inputs {
        Inputs {
            cwd: std::env::current_dir().unwrap_or_default(),
            environment: std::env::vars()
                .filter_map(|(k, v)| Some((k.strip_prefix("OPENMONO_VAR_")?.to_owned(), v)))
                .collect(),
            run_id: run_id.to_owned(),
            values: self.values.clone(),
        }
    }
}

impl Command {
    /// Whether this is one of the hidden commands that run inside a box.
    fn runs_in_box(&self) -> bool {
        matches!(
            self,
            Self::Agent(_)
                | Self::Replay(_)
                | Self::Probe { .. }
                | Self::Supervise { .. }
                | Self::SandboxInit
                | Self::SelfTest(_)
        )
    }
}

/// What `plan` shows where a template uses the run's id, which `apply` makes up.
pub(crate) const PLAN_RUN_ID: &str = "<run-id>";

/// Parses the command line and runs it.
#[must_use]
pub fn main() -> ExitCode {
    let arguments = match parse_arguments() {
        Ok(arguments) => arguments,
        Err(code) => return code,
    };
    // The commands that run inside a box hold no way to new privileges, whatever the
    // engine could set.
    if arguments.command.runs_in_box() {
        agent::init::no_new_privileges();
    }
    match arguments.command {
        Command::Plan(args) => plan_command(args),
        Command::Validate { files, vars } => validate(&files, &vars),
        Command::Graph { file, format } => graph(&file, format),
        Command::Fmt { files, check } => fmt(&files, check),
        Command::Gc { dry_run, engine } => gc(dry_run, &engine),
        Command::Doctor { engine } => doctor(&engine),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            // Only the user's commands: bash's generator would offer the hidden ones too.
            let full = Arguments::command();
            let mut visible = full.get_subcommands().filter(|c| !c.is_hide_set()).fold(
                clap::Command::new("openmono").version(env!("CARGO_PKG_VERSION")),
                |visible, c| visible.subcommand(c.clone()),
            );
            clap_complete::generate(shell, &mut visible, "openmono", &mut out);
            print_out(&String::from_utf8_lossy(&out))
        }
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Arguments::command()).render(&mut out) {
                Ok(()) => print_out(&String::from_utf8_lossy(&out)),
                Err(e) => {
                    print_err(&format!("error: cannot render the manual: {e}\n"));
                    ExitCode::from(exit::RUN_FAILED)
                }
            }
        }
        Command::Init { force } => init(force),
        Command::Runs { show } => runs(show),
        Command::Apply {
            file,
            follow,
            output,
            jobs,
            model_timeout,
            matrix,
            matrix_jobs,
            engine,
            vars,
        } => {
            let endpoint = match engine.endpoint() {
                Ok(endpoint) => endpoint,
                Err(code) => return code,
            };
            let options = ApplyOptions {
                endpoint,
                follow,
                output: match output {
                    OutputFormat::Text => engine::Output::Text,
                    OutputFormat::Json => engine::Output::Json,
                },
                input: None,
                node: None,
                jobs,
                model_timeout: Duration::from_secs(model_timeout),
                run_id: engine::run_dir::new_run_id(),
            };
            let matrix = match crate::matrix::effective(&file, &vars, matrix) {
                Ok(matrix) => matrix,
                Err(problem) => {
                    print_err(&format!("error: {problem}\n"));
                    return ExitCode::from(exit::PLAYBOOK);
                }
            };
            if matrix.is_empty() {
                apply_command(&file, options, &vars)
            } else {
                crate::matrix::apply(&file, &options, &vars, &matrix, matrix_jobs)
            }
        }
        Command::Agent(args) => code(agent::run(&args)),
        Command::Replay(args) => code(crate::replay::run(&args)),
        Command::Probe { url, timeout, wait } => code(match wait {
            None => agent::probe::probe(&url, Duration::from_secs(timeout)),
            Some(wait) => agent::probe::wait(&url, Duration::from_secs(wait)),
        }),
        Command::Supervise {
            timeout_ms,
            command,
        } => code(agent::supervise::supervise(
            timeout_ms.map(Duration::from_millis),
            &command,
        )),
        Command::SandboxInit => agent::init::sandbox_init(),
        Command::SealRoutes => code(agent::routes::seal()),
        Command::SelfTest(args) => code(agent::self_test::run(&args)),
    }
}

/// `openmono apply FILE`: a playbook, or a plan that `plan --out` saved.
fn apply_command(file: &std::path::Path, options: ApplyOptions, vars: &Vars) -> ExitCode {
    if file.extension().is_some_and(|e| e == "json") {
        if !vars.values.is_empty() {
            print_err(
                "error: a saved plan keeps the vars it was made with; --var cannot change them\n",
            );
            return ExitCode::from(exit::PLAYBOOK);
        }
        apply_saved(file, options)
    } else {
        let plan = match load_plan(file, &vars.inputs(&options.run_id)) {
            Ok((plan, _)) => plan,
            Err(code) => return code,
        };
        apply(&plan, &options)
    }
}

/// The command line, or the exit code after clap, or [`from_environment`], said why not.
fn parse_arguments() -> Result<Arguments, ExitCode> {
    Arguments::try_parse().map_err(|error| match from_environment(&error) {
        Some(message) => {
            print_err(&message);
            ExitCode::from(2)
        }
        None => error.exit(),
    })
}

/// A bad value that came from an `OPENMONO_*` variable rather than the command line:
/// clap names the option it sets, which the user never typed; this names the variable.
fn from_environment(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let Some(ContextValue::String(value)) = error.get(ContextKind::InvalidValue) else {
        return None;
    };
    let typed: Vec<String> = std::env::args().skip(1).collect();
    let command = Arguments::command();
    let args = command
        .get_subcommands()
        .flat_map(clap::Command::get_arguments)
        .chain(command.get_arguments());
    for option in args {
        let (Some(long), Some(variable)) = (option.get_long(), option.get_env()) else {
            continue;
        };
        let flag = format!("--{long}");
        let short = option.get_short().map(|c| format!("-{c}"));
        let on_command_line = typed.iter().any(|t| {
            t == &flag
                || t.starts_with(&format!("{flag}="))
                || short.as_ref().is_some_and(|s| t.starts_with(s.as_str()))
        });
        let from_env = std::env::var_os(variable).is_some_and(|v| v == value.as_str());
        if arg.split_whitespace().next() == Some(flag.as_str()) && from_env && !on_command_line {
            let rendered = error.to_string();
            let why = rendered
                .lines()
                .next()
                .and_then(|l| l.split_once(&format!("'{arg}': ")))
                .map_or(String::new(), |(_, why)| format!(": {why}"));
            return Some(format!(
                "error: invalid value '{value}' in the environment variable {} (it stands for {flag}){why}\n",
                variable.to_string_lossy()
            ));
        }
    }
    None
}

/// The pipeline up to the plan: decode, render templates, build the graph, resolve paths.
/// Returns the plan and the files it was made from.
pub(crate) fn load_plan(
    file: &std::path::Path,
    inputs: &Inputs,
) -> Result<(Plan, playbook::Source), ExitCode> {
    plan_playbook(load_playbook(file, inputs)?, inputs)
}

/// Reads and decodes `file` (the built-in starter when it is the default and absent),
/// and says what it warns of.
pub(crate) fn load_playbook(
    file: &std::path::Path,
    inputs: &Inputs,
) -> Result<playbook::Playbook, ExitCode> {
    let decoded = if file == std::path::Path::new(crate::init::PLAYBOOK) && !file.exists() {
        // No playbook here: the starter that `openmono init` would write.
        print_err(&format!(
            "No {} here: using the built-in default playbook (`openmono init` writes it out to edit).\n",
            crate::init::PLAYBOOK
        ));
        let dir = inputs.cwd.clone();
        playbook::load_built_in(file, dir.clone(), crate::init::starter(&dir))
    } else {
        playbook::load(file)
    }
    .map_err(|e| report(&e, exit::PLAYBOOK))?;
    if let Some(warnings) = decoded.warnings() {
        print_err(&render_diagnostic(&warnings));
    }
    for (set, meant) in playbook::miscased_environment(&decoded.playbook, inputs) {
        print_err(&format!(
            "warning: {set} sets no var of this playbook and is ignored: var names are case-sensitive; did you mean {meant}?\n"
        ));
    }
    Ok(decoded.playbook)
}

/// Renders a decoded playbook with `inputs` (a matrix var that nothing gives takes its
/// first value) and plans it.
pub(crate) fn plan_playbook(
    mut playbook: playbook::Playbook,
    inputs: &Inputs,
) -> Result<(Plan, playbook::Source), ExitCode> {
    // A matrix var that nothing gives: `plan` and `validate` take its first value.
    let open = crate::matrix::open_axes(&playbook, inputs);
    if let Err(problem) = crate::matrix::runs(&open) {
        print_err(&format!("error: {problem}\n"));
        return Err(ExitCode::from(exit::PLAYBOOK));
    }
    let with_first;
    let inputs = if open.is_empty() {
        inputs
    } else {
        let mut first = inputs.clone();
        first.values.extend(
            open.iter()
                .map(|(name, values)| (name.clone(), values[0].clone())),
        );
        with_first = first;
        &with_first
    };
    if let Err(errors) = playbook::render(&mut playbook, inputs) {
        return Err(report(
            &playbook::Problems::new(playbook.source.named(), errors),
            exit::PLAYBOOK,
        ));
    }
    let mut plan = Plan::new(&playbook).map_err(|e| report(&e, exit::PLAYBOOK))?;
    plan.matrix = open;
    Ok((plan, playbook.source))
}

/// `openmono plan`, with or without `--matrix`.
fn plan_command(args: PlanArgs) -> ExitCode {
    let PlanArgs {
        file,
        out,
        detailed_exitcode,
        matrix,
        engine,
        vars,
    } = args;
    let (file, out, engine, vars) = (file.as_path(), out.as_deref(), &engine, &vars);
    if matrix.is_empty() {
        return plan(file, out, detailed_exitcode, engine, vars, None);
    }
    let fail = if detailed_exitcode {
        ExitCode::from(1)
    } else {
        ExitCode::from(exit::PLAYBOOK)
    };
    if out.is_some() {
        print_err(
            "error: a saved plan is one run: --out takes no --matrix (fix each var with --var)\n",
        );
        return fail;
    }
    match crate::matrix::for_plan(file, vars, matrix) {
        Ok((first, axes)) => plan(file, None, detailed_exitcode, engine, &first, Some(axes)),
        Err(problem) => {
            print_err(&format!("error: {problem}\n"));
            fail
        }
    }
}

/// `matrix`: the one `--matrix` gave (with its first input in `vars`), which replaces
/// the playbook's own.
fn plan(
    file: &std::path::Path,
    out: Option<&std::path::Path>,
    detailed_exitcode: bool,
    engine: &EngineArg,
    vars: &Vars,
    matrix: Option<crate::matrix::Axes>,
) -> ExitCode {
    let planned = match out {
        None => load_plan(file, &vars.inputs(PLAN_RUN_ID)).map(|(plan, _)| plan),
        Some(out) => save_plan(file, out, vars),
    }
    .and_then(|mut plan| {
        if let Some(matrix) = matrix {
            plan.matrix = matrix;
        }
        // The plan shows the first input; the others must plan too, as for `apply`.
        crate::matrix::plan_other_inputs(file, vars, &plan.matrix)?;
        Ok((plan, engine.endpoint()?))
    });
    match planned {
        Ok((mut plan, endpoint)) => {
            // What `apply` would refuse on this engine, `plan` refuses too.
            if endpoint.is_remote()
                && let Err(e) = engine::host_files_elsewhere(&plan, &endpoint)
            {
                return report(&e, exit::ENVIRONMENT);
            }
            let asked = ask_engine(&endpoint);
            plan.memory = model_memory(&plan, asked.as_ref().map(|a| a.0));
            let travels = plan.steps.iter().any(|s| {
                matches!(
                    s,
                    crate::step::Step::StartContainer {
                        workspace: Some(_),
                        ..
                    }
                )
            });
            let mut engine = endpoint.to_string();
            if endpoint.is_remote() && travels {
                engine.push_str("\n  It is elsewhere: each workspace is copied into a volume of the run, and what the box changes in it is copied back after it");
            }
            if let Some((_, Some(node), nodes)) = &asked {
                let _ = write!(
                    engine,
                    "\n  It is a swarm manager: networks are overlays, and containers and models run as services on its node {node}"
                );
                if plan
                    .steps
                    .iter()
                    .any(|s| matches!(s, crate::step::Step::StartModel { gpu: true, .. }))
                {
                    engine.push_str("\n  A model with `gpu-layers` runs as a container of its node's own engine instead, with that engine's GPUs, on the run's overlay (a swarm takes a service's GPU back whenever its node changes)");
                }
                // Those whose labels fit every `placement` of the run.
                let wanted = plan.placement();
                let fitting: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.fits(&wanted))
                    .map(ToString::to_string)
                    .collect();
                if !plan.matrix.is_empty() && nodes.len() > 1 {
                    let _ = if fitting.len() == nodes.len() {
                        write!(
                            engine,
                            "\n  The matrix's runs are spread over {} nodes (its own, and those labelled {}): {}",
                            nodes.len(),
                            engine::NODE_ENGINE_LABEL,
                            fitting.join(", ")
                        )
                    } else {
                        write!(
                            engine,
                            "\n  The matrix's runs are spread over {} of the {} nodes that take runs (its own, and those labelled {}), those with the labels its `placement`s ask for: {}",
                            fitting.len(),
                            nodes.len(),
                            engine::NODE_ENGINE_LABEL,
                            if fitting.is_empty() {
                                "none".to_owned()
                            } else {
                                fitting.join(", ")
                            }
                        )
                    };
                }
            }
            plan.engine = Some(engine);
            let printed = print_out(&plan);
            if !detailed_exitcode || printed != ExitCode::SUCCESS {
                printed
            } else if plan.steps.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(_) if detailed_exitcode => ExitCode::from(1),
        Err(code) => code,
    }
}

/// The engine's machine's capacity, its node when it is a swarm manager, and the
/// nodes a matrix's runs may go to (whose engines are not asked).
type Asked = (engine::Capacity, Option<String>, Vec<engine::SwarmNode>);

/// What `plan` asks the engine, if it answers within two seconds (`plan` needs no
/// engine).
fn ask_engine(endpoint: &engine::Endpoint) -> Option<Asked> {
    runtime().ok().and_then(|rt| {
        rt.block_on(async {
            let ask = async {
                let engine = engine::Engine::connect(endpoint).await?;
                let nodes = engine.run_nodes().await?.into_iter().flatten().collect();
                Ok::<_, engine::EngineError>((
                    engine.capacity().await?,
                    engine.swarm_node().await?,
                    nodes,
                ))
            };
            tokio::time::timeout(Duration::from_secs(2), ask)
                .await
                .ok()?
                .ok()
        })
    })
}

/// The memory models will have, for a plan with models: the engine's (`capacity`, if
/// it answered), else this machine's.
fn model_memory(plan: &Plan, capacity: Option<engine::Capacity>) -> Option<(u64, &'static str)> {
    plan.steps
        .iter()
        .find_map(crate::step::Step::memory_estimate)?;
    match capacity.map(|c| c.memory) {
        Some(bytes) if bytes > 0 => Some((bytes, "the engine")),
        _ => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
            let kib: u64 = meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some((kib * 1024, "this machine (the engine did not answer)"))
        }
    }
}

/// Makes the plan with the run id `apply` will use, and saves it with what it was made
/// from. The playbook is named by its absolute path, as `apply` will read it again.
fn save_plan(file: &std::path::Path, out: &std::path::Path, vars: &Vars) -> Result<Plan, ExitCode> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    let inputs = vars.inputs(&engine::run_dir::new_run_id());
    let (plan, source) = load_plan(&file, &inputs)?;
    if !plan.matrix.is_empty() {
        let fixes: Vec<String> = plan
            .matrix
            .iter()
            .map(|(name, _)| format!("--var {name}=…"))
            .collect();
        print_err(&format!(
            "error: a saved plan is one run, and the playbook's matrix leaves vars open: fix them with {}\n",
            fixes.join(" ")
        ));
        return Err(ExitCode::from(exit::PLAYBOOK));
    }
    let written = crate::saved_plan::SavedPlan::new(&plan, &source, &inputs)
        .map_err(|e| e.to_string())
        .and_then(|saved| serde_json::to_string_pretty(&saved).map_err(|e| e.to_string()))
        .and_then(|json| std::fs::write(out, json + "\n").map_err(|e| e.to_string()));
    match written {
        Ok(()) => {
            print_err(&format!(
                "Saved the plan to {}; `openmono apply {}` runs exactly it, once.\n",
                out.display(),
                out.display()
            ));
            Ok(plan)
        }
        Err(why) => {
            print_err(&format!(
                "error: cannot save the plan to {}: {why}\n",
                out.display()
            ));
            Err(ExitCode::from(exit::RUN_FAILED))
        }
    }
}

/// Applies a saved plan: only when the playbook and its inputs make the same plan again,
/// and only once.
fn apply_saved(file: &std::path::Path, mut options: ApplyOptions) -> ExitCode {
    use crate::saved_plan::SavedPlan;
    let runs = engine::run_dir::state_dir().join("runs");
    let saved = match SavedPlan::read(file, &runs) {
        Ok(saved) => saved,
        Err(why) => {
            print_err(&format!("error: {why}\n"));
            return ExitCode::from(exit::PLAYBOOK);
        }
    };
    let (plan, source) = match load_plan(&saved.playbook, &saved.inputs()) {
        Ok(planned) => planned,
        Err(code) => return code,
    };
    if let Err(why) = saved.check(&source, &plan) {
        print_err(&format!("error: {why}\n"));
        return ExitCode::from(exit::PLAYBOOK);
    }
    options.run_id = saved.run_id;
    apply(&plan, &options)
}

fn validate(files: &[PathBuf], vars: &Vars) -> ExitCode {
    let inputs = vars.inputs(PLAN_RUN_ID);
    let mut failed = false;
    for file in files {
        let planned = load_plan(file, &inputs)
            .and_then(|(plan, _)| crate::matrix::plan_other_inputs(file, vars, &plan.matrix));
        if planned.is_err() {
            failed = true;
        } else {
            print_err(&format!("{}: ok\n", file.display()));
        }
    }
    if failed {
        ExitCode::from(exit::PLAYBOOK)
    } else {
        ExitCode::SUCCESS
    }
}

fn fmt(files: &[PathBuf], check: bool) -> ExitCode {
    let mut outcome = ExitCode::SUCCESS;
    for file in files {
        // Only a file that parses is touched: a broken one could lose text.
        let source = match playbook::Source::read(file) {
            Ok(source) => source,
            Err(e) => {
                print_err(&format!("error: cannot read `{}`: {e}\n", file.display()));
                outcome = ExitCode::from(exit::PLAYBOOK);
                continue;
            }
        };
        if let Err(errors) = playbook::parse(&source.text, 0) {
            report(
                &playbook::Problems::new(source.named(), errors),
                exit::PLAYBOOK,
            );
            outcome = ExitCode::from(exit::PLAYBOOK);
            continue;
        }
        let original = playbook::read_text(file).unwrap_or_default();
        let formatted = playbook::formatter::format(&original);
        if formatted == original {
            continue;
        }
        if check {
            print_err(&format!("{}: not formatted\n", file.display()));
            if outcome == ExitCode::SUCCESS {
                outcome = ExitCode::from(exit::RUN_FAILED);
            }
            continue;
        }
        // Written beside it, then renamed over it: never half a playbook. Through a
        // symlink to its target, keeping the file's permissions.
        let target = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        let temporary = target.with_extension("kdl.fmt-tmp");
        let written = std::fs::write(&temporary, &formatted)
            .and_then(|()| {
                let permissions = std::fs::metadata(&target)?.permissions();
                std::fs::set_permissions(&temporary, permissions)
            })
            .and_then(|()| std::fs::rename(&temporary, &target));
        match written {
            Ok(()) => print_err(&format!("{}: formatted\n", file.display())),
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                print_err(&format!("error: cannot write `{}`: {e}\n", file.display()));
                outcome = ExitCode::from(exit::RUN_FAILED);
            }
        }
    }
    outcome
}

/// The async runtime the engine's calls need.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        print_err(&format!("error: cannot start the async runtime: {e}\n"));
        ExitCode::from(exit::ENVIRONMENT)
    })
}

fn gc(dry_run: bool, engine: &EngineArg) -> ExitCode {
    let (runtime, endpoint) = match runtime().and_then(|rt| Ok((rt, engine.endpoint()?))) {
        Ok(both) => both,
        Err(code) => return code,
    };
    // This binary's hash: its own copy on the engine is the one gc keeps.
    let current = std::env::current_exe()
        .and_then(std::fs::read)
        .map(|bytes| {
            crate::plan::hex(&sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes),
            ))
        })
        .unwrap_or_default();
    let collected = runtime.block_on(async {
        let engine = engine::Engine::connect(&endpoint).await?;
        // On a swarm manager, the nodes whose label names their own engine hold the
        // containers and volumes of the runs placed there: each is visited too.
        let mut engines = vec![(engine.clone(), String::new())];
        for node in engine.run_nodes().await?.into_iter().flatten() {
            if node.engine.is_none() {
                continue;
            }
            match engine.on_node(&node).await {
                Ok(on_node) => engines.push((on_node, format!(" on swarm node {node}"))),
                Err(e) => print_err(&format!(
                    "warning: swarm node {node} was not looked at: {}\n",
                    engine::error_chain(&e)
                )),
            }
        }
        let all: Vec<engine::Engine> = engines.iter().map(|(e, _)| e.clone()).collect();
        let dead = engine::gc::collect(&all, dry_run, Duration::ZERO, engine::gc::PATIENCE).await?;
        let (mut kept, mut stale) = (Vec::new(), Vec::new());
        for (engine, place) in &engines {
            let at = |(volume, run)| (volume, run, place.clone());
            kept.extend(
                engine::gc::kept_workspaces(engine)
                    .await?
                    .into_iter()
                    .map(at),
            );
            // Without its own hash, gc could not tell its copy from the others'.
            if !current.is_empty() {
                let found = engine::gc::stale_binaries(engine, &current, dry_run).await?;
                stale.extend(found.into_iter().map(|volume| format!("{volume}{place}")));
            }
        }
        Ok::<_, engine::EngineError>((dead, kept, stale))
    });
    let (dead, kept, stale) = match collected {
        Ok(all) => all,
        Err(e) => return report(&e, exit::ENVIRONMENT),
    };
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut text = String::new();
    for run in &dead {
        let _ = writeln!(
            text,
            "run {} (its openmono, pid {}, is gone): {verb}",
            run.run, run.owner_pid
        );
        for object in &run.objects {
            let _ = writeln!(text, "  {} {}", object.kind, object.name);
        }
        for why in &run.failed {
            let _ = writeln!(text, "  could not remove {why}");
        }
    }
    if dead.is_empty() {
        text.push_str("nothing left behind by killed runs\n");
    }
    for volume in &stale {
        let _ = writeln!(
            text,
            "{verb}: volume {volume} (the copy of another openmono binary, which runs kept)"
        );
    }
    for (volume, run, place) in &kept {
        let _ = writeln!(
            text,
            "kept: volume {volume}{place} holds what run {run} changed in its workspace; `openmono runs fetch {run}` brings it back (`docker volume rm {volume}` throws it away)"
        );
    }
    let printed = print_out(&text);
    if dead.iter().any(|run| !run.failed.is_empty()) {
        return ExitCode::from(exit::RUN_FAILED);
    }
    printed
}

/// `openmono runs`, and its `show` and `fetch`.
fn runs(command: Option<RunsCommand>) -> ExitCode {
    match command {
        None => print_out(&crate::runs::list(&engine::run_dir::state_dir())),
        Some(RunsCommand::Show { id }) => {
            match crate::runs::show(&engine::run_dir::state_dir(), &id) {
                Ok(text) => print_out(&text),
                Err(why) => {
                    print_err(&format!("error: {why}\n"));
                    ExitCode::from(exit::RUN_FAILED)
                }
            }
        }
        Some(RunsCommand::Fetch { id, engine }) => fetch(&id, &engine),
    }
}

/// `openmono runs fetch ID`: the workspaces of run ID that are still on the engine.
fn fetch(id: &str, engine: &EngineArg) -> ExitCode {
    let dir = match crate::runs::run_dir(&engine::run_dir::state_dir(), id) {
        Ok(dir) => dir,
        Err(why) => {
            print_err(&format!("error: {why}\n"));
            return ExitCode::from(exit::RUN_FAILED);
        }
    };
    let pending = engine::Travelled::pending(&dir);
    if pending.is_empty() {
        return print_out(&format!("run {id} has no workspace left to bring back\n"));
    }
    if crate::runs::under_way(&dir) {
        print_err(&format!(
            "error: run {id} is still going; its own teardown brings its workspaces back\n"
        ));
        return ExitCode::from(exit::RUN_FAILED);
    }
    let endpoint = match engine.endpoint() {
        Ok(endpoint) => endpoint,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let engine = match engine::Engine::connect(&endpoint).await {
            Ok(engine) => engine,
            Err(e) => return report(&e, exit::ENVIRONMENT),
        };
        let labels =
            std::collections::HashMap::from([("dev.openmono.fetch".to_owned(), id.to_owned())]);
        // The run's openmono is gone, and its boxes, if still on the engine, hold the
        // volumes: they go first (`gc` would remove them too).
        let label = format!("{}={id}", engine::RUN_LABEL);
        if let Ok(objects) = engine.objects(&label).await {
            for object in objects.iter().filter(|o| {
                matches!(
                    o.kind,
                    engine::ObjectKind::Service | engine::ObjectKind::Container
                )
            }) {
                let _ = engine.remove(object).await;
            }
        }
        let mut outcome = ExitCode::SUCCESS;
        for travelled in pending {
            match travelled.fetch(&engine, &dir, labels.clone()).await {
                Ok(line) => {
                    let line = line.unwrap_or_else(|| {
                        format!(
                            "workspace of `{}` was read-only: nothing to bring back",
                            travelled.container
                        )
                    });
                    let _ = print_out(&format!("{line}\n"));
                }
                Err(engine::Lost::Volume(line, why)) => {
                    if let Some(line) = line {
                        let _ = print_out(&format!("{line}\n"));
                    }
                    print_err(&format!(
                        "error: the files are back, but volume {} stays on the engine: {why}\n",
                        travelled.volume
                    ));
                    outcome = ExitCode::from(exit::RUN_FAILED);
                }
                Err(engine::Lost::Files(why)) => {
                    print_err(&format!(
                        "error: workspace of `{}` (volume {}, kept): {why}\n",
                        travelled.container, travelled.volume
                    ));
                    outcome = ExitCode::from(exit::RUN_FAILED);
                }
            }
        }
        outcome
    })
}

fn init(force: bool) -> ExitCode {
    let path = std::path::Path::new(crate::init::PLAYBOOK);
    if path.exists() && !force {
        print_err(&format!(
            "error: {} is already here; `openmono init --force` replaces it\n",
            path.display()
        ));
        return ExitCode::from(exit::RUN_FAILED);
    }
    let dir = std::env::current_dir().unwrap_or_default();
    let text = crate::init::starter(&dir);
    if let Err(e) = std::fs::write(path, &text) {
        print_err(&format!("error: cannot write {}: {e}\n", path.display()));
        return ExitCode::from(exit::RUN_FAILED);
    }
    let check = crate::init::check_for(&dir).map_or_else(
        || "no test command recognised: set `check` yourself".to_owned(),
        |c| format!("its check is `{c}`"),
    );
    let next = if dir.join("models/model.gguf").is_file() {
        "Next: `openmono plan`, then `openmono apply`."
    } else {
        "Next: put a GGUF model at models/model.gguf (or pass --var model=PATH), then `openmono plan`."
    };
    print_err(&format!(
        "Wrote {}: an agent and a model on a private network, this folder as the workspace; {check}.\n{next}\n",
        path.display()
    ));
    ExitCode::SUCCESS
}

fn doctor(engine: &EngineArg) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let endpoint = engine::Endpoint::choose(
        engine.engine.as_deref(),
        &engine::Environment::from_process(),
    );
    let findings = runtime.block_on(crate::doctor::examine(endpoint));
    let mut text = String::new();
    for finding in &findings {
        let _ = writeln!(text, "{finding}");
    }
    let printed = print_out(&text);
    if findings
        .iter()
        .any(|f| f.level == crate::doctor::Level::Error)
    {
        ExitCode::from(exit::ENVIRONMENT)
    } else {
        printed
    }
}

fn graph(file: &std::path::Path, format: GraphFormat) -> ExitCode {
    let decoded = match playbook::load(file) {
        Ok(decoded) => decoded,
        Err(e) => return report(&e, exit::PLAYBOOK),
    };
    match crate::graph::build(&decoded.playbook) {
        Ok(graph) => print_out(&render(&graph, &decoded.playbook, format)),
        Err(errors) => report(
            &playbook::Problems::new(decoded.playbook.source.named(), errors),
            exit::PLAYBOOK,
        ),
    }
}

fn apply(plan: &Plan, options: &ApplyOptions) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(engine::apply(plan, options)) {
        Ok(report) => {
            let printed = match options.output {
                engine::Output::Text => print_out(&format!("{report}\n")),
                engine::Output::Json => print_out(&format!("{}\n", report.to_json())),
            };
            if report.interrupted {
                ExitCode::from(exit::INTERRUPTED)
            } else if report.succeeded() {
                printed
            } else {
                ExitCode::from(exit::RUN_FAILED)
            }
        }
        Err(e) => report(&e, exit::ENVIRONMENT),
    }
}

/// Prints on stdout. A reader that went away (`openmono plan | head`) is not an error:
/// there is no one left to tell; any other failure to write is.
pub(crate) fn print_out(text: &dyn std::fmt::Display) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match write!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            print_err(&format!("error: cannot write the output: {e}\n"));
            ExitCode::from(exit::RUN_FAILED)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Prints on stderr, never failing: with stderr gone there is no one left to tell.
pub(crate) fn print_err(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Prints a diagnostic on stderr and returns `exit_code`.
pub(crate) fn report(error: &dyn miette::Diagnostic, exit_code: u8) -> ExitCode {
    print_err(&render_diagnostic(error));
    ExitCode::from(exit_code)
}

/// A diagnostic as text. The graphical report first; should it fail on some input
/// (very long lines trip it), the plain narrated one; never a panic.
pub fn render_diagnostic(diagnostic: &dyn miette::Diagnostic) -> String {
    let terminal = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if terminal {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let graphical = GraphicalReportHandler::new_themed(theme).with_width(100);
    let silent = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut out = String::new();
        graphical.render_report(&mut out, diagnostic).map(|()| out)
    }))
    .ok()
    .and_then(Result::ok)
    .or_else(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = String::new();
            miette::NarratableReportHandler::new()
                .render_report(&mut out, diagnostic)
                .map(|()| out)
        }))
        .ok()
        .and_then(Result::ok)
    })
    .unwrap_or_else(|| format!("error: {diagnostic}\n"));
    std::panic::set_hook(silent);
    rendered
}

fn code(n: i32) -> ExitCode {
    ExitCode::from(u8::try_from(n).unwrap_or(1))
}

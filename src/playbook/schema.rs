//! The language's one table: every node, its arguments, properties and children, with
//! types, defaults and a one-line meaning. The checker validates documents against it,
//! the decoder suggests names from it, and `grammar/README.md` is generated from it, so
//! the three cannot drift apart.

/// The type of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Bool,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A whole number in `min..=max`.
    Int {
        max: i64,
        min: i64,
    },
    /// A resource name: letters, digits, `-` and `_`, starting with a letter or digit.
    Name,
    /// A host path, relative to the playbook's folder.
    Path,
    /// The name of another resource of this kind.
    Ref(&'static str),
    /// A string, an integer or a boolean.
    Scalar,
    /// One or more of these strings, separated by spaces or commas.
    Set(&'static [&'static str]),
    /// A string that is not empty.
    Text,
    /// An image reference: `[registry/]name[:tag][@digest]`, as the engine takes it.
    Image,
    /// A size such as `4GiB`, `512M` or a number of bytes, at most `units::MAX_SIZE`.
    Size,
    /// A duration such as `90s`, `30m` or `1h30m`, more than zero and at most
    /// `units::MAX_DURATION`.
    Duration,
    String,
}

/// A positional argument.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    pub doc: &'static str,
    pub name: &'static str,
    pub ty: Ty,
}

/// A `key=value` property.
#[derive(Debug, Clone, Copy)]
pub struct Prop {
    /// The default, as the grammar shows it; `None` when absent means "not set".
    pub default: Option<&'static str>,
    pub doc: &'static str,
    pub name: &'static str,
    pub ty: Ty,
}

/// How often a child may appear in its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// Any number; each adds to the others.
    Many,
    /// At most once; a second one overrides the first, with a warning.
    Once,
    /// Exactly once.
    Required,
}

/// One node kind.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// Positional arguments, in order; all required.
    pub args: &'static [Arg],
    pub children: &'static [Node],
    pub doc: &'static str,
    /// How it is written, for help lines and the grammar; empty when obvious.
    pub example: &'static str,
    pub name: &'static str,
    pub props: &'static [Prop],
    /// After `args`, any number (at least one) more of this.
    pub rest: Option<Arg>,
    pub times: Times,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&'static Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn prop(&self, name: &str) -> Option<&'static Prop> {
        self.props.iter().find(|p| p.name == name)
    }

    /// The number of positional arguments this node takes: at least, at most.
    pub fn arity(&self) -> (usize, Option<usize>) {
        let fixed = self.args.len();
        match self.rest {
            Some(_) => (fixed + 1, None),
            None => (fixed, Some(fixed)),
        }
    }
}

/// A child that holds one or more plain values and nothing else.
const fn leaf(name: &'static str, doc: &'static str, args: &'static [Arg], times: Times) -> Node {
    Node {
        args,
        children: &[],
        doc,
        example: "",
        name,
        props: &[],
        rest: None,
        times,
    }
}

impl Node {
    /// The same node with an example of how it is written.
    const fn example(self, example: &'static str) -> Self {
        Self { example, ..self }
    }
}

const fn arg(name: &'static str, ty: Ty) -> Arg {
    Arg { doc: "", name, ty }
}

const STRING: &[Arg] = &[arg("value", Ty::Text)];
const IMAGE: &[Arg] = &[arg("reference", Ty::Image)];
const BOOL: &[Arg] = &[arg("value", Ty::Bool)];
const DURATION: &[Arg] = &[arg("duration", Ty::Duration)];
const KEY_VALUE: &[Arg] = &[arg("name", Ty::Text), arg("value", Ty::String)];
const LABEL_VALUE: &[Arg] = &[arg("label", Ty::Text), arg("value", Ty::Text)];
/// Where on a cluster a model or container may run.
const PLACEMENT: Node = leaf(
    "placement",
    "on a swarm, it runs only on a node whose label `label` has this value (repeatable: all must hold); a single engine is one node and only shows it",
    LABEL_VALUE,
    Times::Many,
)
.example("placement \"gpu\" \"true\"");
const THREADS: &[Arg] = &[arg("count", Ty::Int { max: 1024, min: 1 })];
const LAYERS: &[Arg] = &[arg(
    "layers",
    Ty::Int {
        max: 100_000,
        min: 0,
    },
)];
const PATH: &[Arg] = &[arg("path", Ty::Path)];
const NETWORK: &[Arg] = &[arg("network", Ty::Ref("network"))];
const TOKENS: &[Arg] = &[arg(
    "tokens",
    Ty::Int {
        max: 16_777_216,
        min: 64,
    },
)];
const STEPS: &[Arg] = &[arg(
    "steps",
    Ty::Int {
        max: 10_000,
        min: 1,
    },
)];
const REPLY_TOKENS: &[Arg] = &[arg(
    "tokens",
    Ty::Int {
        max: 1_000_000,
        min: 1,
    },
)];

/// A model file's pin.
const SHA256: Prop = Prop {
    default: None,
    doc: "the file's SHA-256 (64 hex digits); `plan` and `apply` refuse a file that differs",
    name: "sha256",
    ty: Ty::Text,
};

/// A resource's name, the first argument of every top-level resource.
const NAME: Arg = Arg {
    doc: "its name",
    name: "name",
    ty: Ty::Name,
};

/// The types a `var` may have.
pub const VAR_TYPES: &[&str] = &["string", "int", "bool", "path"];

/// Every top-level node, in the order the grammar lists them.
pub const TOP_LEVEL: &[Node] = &[
    Node {
        args: PATH,
        children: &[],
        doc: "another playbook file whose nodes join this one, as if written here; relative to the including file, read once",
        example: "include \"common.kdl\"",
        name: "include",
        props: &[],
        rest: None,
        times: Times::Many,
    },
    Node {
        args: &[NAME],
        children: &[
            leaf(
                "description",
                "what the playbook is for; `plan` prints it",
                STRING,
                Times::Once,
            ),
            leaf(
                "version",
                "the playbook's own version, for people and reports",
                STRING,
                Times::Once,
            ),
        ],
        doc: "names the playbook (default: the file's name without `.kdl`)",
        example: "",
        name: "playbook",
        props: &[],
        rest: None,
        times: Times::Once,
    },
    Node {
        args: &[NAME],
        children: &[],
        doc: "an input of the playbook, used in templates as `{{ var.NAME }}`; set with `--var NAME=VALUE` or `OPENMONO_VAR_NAME`",
        example: "var \"model\" type=\"path\" default=\"models/model.gguf\"",
        name: "var",
        props: &[
            Prop {
                default: Some("string"),
                doc: "`string`, `int`, `bool` or `path` (a path is made absolute: a default against the playbook's folder, a given value against the current folder)",
                name: "type",
                ty: Ty::Choice(VAR_TYPES),
            },
            Prop {
                default: None,
                doc: "the value when none is given",
                name: "default",
                ty: Ty::Scalar,
            },
            Prop {
                default: None,
                doc: "what it is for",
                name: "description",
                ty: Ty::String,
            },
            Prop {
                default: Some("#false"),
                doc: "a value must be given (a var without a default is required anyway)",
                name: "required",
                ty: Ty::Bool,
            },
        ],
        rest: None,
        times: Times::Many,
    },
    Node {
        args: &[Arg {
            doc: "the var",
            name: "var",
            ty: Ty::Ref("var"),
        }],
        children: &[],
        doc: "`apply` runs the playbook once for each of these values of a var (with several `matrix`, every combination), each run apart with its own networks, and sums them up; `--var` fixes the var, `--matrix` replaces its values, `plan` shows the first",
        example: "matrix \"lang\" \"rust\" \"go\" \"python\"",
        name: "matrix",
        props: &[],
        rest: Some(Arg {
            doc: "a value of the var",
            name: "value",
            ty: Ty::Scalar,
        }),
        times: Times::Many,
    },
    Node {
        args: &[Arg {
            doc: "the image's reference, as containers and models name it",
            name: "reference",
            ty: Ty::Image,
        }],
        children: &[
            leaf(
                "context",
                "the build context, a folder relative to the playbook",
                PATH,
                Times::Required,
            )
            .example("context \"images/tools\""),
            leaf(
                "dockerfile",
                "the Dockerfile, relative to the context (default `Dockerfile`)",
                STRING,
                Times::Once,
            ),
            leaf("arg", "a build argument", KEY_VALUE, Times::Many),
        ],
        doc: "how to build an image when the engine does not have it",
        example: "image \"openmono/tools:latest\" { context \"images/tools\" }",
        name: "image",
        props: &[],
        rest: None,
        times: Times::Many,
    },
    Node {
        args: &[NAME],
        children: &[],
        doc: "a Docker volume for the run's containers: removed with the run, or kept across runs with `keep=#true` (for caches)",
        example: "volume \"cargo-cache\" keep=#true",
        name: "volume",
        props: &[Prop {
            default: Some("#false"),
            doc: "keep the volume after the run, for the next runs of this playbook",
            name: "keep",
            ty: Ty::Bool,
        }],
        rest: None,
        times: Times::Many,
    },
    Node {
        args: &[NAME],
        children: &[],
        doc: "a private network: internal, no route out, no address on the host",
        example: "",
        name: "network",
        props: &[Prop {
            default: Some("#false"),
            doc: "let containers on it reach the internet, the LAN and the host; `plan` warns",
            name: "egress",
            ty: Ty::Bool,
        }],
        rest: None,
        times: Times::Many,
    },
    Node {
        args: &[NAME],
        children: &[
            Node {
                args: PATH,
                children: &[],
                doc: "the GGUF model file, mounted read-only and served by `llama-server` (give `gguf` or `replay`)",
                example: "gguf \"models/model.gguf\"",
                name: "gguf",
                props: &[SHA256],
                rest: None,
                times: Times::Once,
            },
            Node {
                args: PATH,
                children: &[],
                doc: "instead of `gguf`: a replay script (JSON Lines of replies, or a run's transcript), mounted read-only and served by `openmono replay`, which answers the n-th request with the n-th reply",
                example: "replay \"session.jsonl\"",
                name: "replay",
                props: &[SHA256],
                rest: None,
                times: Times::Once,
            },
            leaf(
                "network",
                "the network it serves, as `http://NAME:8080`",
                NETWORK,
                Times::Required,
            )
            .example("network \"sandbox\""),
            leaf(
                "context",
                "context size in tokens (default 4096)",
                TOKENS,
                Times::Once,
            ),
            leaf(
                "threads",
                "CPU threads for generation (`--threads`)",
                THREADS,
                Times::Once,
            ),
            leaf(
                "parallel",
                "requests served at once (`--parallel`)",
                THREADS,
                Times::Once,
            ),
            leaf(
                "gpu-layers",
                "layers to offload to a GPU (`--n-gpu-layers`)",
                LAYERS,
                Times::Once,
            ),
            leaf(
                "image",
                "the server's image (default `openmono/llama-server:latest`, and `openmono/agent:latest` for `replay`)",
                IMAGE,
                Times::Once,
            ),
            leaf(
                "alias",
                "the model's name in the API, which agents ask for (`--alias`; default: the model's name)",
                STRING,
                Times::Once,
            )
            .example("alias \"coder\""),
            leaf(
                "load-timeout",
                "how long the server may take to load the model (default: `apply --model-timeout`, 5m)",
                DURATION,
                Times::Once,
            )
            .example("load-timeout \"10m\""),
            PLACEMENT,
            Node {
                args: &[],
                children: &[],
                doc: "extra `llama-server` arguments, after openmono's own",
                example: "",
                name: "args",
                props: &[],
                rest: Some(arg("argument", Ty::Text)),
                times: Times::Many,
            },
        ],
        doc: "a local model, served by llama.cpp's `llama-server` in its own container, or a scripted one that replays recorded replies",
        example: "",
        name: "model",
        props: &[],
        rest: None,
        times: Times::Many,
    },
    Node {
        args: &[NAME],
        children: &[
            leaf("image", "the image to run", IMAGE, Times::Required)
                .example("image \"openmono/agent:latest\""),
            Node {
                args: NETWORK,
                children: &[],
                doc: "a network to join, as its name and `alias` (repeatable; default: no network at all)",
                example: "network \"sandbox\" alias=\"db\"",
                name: "network",
                props: &[Prop {
                    default: None,
                    doc: "one more host name for it on this network",
                    name: "alias",
                    ty: Ty::Name,
                }],
                rest: None,
                times: Times::Many,
            },
            Node {
                args: PATH,
                children: &[],
                doc: "the project folder, mounted at `/workspace`; judged like a `mount` source, except that it is the project (so never outside it): `/`, system folders, the home folder (also when the playbook is in it) and engine sockets are refused without `allow`",
                example: "workspace \".\"",
                name: "workspace",
                props: &[
                    Prop {
                        default: Some("#false"),
                        doc: "mount it read-only (the agent can read the project, not change it)",
                        name: "read-only",
                        ty: Ty::Bool,
                    },
                    Prop {
                        default: None,
                        doc: "the dangers of this source that the sandbox lets through: `system`, `home`, `engine-socket`, as on `mount`",
                        name: "allow",
                        ty: Ty::Set(crate::sandbox::PERMISSIONS),
                    },
                ],
                rest: None,
                times: Times::Once,
            },
            Node {
                args: &[
                    Arg {
                        doc: "the volume",
                        name: "volume",
                        ty: Ty::Ref("volume"),
                    },
                    Arg {
                        doc: "where it appears in the container, an absolute path",
                        name: "target",
                        ty: Ty::Text,
                    },
                ],
                children: &[],
                doc: "mount a `volume` of the playbook",
                example: "volume \"cargo-cache\" \"/home/agent/.cargo\"",
                name: "volume",
                props: &[Prop {
                    default: Some("#false"),
                    doc: "mount it read-only",
                    name: "read-only",
                    ty: Ty::Bool,
                }],
                rest: None,
                times: Times::Many,
            },
            Node {
                args: &[
                    Arg {
                        doc: "a host file or folder, relative to the playbook's folder; it must exist",
                        name: "source",
                        ty: Ty::Path,
                    },
                    Arg {
                        doc: "where it appears in the container, an absolute path",
                        name: "target",
                        ty: Ty::Text,
                    },
                ],
                children: &[],
                doc: "mount a host file or folder, read-only unless it says otherwise; `/`, system folders, the home folder, engine sockets and paths outside the project are refused without `allow`",
                example: "mount \"fixtures\" \"/fixtures\"",
                name: "mount",
                props: &[
                    Prop {
                        default: Some("#true"),
                        doc: "read-only, the secure default; `#false` lets the container change the host's files",
                        name: "read-only",
                        ty: Ty::Bool,
                    },
                    Prop {
                        default: None,
                        doc: "the dangers of this source that the sandbox lets through: `system` (`/`, `/etc`, `/boot`, `/dev`, `/proc`, `/sys`), `home` (the home folder, a folder holding it, its hidden entries), `engine-socket` (a container engine's socket or its folder: root on the host), `outside-project` (outside the playbook's folder)",
                        name: "allow",
                        ty: Ty::Set(crate::sandbox::PERMISSIONS),
                    },
                ],
                rest: None,
                times: Times::Many,
            },
            Node {
                args: &[Arg {
                    doc: "where it appears in the container, an absolute path",
                    name: "target",
                    ty: Ty::Text,
                }],
                children: &[],
                doc: "an empty folder in memory, writable by every user (mode 1777), gone with the container; nothing in it can be run (`noexec`, `nosuid`, `nodev`)",
                example: "tmpfs \"/scratch\" size=\"256MiB\"",
                name: "tmpfs",
                props: &[Prop {
                    default: Some("64MiB"),
                    doc: "most bytes it holds; they count as the container's memory",
                    name: "size",
                    ty: Ty::Size,
                }],
                rest: None,
                times: Times::Many,
            },
            leaf(
                "read-only-root",
                "the image's files are read-only; `/tmp` then gets a 64MiB `tmpfs`, unless something else is mounted there",
                BOOL,
                Times::Once,
            )
            .example("read-only-root #true"),
            leaf(
                "env",
                "an environment variable for everything run in it",
                KEY_VALUE,
                Times::Many,
            )
            .example("env \"RUST_LOG\" \"debug\""),
            leaf(
                "user",
                "the user to run as, `UID:GID` (default: the user who runs openmono)",
                STRING,
                Times::Once,
            ),
            leaf(
                "workdir",
                "the working directory (default `/workspace` with a workspace, else `/`)",
                STRING,
                Times::Once,
            ),
            PLACEMENT,
            Node {
                args: &[],
                children: &[
                    leaf(
                        "http",
                        "healthy when this URL, asked from inside the container, answers 200",
                        STRING,
                        Times::Once,
                    )
                    .example("http \"http://127.0.0.1:8000/health\""),
                    leaf(
                        "command",
                        "healthy when this shell command, run inside the container, exits 0",
                        STRING,
                        Times::Once,
                    ),
                    leaf(
                        "interval",
                        "time between checks (default 1s)",
                        DURATION,
                        Times::Once,
                    ),
                    leaf(
                        "timeout",
                        "how long one check may take (default 5s)",
                        DURATION,
                        Times::Once,
                    ),
                    leaf(
                        "retries",
                        "failed checks in a row before the container counts as unhealthy (default 30)",
                        STEPS,
                        Times::Once,
                    ),
                ],
                doc: "tasks in this container wait until it is healthy: give `http` or `command`",
                example: "health { http \"http://127.0.0.1:8000/\"; interval \"2s\" }",
                name: "health",
                props: &[],
                rest: None,
                times: Times::Once,
            },
            Node {
                args: &[],
                children: &[],
                doc: "resource limits",
                example: "limits memory=\"4GiB\" cpus=2 pids=512",
                name: "limits",
                props: &[
                    Prop {
                        default: Some("half the engine's"),
                        doc: "most memory, e.g. `4GiB`",
                        name: "memory",
                        ty: Ty::Size,
                    },
                    Prop {
                        default: Some("all the engine's but one"),
                        doc: "most CPUs, at most as many as the engine has",
                        name: "cpus",
                        ty: Ty::Int { max: 1024, min: 1 },
                    },
                    Prop {
                        default: Some("1024"),
                        doc: "most processes",
                        name: "pids",
                        ty: Ty::Int {
                            max: 1_000_000,
                            min: 1,
                        },
                    },
                ],
                rest: None,
                times: Times::Once,
            },
        ],
        doc: "a container that tasks run in; openmono's binary is copied into it",
        example: "",
        name: "container",
        props: &[],
        rest: None,
        times: Times::Many,
    },
    Node {
        args: &[NAME],
        children: &[
            Node {
                args: &[Arg {
                    doc: "the container",
                    name: "container",
                    ty: Ty::Ref("container"),
                }],
                children: &[],
                doc: "run an agent loop in the container, talking to `model`",
                example: "",
                name: "agent",
                props: &[Prop {
                    default: None,
                    doc: "the model the agent talks to (required)",
                    name: "model",
                    ty: Ty::Ref("model"),
                }],
                rest: None,
                times: Times::Once,
            },
            leaf(
                "prompt",
                "what the agent is asked to do (agent tasks)",
                STRING,
                Times::Once,
            ),
            leaf(
                "max-steps",
                "most model turns (agent tasks; default 20)",
                STEPS,
                Times::Once,
            ),
            Node {
                args: &[Arg {
                    doc: "a shell command, run with `/bin/sh -c` in the agent's container",
                    name: "command",
                    ty: Ty::Text,
                }],
                children: &[],
                doc: "a command run after the agent; the task succeeds when it exits 0 (agent tasks)",
                example: "check \"cargo test --offline\" retries=2",
                name: "check",
                props: &[Prop {
                    default: Some("0"),
                    doc: "more rounds for the agent: while the check fails, its output goes back to the agent, which carries on within its budgets",
                    name: "retries",
                    ty: Ty::Int { max: 100, min: 0 },
                }],
                rest: None,
                times: Times::Once,
            },
            leaf(
                "max-tokens",
                "most tokens in one model reply (agent tasks; default 1024)",
                REPLY_TOKENS,
                Times::Once,
            ),
            leaf(
                "self-test",
                "before the agent starts, probe the box for a way out (a default route, an answer from the host or a gateway, an outside name resolved) and fail the task if one is open (agent tasks; default `#true`)",
                BOOL,
                Times::Once,
            )
            .example("self-test #false"),
            Node {
                args: &[
                    Arg {
                        doc: "its name in the task; the model sees its tools as `NAME__TOOL`",
                        name: "name",
                        ty: Ty::Name,
                    },
                    Arg {
                        doc: "a shell command that runs the server, with `/bin/sh -c` in the agent's working directory; it speaks MCP on its stdin and stdout",
                        name: "command",
                        ty: Ty::Text,
                    },
                ],
                children: &[],
                doc: "an MCP server started inside the agent's container over stdio, its tools offered to the model; stopped when the agent ends (agent tasks; repeatable)",
                example: "mcp \"notes\" \"node tools/notes-server.js\"",
                name: "mcp",
                props: &[],
                rest: None,
                times: Times::Many,
            },
            Node {
                args: &[
                    Arg {
                        doc: "the container",
                        name: "container",
                        ty: Ty::Ref("container"),
                    },
                    Arg {
                        doc: "a shell command, run with `/bin/sh -c`",
                        name: "command",
                        ty: Ty::Text,
                    },
                ],
                children: &[],
                doc: "run one shell command in the container",
                example: "",
                name: "run",
                props: &[],
                rest: None,
                times: Times::Once,
            },
            leaf(
                "env",
                "an environment variable for the task",
                KEY_VALUE,
                Times::Many,
            ),
            leaf(
                "timeout",
                "how long the task may run (default 1h); then its processes are killed",
                DURATION,
                Times::Once,
            )
            .example("timeout \"30m\""),
            leaf(
                "continue-on-error",
                "a failure of this task does not stop the run",
                BOOL,
                Times::Once,
            ),
            Node {
                args: &[],
                children: &[],
                doc: "tasks that must finish first, and succeed unless they continue on error",
                example: "",
                name: "after",
                props: &[],
                rest: Some(arg("task", Ty::Ref("task"))),
                times: Times::Many,
            },
        ],
        doc: "one unit of work: an `agent` or a `run`",
        example: "",
        name: "task",
        props: &[Prop {
            default: None,
            doc: "a task that must finish first, and succeed unless it continues on error",
            name: "after",
            ty: Ty::Ref("task"),
        }],
        rest: None,
        times: Times::Many,
    },
];

//! The fixture model (`openmono::gguf::fixture`) in the real llama-server: written into a
//! temp dir, mounted read-only into `openmono/llama-server` on an internal network of its
//! own, and asked with curl from an `openmono/agent` container on that network. It must
//! load at once and answer exactly `SENTENCE`: chat completions streamed or not, at
//! temperature 0, 1 and 2, with and without `--jinja`, and plain completions.

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant, SystemTime},
};

use openmono::gguf::fixture::{self, Fixture, SENTENCE};
use serde_json::{Value, json};

use crate::support::{assert_nothing_left, docker, docker_lines};

/// Every object these tests create carries this label, and one unique to its test.
const LABEL: &str = "dev.openmono.test=fixture";

/// Where the server listens inside its container.
const PORT: u16 = 8080;

/// A llama-server with the fixture model and a client container on an internal network
/// of their own. Dropping it removes all three, whatever happened before.
struct Server {
    /// Holds the model file.
    _dir: tempfile::TempDir,
    /// The container that asks, with curl.
    client: String,
    /// `dev.openmono.fixture=…`: this server's objects and nothing else.
    label: String,
    /// The llama-server container.
    model: String,
    network: String,
}

/// What one HTTP request returned.
struct Reply {
    body: String,
    status: u16,
}

impl Server {
    /// Writes the model, starts everything and waits until `/health` says 200.
    #[track_caller]
    fn start(args: &[&str]) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .subsec_nanos();
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}-{nanos}", std::process::id());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fixture.gguf");
        fixture::write(&path, SENTENCE).expect("write the fixture");
        // The server runs as 65534: the file must be readable by others.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        // The guard exists before anything is created, so a failure below cleans up too.
        let server = Self {
            _dir: dir,
            client: format!("openmono-fixture-client-{id}"),
            label: format!("dev.openmono.fixture={id}"),
            model: format!("openmono-fixture-model-{id}"),
            network: format!("openmono-fixture-{id}"),
        };
        docker_lines(&[
            "network",
            "create",
            "--internal",
            "--label",
            LABEL,
            "--label",
            &server.label,
            &server.network,
        ]);
        server.run(
            &server.client,
            &["--entrypoint", "sleep", "openmono/agent:latest", "infinity"],
        );
        let started = Instant::now();
        let mount = format!("{}:/models/model.gguf:ro", path.display());
        let port = PORT.to_string();
        let serve = [
            "-m",
            "/models/model.gguf",
            "--host",
            "0.0.0.0",
            "--port",
            &port,
            "-c",
            "1024",
        ];
        server.run(
            &server.model,
            &[
                &["-v", &mount, "openmono/llama-server:latest"][..],
                &serve,
                args,
            ]
            .concat(),
        );
        server.wait_healthy(started);
        server
    }

    /// Starts a container on the network, labelled, as unprivileged as the real ones.
    #[track_caller]
    fn run(&self, name: &str, image_and_args: &[&str]) {
        let options = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &self.network,
            "--label",
            LABEL,
            "--label",
            &self.label,
            "--user",
            "65534:65534",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ];
        docker_lines(&[&options[..], image_and_args].concat());
    }

    #[track_caller]
    fn wait_healthy(&self, started: Instant) {
        for attempt in 0.. {
            let reply = self.request("GET", "/health", None);
            if reply.status == 200 {
                eprintln!(
                    "fixture model: healthy {} ms after `docker run`; {}",
                    started.elapsed().as_millis(),
                    self.load_time()
                );
                return;
            }
            let running = docker_lines(&["inspect", "-f", "{{.State.Running}}", &self.model]);
            assert!(
                running == ["true"] && started.elapsed() < Duration::from_secs(30),
                "llama-server did not become healthy (attempt {attempt}, last status {}):\n{}",
                reply.status,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How long llama-server took from start to "model loaded", by its own log clock.
    fn load_time(&self) -> String {
        let logs = self.logs();
        let at = |text: &str| {
            let line = logs.lines().find(|l| l.contains(text))?;
            // `0.00.146.575 I srv ...`: minutes, seconds, milliseconds, microseconds.
            let parts: Vec<f64> = line
                .split_whitespace()
                .next()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let [m, s, ms, us] = parts[..] else {
                return None;
            };
            Some(m * 60_000.0 + s * 1000.0 + ms + us / 1000.0)
        };
        match (at("loading model"), at("model loaded")) {
            (Some(from), Some(to)) => format!("the model loaded in {:.0} ms", to - from),
            _ => "no load time in its log".to_owned(),
        }
    }

    fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.model])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// One HTTP request from the client container; status 0 if there was no answer.
    #[track_caller]
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let url = format!("http://{}:{PORT}{path}", self.model);
        let mut args = vec![
            "exec",
            "-i",
            &self.client,
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
        ];
        args.extend(["-o", "-", "-w", "\n%{http_code}", &url]);
        if body.is_some() {
            args.extend([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        let mut child = Command::new("docker")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker exec");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(body) = body {
            stdin
                .write_all(body.to_string().as_bytes())
                .expect("request body");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        Reply {
            body: body.to_owned(),
            status: status.trim().parse().unwrap_or(0),
        }
    }

    /// POSTs `body` and returns the JSON answer, which must come with 200.
    #[track_caller]
    fn post(&self, path: &str, body: &Value) -> Value {
        let reply = self.request("POST", path, Some(body));
        assert_eq!(reply.status, 200, "{path} {body}: {}", reply.body);
        serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{path} answered no JSON ({e}): {}", reply.body))
    }

    /// The assistant's answer to a chat, not streamed.
    #[track_caller]
    fn chat(&self, request: &Value) -> String {
        let answer = self.post("/v1/chat/completions", request);
        assert_eq!(
            answer["choices"][0]["finish_reason"], "stop",
            "the model ends its turn: {answer}"
        );
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no content: {answer}"))
            .to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Errors are for objects that were never created.
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.model, &self.client])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

#[test]
fn the_fixture_loads_at_once_and_its_sentence_tokenizes_into_its_own_tokens() {
    if !docker() {
        return;
    }
    // `start` fails unless the server is healthy within 30 s; the model itself loads in
    // about 70 ms (run with `--nocapture` to see the times).
    let server = Server::start(&[]);
    let health = server.request("GET", "/health", None);
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    let tokens = server.post("/tokenize", &json!({ "content": SENTENCE }));
    let expected = Fixture::new(SENTENCE).expect("fixture");
    assert_eq!(tokens["tokens"], json!(expected.sentence_tokens()));
    let text = server.post("/detokenize", &json!({ "tokens": tokens["tokens"] }));
    assert_eq!(text["content"], SENTENCE);
    let label = server.label.clone();
    drop(server);
    assert_nothing_left(&label);
}

#[test]
fn chat_answers_the_sentence_at_any_temperature() {
    if !docker() {
        return;
    }
    let server = Server::start(&[]);
    let conversation = json!([
        { "role": "system", "content": "You are a helpful assistant." },
        { "role": "user", "content": "What does the sandbox do?" },
        { "role": "assistant", "content": SENTENCE },
        { "role": "user", "content": "Say it again, differently\nplease." },
    ]);
    for temperature in [0.0, 1.0] {
        let request = json!({ "messages": user("Hello"), "temperature": temperature });
        assert_eq!(server.chat(&request), SENTENCE, "temperature {temperature}");
    }
    // No top-k, top-p or min-p to hide behind: the model alone decides.
    for (seed, temperature) in [(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 2.0)] {
        let request = json!({
            "messages": conversation,
            "temperature": temperature,
            "top_k": 0,
            "top_p": 1.0,
            "min_p": 0.0,
            "seed": seed,
        });
        assert_eq!(server.chat(&request), SENTENCE, "seed {seed}");
    }
}

#[test]
fn chat_with_jinja_answers_the_sentence_streamed_or_not() {
    if !docker() {
        return;
    }
    let server = Server::start(&["--jinja"]);
    let request = json!({ "messages": user("Hello"), "temperature": 1.0 });
    assert_eq!(server.chat(&request), SENTENCE);
    let request = json!({ "messages": user("Hello"), "temperature": 1.0, "stream": true });
    let reply = server.request("POST", "/v1/chat/completions", Some(&request));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let data: Vec<&str> = reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{}", reply.body);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|d| !d.is_empty())
        .collect();
    assert_eq!(deltas.concat(), SENTENCE, "{}", reply.body);
    // One delta per token: it really streamed.
    let tokens = Fixture::new(SENTENCE)
        .expect("fixture")
        .sentence_tokens()
        .len();
    assert_eq!(deltas.len(), tokens, "{deltas:?}");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")], "{}", reply.body);
}

#[test]
fn plain_completions_say_the_sentence_too() {
    if !docker() {
        return;
    }
    let server = Server::start(&[]);
    for prompt in ["Hello", "Once upon a time", "The"] {
        let answer = server.post(
            "/v1/completions",
            &json!({ "prompt": prompt, "temperature": 1.0, "max_tokens": 20 }),
        );
        let expected = if prompt == "The" {
            // The sentence's first token: the model goes on from there.
            &SENTENCE["The".len()..]
        } else {
            SENTENCE
        };
        assert_eq!(answer["choices"][0]["text"], expected, "{prompt}: {answer}");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    }
}

//! A scripted model server for the agent's tests: it listens on 127.0.0.1 and answers
//! the n-th connection with the n-th [`Canned`] answer (repeating the last), handing
//! every request body it got to the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

/// One answer.
#[derive(Debug, Clone)]
pub enum Canned {
    /// A 200 event stream cut off after these chunks: the connection closes without
    /// the chunked body's end, as when the server dies.
    Cut(Vec<String>),
    /// A whole body with this status and `Content-Length`.
    Json(u16, String),
    /// Raw pieces written after the given pauses in milliseconds; then the connection
    /// is held open for a while.
    Script(Vec<(u64, String)>),
    /// Reads the request and never answers.
    Silent,
    /// A 200 event stream; each string goes out as one HTTP chunk.
    Stream(Vec<String>),
}

pub struct Server {
    requests: mpsc::Receiver<Value>,
    pub url: String,
}

/// How long a silent or stalled answer holds the connection.
const HOLD: Duration = Duration::from_secs(5);

/// The head of a chunked event stream.
pub const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                               Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

impl Server {
    pub fn start(replies: Vec<Canned>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (requests_tx, requests) = mpsc::channel();
        // The thread ends with the test process; it only ever blocks in accept.
        thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let Some(reply) = replies.get(index).or(replies.last()).cloned() else {
                    return;
                };
                answer(stream, &requests_tx, &reply);
            }
        });
        Self { requests, url }
    }

    /// The request bodies received so far.
    pub fn received(&self) -> Vec<Value> {
        self.requests.try_iter().collect()
    }
}

/// Reads one request and answers it.
fn answer(stream: TcpStream, requests: &mpsc::Sender<Value>, reply: &Canned) {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim() != "" {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("content-length");
        }
        line.clear();
    }
    let mut request = vec![0; length];
    reader.read_exact(&mut request).expect("request body");
    let _ = requests.send(serde_json::from_slice(&request).expect("JSON request"));
    let stream = reader.get_mut();
    match reply {
        Canned::Json(status, body) => {
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
        Canned::Cut(pieces) => {
            let mut response = STREAM_HEAD.to_owned();
            for piece in pieces {
                response.push_str(&chunk(piece));
            }
            let _ = stream.write_all(response.as_bytes());
        }
        Canned::Stream(pieces) => {
            let mut response = STREAM_HEAD.to_owned();
            for piece in pieces {
                response.push_str(&chunk(piece));
            }
            response.push_str("0\r\n\r\n");
            let _ = stream.write_all(response.as_bytes());
        }
        Canned::Script(pieces) => {
            for (pause, piece) in pieces {
                thread::sleep(Duration::from_millis(*pause));
                let _ = stream
                    .write_all(piece.as_bytes())
                    .and_then(|()| stream.flush());
            }
            thread::sleep(HOLD);
        }
        Canned::Silent => thread::sleep(HOLD),
    }
}

/// One HTTP chunk of a chunked body.
pub fn chunk(piece: &str) -> String {
    format!("{:x}\r\n{piece}\r\n", piece.len())
}

/// One server-sent event carrying `data`.
pub fn event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

/// A stream chunk whose first choice carries `delta`.
pub fn delta(delta: &Value) -> Value {
    json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}], "object": "chat.completion.chunk"})
}

/// A streamed answer as llama-server sends it: the role first, then the text in
/// pieces (none for `None`), the tool calls (each whole in one chunk), the finish, the
/// usage, and `[DONE]`.
pub fn streamed(content: Option<&[&str]>, calls: &[(&str, &str, &str)]) -> Canned {
    let mut events = vec![event(&delta(
        &json!({"role": "assistant", "content": null}),
    ))];
    for piece in content.unwrap_or_default() {
        events.push(event(&delta(&json!({"content": piece}))));
    }
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        events.push(event(&delta(&json!({"tool_calls": [{
            "index": index, "id": id, "type": "function",
            "function": {"name": name, "arguments": arguments}
        }]}))));
    }
    let reason = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    events.push(event(
        &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}),
    ));
    events.push(event(&json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}})));
    events.push("data: [DONE]\n\n".to_owned());
    Canned::Stream(events)
}

/// A streamed answer that is only text.
pub fn streamed_text(text: &str) -> Canned {
    streamed(Some(&[text]), &[])
}

/// A streamed answer with one tool call and no text.
pub fn streamed_call(id: &str, name: &str, arguments: &str) -> Canned {
    streamed(None, &[(id, name, arguments)])
}

//! The HTTP side of the scripted model server: it accepts connections, reads one request
//! on each, and answers `GET /health`, `GET /v1/models` and `POST /v1/chat/completions`
//! the way llama.cpp's `llama-server` does. What a chat request gets is a [`Canned`]
//! answer from the caller, by the request's number (0 for the first); each answer is
//! written on its own thread, so that an endless or silent answer holds up no other.
//!
//! The agent's unit tests use the same server with answers written byte by byte; the
//! `openmono replay` command makes its answers from a script ([`super::script`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

/// One answer to a chat request, as it goes over the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canned {
    /// A 200 event stream cut off after these chunks: the connection closes without
    /// the chunked body's end, as when the server dies.
    Cut(Vec<String>),
    /// A 200 event stream: these chunks, then a piece of text every few milliseconds,
    /// for as long as the client reads.
    Endless(Vec<String>),
    /// Answers as the inner answer, then ends this process (exit code 1): the server
    /// dies.
    Exit(Box<Canned>),
    /// A whole body with this status and `Content-Length`.
    Json(u16, String),
    /// Raw pieces written after the given pauses in milliseconds; then the connection
    /// is held open for a while.
    Script(Vec<(u64, String)>),
    /// Reads the request and never answers.
    Silent,
    /// A 200 event stream; each string goes out as one HTTP chunk.
    Stream(Vec<String>),
    /// A whole body with this status whose `Content-Length` promises all of it, cut
    /// off halfway.
    Truncated(u16, String),
}

/// How long a silent or stalled answer holds the connection.
const HOLD: Duration = Duration::from_secs(5);

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of a request body; a chat request with a long conversation stays far below.
const REQUEST_LIMIT: usize = 64 * 1024 * 1024;

/// The head of a chunked event stream.
pub const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                               Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// Serves on `listener` for ever: `answer` gets each chat request's number and body.
/// `model` is the name `/v1/models` lists.
pub fn serve(
    listener: &TcpListener,
    model: &str,
    answer: impl Fn(usize, Value) -> Canned + Send + Sync + 'static,
) {
    let answer = Arc::new(answer);
    let count = AtomicUsize::new(0);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        // Read here, in order, so that the n-th request that arrives gets the n-th answer.
        let reply = match read_request(&stream) {
            Ok(request) => route(&request, model, &count, answer.as_ref()),
            Err(why) => error_body(400, &why),
        };
        thread::spawn(move || write_answer(&mut stream, &reply));
    }
}

/// A request as far as the server cares.
struct Request {
    body: Vec<u8>,
    method: String,
    path: String,
}

fn read_request(stream: &TcpStream) -> Result<Request, String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    let mut words = line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(format!("not an HTTP request line: {:?}", line.trim()));
    };
    let (method, path) = (
        method.to_owned(),
        target.split('?').next().unwrap_or("/").to_owned(),
    );
    let mut length = 0;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read the request's headers: {e}")),
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {:?}", value.trim()))?;
        }
    }
    if length > REQUEST_LIMIT {
        return Err(format!(
            "the request body is larger than {REQUEST_LIMIT} bytes"
        ));
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("cannot read the request body: {e}"))?;
    Ok(Request { body, method, path })
}

/// What a request gets; a chat request takes the next number.
fn route(
    request: &Request,
    model: &str,
    count: &AtomicUsize,
    answer: &(impl Fn(usize, Value) -> Canned + ?Sized),
) -> Canned {
    let path = request.path.trim_end_matches('/');
    match (request.method.as_str(), path) {
        ("GET", "/health") => Canned::Json(200, json!({"status": "ok"}).to_string()),
        ("GET", "/v1/models" | "/models") => Canned::Json(
            200,
            json!({"object": "list", "data": [
                {"id": model, "object": "model", "owned_by": "openmono"}
            ]})
            .to_string(),
        ),
        ("POST", "/v1/chat/completions" | "/chat/completions") => {
            match serde_json::from_slice::<Value>(&request.body) {
                Ok(body) => answer(count.fetch_add(1, Ordering::SeqCst), body),
                Err(e) => error_body(400, &format!("the request is not JSON: {e}")),
            }
        }
        (method, _) => error_body(404, &format!("no route for {method} {}", request.path)),
    }
}

/// An error answer as llama-server words it.
pub fn error_body(status: u16, message: &str) -> Canned {
    Canned::Json(status, error_json(status, message))
}

/// The body of an error answer as llama-server words it.
pub fn error_json(status: u16, message: &str) -> String {
    let kind = if status < 500 {
        "invalid_request_error"
    } else {
        "server_error"
    };
    json!({"error": {"code": status, "message": message, "type": kind}}).to_string()
}

fn write_answer(stream: &mut TcpStream, reply: &Canned) {
    match reply {
        Canned::Json(status, body) => {
            let _ = stream.write_all(whole(*status, body).as_bytes());
        }
        Canned::Truncated(status, body) => {
            let response = whole(*status, body);
            let cut = response.len() - body.len() / 2;
            let _ = stream.write_all(&response.as_bytes()[..cut]);
        }
        Canned::Cut(pieces) => {
            let _ = stream.write_all(streamed(pieces).as_bytes());
        }
        Canned::Stream(pieces) => {
            let response = streamed(pieces) + "0\r\n\r\n";
            let _ = stream.write_all(response.as_bytes());
        }
        Canned::Endless(pieces) => {
            let more = chunk(&event(&delta(&json!({"content": "and on "}))));
            let mut written = stream.write_all(streamed(pieces).as_bytes());
            // Until the client hangs up.
            while written.is_ok() {
                thread::sleep(Duration::from_millis(20));
                written = stream
                    .write_all(more.as_bytes())
                    .and_then(|()| stream.flush());
            }
        }
        Canned::Exit(inner) => {
            write_answer(stream, inner);
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Both);
            println!("replay: the script says the server dies here");
            std::process::exit(1);
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

/// A whole response with `Content-Length`.
fn whole(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The head of an event stream and these chunks, without the end.
fn streamed(pieces: &[String]) -> String {
    let mut response = STREAM_HEAD.to_owned();
    for piece in pieces {
        response.push_str(&chunk(piece));
    }
    response
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

/// A tool call of a reply, its arguments in the pieces they are sent in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPieces {
    pub arguments: Vec<String>,
    pub id: String,
    pub name: String,
}

/// A streamed answer as llama-server sends it: the role first, then the text in pieces
/// (none for `None`), each tool call (its id and name with the first piece of its
/// arguments, then the other pieces), the finish, the usage, and `[DONE]`.
pub fn stream_events(
    content: Option<&[String]>,
    calls: &[CallPieces],
    usage: &Value,
) -> Vec<String> {
    let mut events = vec![event(&delta(
        &json!({"role": "assistant", "content": null}),
    ))];
    for piece in content.unwrap_or_default() {
        events.push(event(&delta(&json!({"content": piece}))));
    }
    for (index, call) in calls.iter().enumerate() {
        let mut pieces = call.arguments.iter();
        let first = pieces.next().map_or("", String::as_str);
        events.push(event(&delta(&json!({"tool_calls": [{
            "index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": first}
        }]}))));
        for piece in pieces {
            events.push(event(&delta(&json!({"tool_calls": [{
                "index": index, "function": {"arguments": piece}
            }]}))));
        }
    }
    let reason = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    events.push(event(
        &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}),
    ));
    events.push(event(&json!({"choices": [], "usage": usage})));
    events.push("data: [DONE]\n\n".to_owned());
    events
}

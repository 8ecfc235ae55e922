//! The scripted model server ([`crate::replay::server`]) for the agent's unit tests: it
//! listens on 127.0.0.1 and answers the n-th chat request with the n-th [`Canned`]
//! answer (repeating the last), handing every request body it got to the test.

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

use serde_json::{Value, json};

use crate::replay::script::Script;
use crate::replay::server::{CallPieces, serve, stream_events};
pub use crate::replay::server::{Canned, STREAM_HEAD, chunk, delta, event};

pub struct Server {
    requests: mpsc::Receiver<Value>,
    pub url: String,
}

impl Server {
    pub fn start(replies: Vec<Canned>) -> Self {
        Self::answering(move |index, _| {
            replies
                .get(index)
                .or(replies.last())
                .cloned()
                .unwrap_or(Canned::Silent)
        })
    }

    /// A server that replays a script, as `openmono replay` does.
    pub fn replaying(script: &str) -> Self {
        let script = Script::parse(script).expect("script");
        Self::answering(move |index, request| script.answer(index, request))
    }

    fn answering(answer: impl Fn(usize, &Value) -> Canned + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (requests_tx, requests) = mpsc::channel();
        // The thread ends with the test process; it only ever blocks in accept.
        thread::spawn(move || {
            serve(&listener, "test", move |index, request| {
                let canned = answer(index, &request);
                let _ = requests_tx.send(request);
                canned
            });
        });
        Self { requests, url }
    }

    /// The request bodies received so far.
    pub fn received(&self) -> Vec<Value> {
        self.requests.try_iter().collect()
    }
}

/// A streamed answer as llama-server sends it: the text in these pieces (none for
/// `None`), the tool calls (each whole in one chunk), 100 prompt and 10 completion
/// tokens.
pub fn streamed(content: Option<&[&str]>, calls: &[(&str, &str, &str)]) -> Canned {
    let content: Option<Vec<String>> =
        content.map(|pieces| pieces.iter().map(|&p| p.to_owned()).collect());
    let calls: Vec<CallPieces> = calls
        .iter()
        .map(|(id, name, arguments)| CallPieces {
            arguments: vec![(*arguments).to_owned()],
            id: (*id).to_owned(),
            name: (*name).to_owned(),
        })
        .collect();
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110});
    Canned::Stream(stream_events(content.as_deref(), &calls, &usage))
}

/// A streamed answer that is only text.
pub fn streamed_text(text: &str) -> Canned {
    streamed(Some(&[text]), &[])
}

/// A streamed answer with one tool call and no text.
pub fn streamed_call(id: &str, name: &str, arguments: &str) -> Canned {
    streamed(None, &[(id, name, arguments)])
}

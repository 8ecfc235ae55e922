//! The conversation the agent sends on every step, and its compaction when it no
//! longer fits the model's context.
//!
//! The first two messages are fixed: the system prompt and the user's task. After them
//! come turns: a model turn (an assistant message) and the tool results that answer it.
//! [`Conversation::compact`] shrinks the conversation by one stage each time it is
//! called, oldest material first, and says what it did; once no stage changes anything
//! it returns `None`, so a caller that retries only after a compaction cannot loop.

use serde_json::Value;

use super::message::{Message, Role};

/// The messages of one run.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// How many turns compaction has dropped so far; noted after the task.
    dropped_turns: u32,
    messages: Vec<Message>,
    /// The task as the user gave it, before any note.
    task: String,
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub bytes_after: u64,
    pub bytes_before: u64,
    pub dropped_turns: u32,
    pub elided: u32,
}

/// One stage of compaction: what it dropped (turns) and elided (texts).
type Stage = fn(&mut Conversation) -> (u32, u32);

/// Turns kept whole by the first stages of compaction.
const KEEP_RECENT: usize = 2;

/// Texts up to this many bytes are never elided: the note would not be much shorter.
const ELIDE_MIN: usize = 200;

impl Conversation {
    #[must_use]
    pub fn new(system: String, task: String) -> Self {
        Self {
            dropped_turns: 0,
            messages: vec![Message::system(system), Message::user(task.clone())],
            task,
        }
    }

    #[must_use]
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    pub fn set_system(&mut self, system: String) {
        self.messages[0] = Message::system(system);
    }

    /// Bytes of text in all messages.
    #[must_use]
    pub fn size(&self) -> usize {
        self.messages.iter().map(Message::size).sum()
    }

    /// Shrinks the conversation by the first of these stages that changes anything:
    /// elide the long texts of all but the last [`KEEP_RECENT`] turns; drop those
    /// turns; elide the long texts of the turns left; keep only the last turn; drop
    /// every turn. `None` when nothing is left to shrink.
    pub fn compact(&mut self) -> Option<Compaction> {
        let before = self.size();
        let stages: [Stage; 5] = [
            |c| (0, c.elide_turns_before(c.turns_start(KEEP_RECENT))),
            |c| (c.drop_turns_before(c.turns_start(KEEP_RECENT)), 0),
            |c| (0, c.elide_turns_before(c.messages.len())),
            |c| (c.drop_turns_before(c.turns_start(1)), 0),
            |c| (c.drop_turns_before(c.messages.len()), 0),
        ];
        for stage in stages {
            let (dropped_turns, elided) = stage(self);
            if dropped_turns + elided > 0 {
                return Some(Compaction {
                    bytes_after: self.size() as u64,
                    bytes_before: before as u64,
                    dropped_turns,
                    elided,
                });
            }
        }
        None
    }

    /// Where the last `keep` turns start (a turn starts at an assistant message).
    fn turns_start(&self, keep: usize) -> usize {
        let starts: Vec<usize> = (2..self.messages.len())
            .filter(|&index| self.messages[index].role == Role::Assistant)
            .collect();
        match keep {
            0 => self.messages.len(),
            keep if keep <= starts.len() => starts[starts.len() - keep],
            _ => 2,
        }
    }

    /// Replaces the long texts of the turns before `end` with notes; returns how many.
    fn elide_turns_before(&mut self, end: usize) -> u32 {
        let mut elided = 0;
        for message in &mut self.messages[2..end] {
            if let Some(content) = &message.content
                && content.len() > ELIDE_MIN
            {
                let what = match message.role {
                    Role::Assistant => "text",
                    _ => "output",
                };
                message.content = Some(format!("[{what} elided: {} bytes]", content.len()));
                elided += 1;
            }
            for call in &mut message.tool_calls {
                if let Some(shorter) = elide_arguments(&call.function.arguments) {
                    call.function.arguments = shorter.0;
                    elided += shorter.1;
                }
            }
        }
        elided
    }

    /// Removes the turns before `end`; returns how many.
    fn drop_turns_before(&mut self, end: usize) -> u32 {
        if end <= 2 {
            return 0;
        }
        let dropped = self.messages[2..end]
            .iter()
            .filter(|message| message.role == Role::Assistant)
            .count();
        let dropped = u32::try_from(dropped).unwrap_or(u32::MAX);
        self.messages.drain(2..end);
        self.dropped_turns += dropped;
        self.messages[1] = Message::user(format!(
            "{}\n\n[{} earlier turns of this conversation were dropped to fit the model's \
             context.]",
            self.task, self.dropped_turns
        ));
        dropped
    }
}

/// The arguments with every long string value replaced by a note (they must stay JSON:
/// servers parse them to render the conversation), and how many were replaced; `None`
/// when nothing was long.
fn elide_arguments(arguments: &str) -> Option<(String, u32)> {
    if arguments.len() <= ELIDE_MIN {
        return None;
    }
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(arguments) else {
        // Not an object: keep its JSON shape with a string standing for it.
        let note = format!("[elided: {} bytes]", arguments.len());
        return Some((Value::String(note).to_string(), 1));
    };
    let mut count = 0;
    for value in map.values_mut() {
        if let Value::String(text) = value
            && text.len() > ELIDE_MIN
        {
            *value = Value::String(format!("[elided: {} bytes]", text.len()));
            count += 1;
        }
    }
    (count > 0).then(|| (Value::Object(map).to_string(), count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::message::ToolCall;

    /// A conversation with `turns` turns, each a shell call with a long command and a
    /// long output.
    fn conversation(turns: usize) -> Conversation {
        let mut conversation = Conversation::new("system".into(), "task".into());
        for turn in 0..turns {
            let command = format!("echo {}", "c".repeat(300));
            let arguments = serde_json::json!({ "command": command, "n": turn }).to_string();
            let id = format!("t{turn}");
            conversation.push(Message::assistant(
                Some(format!("turn {turn}")),
                vec![ToolCall::new(id.clone(), "shell", arguments)],
            ));
            conversation.push(Message::tool(id, "o".repeat(1000)));
        }
        conversation
    }

    fn contents(conversation: &Conversation) -> Vec<String> {
        conversation
            .messages()
            .iter()
            .map(|message| {
                let calls: Vec<&str> = message
                    .tool_calls
                    .iter()
                    .map(|call| call.function.arguments.as_str())
                    .collect();
                format!(
                    "{}{}",
                    message.content.as_deref().unwrap_or(""),
                    calls.concat()
                )
            })
            .collect()
    }

    #[test]
    fn compaction_goes_stage_by_stage_and_then_stops() {
        let mut conversation = conversation(4);
        let start = conversation.size() as u64;
        let elided_call = r#"{"command":"[elided: 305 bytes]","n":0}"#;
        let first = conversation.compact().expect("elides the two oldest turns");
        assert_eq!((first.dropped_turns, first.elided), (0, 4));
        assert_eq!(first.bytes_before, start);
        // Each of the two oldest turns loses 1000 - 27 bytes of output ("[output elided:
        // 1000 bytes]") and 325 - 39 bytes of arguments (the 305-byte command elided).
        assert_eq!(
            first.bytes_before - first.bytes_after,
            2 * ((1000 - 27) + (325 - elided_call.len() as u64))
        );
        assert_eq!(
            contents(&conversation)[2..4],
            [
                format!("turn 0{elided_call}"),
                "[output elided: 1000 bytes]".to_owned()
            ]
        );
        assert_eq!(contents(&conversation)[9].len(), 1000);

        let second = conversation.compact().expect("drops the two oldest turns");
        assert_eq!((second.dropped_turns, second.elided), (2, 0));
        assert_eq!(conversation.messages().len(), 6);
        assert_eq!(
            conversation.messages()[1].content.as_deref(),
            Some(
                "task\n\n[2 earlier turns of this conversation were dropped to fit the model's \
                 context.]"
            )
        );
        assert_eq!(
            conversation.messages()[2].content.as_deref(),
            Some("turn 2")
        );

        let third = conversation.compact().expect("elides the recent turns");
        assert_eq!((third.dropped_turns, third.elided), (0, 4));
        let fourth = conversation.compact().expect("keeps only the last turn");
        assert_eq!((fourth.dropped_turns, fourth.elided), (1, 0));
        assert_eq!(
            conversation.messages()[2].content.as_deref(),
            Some("turn 3")
        );
        let fifth = conversation.compact().expect("drops every turn");
        assert_eq!((fifth.dropped_turns, fifth.elided), (1, 0));
        assert_eq!(
            contents(&conversation),
            [
                "system",
                "task\n\n[4 earlier turns of this conversation were dropped to fit the model's \
                 context.]"
            ]
        );
        assert_eq!(conversation.compact(), None);
        assert_eq!(conversation.compact(), None);
    }

    #[test]
    fn a_bare_conversation_cannot_shrink() {
        let mut conversation = Conversation::new("s".repeat(5000), "t".repeat(5000));
        assert_eq!(conversation.compact(), None);
        assert_eq!(
            conversation.messages()[0].content.as_deref().map(str::len),
            Some(5000)
        );
    }

    #[test]
    fn arguments_stay_json_when_elided() {
        assert_eq!(elide_arguments(r#"{"a":"short"}"#), None);
        let long = "x".repeat(250);
        assert_eq!(
            elide_arguments(&format!(r#"{{"path":"a.txt","content":"{long}"}}"#)),
            Some((
                r#"{"content":"[elided: 250 bytes]","path":"a.txt"}"#.to_owned(),
                1
            ))
        );
        assert_eq!(
            elide_arguments(&format!("not json {long}")),
            Some((r#""[elided: 259 bytes]""#.to_owned(), 1))
        );
    }
}

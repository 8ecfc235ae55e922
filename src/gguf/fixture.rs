//! A tiny llama-architecture model that answers one fixed sentence to anything, at any
//! temperature, streamed or not: a GGUF file of about half a megabyte that the real
//! llama-server loads in milliseconds, for tests that need a real model server.
//!
//! How it works. Every attention output and feed-forward down projection is zero, so no
//! layer adds anything to the residual stream: the last hidden state is the current
//! token's embedding, and the next token depends on the current one only. Each token's
//! embedding is a one-hot *state*; the final RMS norm scales it to √width; the output
//! matrix gives each state a logit of about 100 for one next token and 0 for all others,
//! so sampling picks that token even at temperature 2. State 0 belongs to every token
//! outside the sentence, among them the newline byte that ends the chat template's
//! generation prompt (`<|im_start|>assistant\n`): it leads to the sentence's first token.
//! Each sentence token leads to the next, the last one to `<|im_end|>`, the end of the
//! turn (and the end-of-sequence token).
//!
//! The vocabulary, for llama.cpp's SentencePiece-style `llama` tokenizer: `<unk>`, `<s>`,
//! `</s>`, `<|im_start|>` and `<|im_end|>`, the 256 byte tokens `<0x00>`…`<0xFF>` (any
//! text tokenizes), then the sentence's pieces with the prefixes that the tokenizer's
//! pairwise merges pass through, so that the sentence's text tokenizes into exactly its
//! pieces. A piece is a word with the space before it as `▁`: `The`, `▁sandbox`,
//! `▁holds.`. The chat template is `ChatML`.

use std::{io, path::Path};

use super::writer::Writer;

/// The sentence the fixture model says; tests compare answers with it.
pub const SENTENCE: &str = "The sandbox holds.";

/// The model's hyperparameters, as `llama.*` metadata names them.
const BLOCK_COUNT: u32 = 2;
const CONTEXT_LENGTH: u32 = 4096;
const HEAD_COUNT: u32 = 4;
const MIN_WIDTH: usize = 64;
const RMS_EPSILON: f32 = 1e-5;

/// The output weight between a state and its next token: after the RMS norm a state is
/// √width (8 at width 64), so the chosen token's logit is about 96 and every other one 0.
const OUTPUT_WEIGHT: f32 = 12.0;

/// `ChatML`, as Qwen and others write it; llama-server also recognises it without `--jinja`.
const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Token types as `tokenizer.ggml.token_type` numbers them.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const BYTE: i32 = 6;

/// The special tokens, in id order.
const SPECIALS: [(&str, i32); 5] = [
    ("<unk>", UNKNOWN),
    ("<s>", CONTROL),
    ("</s>", CONTROL),
    ("<|im_start|>", CONTROL),
    ("<|im_end|>", CONTROL),
];
const BOS: u32 = 1;
const END_OF_TURN: u32 = 4;

/// The visible space of `SentencePiece` vocabularies.
const SPACE: char = '▁';

/// The fixture model for one sentence.
#[derive(Debug)]
pub struct Fixture {
    /// The sentence's tokens, in order.
    sentence: Vec<u32>,
    /// Every token's text and type, by id.
    tokens: Vec<(String, i32)>,
    /// The hidden state's width: a slot for each sentence token and one for the rest.
    width: usize,
}

/// Writes the model that always answers `sentence` to `path`.
pub fn write(path: &Path, sentence: &str) -> io::Result<()> {
    Fixture::new(sentence)?.write(path)
}

impl Fixture {
    /// The model for `sentence`. Its pieces (words, each but the first with its leading
    /// space) must be distinct, since a piece's successor is all the model knows; the
    /// sentence must have no control characters and no `▁`.
    pub fn new(sentence: &str) -> io::Result<Self> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        if let Some(c) = sentence.chars().find(|c| c.is_control() || *c == SPACE) {
            return Err(invalid(format!(
                "the sentence has the character {c:?}, which the fixture cannot say"
            )));
        }
        let pieces = pieces(sentence);
        if pieces.is_empty() {
            return Err(invalid("the sentence has no words".to_owned()));
        }
        let mut tokens: Vec<(String, i32)> = SPECIALS
            .iter()
            .map(|(text, ty)| ((*text).to_owned(), *ty))
            .chain((0..=255u8).map(|b| (format!("<0x{b:02X}>"), BYTE)))
            .collect();
        let reserved = tokens.len();
        let mut sentence = Vec::new();
        for piece in &pieces {
            if let Some(id) = position(&tokens, piece)
                && (id < reserved || sentence.contains(&id))
            {
                return Err(invalid(format!(
                    "the sentence has the piece `{piece}` twice or as a special token"
                )));
            }
            // The merges build a piece from its characters, one more at a time.
            for (end, _) in piece.char_indices().skip(2) {
                add(&mut tokens, &piece[..end]);
            }
            sentence.push(add(&mut tokens, piece));
        }
        let sentence = sentence
            .into_iter()
            .map(|id| u32::try_from(id).expect("a small vocabulary"))
            .collect();
        Ok(Self {
            sentence,
            tokens,
            width: (pieces.len() + 1).next_multiple_of(32).max(MIN_WIDTH),
        })
    }

    /// The sentence's token ids, which llama-server's `/tokenize` also gives for it.
    pub fn sentence_tokens(&self) -> &[u32] {
        &self.sentence
    }

    /// Writes the GGUF file to `path`.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    /// The GGUF file. The same sentence always gives the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let width = self.width;
        let vocab = self.tokens.len();
        let feed_forward = 2 * width;
        let (w, v, ff) = (dim(width), dim(vocab), dim(feed_forward));
        let mut gguf = Writer::new();
        self.metadata(&mut gguf);
        gguf.tensor("token_embd.weight", &[w, v], self.embedding());
        for layer in 0..BLOCK_COUNT {
            let name = |t: &str| format!("blk.{layer}.{t}.weight");
            gguf.tensor(&name("attn_norm"), &[w], vec![1.0; width]);
            for t in ["attn_q", "attn_k", "attn_v", "attn_output"] {
                gguf.tensor(&name(t), &[w, w], vec![0.0; width * width]);
            }
            gguf.tensor(&name("ffn_norm"), &[w], vec![1.0; width]);
            let zeros = vec![0.0; width * feed_forward];
            gguf.tensor(&name("ffn_gate"), &[w, ff], zeros.clone());
            gguf.tensor(&name("ffn_up"), &[w, ff], zeros.clone());
            gguf.tensor(&name("ffn_down"), &[ff, w], zeros);
        }
        gguf.tensor("output_norm.weight", &[w], vec![1.0; width]);
        gguf.tensor("output.weight", &[w, v], self.output());
        gguf.to_bytes()
    }

    fn metadata(&self, gguf: &mut Writer) {
        let width = u32::try_from(self.width).expect("small");
        let vocab = u32::try_from(self.tokens.len()).expect("small");
        gguf.metadata("general.architecture", "llama")
            .metadata("general.name", "openmono fixture")
            .metadata("general.file_type", 0u32) // all F32
            .metadata("llama.vocab_size", vocab)
            .metadata("llama.context_length", CONTEXT_LENGTH)
            .metadata("llama.embedding_length", width)
            .metadata("llama.block_count", BLOCK_COUNT)
            .metadata("llama.feed_forward_length", 2 * width)
            .metadata("llama.attention.head_count", HEAD_COUNT)
            .metadata("llama.attention.head_count_kv", HEAD_COUNT)
            .metadata("llama.attention.layer_norm_rms_epsilon", RMS_EPSILON)
            .metadata("llama.rope.dimension_count", width / HEAD_COUNT)
            .metadata("llama.rope.freq_base", 10_000.0f32)
            .metadata("tokenizer.ggml.model", "llama")
            .metadata(
                "tokenizer.ggml.tokens",
                self.tokens
                    .iter()
                    .map(|(t, _)| t.clone())
                    .collect::<Vec<_>>(),
            )
            .metadata("tokenizer.ggml.scores", self.scores())
            .metadata(
                "tokenizer.ggml.token_type",
                self.tokens.iter().map(|(_, ty)| *ty).collect::<Vec<_>>(),
            )
            .metadata("tokenizer.ggml.bos_token_id", BOS)
            .metadata("tokenizer.ggml.eos_token_id", END_OF_TURN)
            .metadata("tokenizer.ggml.unknown_token_id", 0u32)
            .metadata("tokenizer.ggml.add_bos_token", true)
            .metadata("tokenizer.ggml.add_eos_token", false)
            // The sentence's first piece has no `▁`, and its text must tokenize to it.
            .metadata("tokenizer.ggml.add_space_prefix", false)
            .metadata("tokenizer.chat_template", CHAT_TEMPLATE);
    }

    /// Merge priorities: earlier tokens first. Only the pieces' prefix chains merge, so
    /// the order rarely matters.
    fn scores(&self) -> Vec<f32> {
        (0..self.tokens.len())
            .map(|id| -f32::from(u16::try_from(id).expect("small")))
            .collect()
    }

    /// The state of each token: its slot in the hidden state.
    fn state(&self, token: usize) -> usize {
        self.sentence
            .iter()
            .position(|&t| t as usize == token)
            .map_or(0, |i| i + 1)
    }

    /// `token_embd.weight`: a row per token, one-hot at its state.
    fn embedding(&self) -> Vec<f32> {
        let mut rows = vec![0.0; self.tokens.len() * self.width];
        for token in 0..self.tokens.len() {
            rows[token * self.width + self.state(token)] = 1.0;
        }
        rows
    }

    /// `output.weight`: a row per token, which scores it after each state. State 0 leads
    /// to the first piece, state `i` (piece `i - 1`) to piece `i`, the last to the end.
    fn output(&self) -> Vec<f32> {
        let mut rows = vec![0.0; self.tokens.len() * self.width];
        let next = self.sentence.iter().chain([&END_OF_TURN]);
        for (state, &token) in next.enumerate() {
            rows[token as usize * self.width + state] = OUTPUT_WEIGHT;
        }
        rows
    }
}

/// The sentence's pieces: each space starts a new one, as `▁`.
fn pieces(sentence: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    for c in sentence.chars() {
        if c == ' ' {
            if !piece.is_empty() {
                pieces.push(std::mem::take(&mut piece));
            }
            piece.push(SPACE);
        } else {
            piece.push(c);
        }
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

fn position(tokens: &[(String, i32)], text: &str) -> Option<usize> {
    tokens.iter().position(|(t, _)| t == text)
}

/// The id of the normal token `text`, added if new.
fn add(tokens: &mut Vec<(String, i32)>, text: &str) -> usize {
    position(tokens, text).unwrap_or_else(|| {
        tokens.push((text.to_owned(), NORMAL));
        tokens.len() - 1
    })
}

fn dim(n: usize) -> u64 {
    u64::try_from(n).expect("fits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::writer::{Array, Value, tests::parse};

    #[test]
    fn the_file_is_small_and_always_the_same() {
        let a = Fixture::new(SENTENCE).unwrap().to_bytes();
        let b = Fixture::new(SENTENCE).unwrap().to_bytes();
        assert!(a == b, "same sentence, same bytes");
        assert!(a.len() < 1 << 20, "{} bytes", a.len());
        assert!(a.len() > 300_000, "{} bytes", a.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fixture.gguf");
        write(&path, SENTENCE).unwrap();
        assert!(std::fs::read(&path).unwrap() == a);
    }

    #[test]
    fn the_sentence_is_in_the_vocabulary_piece_by_piece() {
        let fixture = Fixture::new(SENTENCE).unwrap();
        let texts: Vec<&str> = fixture
            .sentence_tokens()
            .iter()
            .map(|&t| fixture.tokens[t as usize].0.as_str())
            .collect();
        assert_eq!(texts, ["The", "▁sandbox", "▁holds."]);
        let parsed = parse(&fixture.to_bytes());
        let Value::Array(Array::String(tokens)) = parsed.value("tokenizer.ggml.tokens") else {
            panic!("tokens are strings")
        };
        assert_eq!(tokens[10], "<0x05>");
        assert_eq!(tokens[13], "<0x08>");
        assert!(tokens.contains(&"▁sa".to_owned()) && tokens.contains(&"Th".to_owned()));
    }

    /// Runs the model as llama.cpp does, from the file's own tensors: with attention and
    /// feed-forward outputs zero, the hidden state is the embedding; then the RMS norm and the
    /// output matrix. Greedy and temperature-1 sampling must agree with near certainty.
    #[test]
    fn after_the_generation_prompt_the_model_says_the_sentence_then_ends() {
        let parsed = parse(&Fixture::new(SENTENCE).unwrap().to_bytes());
        for (name, _, data) in &parsed.tensors {
            if ["attn_output", "ffn_down"].iter().any(|t| name.contains(t)) {
                assert!(data.iter().all(|x| *x == 0.0), "{name} is zero");
            }
        }
        let Value::Array(Array::String(tokens)) = parsed.value("tokenizer.ggml.tokens") else {
            panic!("tokens are strings")
        };
        let (dims, embedding) = parsed.tensor("token_embd.weight");
        let width = usize::try_from(dims[0]).unwrap();
        let (_, norm) = parsed.tensor("output_norm.weight");
        let (_, output) = parsed.tensor("output.weight");
        let newline = tokens.iter().position(|t| t == "<0x0A>").unwrap();
        let mut token = newline;
        let mut said = String::new();
        for _ in 0..10 {
            let h = &embedding[token * width..(token + 1) * width];
            #[allow(clippy::cast_precision_loss)]
            let rms = (h.iter().map(|x| x * x).sum::<f32>() / width as f32 + RMS_EPSILON).sqrt();
            let logits: Vec<f32> = output
                .chunks_exact(width)
                .map(|row| {
                    row.iter()
                        .zip(h)
                        .zip(norm)
                        .map(|((w, x), n)| w * x / rms * n)
                        .sum()
                })
                .collect();
            let best = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap();
            let others: f32 = (0..logits.len())
                .filter(|&t| t != best)
                .map(|t| (logits[t] - logits[best]).exp())
                .sum();
            assert!(others < 1e-30, "after {token}: the rest have {others}");
            if best == END_OF_TURN as usize {
                assert_eq!(said, SENTENCE);
                return;
            }
            said.push_str(&tokens[best].replace(SPACE, " "));
            token = best;
        }
        panic!("no end of turn after {said:?}");
    }

    #[test]
    fn any_sentence_of_distinct_words_works_and_others_are_refused() {
        let long = (0..100)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let fixture = Fixture::new(&long).unwrap();
        assert_eq!(fixture.width, 128);
        assert_eq!(fixture.sentence_tokens().len(), 100);
        assert_eq!(pieces(" a  b "), ["▁a", "▁", "▁b", "▁"]);
        for bad in [
            "",
            "  ",
            "a cat and a cat",
            "a\nb",
            "a▁b",
            "<s>",
            "<0x41> x",
        ] {
            let e = Fixture::new(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {e}");
        }
    }
}

//! GGUF, llama.cpp's model file format: enough of a reader to check a model file before
//! anything starts and to tell the user what it is (architecture, size in parameters,
//! quantization) and roughly how much memory it needs. The file is read once, front to
//! back, without loading the tensors; every count and length is bounded by what is left
//! of the file, so a hostile or truncated file is an error, never a huge allocation.

pub mod fixture;
pub mod writer;

use std::{
    fmt,
    io::{BufReader, Read, Seek},
    path::Path,
};

/// What the header of a GGUF file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GgufInfo {
    /// `general.architecture`, such as `llama` or `gemma3`.
    pub architecture: String,
    /// Bytes of KV cache one token of context takes (f16 keys and values), when the
    /// header says enough to know.
    pub kv_bytes_per_token: Option<u64>,
    /// The number of weights: the elements of all tensors.
    pub parameters: u64,
    /// `general.file_type` as llama.cpp names it (`Q4_K_M`), else the most common tensor
    /// type.
    pub quantization: String,
    /// The context length the model was trained for.
    pub trained_context: Option<u64>,
}

/// Why a file is not a GGUF model openmono can use.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("does not start with `GGUF`")]
    Magic,
    #[error("GGUF version {0}, of which openmono reads 2 and 3")]
    Version(u32),
    #[error("the header is cut short or damaged ({0})")]
    Damaged(String),
}

const MAGIC: &[u8; 4] = b"GGUF";

/// GGUF metadata value types.
const U8: u32 = 0;
const I8: u32 = 1;
const U16: u32 = 2;
const I16: u32 = 3;
const U32: u32 = 4;
const I32: u32 = 5;
const F32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U64: u32 = 10;
const I64: u32 = 11;
const F64: u32 = 12;

/// A metadata value the reader keeps (others are skipped).
enum Value {
    Int(u64),
    Text(String),
    Other,
}

/// Reads the header of the GGUF file at `path`.
pub fn read(path: &Path) -> Result<GgufInfo, GgufError> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    Reader::new(file, size).info()
}

/// Reads front to back, counting where it is: a vocabulary is hundreds of thousands of
/// strings to skip, each a move within the buffer, not a system call.
struct Reader<R> {
    inner: BufReader<R>,
    pos: u64,
    size: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn new(inner: R, size: u64) -> Self {
        Self {
            inner: BufReader::with_capacity(1 << 16, inner),
            pos: 0,
            size,
        }
    }

    fn info(&mut self) -> Result<GgufInfo, GgufError> {
        let mut magic = [0; 4];
        self.bytes(&mut magic).map_err(|e| match e {
            GgufError::Damaged(_) => GgufError::Magic,
            e => e,
        })?;
        if &magic != MAGIC {
            return Err(GgufError::Magic);
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let tensors = self.u64()?;
        let entries = self.u64()?;
        // Each entry and tensor takes at least 8 bytes: more than the file holds is a lie.
        self.bounded(
            tensors.saturating_add(entries).saturating_mul(8),
            "the tensors and entries it counts",
        )?;
        let mut keys = std::collections::HashMap::new();
        for _ in 0..entries {
            let key = self.string()?;
            let ty = self.u32()?;
            let value = self.value(ty)?;
            if !matches!(value, Value::Other) {
                keys.insert(key, value);
            }
        }
        let mut parameters: u64 = 0;
        let mut types: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        for _ in 0..tensors {
            self.string()?;
            let dims = self.u32()?;
            if dims > 8 {
                return Err(GgufError::Damaged(format!(
                    "a tensor with {dims} dimensions"
                )));
            }
            let mut elements: u64 = 1;
            for _ in 0..dims {
                elements = elements.saturating_mul(self.u64()?);
            }
            let ty = self.u32()?;
            self.u64()?; // the tensor's offset
            parameters = parameters.saturating_add(elements);
            *types.entry(ty).or_default() += elements;
        }
        let int = |key: &str| match keys.get(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let architecture = match keys.get("general.architecture") {
            Some(Value::Text(a)) => a.clone(),
            _ => "unknown".to_owned(),
        };
        let arch = |key: &str| int(&format!("{architecture}.{key}"));
        let quantization = int("general.file_type")
            .and_then(file_type_name)
            .or_else(|| {
                types
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .and_then(|(ty, _)| tensor_type_name(*ty))
            })
            .unwrap_or("unknown")
            .to_owned();
        let trained_context = arch("context_length");
        let kv_bytes_per_token = (|| {
            let layers = arch("block_count")?;
            let heads = arch("attention.head_count")?.max(1);
            let kv_heads = arch("attention.head_count_kv").unwrap_or(heads);
            let width = arch("embedding_length")?;
            let key = arch("attention.key_length").unwrap_or(width / heads);
            let value = arch("attention.value_length").unwrap_or(width / heads);
            // f16: two bytes per element, keys and values for every layer.
            Some(2 * layers * kv_heads * (key + value))
        })();
        Ok(GgufInfo {
            architecture,
            kv_bytes_per_token,
            parameters,
            quantization,
            trained_context,
        })
    }

    fn bytes(&mut self, buffer: &mut [u8]) -> Result<(), GgufError> {
        self.inner.read_exact(buffer).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                GgufError::Damaged("the file ends inside it".into())
            } else {
                GgufError::Io(e)
            }
        })?;
        self.pos += buffer.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        let mut b = [0; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        let mut b = [0; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Fails when `bytes` more could not be in what is left of the file.
    fn bounded(&self, bytes: u64, what: &str) -> Result<(), GgufError> {
        let left = self.size.saturating_sub(self.pos);
        if bytes > left {
            return Err(GgufError::Damaged(format!(
                "{what} would take {bytes} bytes; {left} are left"
            )));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        self.bounded(len, "a string")?;
        let len = usize::try_from(len).map_err(|_| GgufError::Damaged("a string".into()))?;
        let mut text = vec![0; len];
        self.bytes(&mut text)?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    fn skip(&mut self, bytes: u64) -> Result<(), GgufError> {
        self.bounded(bytes, "a value")?;
        let offset = i64::try_from(bytes).map_err(|_| GgufError::Damaged("a value".into()))?;
        self.inner.seek_relative(offset)?;
        self.pos += bytes;
        Ok(())
    }

    fn value(&mut self, ty: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            U8 | I8 | BOOL => {
                let mut b = [0; 1];
                self.bytes(&mut b)?;
                Value::Int(u64::from(b[0]))
            }
            U16 | I16 => {
                let mut b = [0; 2];
                self.bytes(&mut b)?;
                Value::Int(u64::from(u16::from_le_bytes(b)))
            }
            U32 | I32 => Value::Int(u64::from(self.u32()?)),
            U64 | I64 => Value::Int(self.u64()?),
            F32 => {
                self.skip(4)?;
                Value::Other
            }
            F64 => {
                self.skip(8)?;
                Value::Other
            }
            STRING => Value::Text(self.string()?),
            ARRAY => {
                let element = self.u32()?;
                let count = self.u64()?;
                match element_size(element) {
                    Some(size) => self.skip(count.saturating_mul(size))?,
                    None if element == STRING => {
                        // At least 8 bytes each (the length): a vocabulary, skipped.
                        self.bounded(count.saturating_mul(8), "an array")?;
                        for _ in 0..count {
                            let len = self.u64()?;
                            self.skip(len)?;
                        }
                    }
                    None => {
                        return Err(GgufError::Damaged(format!("an array of type {element}")));
                    }
                }
                Value::Other
            }
            other => return Err(GgufError::Damaged(format!("a value of type {other}"))),
        })
    }
}

/// The size of one element of a fixed-size metadata type.
fn element_size(ty: u32) -> Option<u64> {
    match ty {
        U8 | I8 | BOOL => Some(1),
        U16 | I16 => Some(2),
        U32 | I32 | F32 => Some(4),
        U64 | I64 | F64 => Some(8),
        _ => None,
    }
}

/// llama.cpp's names for `general.file_type`.
fn file_type_name(n: u64) -> Option<&'static str> {
    Some(match n {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// ggml's names for tensor types.
fn tensor_type_name(n: u32) -> Option<&'static str> {
    Some(match n {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        29 => "IQ1_M",
        30 => "BF16",
        _ => return None,
    })
}

impl GgufInfo {
    /// Bytes the KV cache of `context` tokens takes, if the header says enough.
    pub fn kv_cache_bytes(&self, context: u32) -> Option<u64> {
        self.kv_bytes_per_token
            .map(|per_token| per_token.saturating_mul(u64::from(context)))
    }
}

impl fmt::Display for GgufInfo {
    /// `gemma3, 268M parameters, Q4_K_M`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.parameters;
        #[allow(clippy::cast_precision_loss)] // a rounded count for people
        let count = if p >= 1_000_000_000 {
            format!("{:.1}B", p as f64 / 1e9)
        } else if p >= 1_000_000 {
            format!("{}M", (p as f64 / 1e6).round())
        } else if p >= 1000 {
            format!("{}K", (p as f64 / 1e3).round())
        } else {
            p.to_string()
        };
        write!(
            f,
            "{}, {count} parameters, {}",
            self.architecture, self.quantization
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF header with the given metadata and tensors, written by hand.
    struct Header(Vec<u8>);

    impl Header {
        fn new(tensors: u64, entries: u64) -> Self {
            let mut b = MAGIC.to_vec();
            b.extend(3u32.to_le_bytes());
            b.extend(tensors.to_le_bytes());
            b.extend(entries.to_le_bytes());
            Self(b)
        }
        fn string(mut self, s: &str) -> Self {
            self.0.extend((s.len() as u64).to_le_bytes());
            self.0.extend(s.as_bytes());
            self
        }
        fn kv_str(self, key: &str, value: &str) -> Self {
            let mut h = self.string(key);
            h.0.extend(STRING.to_le_bytes());
            h.string(value)
        }
        fn kv_u32(self, key: &str, value: u32) -> Self {
            let mut h = self.string(key);
            h.0.extend(U32.to_le_bytes());
            h.0.extend(value.to_le_bytes());
            h
        }
        fn kv_tokens(self, key: &str, tokens: &[&str]) -> Self {
            let mut h = self.string(key);
            h.0.extend(ARRAY.to_le_bytes());
            h.0.extend(STRING.to_le_bytes());
            h.0.extend((tokens.len() as u64).to_le_bytes());
            tokens.iter().fold(h, |h, t| h.string(t))
        }
        fn tensor(self, name: &str, dims: &[u64], ty: u32) -> Self {
            let mut h = self.string(name);
            h.0.extend(u32::try_from(dims.len()).expect("few").to_le_bytes());
            for d in dims {
                h.0.extend(d.to_le_bytes());
            }
            h.0.extend(ty.to_le_bytes());
            h.0.extend(0u64.to_le_bytes());
            h
        }
        fn read(&self) -> Result<GgufInfo, GgufError> {
            Reader::new(std::io::Cursor::new(self.0.clone()), self.0.len() as u64).info()
        }
    }

    fn llama() -> Header {
        Header::new(2, 8)
            .kv_str("general.architecture", "llama")
            .kv_u32("general.file_type", 15)
            .kv_tokens("tokenizer.ggml.tokens", &["a", "b", "<s>"])
            .kv_u32("llama.block_count", 2)
            .kv_u32("llama.embedding_length", 64)
            .kv_u32("llama.attention.head_count", 4)
            .kv_u32("llama.attention.head_count_kv", 2)
            .kv_u32("llama.context_length", 2048)
            .tensor("token_embd.weight", &[64, 3], 12)
            .tensor("output.weight", &[64, 3], 14)
    }

    #[test]
    fn a_header_tells_architecture_size_quantization_and_kv_cache() {
        let info = llama().read().expect("reads");
        assert_eq!(
            info,
            GgufInfo {
                architecture: "llama".into(),
                kv_bytes_per_token: Some(2 * 2 * 2 * (16 + 16)),
                parameters: 384,
                quantization: "Q4_K_M".into(),
                trained_context: Some(2048),
            }
        );
        assert_eq!(info.kv_cache_bytes(1000), Some(256_000));
        assert_eq!(info.to_string(), "llama, 384 parameters, Q4_K_M");
    }

    #[test]
    fn without_a_file_type_the_most_common_tensor_type_names_the_quantization() {
        let info = Header::new(2, 1)
            .kv_str("general.architecture", "x")
            .tensor("a", &[10, 10], 12)
            .tensor("b", &[10], 0)
            .read()
            .expect("reads");
        assert_eq!(info.quantization, "Q4_K");
        assert_eq!(info.kv_bytes_per_token, None);
    }

    #[test]
    fn the_fixture_model_reads_back() {
        let bytes = fixture::Fixture::new(fixture::SENTENCE)
            .expect("a sentence it can say")
            .to_bytes();
        let info = Reader::new(std::io::Cursor::new(bytes.clone()), bytes.len() as u64)
            .info()
            .expect("reads");
        assert_eq!(info.architecture, "llama");
        assert_eq!(info.quantization, "F32");
        assert_eq!(info.trained_context, Some(4096));
        // 2 layers, 2 heads of 16 for keys and for values, f16.
        assert_eq!(info.kv_bytes_per_token, Some(2 * 2 * 4 * (16 + 16)));
        assert!(info.parameters > 10_000, "{info:?}");
    }

    #[test]
    fn damaged_files_are_errors_not_allocations() {
        assert!(matches!(
            Header(b"GGU".to_vec()).read(),
            Err(GgufError::Magic)
        ));
        assert!(matches!(
            Header(b"GGML0000".to_vec()).read(),
            Err(GgufError::Magic)
        ));
        let mut v4 = Header::new(0, 0);
        v4.0[4] = 4;
        assert!(matches!(v4.read(), Err(GgufError::Version(4))));
        // Counts far beyond the file.
        assert!(matches!(
            Header::new(u64::MAX, 1).read(),
            Err(GgufError::Damaged(_))
        ));
        // A string that claims to be huge.
        let mut huge = Header::new(0, 1);
        huge.0.extend(u64::MAX.to_le_bytes());
        assert!(matches!(huge.read(), Err(GgufError::Damaged(_))));
        // Every cut of a good header fails cleanly.
        let good = llama().0;
        for end in 0..good.len() {
            assert!(Header(good[..end].to_vec()).read().is_err(), "cut at {end}");
        }
    }
}

//! A GGUF v3 writer: metadata of every GGUF value type and F32 tensors in, the bytes of
//! one model file out, in the order they were added.
//!
//! The layout, all little-endian: the magic `GGUF`, the version (u32), the tensor count
//! and the metadata count (u64 each); each metadata entry as its key, value type (u32) and
//! value (an array as element type (u32), length (u64) and elements); each tensor's info
//! as its name, dimension count (u32), dimensions (u64 each, innermost first: a matrix of
//! `rows` rows of `cols` numbers is `[cols, rows]`), ggml type (u32) and data offset (u64,
//! from the start of the data); zero bytes up to a multiple of [`ALIGNMENT`]; then each
//! tensor's data, zero-padded to a multiple of [`ALIGNMENT`]. A string is its byte length
//! (u64) and its UTF-8 bytes, no NUL.

use std::{
    io::{self, Write},
    path::Path,
};

/// Where the tensor data starts and how each tensor is padded: llama.cpp's default, which
/// applies because the writer never writes `general.alignment`.
pub const ALIGNMENT: usize = 32;

/// The GGUF version this writer writes.
pub const VERSION: u32 = 3;

/// llama.cpp keeps a tensor's name in 64 bytes, NUL included (`GGML_MAX_NAME`).
const MAX_NAME: usize = 63;

/// llama.cpp reads tensors of at most 4 dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;

/// ggml's type id for 32-bit floats.
const GGML_F32: u32 = 0;

/// A metadata value of one of GGUF's types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Array(Array),
    Bool(bool),
    F32(f32),
    F64(f64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    String(String),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
}

/// A metadata array: elements of one type. GGUF also allows arrays of arrays, which no
/// model key uses; this writer does not write them.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    Bool(Vec<bool>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    String(Vec<String>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

/// Collects metadata and tensors, then writes them as one GGUF file.
///
/// `metadata` and `tensor` add an entry and return the writer for chaining; they panic
/// on what llama.cpp would refuse to load (an empty or repeated key or tensor name, a
/// name too long, a shape the data does not fill), since that is a bug in the caller.
#[derive(Debug, Default)]
pub struct Writer {
    /// Key/value entries, in the order they are written.
    metadata: Vec<(String, Value)>,
    /// Tensors, in the order they are written.
    tensors: Vec<Tensor>,
}

/// One F32 tensor.
#[derive(Debug)]
struct Tensor {
    /// The numbers, innermost dimension fastest.
    data: Vec<f32>,
    /// The shape, innermost first.
    dims: Vec<u64>,
    name: String,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry.
    pub fn metadata(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        assert!(!key.is_empty(), "a GGUF key is never empty");
        assert!(
            self.metadata.iter().all(|(k, _)| k != key),
            "GGUF key `{key}` written twice"
        );
        self.metadata.push((key.to_owned(), value.into()));
        self
    }

    /// Adds an F32 tensor of shape `dims` (innermost first).
    pub fn tensor(&mut self, name: &str, dims: &[u64], data: Vec<f32>) -> &mut Self {
        assert!(
            !name.is_empty() && name.len() <= MAX_NAME,
            "tensor name `{name}` must have 1 to {MAX_NAME} bytes"
        );
        assert!(
            self.tensors.iter().all(|t| t.name != name),
            "tensor `{name}` written twice"
        );
        assert!(
            (1..=MAX_DIMS).contains(&dims.len()),
            "tensor `{name}` has {} dimensions",
            dims.len()
        );
        let elements: u64 = dims.iter().product();
        assert_eq!(
            u64::try_from(data.len()).ok(),
            Some(elements),
            "tensor `{name}` of shape {dims:?}"
        );
        self.tensors.push(Tensor {
            data,
            dims: dims.to_vec(),
            name: name.to_owned(),
        });
        self
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing into a Vec cannot fail");
        out
    }

    /// Writes the whole file to `path`, replacing what is there.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    /// Writes the whole file to `out`.
    pub fn write_to(&self, mut out: impl Write) -> io::Result<()> {
        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        put_u32(&mut head, VERSION);
        put_len(&mut head, self.tensors.len());
        put_len(&mut head, self.metadata.len());
        for (key, value) in &self.metadata {
            put_string(&mut head, key);
            put_u32(&mut head, value.type_id());
            value.put(&mut head);
        }
        let mut offset = 0;
        for tensor in &self.tensors {
            put_string(&mut head, &tensor.name);
            put_u32(
                &mut head,
                u32::try_from(tensor.dims.len()).expect("at most 4"),
            );
            for &dim in &tensor.dims {
                head.extend_from_slice(&dim.to_le_bytes());
            }
            put_u32(&mut head, GGML_F32);
            put_len(&mut head, offset);
            offset += (tensor.data.len() * 4).next_multiple_of(ALIGNMENT);
        }
        head.resize(head.len().next_multiple_of(ALIGNMENT), 0);
        out.write_all(&head)?;
        let mut data = Vec::new();
        for tensor in &self.tensors {
            data.clear();
            for x in &tensor.data {
                data.extend_from_slice(&x.to_le_bytes());
            }
            data.resize(data.len().next_multiple_of(ALIGNMENT), 0);
            out.write_all(&data)?;
        }
        out.flush()
    }
}

impl Value {
    /// GGUF's id of this value's type.
    fn type_id(&self) -> u32 {
        match self {
            Self::Array(_) => 9,
            Self::Bool(_) => 7,
            Self::F32(_) => 6,
            Self::F64(_) => 12,
            Self::I8(_) => 1,
            Self::I16(_) => 3,
            Self::I32(_) => 5,
            Self::I64(_) => 11,
            Self::String(_) => 8,
            Self::U8(_) => 0,
            Self::U16(_) => 2,
            Self::U32(_) => 4,
            Self::U64(_) => 10,
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Array(array) => array.put(out),
            Self::Bool(b) => out.push(u8::from(*b)),
            Self::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Self::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Self::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
            Self::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Self::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Self::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Self::String(s) => put_string(out, s),
            Self::U8(x) => out.push(*x),
            Self::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Self::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Self::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
}

/// Appends each number's little-endian bytes.
macro_rules! put_numbers {
    ($out:expr, $numbers:expr) => {
        for x in $numbers {
            $out.extend_from_slice(&x.to_le_bytes());
        }
    };
}

impl Array {
    /// GGUF's id of the elements' type.
    fn type_id(&self) -> u32 {
        match self {
            Self::Bool(_) => 7,
            Self::F32(_) => 6,
            Self::F64(_) => 12,
            Self::I8(_) => 1,
            Self::I16(_) => 3,
            Self::I32(_) => 5,
            Self::I64(_) => 11,
            Self::String(_) => 8,
            Self::U8(_) => 0,
            Self::U16(_) => 2,
            Self::U32(_) => 4,
            Self::U64(_) => 10,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Bool(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::String(v) => v.len(),
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::U64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, out: &mut Vec<u8>) {
        put_u32(out, self.type_id());
        put_len(out, self.len());
        match self {
            Self::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
            Self::F32(v) => put_numbers!(out, v),
            Self::F64(v) => put_numbers!(out, v),
            Self::I8(v) => put_numbers!(out, v),
            Self::I16(v) => put_numbers!(out, v),
            Self::I32(v) => put_numbers!(out, v),
            Self::I64(v) => put_numbers!(out, v),
            Self::String(v) => v.iter().for_each(|s| put_string(out, s)),
            Self::U8(v) => out.extend_from_slice(v),
            Self::U16(v) => put_numbers!(out, v),
            Self::U32(v) => put_numbers!(out, v),
            Self::U64(v) => put_numbers!(out, v),
        }
    }
}

/// `From` for a scalar type and for a `Vec` of it.
macro_rules! from_rust {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for Value {
            fn from(x: $ty) -> Self {
                Self::$variant(x)
            }
        }

        impl From<Vec<$ty>> for Value {
            fn from(v: Vec<$ty>) -> Self {
                Self::Array(Array::$variant(v))
            }
        }
    )*};
}

from_rust! {
    Bool(bool), F32(f32), F64(f64), I8(i8), I16(i16), I32(i32), I64(i64),
    String(String), U8(u8), U16(u16), U32(u32), U64(u64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<Array> for Value {
    fn from(array: Array) -> Self {
        Self::Array(array)
    }
}

fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// A count or length, which GGUF keeps in a u64.
fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    //! A reader just big enough to check what the writer wrote, value by value.

    use super::*;

    /// A parsed GGUF file.
    #[derive(Debug)]
    pub(crate) struct Parsed {
        pub metadata: Vec<(String, Value)>,
        /// Name, shape and numbers of each tensor.
        pub tensors: Vec<(String, Vec<u64>, Vec<f32>)>,
        pub version: u32,
    }

    impl Parsed {
        #[track_caller]
        pub fn value(&self, key: &str) -> &Value {
            &self
                .metadata
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("no key {key}"))
                .1
        }

        #[track_caller]
        pub fn tensor(&self, name: &str) -> (&[u64], &[f32]) {
            let (_, dims, data) = self
                .tensors
                .iter()
                .find(|(n, ..)| n == name)
                .unwrap_or_else(|| panic!("no tensor {name}"));
            (dims, data)
        }
    }

    struct Cursor<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let out = &self.bytes[self.at..self.at + n];
            self.at += n;
            out
        }

        fn array<const N: usize>(&mut self) -> [u8; N] {
            self.take(N).try_into().expect("N bytes")
        }

        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.array())
        }

        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.array())
        }

        fn len(&mut self) -> usize {
            usize::try_from(self.u64()).expect("fits")
        }

        fn string(&mut self) -> String {
            let n = self.len();
            String::from_utf8(self.take(n).to_vec()).expect("UTF-8")
        }

        fn many<T>(&mut self, mut one: impl FnMut(&mut Self) -> T) -> Vec<T> {
            let n = self.len();
            (0..n).map(|_| one(self)).collect()
        }

        fn value(&mut self, ty: u32) -> Value {
            match ty {
                0 => Value::U8(self.array::<1>()[0]),
                1 => Value::I8(i8::from_le_bytes(self.array())),
                2 => Value::U16(u16::from_le_bytes(self.array())),
                3 => Value::I16(i16::from_le_bytes(self.array())),
                4 => Value::U32(self.u32()),
                5 => Value::I32(i32::from_le_bytes(self.array())),
                6 => Value::F32(f32::from_le_bytes(self.array())),
                7 => Value::Bool(match self.array::<1>()[0] {
                    0 => false,
                    1 => true,
                    b => panic!("bool byte {b}"),
                }),
                8 => Value::String(self.string()),
                9 => Value::Array(self.array_value()),
                10 => Value::U64(self.u64()),
                11 => Value::I64(i64::from_le_bytes(self.array())),
                12 => Value::F64(f64::from_le_bytes(self.array())),
                _ => panic!("unknown GGUF type {ty}"),
            }
        }

        fn array_value(&mut self) -> Array {
            let ty = self.u32();
            let values = self.many(|c| c.value(ty));
            macro_rules! unwrap {
                ($variant:ident) => {
                    Array::$variant(
                        values
                            .into_iter()
                            .map(|v| match v {
                                Value::$variant(x) => x,
                                _ => unreachable!(),
                            })
                            .collect(),
                    )
                };
            }
            match ty {
                0 => unwrap!(U8),
                1 => unwrap!(I8),
                2 => unwrap!(U16),
                3 => unwrap!(I16),
                4 => unwrap!(U32),
                5 => unwrap!(I32),
                6 => unwrap!(F32),
                7 => unwrap!(Bool),
                8 => unwrap!(String),
                10 => unwrap!(U64),
                11 => unwrap!(I64),
                12 => unwrap!(F64),
                _ => panic!("array of GGUF type {ty}"),
            }
        }
    }

    /// Parses a whole file, checking the layout llama.cpp insists on: tensors back to
    /// back from an aligned start, each padded to the alignment, the file ending there.
    #[track_caller]
    pub(crate) fn parse(bytes: &[u8]) -> Parsed {
        let mut c = Cursor { bytes, at: 0 };
        assert_eq!(c.take(4), b"GGUF");
        let version = c.u32();
        let tensor_count = c.len();
        let metadata_count = c.len();
        let metadata = (0..metadata_count)
            .map(|_| {
                let key = c.string();
                let ty = c.u32();
                (key, c.value(ty))
            })
            .collect();
        let infos: Vec<_> = (0..tensor_count)
            .map(|_| {
                let name = c.string();
                let n = usize::try_from(c.u32()).expect("fits");
                let dims: Vec<u64> = (0..n).map(|_| c.u64()).collect();
                assert_eq!(c.u32(), GGML_F32, "{name} is F32");
                (name, dims, c.len())
            })
            .collect();
        let start = c.at.next_multiple_of(ALIGNMENT);
        assert!(bytes[c.at..start].iter().all(|b| *b == 0), "zero padding");
        let mut expected = 0;
        let tensors = infos
            .into_iter()
            .map(|(name, dims, offset)| {
                assert_eq!(offset, expected, "{name} follows the one before");
                let n = usize::try_from(dims.iter().product::<u64>()).expect("fits");
                let data = bytes[start + offset..start + offset + 4 * n]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                expected = offset + (4 * n).next_multiple_of(ALIGNMENT);
                (name, dims, data)
            })
            .collect();
        assert_eq!(
            bytes.len(),
            start + expected,
            "the file ends after the data"
        );
        Parsed {
            metadata,
            tensors,
            version,
        }
    }

    #[test]
    fn every_value_type_reads_back() {
        let metadata: Vec<(&str, Value)> = vec![
            ("a.u8", 7u8.into()),
            ("a.i8", (-7i8).into()),
            ("a.u16", 700u16.into()),
            ("a.i16", (-700i16).into()),
            ("a.u32", 70_000u32.into()),
            ("a.i32", (-70_000i32).into()),
            ("a.f32", 1.5f32.into()),
            ("a.bool", true.into()),
            ("a.string", "héllo".into()),
            ("a.u64", (1u64 << 40).into()),
            ("a.i64", (-1i64 << 40).into()),
            ("a.f64", 0.1f64.into()),
            ("b.strings", vec![String::new(), "x".to_owned()].into()),
            ("b.i32s", vec![1i32, -2].into()),
            ("b.f32s", vec![0.5f32, -0.25].into()),
            ("b.bools", vec![false, true].into()),
            ("b.u8s", vec![1u8, 2, 3].into()),
            ("b.empty", Array::U64(Vec::new()).into()),
        ];
        let mut writer = Writer::new();
        for (key, value) in &metadata {
            writer.metadata(key, value.clone());
        }
        let parsed = parse(&writer.to_bytes());
        assert_eq!(parsed.version, 3);
        assert!(parsed.tensors.is_empty());
        let expected: Vec<_> = metadata
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(parsed.metadata, expected);
    }

    #[test]
    fn tensors_are_aligned_and_padded() {
        let bytes = Writer::new()
            .metadata("general.architecture", "llama")
            .tensor("odd", &[3], vec![1.0, 2.0, 3.0])
            .tensor("matrix", &[2, 3], (0..6u8).map(f32::from).collect())
            .to_bytes();
        assert_eq!(bytes.len() % ALIGNMENT, 0);
        let parsed = parse(&bytes);
        assert_eq!(parsed.tensor("odd"), (&[3][..], &[1.0, 2.0, 3.0][..]));
        assert_eq!(
            parsed.tensor("matrix"),
            (&[2, 3][..], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0][..])
        );
    }

    #[test]
    fn the_header_is_byte_exact() {
        let bytes = Writer::new().metadata("k", 1u8).to_bytes();
        let mut expected = b"GGUF".to_vec();
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(&0u64.to_le_bytes()); // tensors
        expected.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
        expected.extend_from_slice(&1u64.to_le_bytes()); // key length
        expected.push(b'k');
        expected.extend_from_slice(&0u32.to_le_bytes()); // u8
        expected.push(1);
        assert_eq!(&bytes[..expected.len()], &expected[..]);
        // No tensors: nothing after the metadata but the padding.
        assert_eq!(bytes.len(), expected.len().next_multiple_of(ALIGNMENT));
    }

    #[test]
    #[should_panic(expected = "GGUF key `k` written twice")]
    fn a_repeated_key_is_a_bug() {
        Writer::new().metadata("k", 1u8).metadata("k", 2u8);
    }

    #[test]
    #[should_panic(expected = "tensor `t` of shape [2, 2]")]
    fn data_must_fill_the_shape() {
        Writer::new().tensor("t", &[2, 2], vec![0.0; 3]);
    }
}

//! GGUF, llama.cpp's model file format.

pub mod fixture;
pub mod writer;

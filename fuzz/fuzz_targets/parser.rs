//! Any text to the KDL parser's fast path and to kdl's parser: the fast path declines
//! it, or builds the very document kdl builds, every span and bit of formatting
//! included. Much faster than `pipeline`, so it explores the parser further.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        openmono::playbook::check_against_kdl(text);
    }
});

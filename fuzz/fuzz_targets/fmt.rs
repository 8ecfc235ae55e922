//! Any text that kdl reads, formatted by `openmono fmt`: still KDL, meaning the same,
//! and formatted in one pass.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        openmono::playbook::formatter::check(text);
    }
});

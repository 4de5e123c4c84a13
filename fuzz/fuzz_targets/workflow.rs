//! A workflow file (YAML, expressions, templates) that does not load must be a validation error
//! with its line, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &[u8]| {
    if let Ok(text) = std::str::from_utf8(text) {
        let _ = herald::workflow::parse_workflow(std::path::Path::new("fuzz.yaml"), text);
    }
});

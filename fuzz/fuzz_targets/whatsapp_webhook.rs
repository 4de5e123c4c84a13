//! A signed Meta webhook body Herald cannot parse must be an error (quarantined), never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = herald::ingress::payload::parse(body);
});

//! An authenticated call-ended body Herald cannot parse must be a 4xx, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = herald::ingress::calls::CallEnded::parse(body);
});

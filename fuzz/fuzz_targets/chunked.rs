//! Arbitrary bytes as a chunked request body (portico_proxy::fuzz::chunked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portico_proxy::fuzz::chunked(data);
});

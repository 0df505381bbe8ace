//! Arbitrary bytes as the start of an HTTP/1.1 request (portico_proxy::fuzz::h1_head).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portico_proxy::fuzz::h1_head(data);
});

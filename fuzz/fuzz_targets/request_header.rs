#![no_main]
//! cargo-fuzz target; the logic is `strand::fuzzing::request_header` (also replayed by tests/fuzz_replay.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strand::fuzzing::request_header(data));

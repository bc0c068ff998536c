//! The OIP V2 request decoder, JSON and the binary tensor extension: any body must decode or
//! give an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    servegraph_engine::protocol::fuzz_decode(data);
});

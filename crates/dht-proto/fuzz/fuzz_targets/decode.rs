//! The decoder must never panic, and whatever it accepts must re-encode to a message that
//! decodes to the same value.
#![no_main]

use dht_proto::{Codec, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let codec = Codec::new(64 * 1024);
    if let Ok(Some((req, _))) = codec.decode_request(data) {
        let mut again = Vec::new();
        codec.encode_request(&req, &mut again).expect("a decoded request re-encodes");
        let (back, _) = codec.decode_request(&again).expect("re-encoded").expect("whole");
        assert_eq!(back, req);
    }
    if let Ok(Some((resp, _))) = codec.decode_response(data) {
        let mut again = Vec::new();
        codec.encode_response(&resp, &mut again).expect("a decoded response re-encodes");
        let (back, _) = codec.decode_response(&again).expect("re-encoded").expect("whole");
        assert_eq!(back, resp);
    }
    let _ = wire::decode_request_body(data);
    let _ = wire::decode_response_body(data);
});

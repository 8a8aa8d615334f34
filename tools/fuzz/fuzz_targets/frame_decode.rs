//! Any bytes as a wire frame: decoding returns a frame or an error, never panics; a frame
//! that decodes re-encodes to something that decodes to the same frame.
#![no_main]
use gossip_roster::message::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
    }
});

//! Any bytes as a WAL segment (after a valid header) and as a header: the scan stops at the
//! first bad record and classifies it, never panics; what it accepts re-encodes identically.
#![no_main]
use gossip_roster::store::segment::{self, decode_header, encode_header, scan_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data, 1);
    let mut bytes = encode_header(1).to_vec();
    bytes.extend_from_slice(data);
    let mut again = encode_header(1).to_vec();
    let scan = scan_records(&bytes, 1, |_, rec| segment::encode_record(&mut again, &rec));
    assert_eq!(&again[..], &bytes[..scan.valid_len as usize]);
});

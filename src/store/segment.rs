//! WAL segment files: naming, header, record framing, and scanning one segment.
//!
//! ```text
//! header (32 bytes): magic "GRWAL\0\r\n" | u32 format version | u32 flags (0)
//!                    | u64 first LSN | u32 crc32 of the 24 bytes before | u32 reserved (0)
//! record:            u32 LE payload length | u32 LE crc32(length bytes ++ payload) | payload
//! payload:           rmp-serde of WalRecord { lsn, unix_ms, event }
//! ```
//! The CRC covers the length field too, so a torn length is caught like a torn payload.

use crate::event::{ClusterEvent, Lsn};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 8] = *b"GRWAL\0\r\n";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 8;
/// Larger length fields are damage, not data: no event comes near this.
pub const MAX_RECORD_LEN: u32 = 16 << 20;

/// One logged event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    pub lsn: Lsn,
    pub unix_ms: u64,
    pub event: ClusterEvent,
}

/// `00000000000000000042.log` holds records from LSN 42 on.
pub fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.log")
}

pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Segment files of `wal_dir`, oldest first. Other files (`.broken` copies) are ignored.
pub fn list_segments(wal_dir: &Path) -> std::io::Result<Vec<(Lsn, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(wal_dir)? {
        let entry = entry?;
        if let Some(lsn) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((lsn, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

pub fn encode_header(first_lsn: Lsn) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than HEADER_LEN bytes: a segment whose creation was cut short.
    Short(usize),
    /// Zero bytes only: a header that never reached the disk (a power loss before the
    /// segment's first sync, which always covers its header).
    Blank,
    BadMagic,
    BadCrc,
    /// Written by a newer format; never touched.
    TooNew(u32),
    /// The reserved bytes (outside the checksum) are not zero.
    Reserved,
    /// The header's first LSN disagrees with the file name.
    LsnMismatch {
        header: Lsn,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short(n) => {
                write!(f, "segment header cut short ({n} of {HEADER_LEN} bytes)")
            }
            HeaderError::Blank => write!(f, "segment header is blank (never reached the disk)"),
            HeaderError::BadMagic => write!(f, "not a WAL segment (bad magic)"),
            HeaderError::BadCrc => write!(f, "segment header checksum mismatch"),
            HeaderError::TooNew(v) => {
                write!(
                    f,
                    "segment format version {v} is newer than supported ({FORMAT_VERSION})"
                )
            }
            HeaderError::Reserved => write!(f, "segment header reserved bytes are not zero"),
            HeaderError::LsnMismatch { header } => {
                write!(f, "header says first LSN {header}, file name disagrees")
            }
        }
    }
}

/// Checks a segment header; returns the format version.
pub fn decode_header(bytes: &[u8], name_lsn: Lsn) -> Result<u32, HeaderError> {
    if bytes.len() < HEADER_LEN {
        return Err(HeaderError::Short(bytes.len()));
    }
    if bytes[..HEADER_LEN].iter().all(|&b| b == 0) {
        return Err(HeaderError::Blank);
    }
    if bytes[0..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    if crc != crc32fast::hash(&bytes[0..24]) {
        return Err(HeaderError::BadCrc);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version > FORMAT_VERSION {
        return Err(HeaderError::TooNew(version));
    }
    if bytes[28..32] != [0; 4] {
        return Err(HeaderError::Reserved);
    }
    let header_lsn = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    if header_lsn != name_lsn {
        return Err(HeaderError::LsnMismatch { header: header_lsn });
    }
    Ok(version)
}

/// Appends one framed record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, record: &WalRecord) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    rmp_serde::encode::write(buf, record).expect("encoding into a Vec cannot fail");
    let len = (buf.len() - start - RECORD_HEADER_LEN) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&buf[start + RECORD_HEADER_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&hasher.finalize().to_le_bytes());
}

/// Why the bytes at some offset are not a good record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The file ends inside the record (or inside its 8-byte frame header).
    Truncated {
        needed: usize,
        available: usize,
    },
    /// The length field is beyond anything we write.
    BadLength(u32),
    CrcMismatch,
    /// The checksum is right but the payload does not decode: written wrong, not torn.
    Decode(String),
    /// A well-formed record with the wrong LSN: records are missing or repeated.
    LsnMismatch {
        expected: Lsn,
        found: Lsn,
    },
}

impl RecordError {
    /// Damage a crash in the middle of an append can leave behind. Anything else is not torn.
    pub fn may_be_torn(&self) -> bool {
        matches!(
            self,
            RecordError::Truncated { .. } | RecordError::BadLength(_) | RecordError::CrcMismatch
        )
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated { needed, available } => {
                write!(f, "record cut short ({available} of {needed} bytes)")
            }
            RecordError::BadLength(n) => write!(f, "impossible record length {n}"),
            RecordError::CrcMismatch => write!(f, "record checksum mismatch"),
            RecordError::Decode(e) => write!(f, "record does not decode: {e}"),
            RecordError::LsnMismatch { expected, found } => {
                write!(f, "expected LSN {expected}, found {found}")
            }
        }
    }
}

/// Checks the frame at the start of `bytes`; returns the payload and the frame's total length.
pub fn check_frame(bytes: &[u8]) -> Result<(&[u8], usize), RecordError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Truncated {
            needed: RECORD_HEADER_LEN,
            available: bytes.len(),
        });
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    if len > MAX_RECORD_LEN {
        return Err(RecordError::BadLength(len));
    }
    let total = RECORD_HEADER_LEN + len as usize;
    if bytes.len() < total {
        return Err(RecordError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..4]);
    hasher.update(&bytes[RECORD_HEADER_LEN..total]);
    if hasher.finalize() != crc {
        return Err(RecordError::CrcMismatch);
    }
    Ok((&bytes[RECORD_HEADER_LEN..total], total))
}

/// Decodes the record at the start of `bytes`; returns it and its framed length.
pub fn decode_record(bytes: &[u8]) -> Result<(WalRecord, usize), RecordError> {
    let (payload, total) = check_frame(bytes)?;
    let record = rmp_serde::from_slice(payload).map_err(|e| RecordError::Decode(e.to_string()))?;
    Ok((record, total))
}

/// How a segment's records ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    Clean,
    Bad {
        offset: u64,
        /// The LSN the bad record should have had.
        lsn: Lsn,
        error: RecordError,
        /// A good record with a later LSN starts somewhere after the bad one.
        followed_by_valid: bool,
    },
}

/// The outcome of reading one segment body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// Records that passed every check.
    pub records: u64,
    /// Byte length up to the end of the last good record (header included).
    pub valid_len: u64,
    pub end: SegmentEnd,
}

/// Reads the records of a segment whose header is already checked, feeding each good one
/// (with its offset) to `on_record`. Stops at the first bad record.
pub fn scan_records(
    bytes: &[u8],
    first_lsn: Lsn,
    mut on_record: impl FnMut(u64, WalRecord),
) -> SegmentScan {
    let mut offset = HEADER_LEN;
    let mut expected = first_lsn;
    while offset < bytes.len() {
        let result = decode_record(&bytes[offset..]).and_then(|(rec, len)| {
            if rec.lsn == expected {
                Ok((rec, len))
            } else {
                Err(RecordError::LsnMismatch {
                    expected,
                    found: rec.lsn,
                })
            }
        });
        match result {
            Ok((rec, len)) => {
                on_record(offset as u64, rec);
                offset += len;
                expected += 1;
            }
            Err(error) => {
                let followed_by_valid = valid_record_after(bytes, offset + 1, expected);
                return SegmentScan {
                    records: expected - first_lsn,
                    valid_len: offset as u64,
                    end: SegmentEnd::Bad {
                        offset: offset as u64,
                        lsn: expected,
                        error,
                        followed_by_valid,
                    },
                };
            }
        }
    }
    SegmentScan {
        records: expected - first_lsn,
        valid_len: offset as u64,
        end: SegmentEnd::Clean,
    }
}

/// Whether any offset from `from` on starts a good record with LSN >= `min_lsn`.
/// Only runs on the failure path; implausible lengths are rejected before any checksum.
pub fn valid_record_after(bytes: &[u8], from: usize, min_lsn: Lsn) -> bool {
    (from..bytes.len().saturating_sub(RECORD_HEADER_LEN)).any(|p| {
        let len = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
        len > 0
            && p + RECORD_HEADER_LEN + len <= bytes.len()
            && matches!(decode_record(&bytes[p..]), Ok((rec, _)) if rec.lsn >= min_lsn)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NodeId;
    use proptest::prelude::*;

    fn rec(lsn: Lsn) -> WalRecord {
        WalRecord {
            lsn,
            unix_ms: 1_700_000_000_000 + lsn,
            event: ClusterEvent::ActorAdded {
                node: NodeId::new("n1"),
                generation: 1,
                version: lsn,
                actor: format!("actor-{lsn}"),
            },
        }
    }

    fn segment(first: Lsn, n: u64) -> Vec<u8> {
        let mut buf = encode_header(first).to_vec();
        for lsn in first..first + n {
            encode_record(&mut buf, &rec(lsn));
        }
        buf
    }

    #[test]
    fn names_round_trip_and_reject_strangers() {
        assert_eq!(segment_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("00000000000000000042.log.broken"), None);
        assert_eq!(parse_segment_name("42.log"), None);
    }

    #[test]
    fn header_checks() {
        let h = encode_header(7);
        assert_eq!(decode_header(&h, 7), Ok(FORMAT_VERSION));
        assert_eq!(
            decode_header(&h, 8),
            Err(HeaderError::LsnMismatch { header: 7 })
        );
        assert_eq!(decode_header(&h[..10], 7), Err(HeaderError::Short(10)));
        assert_eq!(decode_header(&[0; HEADER_LEN], 7), Err(HeaderError::Blank));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(decode_header(&bad, 7), Err(HeaderError::BadCrc));
        bad = h;
        bad[0] = b'X';
        assert_eq!(decode_header(&bad, 7), Err(HeaderError::BadMagic));
        // Found by the byte-flip proptest: the reserved bytes sit outside the checksum.
        bad = h;
        bad[30] ^= 1;
        assert_eq!(decode_header(&bad, 7), Err(HeaderError::Reserved));
    }

    #[test]
    fn clean_segment_scans_every_record() {
        let bytes = segment(5, 10);
        let mut seen = Vec::new();
        let scan = scan_records(&bytes, 5, |_, r| seen.push(r.lsn));
        assert_eq!(scan.end, SegmentEnd::Clean);
        assert_eq!(scan.records, 10);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert_eq!(seen, (5..15).collect::<Vec<_>>());
    }

    #[test]
    fn torn_tail_is_not_followed_by_valid_records() {
        let full = segment(1, 5);
        let four = segment(1, 4).len();
        let torn = &full[..full.len() - 3];
        let scan = scan_records(torn, 1, |_, _| {});
        assert_eq!(scan.valid_len, four as u64);
        match scan.end {
            SegmentEnd::Bad {
                lsn: 5,
                followed_by_valid: false,
                ref error,
                ..
            } => {
                assert!(error.may_be_torn())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn flipped_byte_in_the_middle_is_followed_by_valid_records() {
        let mut bytes = segment(1, 5);
        let second = HEADER_LEN + (segment(1, 1).len() - HEADER_LEN) + 12;
        bytes[second] ^= 0x40;
        let scan = scan_records(&bytes, 1, |_, _| {});
        assert!(matches!(
            scan.end,
            SegmentEnd::Bad {
                lsn: 2,
                followed_by_valid: true,
                ..
            }
        ));
    }

    #[test]
    fn wrong_lsn_is_reported() {
        let mut bytes = encode_header(1).to_vec();
        encode_record(&mut bytes, &rec(1));
        encode_record(&mut bytes, &rec(3));
        let scan = scan_records(&bytes, 1, |_, _| {});
        assert!(matches!(
            scan.end,
            SegmentEnd::Bad {
                error: RecordError::LsnMismatch {
                    expected: 2,
                    found: 3
                },
                ..
            }
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(256) })]
        /// Decoding arbitrary bytes never panics, and a good record always round-trips.
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_record(&bytes);
            let _ = decode_header(&bytes, 1);
            let _ = scan_records(&bytes, 1, |_, _| {});
        }

        #[test]
        fn records_round_trip(lsn in 1u64..u64::MAX, actor in ".{0,40}") {
            let r = WalRecord { lsn, unix_ms: 1, event: ClusterEvent::ActorRemoved {
                node: NodeId::new("x"), generation: 2, version: 3, actor } };
            let mut buf = Vec::new();
            encode_record(&mut buf, &r);
            prop_assert_eq!(decode_record(&buf), Ok((r, buf.len())));
        }
    }
}

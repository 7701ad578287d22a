//! The Avro spec's 64-bit Rabin fingerprint (CRC-64-AVRO) of a schema's Parsing Canonical Form.
//!
//! Written out here rather than taken from apache-avro so that the single-object header's byte order is
//! pinned by our own tests (and checked against fastavro in CI), whatever the library version does.

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const fn table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
}

static TABLE: [u64; 256] = table();

/// Fingerprint of `data` (the canonical form's UTF-8 bytes).
pub fn fingerprint(data: &[u8]) -> u64 {
    data.iter().fold(EMPTY, |fp, &byte| (fp >> 8) ^ TABLE[((fp ^ u64::from(byte)) & 0xff) as usize])
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn matches_the_spec_test_vectors() {
        // Values from the Avro reference implementation's fingerprint test suite.
        assert_eq!(fingerprint(br#""null""#) as i64, 7195948357588979594);
        assert_eq!(fingerprint(br#""boolean""#) as i64, -6970731678124411036);
        assert_eq!(fingerprint(br#"{"name":"foo","type":"fixed","size":15}"#) as i64, 1756455273707447556);
    }
}

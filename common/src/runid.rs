//! Run ids: the `LAGER_PROCESS_ID` a `lager python` run is known by
//! (runner.md §1–§2). The CLI makes one; lagerd checks it (and makes one
//! when a client sent none), so both spell the format here.

/// Formats 16 random bytes as a version-4 UUID (`8-4-4-4-12` lower hex).
pub fn uuid4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether `text` has the shape of a UUID (any version, any hex case).
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_version_4_uuids() {
        let id = uuid4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(is_uuid(&id));
        assert_eq!(uuid4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn recognises_uuids_only() {
        assert!(is_uuid("6F1C7F3A-1b2c-4d5e-8f90-0123456789ab"));
        for bad in [
            "",
            "6f1c7f3a1b2c4d5e8f900123456789ab",
            "6f1c7f3a-1b2c-4d5e-8f90-0123456789az",
            "../../etc/x-y-z-w",
            "a-b-c-d-e",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }
}

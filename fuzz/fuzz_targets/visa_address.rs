//! VISA address parsing (instruments.md §1): any text either parses or is
//! refused, and a parsed address's canonical form parses to itself.
#![no_main]

use common::addr::Address;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = Address::parse(text) {
        let canonical = address.canonical();
        let again = Address::parse(&canonical).expect("a canonical address parses");
        assert_eq!(again.canonical(), canonical);
    }
});

//! Serial console input (console.md §1, §3): the stream's frame decoder fed
//! arbitrary bytes in arbitrary pieces, a uart net's address and params as
//! any JSON, and a reader's position query. Each either parses or is
//! refused; nothing panics, and what encodes decodes to itself.
#![no_main]

use common::console::{encode, Decoder, Kind};
use lagerd::console::params::{PortSpec, SerialParams};
use lagerd::console::Position;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Frames: the first byte picks where the input is split.
    let split = data.first().map_or(0, |b| *b as usize) % (data.len().max(1));
    let mut decoder = Decoder::new();
    for piece in [&data[..split], &data[split..]] {
        decoder.feed(piece);
        while let Ok(Some(frame)) = decoder.next_frame() {
            let mut again = Vec::new();
            encode(
                &mut again,
                frame.kind,
                frame.offset,
                frame.time_us,
                frame.payload,
            );
            let mut check = Decoder::new();
            check.feed(&again);
            let round = check
                .next_frame()
                .expect("re-encoded frame decodes")
                .expect("whole");
            assert_eq!(
                (round.kind, round.offset, round.payload),
                (frame.kind, frame.offset, frame.payload)
            );
        }
    }
    let _ = Kind::Data;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = PortSpec::parse(text);
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        if let Ok(params) = SerialParams::from_json(Some(&value)) {
            let normalized = params.to_json();
            assert_eq!(
                SerialParams::from_json(Some(&normalized)).as_ref(),
                Ok(&params)
            );
        }
    }
    let mut parts = text.splitn(3, '&');
    let _ = Position::from_query(parts.next(), parts.next(), parts.next());
});

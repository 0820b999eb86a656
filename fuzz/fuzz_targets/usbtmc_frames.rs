//! USB-TMC framing (`lagerd/src/instruments/usbtmc.rs`), both directions:
//! any transfer or bulk-OUT stream is parsed or refused without a panic,
//! the device side reassembles exactly the messages the host framed however
//! the packets split them, and the host reads back exactly what the device
//! framed.
#![no_main]

use lager_fuzz::pieces;
use lagerd::instruments::usbtmc::{
    dev_dep_msg_in, dev_dep_msg_out, parse_dev_dep_msg_in, request_dev_dep_msg_in, take_bulk_out,
    BulkOut, HEADER_LEN,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// A reply transfer as any device may send it.
    Reply { expected_tag: u8, bytes: Vec<u8> },
    /// A bulk-OUT stream as any host may send it, in packets.
    Stream { bytes: Vec<u8>, cuts: Vec<u8> },
    /// Host messages framed by lagerd, arriving in packets.
    HostToDevice {
        messages: Vec<Message>,
        cuts: Vec<u8>,
    },
    /// A device reply framed by the simulator.
    DeviceToHost {
        tag: u8,
        payload: Vec<u8>,
        eom: bool,
        padding: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Message {
    Command {
        tag: u8,
        payload: Vec<u8>,
        eom: bool,
    },
    Request {
        tag: u8,
        max_len: u32,
    },
}

/// Feeds `packets` to the device side; returns what it took off the stream.
fn device_reads(packets: &[&[u8]]) -> Vec<Result<BulkOut, String>> {
    let mut stream = Vec::new();
    let mut taken = Vec::new();
    for packet in packets {
        stream.extend_from_slice(packet);
        loop {
            let before = stream.len();
            match take_bulk_out(&mut stream) {
                Ok(Some(message)) => {
                    assert!(stream.len() < before, "a message consumes bytes");
                    taken.push(Ok(message));
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(stream.is_empty(), "a broken header drops the stream");
                    taken.push(Err(e.to_string()));
                    break;
                }
            }
        }
    }
    taken
}

fuzz_target!(|input: Input| match input {
    Input::Reply {
        expected_tag,
        bytes,
    } => {
        if let Ok(message) = parse_dev_dep_msg_in(expected_tag, &bytes) {
            assert!(bytes.len() >= HEADER_LEN + message.payload.len());
            assert_eq!(bytes[1], expected_tag);
        }
    }
    Input::Stream { bytes, cuts } => {
        device_reads(&pieces(&bytes, &cuts));
    }
    Input::HostToDevice { messages, cuts } => {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for message in messages {
            match message {
                // Over 64 KiB the device refuses a command at its header.
                Message::Command { payload, .. } if payload.len() > 64 * 1024 => return,
                Message::Command { tag, payload, eom } => {
                    stream.extend_from_slice(&dev_dep_msg_out(tag, &payload, eom));
                    expected.push(Ok(BulkOut::Command { tag, payload, eom }));
                }
                Message::Request { tag, max_len } => {
                    stream.extend_from_slice(&request_dev_dep_msg_in(tag, max_len));
                    expected.push(Ok(BulkOut::Request { tag, max_len }));
                }
            }
        }
        assert_eq!(device_reads(&pieces(&stream, &cuts)), expected);
    }
    Input::DeviceToHost {
        tag,
        payload,
        eom,
        padding,
    } => {
        let mut transfer = dev_dep_msg_in(tag, &payload, eom);
        assert_eq!(transfer.len() % 4, 0, "aligned to four bytes");
        // Devices may send more alignment than needed; it is ignored.
        transfer.extend(std::iter::repeat_n(0, usize::from(padding % 8)));
        let message = parse_dev_dep_msg_in(tag, &transfer).expect("its own reply parses");
        assert_eq!((message.payload, message.eom), (&payload[..], eom));
        if let Some(other) = tag.checked_add(1) {
            assert!(
                parse_dev_dep_msg_in(other, &transfer).is_err(),
                "tags are checked"
            );
        }
    }
});

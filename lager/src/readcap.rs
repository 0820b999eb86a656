//! Reads with a bound (issue 12): a file the user points at, an ssh
//! command's output, a line typed at a prompt. None of them may become a
//! buffer as large as whatever is there: `~/.lager` could be a FIFO, a
//! script path could name a disk image, a box could print without end.

use std::io::{self, BufRead, Read};
use std::path::Path;

/// The whole of `path` if it has at most `max` bytes; a longer file is an
/// `InvalidData` error that says how much lager reads.
pub fn read_file(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is larger than {}, the most lager reads for it",
                size(max)
            ),
        ));
    }
    Ok(bytes)
}

/// Reads `reader` to its end (so a writer never blocks on a full pipe),
/// keeping its first `head` and last `tail` bytes; what was dropped between
/// them is replaced by one line saying how much.
pub fn drain(mut reader: impl Read, head: usize, tail: usize) -> Vec<u8> {
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut dropped = 0u64;
    let mut block = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut data = &block[..n];
        let room = head - first.len();
        first.extend_from_slice(&data[..room.min(data.len())]);
        data = &data[room.min(data.len())..];
        last.extend_from_slice(data);
        if last.len() > 2 * tail.max(1) {
            let cut = last.len() - tail;
            dropped += cut as u64;
            last.drain(..cut);
        }
    }
    if last.len() > tail {
        dropped += (last.len() - tail) as u64;
        last.drain(..last.len() - tail);
    }
    if dropped > 0 {
        first.extend_from_slice(format!("\n[... {dropped} bytes not kept ...]\n").as_bytes());
    }
    first.extend_from_slice(&last);
    first
}

/// One line of at most `max` bytes (a longer one is cut there); `Ok(0)` at
/// the end of input, as `BufRead::read_line`.
pub fn read_line(reader: &mut impl BufRead, line: &mut String, max: usize) -> io::Result<usize> {
    let mut bytes = Vec::new();
    let n = Read::take(&mut *reader, max as u64).read_until(b'\n', &mut bytes)?;
    line.push_str(&String::from_utf8_lossy(&bytes));
    Ok(n)
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_streams_and_lines_are_bounded() {
        let err = read_file(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is larger than 1 MiB, the most lager reads for it"
        );
        let endless = io::repeat(b'x').take(10 << 20);
        let kept = drain(endless, 4, 4);
        assert_eq!(kept, b"xxxx\n[... 10485752 bytes not kept ...]\nxxxx");
        assert_eq!(drain(&b"short"[..], 4, 4), b"short");
        assert_eq!(
            drain(&b"0123456789"[..], 4, 4),
            b"0123\n[... 2 bytes not kept ...]\n6789"
        );
        let mut line = String::new();
        let mut input = &b"yes\nno\n"[..];
        assert_eq!(read_line(&mut input, &mut line, 16).unwrap(), 4);
        assert_eq!(line, "yes\n");
        let mut line = String::new();
        let mut endless = io::BufReader::new(io::repeat(b'y'));
        assert_eq!(read_line(&mut endless, &mut line, 16).unwrap(), 16);
    }
}

//! Octet-counting framing (RFC 6587 section 3.4.1, also the framing of RFC 5425):
//! `MSG-LEN SP SYSLOG-MSG`, where MSG-LEN is the byte length in decimal without leading
//! zeros. Unlike newline framing it survives a record that contains a newline, which matters
//! because a formatted record must never be split into two by the receiver.

use std::fmt;

/// Appends one frame for `message` to `out`.
pub fn encode_frame(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message.as_bytes());
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is not a decimal number followed by a space.
    BadLength { offset: usize },
    /// The frame announces more bytes than the decoder accepts.
    TooLong { offset: usize, length: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength { offset } => write!(f, "bad frame length at byte {offset}"),
            FrameError::TooLong { offset, length } => {
                write!(f, "frame at byte {offset} announces {length} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Incremental decoder for a byte stream of octet-counted frames (used by the test peers and
/// available to a future receiver). Bytes can arrive in any split.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    consumed: usize,
    max_length: usize,
}

impl FrameDecoder {
    pub fn new(max_length: usize) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            max_length,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, or `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let digits = self
            .buffer
            .iter()
            .take(20)
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        // Ten digits already exceed any frame a sink sends; more is garbage, not a length.
        if digits > 10 {
            return Err(FrameError::BadLength {
                offset: self.consumed,
            });
        }
        if digits == self.buffer.len() {
            return Ok(None);
        }
        if digits == 0 || self.buffer[digits] != b' ' || self.buffer[0] == b'0' {
            return Err(FrameError::BadLength {
                offset: self.consumed,
            });
        }
        let length: usize = std::str::from_utf8(&self.buffer[..digits])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or(FrameError::BadLength {
                offset: self.consumed,
            })?;
        if length > self.max_length {
            return Err(FrameError::TooLong {
                offset: self.consumed,
                length,
            });
        }
        let end = digits + 1 + length;
        if self.buffer.len() < end {
            return Ok(None);
        }
        let payload = self.buffer[digits + 1..end].to_vec();
        self.buffer.drain(..end);
        self.consumed += end;
        Ok(Some(payload))
    }

    /// Bytes received that do not yet form a complete frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_length_in_bytes_not_chars() {
        let mut out = Vec::new();
        encode_frame("abc", &mut out);
        encode_frame("zoné\nline", &mut out);
        encode_frame("", &mut out);
        assert_eq!(out, "3 abc10 zoné\nline0 ".as_bytes());
    }

    #[test]
    fn decodes_frames_split_anywhere() {
        let mut wire = Vec::new();
        let messages = ["<13>1 - a", "CEF:0|x|y\n|z", "é", "0 1 2"];
        for message in messages {
            encode_frame(message, &mut wire);
        }
        for split in 0..wire.len() {
            let mut decoder = FrameDecoder::new(1024);
            let mut found = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                decoder.push(chunk);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    found.push(String::from_utf8(frame).unwrap());
                }
            }
            assert_eq!(found, messages, "split at {split}");
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn rejects_malformed_lengths() {
        for bad in ["x 1", "05 hello", " 3 abc", "3xabc", "12345678901234 a"] {
            let mut decoder = FrameDecoder::new(1 << 20);
            decoder.push(bad.as_bytes());
            assert!(
                matches!(decoder.next_frame(), Err(FrameError::BadLength { .. })),
                "{bad}"
            );
        }
        let mut decoder = FrameDecoder::new(4);
        decoder.push(b"5 hello");
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLong {
                offset: 0,
                length: 5
            })
        );
    }
}

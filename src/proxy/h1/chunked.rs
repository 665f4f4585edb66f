//! Finding where a chunked body ends, without decoding it.
//!
//! The fast path forwards a chunked response byte for byte (the client gets
//! the same framing the backend sent), so it only has to know where the body
//! stops: there the upstream connection can be reused and the client's next
//! response begins. Every length a peer controls is bounded.

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("malformed chunk size")]
    BadSize,
    #[error("chunk size line longer than {MAX_LINE} bytes")]
    LongLine,
    #[error("chunk data not followed by CRLF")]
    BadDataEnd,
    #[error("trailers longer than {MAX_TRAILERS} bytes")]
    LongTrailers,
    #[error("a trailer holds a bare CR or a NUL")]
    BareCr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size (`digits` seen so far).
    Size {
        digits: u8,
    },
    /// Whitespace after the size (RFC 9112 7.1.1's BWS): only more of it,
    /// `;` or the CR that ends the line may follow.
    SizeWs,
    /// After `;`: extensions up to CR.
    Extension,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR then LF after chunk data (`seen_cr`).
    DataEnd {
        seen_cr: bool,
    },
    /// After the last chunk: trailer lines; `line` bytes in the current one.
    Trailer {
        line: usize,
        seen_cr: bool,
    },
    Done,
}

/// Where a chunked body ends, fed in pieces as they arrive.
#[derive(Debug, Clone)]
pub struct ChunkedEnd {
    state: State,
    size: u64,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        ChunkedEnd {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            trailers: 0,
        }
    }
}

impl ChunkedEnd {
    /// Consumes `buf`: `Some(n)` when the body ends after `n` bytes of it,
    /// `None` when all of it belongs to the body and more is to come.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, ChunkedError> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Done => return Ok(Some(i)),
                State::Data => {
                    let take = (self.size.min((buf.len() - i) as u64)) as usize;
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataEnd { seen_cr: false };
                    }
                    continue;
                }
                State::Size { digits } => {
                    self.count_line()?;
                    match (b as char).to_digit(16) {
                        Some(d) if digits < 16 => {
                            self.size = self.size << 4 | u64::from(d);
                            self.state = State::Size { digits: digits + 1 };
                        }
                        Some(_) => return Err(ChunkedError::BadSize),
                        None if digits == 0 => return Err(ChunkedError::BadSize),
                        None if b == b'\r' => self.state = State::SizeLf,
                        None if b == b';' => self.state = State::Extension,
                        None if b == b' ' || b == b'\t' => self.state = State::SizeWs,
                        None => return Err(ChunkedError::BadSize),
                    }
                }
                // `5 x` was taken for a size of 5 with an extension: a
                // client or cache that reads the line otherwise (as an
                // error, or as another size) frames the body differently.
                State::SizeWs => {
                    self.count_line()?;
                    match b {
                        b' ' | b'\t' => {}
                        b';' => self.state = State::Extension,
                        b'\r' => self.state = State::SizeLf,
                        _ => return Err(ChunkedError::BadSize),
                    }
                }
                State::Extension => {
                    self.count_line()?;
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        // Names, values, quoted strings and BWS: no control
                        // bytes but HTAB (a bare LF could end the line for
                        // another parser).
                        b'\t' => {}
                        0..=0x1f | 0x7f => return Err(ChunkedError::BadSize),
                        _ => {}
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::BadSize);
                    }
                    self.line = 0;
                    self.state = if self.size == 0 {
                        State::Trailer {
                            line: 0,
                            seen_cr: false,
                        }
                    } else {
                        State::Data
                    };
                }
                State::DataEnd { seen_cr } => match (seen_cr, b) {
                    (false, b'\r') => self.state = State::DataEnd { seen_cr: true },
                    (true, b'\n') => {
                        self.size = 0;
                        self.state = State::Size { digits: 0 };
                    }
                    _ => return Err(ChunkedError::BadDataEnd),
                },
                State::Trailer { line, seen_cr } => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkedError::LongTrailers);
                    }
                    self.state = match (seen_cr, b) {
                        (_, b'\n') if line == 0 => State::Done,
                        (_, b'\n') => State::Trailer {
                            line: 0,
                            seen_cr: false,
                        },
                        (false, b'\r') => State::Trailer { line, seen_cr: true },
                        // RFC 9112 2.2: a bare CR must not be forwarded (a
                        // client could take it for a line end); nor NUL.
                        (true, _) => return Err(ChunkedError::BareCr),
                        (false, 0) => return Err(ChunkedError::BareCr),
                        _ => State::Trailer {
                            line: line + 1,
                            seen_cr: false,
                        },
                    };
                }
            }
            i += 1;
        }
        Ok(matches!(self.state, State::Done).then_some(i))
    }

    fn count_line(&mut self) -> Result<(), ChunkedError> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(ChunkedError::LongLine);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; where the end was found.
    fn end_of(body: &[u8], step: usize) -> Result<Option<usize>, ChunkedError> {
        let mut t = ChunkedEnd::default();
        let mut at = 0;
        for piece in body.chunks(step) {
            if let Some(n) = t.advance(piece)? {
                return Ok(Some(at + n));
            }
            at += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_however_the_bytes_arrive() {
        let body = b"5\r\nhello\r\n1a;name=x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ngrpc-status: 0\r\n\r\nNEXT";
        let end = body.len() - 4;
        for step in 1..body.len() {
            assert_eq!(end_of(body, step), Ok(Some(end)), "step {step}");
        }
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        assert_eq!(end_of(b"5\r\nhel", 100), Ok(None));
        assert_eq!(end_of(b"0\r\n", 100), Ok(None));
        assert_eq!(end_of(b"0\r\n\r\n", 100), Ok(Some(5)));
        assert_eq!(end_of(b"0\r\n\n", 100), Ok(Some(4)), "bare LF ends the trailers too");
        // Whitespace before the line end or an extension (BWS), and
        // extensions with tabs, quoted strings and obs-text.
        for ok in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"5\t \t;a=b\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x y\";b\t=\t\xffc\r\nhello\r\n0 ;x\r\n\r\n",
        ] {
            assert_eq!(end_of(ok, 100), Ok(Some(ok.len())), "{ok:?}");
        }
    }

    #[test]
    fn malformed_framing_is_refused() {
        assert_eq!(end_of(b"x\r\n", 100), Err(ChunkedError::BadSize));
        assert_eq!(end_of(b"\r\n", 100), Err(ChunkedError::BadSize));
        assert_eq!(end_of(b"3\r\nabcX", 100), Err(ChunkedError::BadDataEnd));
        assert_eq!(end_of(b"11111111111111111\r\n", 100), Err(ChunkedError::BadSize));
        for bad in [
            &b"5 x\r\nhello\r\n0\r\n\r\n"[..],
            b"5\tx\r\nhello\r\n0\r\n\r\n",
            b"5 0\r\nhello\r\n0\r\n\r\n",
            b"5 \n",
            b"5x\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\n",
            b"0;a\x7f\r\n\r\n",
        ] {
            assert_eq!(end_of(bad, 100), Err(ChunkedError::BadSize), "{bad:?}");
        }
        let long = [b"1;".as_slice(), &[b'a'; MAX_LINE]].concat();
        assert_eq!(end_of(&long, 100), Err(ChunkedError::LongLine));
        assert_eq!(end_of(b"0\r\nx-t: a\rb\r\n\r\n", 100), Err(ChunkedError::BareCr));
        assert_eq!(end_of(b"0\r\nx-t: a\0b\r\n\r\n", 100), Err(ChunkedError::BareCr));
        assert_eq!(end_of(b"0\r\n\rx\r\n", 100), Err(ChunkedError::BareCr));
        let trailers = [b"0\r\n".as_slice(), &[b'a'; MAX_TRAILERS + 1]].concat();
        assert_eq!(end_of(&trailers, 1000), Err(ChunkedError::LongTrailers));
    }

    /// Random bodies (sizes, extensions, trailers) cut at random places,
    /// with random bytes after them: the end is always found exactly; and
    /// mutated bodies never panic. Seeded, so a failure is repeatable.
    #[test]
    fn random_bodies_and_cuts() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xed6e);
        for _ in 0..2000 {
            let mut body = Vec::new();
            for _ in 0..rng.random_range(0..5) {
                let n = rng.random_range(1..300usize);
                body.extend_from_slice(format!("{n:x}").as_bytes());
                if rng.random_bool(0.2) {
                    body.extend_from_slice(b";a=b");
                }
                body.extend_from_slice(b"\r\n");
                body.extend((0..n).map(|_| rng.random::<u8>()));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            if rng.random_bool(0.3) {
                body.extend_from_slice(b"x-t: 1\r\n");
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend((0..rng.random_range(0..20)).map(|_| rng.random::<u8>()));
            let step = rng.random_range(1..64);
            assert_eq!(end_of(&body, step), Ok(Some(end)));
            // Damage: any outcome but a panic is fine.
            let i = rng.random_range(0..body.len());
            body[i] = rng.random();
            let _ = end_of(&body, step);
        }
    }
}

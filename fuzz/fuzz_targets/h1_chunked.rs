//! The chunked framing tracker (`chunked::ChunkedEnd`), which decides where
//! a forwarded chunked body ends (and so where the next response on the
//! upstream connection begins), against a plain reference decoder of RFC
//! 9112 7.1 with the tracker's documented limits and leniencies:
//! - chunk-size: 1 to 16 hex digits; then BWS (SP/HTAB), then `;` and
//!   extensions (any byte but CTLs other than HTAB) or the CR LF;
//! - the size line (up to its CR) at most 4096 bytes;
//! - trailer lines: any bytes but a bare CR or a NUL, ended by CRLF or a
//!   bare LF; the empty line ends the body; at most 64 KiB of trailers.
//! The answer must be the same however the bytes are cut into pieces.
#![no_main]

use edgeplane::proxy::h1::chunked::ChunkedEnd;
use edgeplane_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Ref {
    End(usize),
    More,
    Invalid,
}

fn reference(b: &[u8]) -> Ref {
    let mut i = 0;
    loop {
        // chunk-size [BWS] [; extensions] CR, within the line limit
        let line_start = i;
        let lim = (line_start + MAX_LINE).min(b.len());
        let cut = || if lim < b.len() { Ref::Invalid } else { Ref::More };
        let mut size: u64 = 0;
        let mut digits = 0;
        while i < lim && b[i].is_ascii_hexdigit() {
            if digits == 16 {
                return Ref::Invalid;
            }
            size = size << 4 | u64::from((b[i] as char).to_digit(16).unwrap());
            digits += 1;
            i += 1;
        }
        if i == lim {
            return cut();
        }
        if digits == 0 {
            return Ref::Invalid;
        }
        while i < lim && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i == lim {
            return cut();
        }
        if b[i] == b';' {
            i += 1;
            while i < lim && b[i] != b'\r' {
                if b[i] != b'\t' && (b[i] < 0x20 || b[i] == 0x7f) {
                    return Ref::Invalid;
                }
                i += 1;
            }
            if i == lim {
                return cut();
            }
        }
        if b[i] != b'\r' {
            return Ref::Invalid;
        }
        i += 1;
        match b.get(i) {
            None => return Ref::More,
            Some(b'\n') => i += 1,
            Some(_) => return Ref::Invalid,
        }
        if size == 0 {
            break;
        }
        // chunk-data CRLF
        if ((b.len() - i) as u64) < size {
            return Ref::More;
        }
        i += size as usize;
        for want in [b'\r', b'\n'] {
            match b.get(i) {
                None => return Ref::More,
                Some(&c) if c == want => i += 1,
                Some(_) => return Ref::Invalid,
            }
        }
    }
    // trailer section: lines of anything but a bare CR or NUL, then an
    // empty line
    let start = i;
    let mut line = 0;
    let mut seen_cr = false;
    while i < b.len() {
        if i - start >= MAX_TRAILERS {
            return Ref::Invalid;
        }
        match b[i] {
            b'\n' if line == 0 => return Ref::End(i + 1),
            b'\n' => {
                line = 0;
                seen_cr = false;
            }
            _ if seen_cr => return Ref::Invalid,
            b'\r' => seen_cr = true,
            0 => return Ref::Invalid,
            _ => line += 1,
        }
        i += 1;
    }
    Ref::More
}

/// Feeds `body` cut after every length in `cuts` (cycled).
fn tracker(body: &[u8], cuts: &[u8]) -> Ref {
    let mut t = ChunkedEnd::default();
    let mut at = 0;
    let mut k = 0;
    while at < body.len() {
        let step = if cuts.is_empty() {
            body.len()
        } else {
            usize::from(cuts[k % cuts.len()]).max(1)
        };
        k += 1;
        let piece = &body[at..(at + step).min(body.len())];
        match t.advance(piece) {
            Ok(Some(n)) => {
                assert!(n <= piece.len());
                return Ref::End(at + n);
            }
            Ok(None) => {}
            Err(_) => return Ref::Invalid,
        }
        at += piece.len();
    }
    Ref::More
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let ncuts = usize::from(input.byte() % 8);
    let cuts: Vec<u8> = (0..ncuts).map(|_| input.byte()).collect();
    let body = input.rest();
    let expected = reference(body);
    let whole = tracker(body, &[]);
    assert_eq!(
        whole,
        expected,
        "tracker vs reference on {:?}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(
        tracker(body, &cuts),
        whole,
        "the answer depends on how the bytes arrive"
    );
});

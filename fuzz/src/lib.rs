//! Helpers shared by the fuzz targets: strict RFC 9112 checks of what the
//! fast path writes, independent of the code under test.

/// A header line of a message the fast path wrote, checked strictly.
pub struct Field<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

/// RFC 9110 5.6.2 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits a head the proxy wrote (start line, fields, the empty line) the
/// strict way RFC 9112 2.2 asks of a sender: CRLF only, no bare CR or LF,
/// no obs-fold, names are tokens, values hold no control byte but HTAB and
/// no leading or trailing whitespace. Panics on any violation.
pub fn strict_head(head: &[u8]) -> (&[u8], Vec<Field<'_>>) {
    assert!(head.ends_with(b"\r\n\r\n"), "head does not end with CRLFCRLF");
    let body = &head[..head.len() - 4];
    let mut lines = Vec::new();
    let mut rest = body;
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                lines.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    for l in &lines {
        assert!(
            !l.contains(&b'\r') && !l.contains(&b'\n'),
            "bare CR or LF in {:?}",
            String::from_utf8_lossy(l)
        );
    }
    let start = lines[0];
    let mut fields = Vec::new();
    for l in &lines[1..] {
        assert!(!l.is_empty(), "empty line inside the head");
        assert!(
            l[0] != b' ' && l[0] != b'\t',
            "obs-fold: {:?}",
            String::from_utf8_lossy(l)
        );
        let colon = l.iter().position(|b| *b == b':').expect("field without a colon");
        let name = &l[..colon];
        assert!(
            !name.is_empty() && name.iter().all(|b| is_tchar(*b)),
            "bad field name {:?}",
            String::from_utf8_lossy(name)
        );
        let value = l[colon + 1..].trim_ascii();
        assert!(
            value.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)),
            "control byte in the value of {:?}",
            String::from_utf8_lossy(name)
        );
        fields.push(Field {
            name: std::str::from_utf8(name).unwrap(),
            value,
        });
    }
    (start, fields)
}

/// The values of the fields named `name` (any case).
pub fn values<'a>(fields: &'a [Field<'a>], name: &str) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
        .collect()
}

/// RFC 9112 6.3, for a request: how the body is delimited, or why the
/// message cannot be framed (and must be refused, never forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// `Content-Length` (0 when absent).
    Length(u64),
    /// `Transfer-Encoding` with `chunked` last.
    Chunked,
    /// TE without chunked last, CL and TE together, an invalid or
    /// conflicting CL: a server must answer 400 and close (6.3 items 3-5).
    Invalid,
}

/// The framing of a request from its header fields (name, value) as any
/// parser gave them.
pub fn request_framing<'a>(fields: impl Iterator<Item = (&'a str, &'a [u8])> + Clone) -> RequestFraming {
    let te: Vec<&[u8]> = fields
        .clone()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v)
        .collect();
    let cl: Vec<&[u8]> = fields
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v)
        .collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            return RequestFraming::Invalid;
        }
        let codings: Vec<&[u8]> = te
            .iter()
            .flat_map(|v| v.split(|b| *b == b','))
            .map(|c| c.trim_ascii())
            .collect();
        return match codings.last() {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => RequestFraming::Chunked,
            _ => RequestFraming::Invalid,
        };
    }
    // A list of identical values (`5, 5`, or the field twice) may be taken
    // as one (RFC 9110 8.6); anything else is invalid.
    let mut length = None;
    for v in cl.iter().flat_map(|v| v.split(|b| *b == b',')) {
        let v = v.trim_ascii();
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return RequestFraming::Invalid;
        }
        let Some(n) = std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()) else {
            return RequestFraming::Invalid;
        };
        if length.is_some_and(|l| l != n) {
            return RequestFraming::Invalid;
        }
        length = Some(n);
    }
    RequestFraming::Length(length.unwrap_or(0))
}

/// A little cursor over the fuzzer's bytes, for targets that take a few
/// choices before their payload.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

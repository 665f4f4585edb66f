//! Operator- and config-typed values: `duration::parse_duration` and
//! `parse::parse_bytes` (catalog sizes and flags). Never a panic; a size is
//! exact against 128-bit arithmetic for whole numbers, and a size of 2^64
//! bytes or more is an error, never clamped or wrapped; a duration of
//! plain seconds is what was written.
#![no_main]

use edgeplane::duration::{format_short, parse_duration};
use edgeplane::parse::parse_bytes;
use libfuzzer_sys::fuzz_target;

fn multiplier(unit: &str) -> Option<u128> {
    Some(match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = parse_duration(s) {
        let _ = format_short(d);
        if let Ok(secs) = s.trim().parse::<f64>() {
            assert!((d.as_secs_f64() - secs).abs() <= secs * 1e-9 + 2e-9, "{s:?} -> {d:?}");
        }
    }
    let got = parse_bytes(s);
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    // Whole numbers, exactly.
    if !digits.is_empty() && !unit.starts_with('.') {
        if let Some(m) = multiplier(unit) {
            let n: Option<u128> = digits.parse().ok();
            match n.and_then(|n| n.checked_mul(m)).filter(|b| *b <= u128::from(u64::MAX)) {
                Some(b) => assert_eq!(got, Ok(b as u64), "{s:?}"),
                None => assert!(got.is_err(), "{s:?} is 2^64 bytes or more, yet {got:?}"),
            }
        }
    }
});

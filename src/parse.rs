//! Operator-typed values other than durations ([`crate::duration`]): sizes
//! (`80GiB`, `24GB`) and URLs given as `host:port`. A leaf, so that the
//! catalog, the worker, the CLI and the benches parse them one way.

/// Adds `http://` when the operator typed only `host:port`.
pub fn normalize_url(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    }
}

/// `80GiB`, `24GB`, `512MiB`, `1.5k`, or plain bytes. A size of 2^64
/// bytes or more is refused (it was clamped to `u64::MAX` by the float
/// conversion, so `99999999999999999999` meant 16 EiB without a word).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let not_a_size = || format!("`{s}` is not a size like 24GiB");
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => return Err(format!("unknown size unit `{u}` in `{s}`")),
    };
    let too_large = || format!("`{s}` is too large: sizes stop below 16EiB (2^64 bytes)");
    // Whole numbers exactly (a float has 53 bits: `9007199254740993` was
    // read as one byte less); a fraction through f64, whose products
    // below 2^64 lose nothing that matters in a size.
    if !num.contains('.') {
        if num.is_empty() {
            return Err(not_a_size());
        }
        let n: u64 = num.parse().map_err(|_| too_large())?;
        return n.checked_mul(mult).ok_or_else(too_large);
    }
    let n: f64 = num.parse().map_err(|_| not_a_size())?;
    let bytes = n * mult as f64;
    // 2^64 is exactly representable; anything at or past it does not fit.
    if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
        return Err(too_large());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_bytes("80GiB").unwrap(), 80 * 1024 * 1024 * 1024);
        assert_eq!(parse_bytes("24GB").unwrap(), 24_000_000_000);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1500);
        assert_eq!(parse_bytes("42").unwrap(), 42);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes(".").is_err());
        assert!(parse_bytes("1.2.3k").is_err());
        assert_eq!(parse_bytes("9007199254740993").unwrap(), 9_007_199_254_740_993);
        assert_eq!(parse_bytes("18446744073709551615").unwrap(), u64::MAX);
        assert_eq!(parse_bytes("16777215TiB").unwrap(), 16_777_215 << 40);
    }

    /// Past 2^64 bytes, however it is spelled: an error, not `u64::MAX`
    /// (the float conversion saturated) nor a wrapped product.
    #[test]
    fn sizes_past_2_pow_64_are_refused() {
        for big in [
            "99999999999999999999",
            "18446744073709551616",
            "18446744073709551616b",
            "16777216TiB",
            "20000000TB",
            "99999999999999999999GiB",
            "18446744073709551.616k",
            "17179869184.5GiB",
            "1e400",
            &"9".repeat(400),
            &format!("{}.5", "9".repeat(400)),
        ] {
            let r = parse_bytes(big);
            assert!(r.is_err(), "{big}: {r:?}");
        }
    }

    #[test]
    fn urls_get_a_scheme() {
        assert_eq!(normalize_url("coord:8080"), "http://coord:8080");
        assert_eq!(normalize_url("https://c/"), "https://c");
    }
}

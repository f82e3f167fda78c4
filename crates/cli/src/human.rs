//! SIZE arguments (`4096`, `64K`, `1G`) and human-readable sizes.

/// The largest SIZE: offsets and lengths go to syscalls as `off_t`.
pub(crate) const MAX_SIZE: u64 = i64::MAX as u64;

/// Parses a SIZE: plain bytes or a binary K/M/G/T/P suffix (`KiB`, `K` and
/// `k` alike), e.g. `4096`, `64K`, `1.5G`. Used as a clap value parser.
///
/// Exact decimal arithmetic, no floating point: a fraction is accepted only
/// when it makes a whole number of bytes (`1.5K` is 1536, `1.5` is refused),
/// and the result must be at most 2^63 - 1. Float rounding once turned
/// `16383.99999999999999999P` into 2^64, which wrapped to offset 0.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "p" | "pib" => 50,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use K, M, G, T or P)"
            ));
        }
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || (num.contains('.') && frac.is_empty()) || frac.contains('.') {
        return Err(format!(
            "invalid size {s:?}: expected a number such as 4096, 64K or 1.5G"
        ));
    }
    // Bounded so the digit arithmetic below stays trivially cheap.
    if num.len() > 200 {
        return Err(format!("invalid size {s:?}: too many digits"));
    }
    let too_big = || format!("invalid size {s:?}: larger than 2^63 - 1 bytes ({MAX_SIZE})");
    // The number as decimal digits, most significant first; `point` digits
    // are the integer part. Multiplying by 2^shift is `shift` exact doublings.
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let mut point = int.len();
    for _ in 0..shift {
        let mut carry = 0;
        for d in digits.iter_mut().rev() {
            let v = *d * 2 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        if carry > 0 {
            digits.insert(0, carry);
            point += 1;
        }
    }
    if digits[point..].iter().any(|&d| d != 0) {
        return Err(format!(
            "invalid size {s:?}: not a whole number of bytes (a fraction needs a unit that makes it whole, e.g. 1.5K)"
        ));
    }
    let mut bytes: u64 = 0;
    for &d in &digits[..point] {
        bytes = bytes
            .checked_mul(10)
            .and_then(|b| b.checked_add(u64::from(d)))
            .ok_or_else(too_big)?;
    }
    if bytes > MAX_SIZE {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Checks that `offset + length` (a range's end) fits an `off_t`, before
/// anything is touched: the end of a range must never wrap.
pub(crate) fn check_range(what: &str, offset: u64, length: u64) -> Result<(), String> {
    match offset.checked_add(length) {
        Some(end) if end <= MAX_SIZE => Ok(()),
        _ => Err(format!(
            "{what}: offset {offset} + length {length} is past the largest file offset (2^63 - 1)"
        )),
    }
}

/// `1536` → `"1.5 KiB"`; exact below 1 KiB.
pub(crate) fn human_size(bytes: u64) -> String {
    Human(bytes).to_string()
}

/// Displays a byte count like [`human_size`] without allocating, and
/// honours width and alignment (`{:>10}`), for tables of many rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Human(pub(crate) u64);

impl std::fmt::Display for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 24];
        let text = human_bytes(self.0, &mut buf);
        f.pad(std::str::from_utf8(text).unwrap_or("?"))
    }
}

/// Writes `n` in decimal at the end of `buf`, returning the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Appends `n` right-aligned in `width` columns, without `core::fmt`
/// (the table of a 200,000-extent map is dominated by formatting).
pub(crate) fn push_right(line: &mut Vec<u8>, text: &[u8], width: usize) {
    line.extend(std::iter::repeat_n(b' ', width.saturating_sub(text.len())));
    line.extend_from_slice(text);
}

/// Appends `n` in decimal, right-aligned in `width` columns.
pub(crate) fn push_u64(line: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [0u8; 20];
    push_right(line, decimal(n, &mut buf), width);
}

/// `1536` → `b"1.5 KiB"` in `buf`: integer tenths, rounded to nearest.
pub(crate) fn human_bytes(bytes: u64, buf: &mut [u8; 24]) -> &[u8] {
    const UNITS: [&[u8]; 6] = [b"KiB", b"MiB", b"GiB", b"TiB", b"PiB", b"EiB"];
    let mut len = 0;
    let mut put = |s: &[u8], buf: &mut [u8; 24]| {
        buf[len..len + s.len()].copy_from_slice(s);
        len += s.len();
    };
    let mut digits = [0u8; 20];
    if bytes < 1024 {
        put(decimal(bytes, &mut digits), buf);
        put(b" B", buf);
    } else {
        let mut unit = 0;
        while unit < UNITS.len() - 1 && bytes >> (10 * (unit + 2)) > 0 {
            unit += 1;
        }
        let div = 1u128 << (10 * (unit + 1));
        let tenths = ((u128::from(bytes) * 10 + div / 2) / div) as u64;
        put(decimal(tenths / 10, &mut digits), buf);
        put(&[b'.', b'0' + (tenths % 10) as u8, b' '], buf);
        put(UNITS[unit], buf);
    }
    &buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
    }

    #[test]
    fn fractions_must_make_whole_bytes() {
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("0.5k"), Ok(512));
        assert_eq!(parse_size("1.0"), Ok(1));
        assert_eq!(parse_size("1.25M"), Ok(1_310_720));
        // 2^-50 has 50 decimal digits: exact, not rounded.
        assert_eq!(
            parse_size("0.00000000000000088817841970012523233890533447265625P"),
            Ok(1)
        );
        assert_eq!(
            parse_size("8191.999999999999999111821580299874767661094665527343750P"),
            Ok((8192u64 << 50) - 1)
        );
        for bad in [
            "1.5",
            "0.1K",
            "1.",
            ".5K",
            "1.2.3",
            "1.00000000000000000000000000000001",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sizes_that_wrapped_to_zero_are_refused() {
        // Issue 11: float rounding made these 2^64, which wrapped to 0.
        for s in [
            "16383.99999999999999999P",
            "18446744073709551615.99999999999999999",
        ] {
            let e = parse_size(s).unwrap_err();
            assert!(e.contains("not a whole number of bytes"), "{e}");
        }
        assert!(
            parse_size("18446744073709551615")
                .unwrap_err()
                .contains("2^63 - 1")
        );
        assert!(parse_size("8192P").is_err()); // 2^63
        assert_eq!(parse_size("9223372036854775807"), Ok(i64::MAX as u64));
        assert!(check_range("x", i64::MAX as u64, 1).is_err());
        assert!(check_range("x", u64::MAX, u64::MAX).is_err());
        assert!(check_range("x", 1 << 62, 1 << 62).is_err());
        assert_eq!(check_range("x", (1 << 62) - 1, 1 << 62), Ok(()));
    }

    proptest::proptest! {
        /// Any integer with any unit parses to exactly `n << shift`, or is
        /// refused when that passes 2^63 - 1.
        #[test]
        fn integers_scale_exactly(n in proptest::num::u64::ANY, unit in 0usize..6, spelling in 0usize..3) {
            let names = [["", "b", "B"], ["K", "k", "KiB"], ["M", "m", "MiB"], ["G", "g", "GiB"], ["T", "t", "TiB"], ["P", "p", "PiB"]];
            let want = u128::from(n) << (10 * unit);
            let got = parse_size(&format!("{n}{}", names[unit][spelling]));
            if want <= u128::from(MAX_SIZE) {
                proptest::prop_assert_eq!(got, Ok(want as u64));
            } else {
                proptest::prop_assert!(got.is_err());
            }
        }

        /// A decimal fraction is accepted exactly when it is a whole number
        /// of bytes, and then equals the rational value; never a float's
        /// rounding.
        #[test]
        fn fractions_are_exact(int in 0u64..(1 << 20), frac in "[0-9]{1,24}", unit in 0usize..6) {
            let shift = 10 * unit as u32;
            let s = format!("{int}.{frac}{}", ["", "K", "M", "G", "T", "P"][unit]);
            let got = parse_size(&s);
            // The exact value, as a rational: (int * 10^f + frac) * 2^shift / 10^f,
            // reduced by trailing zeros so it fits u128.
            let f = frac.trim_end_matches('0');
            if f.len() > 20 {
                // Needs 5^f | frac: 30-digit fractions rarely are; at least
                // the result must then be exact and in range.
                if let Ok(v) = got { proptest::prop_assert!(v <= MAX_SIZE); }
                return Ok(());
            }
            let den = 10u128.pow(f.len() as u32);
            let num = (u128::from(int) * den + f.parse::<u128>().unwrap_or(0)) << shift;
            if num % den == 0 && num / den <= u128::from(MAX_SIZE) {
                proptest::prop_assert_eq!(got, Ok((num / den) as u64));
            } else {
                proptest::prop_assert!(got.is_err(), "{} -> {:?}", s, got);
            }
        }

        /// `int + m / 2^shift` written out exactly in decimal (m * 5^shift,
        /// `shift` digits) parses to `(int << shift) + m`, to the byte.
        #[test]
        fn whole_fractions_parse(int in 0u64..(1 << 30), m in proptest::num::u64::ANY, unit in 1usize..4) {
            let shift = 10 * unit as u32;
            let m = m & ((1u64 << shift) - 1);
            let digits = u128::from(m) * 5u128.pow(shift);
            let s = format!("{int}.{digits:0width$}{}", ["", "K", "M", "G"][unit], width = shift as usize);
            proptest::prop_assert_eq!(parse_size(&s), Ok((int << shift) + m));
        }

        /// Arbitrary text never panics and never yields more than 2^63 - 1.
        #[test]
        fn anything_is_refused_or_in_range(s in "[0-9.kKmMgGtTpPiBb ]{0,40}") {
            if let Ok(v) = parse_size(&s) { proptest::prop_assert!(v <= MAX_SIZE); }
        }
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("9223372036854775808").is_err());
        assert!(parse_size("16777216T").is_err()); // 2^64
        assert!(parse_size("8388608T").is_err()); // 2^63
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(8 << 30), "8.0 GiB");
        assert_eq!(human_size(1983488), "1.9 MiB");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
        assert_eq!(format!("[{:>9}]", Human(1536)), "[  1.5 KiB]");
        let mut line = Vec::new();
        push_u64(&mut line, 0, 3);
        push_u64(&mut line, 1234567, 5);
        assert_eq!(line, b"  01234567");
    }
}

//! SIZE arguments (`4096`, `64K`, `1G`) and human-readable sizes.

/// Parses a SIZE: plain bytes or a binary K/M/G/T/P suffix (`KiB`, `K` and
/// `k` alike), e.g. `4096`, `64K`, `1.5G`. Used as a clap value parser.
#[allow(dead_code)] // the punch/copy/clone commands use it
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
                "invalid size {s:?}: unknown unit {unit:?} (use K, M, G, T)"
            ));
        }
    };
    if num.is_empty() {
        return Err(format!("invalid size {s:?}: no number"));
    }
    let too_big = || format!("invalid size {s:?}: larger than 2^63 - 1 bytes");
    let bytes = if let Some((int, frac)) = num.split_once('.') {
        let int: u64 = int.parse().map_err(|_| format!("invalid size {s:?}"))?;
        let frac_val: f64 = format!("0.{frac}")
            .parse()
            .map_err(|_| format!("invalid size {s:?}"))?;
        let whole = int
            .checked_shl(shift)
            .filter(|v| v >> shift == int)
            .ok_or_else(too_big)?;
        whole + (frac_val * (1u64 << shift) as f64) as u64
    } else {
        let int: u64 = num.parse().map_err(|_| too_big())?;
        int.checked_shl(shift)
            .filter(|v| v >> shift == int)
            .ok_or_else(too_big)?
    };
    // Offsets and lengths go to syscalls as off_t.
    if bytes > i64::MAX as u64 {
        return Err(too_big());
    }
    Ok(bytes)
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

//! Numbers as people read them in command output.

/// `12.3 MB` (decimal megabytes, as disk tools show them).
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A size with a unit that suits it: `512 B`, `12.3 KB`, `4.5 MB`, `1.2 GB`.
pub fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} KB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate of things per second, whole: `899/s`, `27,039/s`.
pub fn rate(per_second: f64) -> String {
    let n = if per_second.is_finite() && per_second > 0.0 {
        per_second.round() as u64
    } else {
        0
    };
    format!("{}/s", count(n))
}

/// `1 archive`, `2 archives`.
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::count(0), "0");
        assert_eq!(super::count(999), "999");
        assert_eq!(super::count(1000), "1,000");
        assert_eq!(super::count(1_234_567), "1,234,567");
        assert_eq!(super::mb(1_250_000), "1.2 MB");
        assert_eq!(super::size(999), "999 B");
        assert_eq!(super::size(12_345), "12.3 KB");
        assert_eq!(super::size(4_500_000), "4.5 MB");
        assert_eq!(super::size(1_200_000_000), "1.2 GB");
        assert_eq!(super::plural(1, "archive"), "1 archive");
        assert_eq!(super::plural(3, "archive"), "3 archives");
        assert_eq!(super::rate(899.268_477_864_497_9), "899/s");
        assert_eq!(super::rate(27_038.6), "27,039/s");
        assert_eq!(super::rate(f64::NAN), "0/s");
    }
}

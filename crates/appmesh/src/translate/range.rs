//! App Mesh's header `range` match as a regular expression. Envoy reads the header value as
//! a whole number (an optional sign, decimal digits, leading zeros allowed) and takes it when
//! `start <= value < end`; the expression made here takes exactly the texts that read as such
//! a number, so the match is carried over unchanged.

/// A regular expression (matched against the whole value) taking the integers in
/// `start..end`, or `None` when the range is empty.
pub(crate) fn regex(start: i64, end: i64) -> Option<String> {
    if start >= end {
        return None;
    }
    let (start, last) = (i128::from(start), i128::from(end) - 1);
    let mut alts = Vec::new();
    if start <= 0 && last >= 0 {
        alts.push("[+-]?0+".to_owned());
    }
    // Positive numbers: 1 ..
    if last >= 1 {
        let lo = start.max(1) as u128;
        alts.push(format!(r"\+?0*(?:{})", naturals(lo, last as u128)));
    }
    // Negative numbers, by their absolute values.
    if start <= -1 {
        let lo = (-last.min(-1)) as u128;
        let hi = (-start) as u128;
        alts.push(format!("-0*(?:{})", naturals(lo, hi)));
    }
    Some(alts.join("|"))
}

/// An alternation taking the decimal numbers `lo..=hi` (`1 <= lo <= hi`), without leading
/// zeros.
fn naturals(lo: u128, hi: u128) -> String {
    let (lo_s, hi_s) = (lo.to_string(), hi.to_string());
    let mut out = Vec::new();
    for len in lo_s.len()..=hi_s.len() {
        let a = if len == lo_s.len() {
            lo_s.clone()
        } else {
            format!("1{}", "0".repeat(len - 1))
        };
        let b = if len == hi_s.len() {
            hi_s.clone()
        } else {
            "9".repeat(len)
        };
        out.extend(same_length(&a, &b));
    }
    out.join("|")
}

/// Patterns taking the digit strings of one length from `lo` to `hi`.
fn same_length(lo: &str, hi: &str) -> Vec<String> {
    if lo.is_empty() {
        return vec![String::new()];
    }
    if lo == hi {
        return vec![lo.to_owned()];
    }
    let (l0, lr) = (lo.as_bytes()[0], &lo[1..]);
    let (h0, hr) = (hi.as_bytes()[0], &hi[1..]);
    if l0 == h0 {
        return same_length(lr, hr)
            .into_iter()
            .map(|p| format!("{}{p}", l0 as char))
            .collect();
    }
    let n = lr.len();
    let any = |n: usize| match n {
        0 => String::new(),
        1 => "[0-9]".to_owned(),
        n => format!("[0-9]{{{n}}}"),
    };
    let mut out = Vec::new();
    let low_full = lr.bytes().all(|b| b == b'0');
    let high_full = hr.bytes().all(|b| b == b'9');
    if !low_full {
        out.extend(
            same_length(lr, &"9".repeat(n))
                .into_iter()
                .map(|p| format!("{}{p}", l0 as char)),
        );
    }
    let from = if low_full { l0 } else { l0 + 1 };
    let to = if high_full { h0 } else { h0 - 1 };
    if from <= to {
        let digit = if from == to {
            (from as char).to_string()
        } else {
            format!("[{}-{}]", from as char, to as char)
        };
        out.push(format!("{digit}{}", any(n)));
    }
    if !high_full {
        out.extend(
            same_length(&"0".repeat(n), hr)
                .into_iter()
                .map(|p| format!("{}{p}", h0 as char)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy's reading: an optional sign and decimal digits.
    fn envoy(value: &str, start: i64, end: i64) -> bool {
        let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        match value.parse::<i64>() {
            Ok(v) => start <= v && v < end,
            Err(_) => false,
        }
    }

    #[test]
    fn ranges_take_exactly_their_numbers() {
        let ranges = [
            (0, 10),
            (1, 2),
            (-5, 5),
            (-120, -7),
            (7, 1_234),
            (99, 1_000),
            (100, 101),
            (-1_001, 0),
            (0, 1),
            (-1, 1),
            (555, 556),
        ];
        let mut values: Vec<String> = (-1_500..=1_500).map(|n: i64| n.to_string()).collect();
        values.extend(
            [
                "+5", "007", "-007", "-0", "+0", "00", "", "-", "+", "1e3", " 5", "5 ", "x",
            ]
            .map(String::from),
        );
        for (start, end) in ranges {
            let re = portico_model::validate::anchored_regex(&regex(start, end).expect("range"))
                .expect("compiles");
            for v in &values {
                assert_eq!(
                    re.is_match(v),
                    envoy(v, start, end),
                    "{v} in {start}..{end}"
                );
            }
        }
    }

    #[test]
    fn extremes_and_empty_ranges() {
        assert_eq!(regex(5, 5), None);
        assert_eq!(regex(9, 2), None);
        let all = regex(i64::MIN, i64::MAX).expect("range");
        let re = portico_model::validate::anchored_regex(&all).expect("compiles");
        for v in [
            "0",
            "-9223372036854775808",
            "9223372036854775806",
            "-1",
            "42",
        ] {
            assert!(re.is_match(v), "{v}");
        }
        assert!(!re.is_match("9223372036854775807"), "end is excluded");
        assert!(!re.is_match("-9223372036854775809"));
    }
}

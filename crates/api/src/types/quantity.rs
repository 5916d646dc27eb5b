//! Kubernetes resource quantities (`10Gi`, `64M`, `1.5G`, `1e9`, `500m`).

/// Parses a Kubernetes quantity into whole units (bytes for storage), rounding a fractional
/// result up as `Quantity.Value()` does. Supports the binary suffixes Ki..Ei, the decimal
/// suffixes n u m k M G T P E, decimal exponents (`1e3`, `5E-1`) and plain numbers.
/// Returns `None` for anything else, for negative values and for values beyond `u64`.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // The digits as one integer, over 10^(fraction length).
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return None;
    }
    let mut num: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut den: u128 = 10u128.checked_pow(u32::try_from(frac_part.len()).ok()?)?;

    let binary = |power: u32| 1024u128.checked_pow(power);
    let mut decimal_exp: i32 = 0;
    match suffix {
        "" => {}
        "Ki" => num = num.checked_mul(binary(1)?)?,
        "Mi" => num = num.checked_mul(binary(2)?)?,
        "Gi" => num = num.checked_mul(binary(3)?)?,
        "Ti" => num = num.checked_mul(binary(4)?)?,
        "Pi" => num = num.checked_mul(binary(5)?)?,
        "Ei" => num = num.checked_mul(binary(6)?)?,
        "n" => decimal_exp = -9,
        "u" => decimal_exp = -6,
        "m" => decimal_exp = -3,
        "k" => decimal_exp = 3,
        "M" => decimal_exp = 6,
        "G" => decimal_exp = 9,
        "T" => decimal_exp = 12,
        "P" => decimal_exp = 15,
        "E" => decimal_exp = 18,
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 4
            {
                return None;
            }
            decimal_exp = exp.parse().ok()?;
        }
    }
    if num == 0 {
        return Some(0);
    }
    if decimal_exp >= 0 {
        num = num.checked_mul(10u128.checked_pow(decimal_exp.unsigned_abs())?)?;
    } else {
        den = den.checked_mul(10u128.checked_pow(decimal_exp.unsigned_abs())?)?;
    }
    let value = num.div_ceil(den);
    u64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_quantity as q;

    #[test]
    fn suffixes() {
        assert_eq!(q("10Gi"), Some(10 << 30));
        assert_eq!(q("1Ki"), Some(1024));
        assert_eq!(q("64M"), Some(64_000_000));
        assert_eq!(q("1k"), Some(1000));
        assert_eq!(q("2Ti"), Some(2 << 40));
        assert_eq!(q("1Pi"), Some(1 << 50));
        assert_eq!(q("3T"), Some(3_000_000_000_000));
        assert_eq!(q("1.5Gi"), Some(3 << 29));
        assert_eq!(q("1e3"), Some(1000));
        assert_eq!(q("12E2"), Some(1200));
        assert_eq!(q("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(q("100"), Some(100));
        assert_eq!(q("0"), Some(0));
        assert_eq!(q("500m"), Some(1));
        assert_eq!(q("2000m"), Some(2));
        assert_eq!(q("+5"), Some(5));
    }

    #[test]
    fn rejects() {
        for bad in [
            "", "Gi", "1GB", "abc", "1.2.3", "-1", "1 Gi", "1gi", "1e", "16Ei", ".",
        ] {
            assert_eq!(q(bad), None, "{bad:?}");
        }
    }
}

//! Numbers for people: three significant digits, integers as integers. Machine
//! outputs (JSON, traces) keep full precision; everything a person reads (the
//! terminal, `summary.md`, plots) goes through [`human`].

/// `v` to three significant digits: `0.155`, `26.4`, `1.55e-5`, `3.4e38`; whole numbers as integers (`37`).
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == v.trunc() && v.abs() < 1e9 {
        return format!("{v:.0}");
    }
    let exp = v.abs().log10().floor() as i32;
    let text = if (-3..3).contains(&exp) {
        let decimals = (2 - exp).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2e}")
    };
    trim_zeros(&text)
}

/// A value just under 1 (`β₂`, momentum) with three significant digits of its distance to 1:
/// `0.99963` (1 − 3.7e-4), `0.9`; values away from (0.5, 1) as [`human`] prints them.
pub fn human_near_one(v: f64) -> String {
    let d = 1.0 - v;
    if !(v > 0.5 && d > 0.0 && d.is_finite()) {
        return human(v);
    }
    let decimals = (2 - d.log10().floor() as i32).clamp(1, 17) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

/// Drops trailing zeros of a mantissa (`1.50e-5` → `1.5e-5`, `0.250` → `0.25`).
fn trim_zeros(text: &str) -> String {
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (text, None),
    };
    let mantissa = if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
    match exp {
        Some(e) => format!("{mantissa}e{e}"),
        None => mantissa.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{human, human_near_one};

    #[test]
    fn near_one_keeps_three_digits_of_the_distance() {
        assert_eq!(human_near_one(0.99963), "0.99963");
        assert_eq!(human_near_one(0.999), "0.999");
        assert_eq!(human_near_one(0.9), "0.9");
        assert_eq!(human_near_one(1.0 - 1.234e-7), "0.999999877");
        assert_eq!(human_near_one(0.0), "0");
    }

    #[test]
    fn three_significant_digits_and_whole_numbers() {
        assert_eq!(human(0.15483), "0.155");
        assert_eq!(human(26.43), "26.4");
        assert_eq!(human(37.0), "37");
        assert_eq!(human(1.5e-5), "1.5e-5");
        assert_eq!(human(3.4028e38), "3.4e38");
        assert_eq!(human(0.25), "0.25");
        assert_eq!(human(12345.6), "1.23e4");
        assert_eq!(human(-0.001234), "-0.00123");
        assert_eq!(human(f64::INFINITY), "inf");
    }
}

//! The one bisection both the minimizer and `margins` use: between a value
//! whose outcome is like the base's and one where it has changed, on the
//! knob's scale (log for multiplicative knobs, whole numbers for integer
//! ones), to three significant digits.

use super::round3_away;
use crate::search::mutation::Scale;

/// Narrows `like` (outcome like the base) and `changed_at` (outcome changed) until they agree to
/// 3 significant digits or `out_of_time`; returns the last value like the base and the threshold,
/// rounded to 3 digits away from the base when the rounded value still changes.
pub(crate) fn bisect(like: f64, changed_at: f64, scale: Scale, changed: &mut dyn FnMut(f64) -> bool, out_of_time: &dyn Fn() -> bool) -> (f64, f64) {
    let log = scale == Scale::Log && like > 0.0 && changed_at > 0.0;
    let to = |x: f64| if log { x.ln() } else { x };
    let back = |x: f64| if log { x.exp() } else { x };
    let (mut lo, mut hi) = (to(like), to(changed_at));
    let done = |lo: f64, hi: f64| match scale {
        Scale::Integer => (back(hi) - back(lo)).abs() <= 1.0,
        _ if log => (hi - lo).abs() < 4e-4,
        _ => (hi - lo).abs() <= 4e-4 * back(hi).abs().max(1e-12),
    };
    while !done(lo, hi) && !out_of_time() {
        let mid = if scale == Scale::Integer { ((lo + hi) / 2.0).round() } else { (lo + hi) / 2.0 };
        if changed(back(mid)) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let exact = back(hi);
    let rounded = round3_away(exact, back(lo));
    let at = if scale != Scale::Integer && rounded != exact && changed(rounded) { rounded } else { exact };
    (back(lo), at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_known_threshold_on_each_scale() {
        // A step at 0.0372: the threshold is reported to 3 digits, rounded away from the base, so
        // it is 0.0372 or the next 3-digit value up, and the last value like the base is within 0.04%.
        let (like, at) = bisect(1e-3, 10.0, Scale::Log, &mut |x| x >= 0.0372, &|| false);
        assert!(at == 0.0372 || at == 0.0373, "{at}");
        assert!(like < 0.0372 && like > 0.0372 * (1.0 - 4e-4), "{like}");
        // Whole numbers: the step at 37 is found exactly.
        assert_eq!(bisect(4.0, 100.0, Scale::Integer, &mut |x| x >= 37.0, &|| false), (36.0, 37.0));
        // Downwards, linear: a step at -16.5 from 0.5.
        let (like, at) = bisect(0.5, -100.0, Scale::Linear, &mut |x| x <= -16.5, &|| false);
        assert!((at == -16.5 || at == -16.6) && like > -16.5, "{at} {like}");
    }
}

//! The one bisection both the minimizer and `margins` use: between a value
//! whose outcome is like the base's and one where it has changed, on the
//! knob's scale (log for multiplicative knobs, whole numbers for integer
//! ones), to three significant digits.

use crate::search::mutation::Scale;

/// Narrows `like` (outcome like the base) and `changed_at` (outcome changed) until they agree to
/// 3 significant digits or `out_of_time`; returns the last value like the base and the threshold,
/// rounded to 3 digits away from the base when the rounded value still changes.
pub(crate) fn bisect(like: f64, changed_at: f64, scale: Scale, changed: &mut dyn FnMut(f64) -> bool, out_of_time: &dyn Fn() -> bool) -> (f64, f64) {
    // Multiplicative scales bisect in their coordinate where both ends have one, else linearly.
    let on = match (scale.coord(like), scale.coord(changed_at)) {
        (Some(_), Some(_)) => scale,
        _ => Scale::Linear,
    };
    let to = |x: f64| on.coord(x).unwrap_or(x);
    let back = |x: f64| on.value(x);
    let (mut lo, mut hi) = (to(like), to(changed_at));
    let done = |lo: f64, hi: f64| match on {
        Scale::Integer => (back(hi) - back(lo)).abs() <= 1.0,
        Scale::Log | Scale::Complement => (hi - lo).abs() < 4e-4,
        Scale::Linear => (hi - lo).abs() <= 4e-4 * back(hi).abs().max(1e-12),
    };
    while !done(lo, hi) && !out_of_time() {
        let mid = if on == Scale::Integer { ((lo + hi) / 2.0).round() } else { (lo + hi) / 2.0 };
        if changed(back(mid)) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let exact = back(hi);
    // Three digits of the value (of its distance to 1, on a complement scale): the nearest 3-digit
    // value if it still changes, else the one rounded away from the base.
    let nearest3 = |x: f64| format!("{x:.2e}").parse().unwrap_or(x);
    let (nearest, away) = match on {
        Scale::Complement => (1.0 - nearest3(1.0 - exact), 1.0 - round3_away(1.0 - exact, 1.0 - back(lo))),
        _ => (nearest3(exact), round3_away(exact, back(lo))),
    };
    let at = if on == Scale::Integer { exact } else { [nearest, away].into_iter().find(|&r| r == exact || changed(r)).unwrap_or(exact) };
    (back(lo), at)
}

/// Rounds `x` to 3 significant digits, away from `toward_base`'s side.
pub fn round3_away(x: f64, toward_base: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let exp = x.abs().log10().floor() as i32 - 2;
    let q = x / 10f64.powi(exp);
    // A value already at 3 digits stays (2.98e-8 / 1e-10 is 297.99999999999997, not 298).
    let r = if (q - q.round()).abs() < 1e-9 * q.abs() {
        q.round()
    } else if x > toward_base {
        q.ceil()
    } else {
        q.floor()
    };
    // Through decimal text, so 372e-4 becomes the double nearest 0.0372.
    format!("{r}e{exp}").parse().unwrap_or(x)
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
        // Towards 1 on 1 − v: a step at 0.99963 from 0.9 is found to 3 digits of 1 − v (3.7e-4).
        let (like, at) = bisect(0.9, 1.0 - 1e-9, Scale::Complement, &mut |x| x >= 0.99963, &|| false);
        assert!((1.0 - at - 3.7e-4).abs() < 1e-12 || (1.0 - at - 3.6e-4).abs() < 1e-12, "{at}");
        assert!(like < 0.99963 && 1.0 - like < 3.7e-4 * (1.0 + 4e-4), "{like}");
    }
}

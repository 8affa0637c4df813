//! How far `check` searches a knob to measure an `[expect] min_margin`: as far
//! as the margin asks and a little beyond, on the knob's own scale, whatever the
//! `[search]` ranges say; and why a margin cannot be measured at all (the knob
//! is not continuous, does not apply, has no value to move from, or the margin
//! takes it past the values it can take). Such a margin is an error, never a pass.

use std::collections::BTreeMap;

use super::margins::is_factor;
use super::mutation::{try_mutate, Mutation, Scale};
use super::space::Space;
use crate::scenario::{Knob, Scenario, SearchSpec};

/// How far past a required margin the search goes, so a threshold just beyond it is seen too.
const BEYOND: f64 = 1.25;

/// The range each knob is searched over, by knob.
pub type Ranges = BTreeMap<Knob, (f64, f64)>;

/// `s` with only the knobs of `min` free to move, and the range each must be searched over
/// for its margin to be measured both ways; or why one cannot be measured.
pub fn margin_search(s: &Scenario, min: &BTreeMap<Knob, f64>) -> Result<(Scenario, Ranges), String> {
    let mut only = s.clone();
    only.search = Some(SearchSpec { knobs: Some(min.keys().copied().collect()), ..s.search.clone().unwrap_or_default() });
    // The knobs a hunt would move here, as `margins` searches them.
    let numeric = Space::of(&only).numeric();
    let mut ranges = BTreeMap::new();
    for (&k, &want) in min {
        let m = numeric.iter().map(|(m, _)| m).find(|m| m.knob() == k).ok_or_else(|| no_margin(s, k))?;
        let base = m.base_value(s).ok_or_else(|| no_margin(s, k))?;
        ranges.insert(k, (end(s, m, base, want, true)?, end(s, m, base, want, false)?));
    }
    Ok((only, ranges))
}

/// Why a knob of `min_margin` has no margin in `s`.
fn no_margin(s: &Scenario, k: Knob) -> String {
    if !k.has_margin() {
        format!("min_margin: `{k}` is not a continuous knob, so it has no margin")
    } else if !k.applies(s) {
        format!("min_margin: `{k}` does not apply to this scenario, so it has no margin to hold")
    } else {
        format!("min_margin: `{k}` has no value in this scenario (unset, or 0) to measure a margin from")
    }
}

/// The end of the search on one side: `want` (a factor, or a distance on a linear knob) from the
/// base and a little beyond, or `want` exactly where beyond would leave the knob's values; an
/// error when even `want` does.
fn end(s: &Scenario, m: &Mutation, base: f64, want: f64, below: bool) -> Result<f64, String> {
    let scale = m.numeric().map_or(Scale::Log, |(_, s)| s);
    let moved = |by: f64| match scale {
        Scale::Complement => 1.0 - if below { (1.0 - base) * by } else { (1.0 - base) / by },
        Scale::Log | Scale::Integer if is_factor(scale, base) => {
            if below {
                base / by
            } else {
                base * by
            }
        }
        Scale::Log | Scale::Integer | Scale::Linear => {
            if below {
                base - by
            } else {
                base + by
            }
        }
    };
    // How far `v` is from the base, as a margin is measured.
    let margin = |v: f64| match scale {
        Scale::Complement => ((1.0 - v) / (1.0 - base)).max((1.0 - base) / (1.0 - v)),
        Scale::Log | Scale::Integer if is_factor(scale, base) => (v / base).max(base / v),
        Scale::Log | Scale::Integer | Scale::Linear => (v - base).abs(),
    };
    let takes = |v: f64| -> Result<f64, String> {
        let v = if scale == Scale::Integer { v.round() } else { v };
        // Representable, on the knob's scale, not clamped by it, and (whole numbers round) still `want` away.
        let on_scale = v.is_finite() && scale.coord(v).is_some() && m.with_value(v).numeric().is_some_and(|(x, _)| x == v);
        if !on_scale || margin(v) < want * (1.0 - 1e-9) {
            return Err("past the values it can take".into());
        }
        try_mutate(s, &[m.with_value(v)]).map(|_| v)
    };
    takes(moved(want * BEYOND)).or_else(|_| takes(moved(want))).map_err(|why| {
        let k = m.knob();
        let by = if is_factor(scale, base) { format!("×{}", crate::human(want)) } else { format!("±{}", crate::human(want)) };
        let show = |v: f64| if scale == Scale::Complement { crate::human_near_one(v) } else { crate::human(v) };
        let side = if below { "below" } else { "above" };
        format!("min_margin: the margin of `{k}` {side} its base {} cannot be measured: {by} {side} it is {}, {why}", show(base), show(moved(want)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linreg() -> Scenario {
        crate::scenario::seed("s002_ex1_linreg_sgd_fix_standardize")
    }

    #[test]
    fn the_range_covers_the_margin_and_a_little_more() {
        let (only, r) = margin_search(&linreg(), &BTreeMap::from([(Knob::Lr, 1e7)])).unwrap();
        assert_eq!(only.search.and_then(|s| s.knobs), Some(vec![Knob::Lr]));
        // lr 0.01 ÷ 1.25e7 and × 1.25e7.
        let (lo, hi) = r[&Knob::Lr];
        assert!((lo - 8e-10).abs() < 1e-24 && (hi - 1.25e5).abs() < 1e-9, "{lo} {hi}");
    }

    #[test]
    fn a_margin_past_f64_or_the_knobs_values_cannot_be_measured() {
        // 100 × 1e307 is past f64's largest value, 1.8e308 (from 0.01 it would not be).
        let mut fast = linreg();
        fast.optimizer.lr = 100.0;
        let e = margin_search(&fast, &BTreeMap::from([(Knob::Lr, 1e307)])).unwrap_err();
        assert!(e.contains("`optimizer.lr` above its base 100 cannot be measured") && e.contains("above it is inf"), "{e}");
        assert!(margin_search(&linreg(), &BTreeMap::from([(Knob::Lr, 1e307)])).is_ok());
        // 10 epochs cannot shrink 20× (1 is the fewest), though they can grow 20×.
        let e = margin_search(&linreg(), &BTreeMap::from([(Knob::Epochs, 20.0)])).unwrap_err();
        assert!(e.contains("`train.epochs` below its base 10 cannot be measured"), "{e}");
        // 10× either way fits: 1 to 100 epochs (10 ÷ 12.5 rounds to 1, so exactly 10×).
        let (_, r) = margin_search(&linreg(), &BTreeMap::from([(Knob::Epochs, 10.0)])).unwrap();
        assert_eq!(r[&Knob::Epochs], (1.0, 125.0));
    }

    #[test]
    fn the_knobs_with_a_margin_are_the_ones_margins_moves_on_a_scale() {
        // With every knob free, each one the margin search scans has a margin and each one it only
        // tries value by value has none: SGD (momentum, epochs), an AMP transformer (scaler,
        // warmup, dropout, sequence length, norm eps), Adam in f16 (eps, β₂), a clamped BCE.
        let real = |name: &str| crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/real/{name}.toml"))).unwrap();
        let all = <Knob as strum::VariantArray>::VARIANTS.to_vec();
        let mut seen = std::collections::BTreeSet::new();
        for mut s in [linreg(), real("pt40497_amp_scale_collapse_fix_growth_interval"), real("optax1754_adam_f16_embedding_fix_eps"), crate::scenario::seed("s001_ex3_bce_saturated_fix_eps_clamp")] {
            s.search = Some(SearchSpec { knobs: Some(all.clone()), ..Default::default() });
            let space = Space::of(&s);
            for (m, _) in space.numeric() {
                assert!(m.knob().has_margin(), "{} is scanned", m.knob());
                seen.insert(m.knob());
            }
            for m in space.categorical() {
                assert!(!m.knob().has_margin(), "{} is tried value by value", m.knob());
            }
        }
        assert!(seen.len() >= 12, "{seen:?}");
        assert!(!Knob::Seed.has_margin() && !Knob::Inject.has_margin() && !Knob::ClipNorm.has_margin());
    }

    #[test]
    fn knobs_that_do_not_apply_or_do_not_move_continuously_have_no_margin() {
        let no = |k: Knob| margin_search(&linreg(), &BTreeMap::from([(k, 2.0)])).unwrap_err();
        assert!(no(Knob::Beta2).contains("`optimizer.beta2` does not apply"), "SGD has no β₂");
        assert!(no(Knob::Seed).contains("`seed` is not a continuous knob"));
        assert!(no(Knob::Dtype).contains("`train.dtype` is not a continuous knob"));
    }
}

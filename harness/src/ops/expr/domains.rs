//! The values a number parameter may take where PyTorch bounds it (`label_smoothing` in
//! [0, 1], a positive `temperature`, ...), in one table: a constant of `consts` fed to such a
//! parameter keeps to its domain when the hunt and margins move it (`scenario::knob::consts`),
//! so they propose no value the check would refuse.

use super::ast::{Ast, Kind};
use super::funcs::Func;

/// The domain of a bounded parameter, and the scale a constant feeding it moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// In [0, 1], on a linear scale (`label_smoothing`, focal's `alpha`).
    Unit,
    /// Above 0, on a log scale (`temperature`, focal's `gamma`, `cosine_similarity`'s `eps`).
    Positive,
}

impl Bound {
    /// Whether `v` is in the domain.
    pub fn holds(self, v: f64) -> bool {
        match self {
            Bound::Unit => (0.0..=1.0).contains(&v),
            Bound::Positive => v > 0.0,
        }
    }
}

/// Every bounded parameter: the function, the parameter's name, its domain.
const BOUNDED: [(Func, &str, Bound); 5] = [
    // PyTorch: "label_smoothing must be between 0.0 and 1.0".
    (Func::CrossEntropy, "label_smoothing", Bound::Unit),
    // torchvision's weight of the positive class (a negative alpha turns it off, which the
    // search does not move to).
    (Func::Focal, "alpha", Bound::Unit),
    // The focusing exponent of (1 − p_t)^γ, γ ≥ 0 in the paper.
    (Func::Focal, "gamma", Bound::Positive),
    // The logits divide by it; SimCLR's is positive.
    (Func::InfoNce, "temperature", Bound::Positive),
    // A guard against a zero norm.
    (Func::CosineSimilarity, "eps", Bound::Positive),
];

/// The domain of `f`'s parameter `key`, if PyTorch bounds it.
pub fn of(f: Func, key: &str) -> Option<Bound> {
    BOUNDED.iter().find(|(g, k, _)| *g == f && *k == key).map(|(_, _, b)| *b)
}

/// The domains of the parameters the constant `name` is passed to in the expression `ast`
/// (as the whole argument, by keyword or by position), in order of the calls.
pub fn fed(ast: &Ast, name: &str) -> Vec<Bound> {
    let mut out = Vec::new();
    ast.walk(&mut |a| {
        let Kind::Call(fname, args, kwargs) = &a.kind else { return };
        let Ok(f) = Func::named(fname, a.col) else { return };
        let positional = f.params().iter().copied().zip(args.iter().skip(f.operands()));
        for (key, arg) in positional.chain(kwargs.iter().map(|(k, v)| (k.as_str(), v))) {
            if matches!(&arg.kind, Kind::Name(n) if n == name) {
                out.extend(of(f, key));
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_passed_to_a_bounded_parameter_gets_its_domain() {
        let ast = super::super::parse::parse("cross_entropy(p, y, label_smoothing=ls) + cosine_similarity(p, y, -1, e) * ls").unwrap();
        assert_eq!(fed(&ast, "ls"), [Bound::Unit]);
        assert_eq!(fed(&ast, "e"), [Bound::Positive]);
        assert_eq!(fed(&ast, "T"), []);
        assert_eq!(of(Func::Clamp, "min"), None);
        assert!(Bound::Unit.holds(1.0) && !Bound::Unit.holds(1.01) && !Bound::Positive.holds(0.0));
    }
}

//! The two engines, which only produce candidates: `property` draws each
//! candidate afresh from the space's proptest strategy (uniform random search)
//! and shrinks a failure with proptest's own shrinking; `guided` first screens
//! every knob alone at the unstable corners of its range, then mostly mutates
//! the best-scored mutants of a ranked corpus. A candidate's random draws
//! depend only on the campaign seed and its global index. The corners are
//! ordered by expected cost (`by_cost`): the cheap ones first.

use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::campaign::Campaign;
use super::options::{Clock, Engine, HuntOptions};
use crate::run::{run_with, Outcome, RunOptions};
use crate::scenario::Scenario;
use crate::search::cost::{relative, DEFER};
use crate::search::finding::{fnv1a, Site};
use crate::search::mutation::{mutate, normalize, Mutation, Scale};
use crate::search::space::{draw, seeded_runner, Space};

/// A proptest value tree of a candidate, kept for shrinking.
pub(super) type Tree = Box<dyn ValueTree<Value = Vec<Mutation>>>;

/// Proptest's own shrinking of a failing draw: simplify while it keeps failing, bounded.
pub(super) fn proptest_shrink(base: &Scenario, opts: &HuntOptions, clock: &Clock, tree: &mut Tree, mut best: Vec<Mutation>, mut outcome: Outcome, campaign: &Campaign) -> (Vec<Mutation>, Outcome) {
    let mut budget = 32;
    // Only simplifications that fail at the same site: the flip's root cause is where it failed.
    let site = Site::of(&outcome);
    let fails = |c: &[Mutation]| {
        campaign.shrunk(1);
        let run_opts = RunOptions { deadline: Some(clock.run_deadline()), stop: Some(&opts.stop), ..RunOptions::default() };
        mutate(base, &normalize(c)).map(|s| run_with(&s, &run_opts)).filter(|o| opts.target.hits(o) && Site::of(o) == site)
    };
    while budget > 0 && tree.simplify() {
        budget -= 1;
        match fails(&tree.current()) {
            Some(o) => (best, outcome) = (tree.current(), o),
            None => {
                // Too simple: step back until it fails again.
                while budget > 0 && tree.complicate() {
                    budget -= 1;
                    if let Some(o) = fails(&tree.current()) {
                        (best, outcome) = (tree.current(), o);
                        break;
                    }
                }
            }
        }
    }
    (best, outcome)
}

/// The corner sweep in the order it runs: corners expected to cost at most [`DEFER`] × the base
/// first, in the space's order (most likely flips first), then the costlier ones, cheapest first
/// (the hunt defers those when their turn comes). A corner that does not apply keeps its place.
pub(super) fn by_cost(base: &Scenario, corners: Vec<Vec<Mutation>>) -> Vec<Vec<Mutation>> {
    let ratio = |c: &[Mutation]| mutate(base, c).map_or(1.0, |s| relative(base, &s));
    let (cheap, mut costly): (Vec<_>, Vec<_>) = corners.into_iter().map(|c| (ratio(&c), c)).partition(|(r, _)| *r <= DEFER);
    costly.sort_by(|a, b| a.0.total_cmp(&b.0));
    cheap.into_iter().chain(costly).map(|(_, c)| c).collect()
}

/// Candidate `index`: a fresh draw (with its value tree, for shrinking), or (guided) a mutation of a good mutant.
pub(super) fn generate(
    opts: &HuntOptions,
    index: u64,
    space: &Space,
    (strategy, one, corners): (&BoxedStrategy<Vec<Mutation>>, &BoxedStrategy<Mutation>, &[Vec<Mutation>]),
    campaign: &Campaign,
) -> (Vec<Mutation>, Option<Tree>) {
    let seed = fnv1a(format!("{}:{index}", opts.seed).as_bytes());
    let mut runner = seeded_runner(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let parent = match opts.engine {
        Engine::Property => {
            let tree = strategy.new_tree(&mut runner).expect("strategies here never reject");
            return (tree.current(), Some(tree));
        }
        Engine::Guided => {
            if let Some(c) = usize::try_from(index).ok().and_then(|i| corners.get(i)) {
                return (c.clone(), None);
            }
            campaign.pick_parent(&mut rng)
        }
    };
    let Some(mut muts) = parent.filter(|m| !m.is_empty()) else { return (draw(strategy, &mut runner), None) };
    match rng.random_range(0..4) {
        // Push a numeric knob further: ×10^U(0, 1) on a log scale, or a step on a linear one.
        0 | 1 => {
            let i = rng.random_range(0..muts.len());
            if let Some((v, scale)) = muts[i].numeric() {
                let f = 10f64.powf(rng.random_range(0.0..1.0));
                let up = rng.random_range(0..4) != 0;
                let nv = match scale {
                    Scale::Log | Scale::Integer => {
                        if up {
                            v * f
                        } else {
                            v / f
                        }
                    }
                    // Towards 1 is "up" for β₂ and momentum.
                    Scale::Complement => 1.0 - if up { (1.0 - v) / f } else { (1.0 - v) * f },
                    Scale::Linear => v + if up { f } else { -f } * v.abs().max(1.0),
                };
                muts[i] = space.clamp(muts[i].with_value(nv));
            } else {
                muts.push(draw(one, &mut runner));
            }
        }
        2 => muts.push(draw(one, &mut runner)),
        _ if muts.len() > 1 => {
            muts.remove(rng.random_range(0..muts.len()));
        }
        _ => muts = draw(strategy, &mut runner),
    }
    (normalize(&muts), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::corpus::State;

    #[test]
    fn the_corner_sweep_tries_the_cheap_corners_first() {
        // Issue 27's RNN base: its safer end of the batch size, 1 row a step, costs 11.3 × the base
        // (cost::tests has it by hand); 20 epochs or sequences of 400, 4 ×, stay among the cheap.
        let base = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/rnn_sgd_long_sequences.toml")).unwrap();
        let space = Space::of(&base);
        let corners = by_cost(&base, space.corners());
        let ratio = |c: &[Mutation]| crate::search::cost::relative(&base, &mutate(&base, c).unwrap());
        let first_costly = corners.iter().position(|c| ratio(c) > DEFER).expect("some corner is costly");
        assert!(corners[first_costly..].iter().all(|c| ratio(c) > DEFER), "cheap corners all come first");
        assert!(corners[first_costly..].windows(2).all(|w| ratio(&w[0]) <= ratio(&w[1])), "costly ones cheapest first");
        let one_row = vec![Mutation::new(crate::scenario::Knob::BatchSize, 1u32)];
        assert!(corners.iter().position(|c| *c == one_row).unwrap() >= first_costly, "batches of one row wait");
        assert!(space.corners().iter().position(|c| *c == one_row).unwrap() < first_costly, "they did not before");
        // The cheap ones keep the space's order: the lr's riskier end first.
        assert_eq!(corners[0], space.corners()[0]);
        assert_eq!(corners[0][0].knob(), crate::scenario::Knob::Lr);
        assert_eq!(corners.len(), space.corners().len());
    }

    #[test]
    fn candidates_depend_only_on_seed_and_index() {
        let base = crate::scenario::seed("s000_ex1_bce_mlp");
        let space = Space::of(&base);
        let (strategy, one, corners) = (space.candidate(), space.mutation(), space.corners());
        let shared = Campaign::new(State::default(), crate::search::Cap::default());
        let opts = HuntOptions { engine: Engine::Property, seed: 9, ..HuntOptions::default() };
        let a: Vec<_> = (0..20).map(|i| generate(&opts, i, &space, (&strategy, &one, &[]), &shared).0).collect();
        let b: Vec<_> = (0..20).map(|i| generate(&opts, i, &space, (&strategy, &one, &[]), &shared).0).collect();
        assert_eq!(a, b);
        assert!(a.windows(2).any(|w| w[0] != w[1]), "different indices draw different candidates");
        // The guided engine starts with the corner sweep, one knob at a time.
        let guided = HuntOptions { engine: Engine::Guided, ..opts };
        for (i, c) in corners.iter().enumerate() {
            assert_eq!(&generate(&guided, i as u64, &space, (&strategy, &one, &corners), &shared).0, c);
            assert_eq!(c.len(), 1);
        }
    }
}

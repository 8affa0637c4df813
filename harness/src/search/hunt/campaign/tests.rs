//! Tests of the campaign's state: deferral, saving mid-run, resumed counts, folded triggers.

use super::*;
use crate::run::{Kind, Status};
use crate::scenario::Phase;
use crate::scenario::{DTypeName, Knob};
use crate::search::finding::Pending;
use crate::search::minimize::Minimal;

fn minimal(muts: Vec<Mutation>) -> (Minimal, Pending) {
    let s = crate::scenario::seed("s000_ex1_bce_mlp");
    let mut o = Outcome::error("t", String::new());
    let at = Location { step: 1, epoch: 1, fold: 0, phase: Phase::Loss, tensor: crate::scenario::TensorId::Loss, kind: Kind::Nan, index: 0, ..Default::default() };
    (o.outcome, o.error, o.first_nonfinite, o.dtype) = (Status::Nonfinite, None, Some(at.clone()), Some(crate::scenario::RunDType::F32));
    let key = raw_key(&o, &muts);
    let p = Pending { key, found: muts.clone(), location: at, dtype: "f32".into(), count: 1, seconds_to_find: 0.0, runs_to_find: 1 };
    let m = Minimal { mutations: muts, knob_repro: s.clone(), repro: s, outcome: o, thresholds: vec![], rows: None, full_step: None, complete: true, runs: 1 };
    (m, p)
}

#[test]
fn a_deferred_candidate_gives_back_its_run_and_comes_back_when_due() {
    let c = Campaign::new(State::default(), Cap::default());
    let costly = vec![Mutation::new(Knob::BatchSize, 1u32)];
    assert_eq!(c.reserve(Some(2), false), Some(Ticket::Fresh(0)));
    c.defer(11.3, costly.clone(), Some(0));
    // Not run: not counted, so `max_runs` still allows two runs.
    assert_eq!((c.counts().runs, c.counts().deferred), (0, 1));
    assert_eq!(c.reserve(Some(2), false), Some(Ticket::Fresh(1)));
    // Deferring counted one base run; 10.3 more of cheap candidates make the 11.3 it waits for.
    c.spend(10.3);
    assert_eq!(c.reserve(Some(2), false), Some(Ticket::Due(costly)));
    assert_eq!(c.reserve(Some(2), false), None, "two runs made");
    assert_eq!((c.counts().runs, c.counts().deferred_run), (2, 1));
}

#[test]
fn a_state_saved_mid_run_redoes_the_running_candidates_and_keeps_the_flips_being_minimized() {
    let c = Campaign::new(State::default(), Cap::default());
    for k in 0..3 {
        assert_eq!(c.reserve(Some(3), false), Some(Ticket::Fresh(k)));
    }
    c.remember(Mutant { mutations: vec![Mutation::new(Knob::Lr, 0.5)], score: 0.1 }, Some(0));
    let (_, p) = minimal(vec![Mutation::new(Knob::Lr, 9.0)]);
    assert!(c.hit(&p, Some(2)), "a new flip, being minimized");
    // Killed now: candidate 1 is still running, so it is not a run yet but one to redo.
    let saved = c.snapshot();
    assert_eq!((saved.runs, saved.next, saved.redo.clone()), (2, 3, vec![1]));
    assert_eq!(saved.pending, [p]);
    let resumed = Campaign::new(saved, Cap::default());
    assert_eq!(resumed.reserve(Some(3), false), Some(Ticket::Fresh(1)), "the running one first");
    assert_eq!(resumed.reserve(Some(3), false), None, "then the budget is spent");
}

#[test]
fn a_resumed_campaign_counts_a_flip_whose_trigger_moved_site_where_it_did() {
    // Found failing in the forward pass, minimized to a trigger that fails in the loss.
    let c = Campaign::new(State::default(), Cap::default());
    let (m, mut p) = minimal(vec![Mutation::new(Knob::Lr, 9.0)]);
    p.location.phase = Phase::Forward;
    p.key = key_of(&p.location, "f32", &p.found);
    assert!(c.hit(&p, None));
    c.register(&p, "s000_ex1_bce_mlp", &m, 1.0, 0.0);
    let resumed = Campaign::new(c.snapshot(), Cap::default());
    assert!(!resumed.hit(&p, None), "a repeat, not a new flip to minimize again");
    assert_eq!(resumed.snapshot().findings[0].count, 2);
}

#[test]
fn triggers_that_add_knobs_to_another_count_for_it() {
    let c = Campaign::new(State::default(), Cap::default());
    let lr = Mutation::new(Knob::Lr, 1.0);
    let f16 = Mutation::new(Knob::Dtype, DTypeName::F16);
    for muts in [vec![lr.clone(), f16.clone()], vec![lr.clone()], vec![f16.clone()]] {
        let (m, p) = minimal(muts);
        assert!(c.hit(&p, None));
        c.register(&p, "s000_ex1_bce_mlp", &m, 1.0, 0.0);
    }
    let f = &c.snapshot().findings[0];
    let sets: Vec<(usize, usize)> = f.triggers.iter().map(|t| (t.mutations.len(), t.count)).collect();
    assert_eq!(sets, [(1, 2), (1, 1)], "{{lr, f16}} folded into {{lr}}; {{f16}} stands alone");
    assert_eq!(f.count, 3);
    // The empty trigger (the base itself) covers every other.
    let (m, p) = minimal(vec![]);
    assert!(c.hit(&p, None));
    c.register(&p, "s000_ex1_bce_mlp", &m, 0.0, 0.0);
    let f = &c.snapshot().findings[0];
    assert_eq!(f.triggers.len(), 1);
    assert_eq!((f.triggers[0].mutations.len(), f.triggers[0].count, f.count), (0, 4, 4));
    // A repeat of a folded raw flip now counts for the trigger that absorbed it.
    let (_, p) = minimal(vec![lr, f16]);
    assert!(!c.hit(&p, None));
    assert_eq!(c.snapshot().findings[0].triggers[0].count, 5);
}

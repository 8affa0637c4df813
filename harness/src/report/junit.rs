//! The results of a check as JUnit XML, for CI dashboards (written with quick-junit).

use super::check::{CheckResult, Verdict};
use crate::error::{Error, Result};

/// The results as JUnit XML.
pub fn junit(results: &[CheckResult]) -> Result<String> {
    use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("nanhunt check");
    for r in results {
        let status = match &r.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Skip => TestCaseStatus::skipped(),
            Verdict::Fail(m) | Verdict::Error(m) => {
                let kind = if matches!(r.verdict, Verdict::Fail(_)) { NonSuccessKind::Failure } else { NonSuccessKind::Error };
                let mut s = TestCaseStatus::non_success(kind);
                s.set_message(m.clone());
                s
            }
        };
        let mut case = TestCase::new(r.name.clone(), status);
        case.set_classname(r.path.display().to_string());
        case.set_time(r.time);
        case.set_system_out(r.detail.clone());
        if !r.mutants.is_empty() {
            case.properties.push(Property::new("neighbourhood.mutants", r.mutants.join("; ")));
        }
        if let Some(c) = &r.confidence {
            case.properties.push(Property::new("neighbourhood.confidence", c.clone()));
        }
        suite.add_test_case(case);
    }
    let mut report = Report::new("nanhunt");
    report.add_test_suite(suite);
    report.to_string().map_err(Error::Junit)
}

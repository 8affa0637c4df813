//! The picture of `nanhunt margins`: one bar per knob, the decades it can move
//! below and above its base before the outcome changes (log10 of the margin,
//! the base at 0). A knob with no threshold within the search range has no bar
//! on that side.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot::{font, FONT};
use crate::error::{Error, Result};
use crate::search::Margins;

/// Renders the margins as SVG text.
pub fn margins_svg(m: &Margins) -> Result<String> {
    let path = Path::new("margins.svg");
    font(path)?;
    let err = |e: DrawingAreaErrorKind<std::io::Error>| Error::Plot { path: path.to_path_buf(), source: Box::new(e) };
    // Decades on each side: log10 of the factor for log knobs, of the distance for linear ones.
    let decades = |k: &crate::search::KnobMargin, b: &Option<crate::search::Bound>| b.as_ref().map(|b| k.size(b).log10().abs().min(30.0));
    let rows: Vec<(String, Option<f64>, Option<f64>)> = m.knobs.iter().map(|k| (k.label(), decades(k, &k.lower), decades(k, &k.upper))).collect();
    let span = rows.iter().flat_map(|(_, a, b)| [*a, *b]).flatten().fold(1.0f64, f64::max).ceil();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (800, 120 + 36 * rows.len().max(1) as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let caption = format!("{}: decades to the nearest {} (base at 0)", m.scenario, if m.base_location.is_some() { "fix" } else { "flip" });
        let mut chart =
            ChartBuilder::on(&root).caption(caption, (FONT, 18)).margin(12).x_label_area_size(36).y_label_area_size(170).build_cartesian_2d(-span..span, 0.0..rows.len().max(1) as f64).map_err(err)?;
        chart.configure_mesh().x_desc("decades below ← base → decades above").label_style((FONT, 12)).y_labels(0).disable_y_mesh().draw().map_err(err)?;
        // Each knob's name beside its bars, in the label area.
        let style = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, (name, _, _)) in rows.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(-span, i as f64 + 0.5));
            root.draw(&Text::new(name.clone(), (x - 8, y), style.clone())).map_err(err)?;
        }
        let bars = rows.iter().enumerate().flat_map(|(i, (_, lo, hi))| {
            let y = i as f64;
            let lower = lo.map(|d| Rectangle::new([(-d, y + 0.2), (0.0, y + 0.8)], RGBColor(31, 119, 180).filled()));
            let upper = hi.map(|d| Rectangle::new([(0.0, y + 0.2), (d, y + 0.8)], RGBColor(214, 39, 40).filled()));
            lower.into_iter().chain(upper)
        });
        chart.draw_series(bars).map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Status;
    use crate::scenario::Knob;
    use crate::search::{Bound, KnobMargin, Scale};

    #[test]
    fn one_bar_per_side_with_a_threshold() {
        let bound = |margin: f64| Some(Bound { flips_at: margin, stays_finite_at: margin, margin, location: None, verified: true });
        let m = Margins {
            scenario: "t".into(),
            base_outcome: Status::Finite,
            base_location: None,
            knobs: vec![
                KnobMargin {
                    knob: Knob::Lr,
                    constant: None,
                    scale: Scale::Log,
                    base: 1.0,
                    lower: bound(0.01),
                    upper: bound(100.0),
                    lower_unsearched: None,
                    upper_unsearched: None,
                    lower_growing: None,
                    upper_growing: None,
                },
                KnobMargin {
                    knob: Knob::InitScale,
                    constant: None,
                    scale: Scale::Log,
                    base: 1.0,
                    lower: None,
                    upper: bound(10.0),
                    lower_unsearched: None,
                    upper_unsearched: None,
                    lower_growing: None,
                    upper_growing: None,
                },
            ],
            categorical: vec![],
        };
        let svg = margins_svg(&m).unwrap();
        assert!(svg.contains("optimizer.lr") && svg.contains("model.init_scale"), "labelled bars");
        assert_eq!(svg.matches("<rect").count() - 1, 3, "three bars (the other rect is the background)");
    }
}

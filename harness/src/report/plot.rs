//! The report's picture: loss, gradient norm and largest activation against
//! step, on a log scale, with the first non-finite step marked.
//!
//! Text is drawn with an embedded DejaVu Sans (the `dejavu` crate), so plots
//! need no system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::run::Trace;

pub(super) const FONT: &str = "sans-serif";
static REGISTER: Once = Once::new();

pub(super) fn font(path: &Path) -> Result<()> {
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| Error::Plot { path: path.to_path_buf(), source: "the embedded DejaVu font was rejected".into() });
    });
    result
}

/// One named line of the plot.
struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

fn series(trace: &Trace) -> Vec<Series> {
    let pick = |f: &dyn Fn(&crate::run::TraceRow) -> Option<f64>| trace.rows.iter().enumerate().filter_map(|(i, r)| f(r).filter(|v| v.is_finite() && *v > 0.0).map(|v| ((i + 1) as f64, v))).collect();
    vec![
        Series { name: "|train loss|", color: RGBColor(31, 119, 180), points: pick(&|r| Some(r.train_loss.abs())) },
        Series { name: "|val loss|", color: RGBColor(148, 103, 189), points: pick(&|r| r.val_loss.map(f64::abs)) },
        Series { name: "grad norm", color: RGBColor(255, 127, 14), points: pick(&|r| r.grad_norm) },
        Series { name: "max |activation|", color: RGBColor(44, 160, 44), points: pick(&|r| r.max_abs.iter().copied().filter(|v| v.is_finite()).reduce(f64::max)) },
    ]
}

fn draw<DB: DrawingBackend>(path: &Path, root: DrawingArea<DB, Shift>, title: &str, trace: &Trace, mark: Option<usize>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| Error::Plot { path: path.to_path_buf(), source: Box::new(e) };
    root.fill(&WHITE).map_err(err)?;
    let lines = series(trace);
    let ys = lines.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    // Keep the axis finite and positive: plotters' log axis loops forever on an infinite range.
    // At most 80 decades are shown; smaller values are clipped.
    let (lo, hi) = if lo <= hi { ((lo / 2.0).max(f64::MIN_POSITIVE), (hi * 2.0).min(f64::MAX / 2.0)) } else { (1e-3, 1e3) };
    let lo = lo.max(hi * 1e-80);
    let steps = trace.rows.len().max(mark.unwrap_or(0)).max(2) as f64;
    let mut chart =
        ChartBuilder::on(&root).caption(title, (FONT, 20)).margin(12).x_label_area_size(36).y_label_area_size(64).build_cartesian_2d(0.5f64..steps + 0.5, (lo..hi).log_scale()).map_err(err)?;
    chart.configure_mesh().x_desc("step").y_desc("magnitude (log)").label_style((FONT, 12)).y_label_formatter(&|v| format!("{v:.0e}")).draw().map_err(err)?;
    for s in lines.into_iter().filter(|s| !s.points.is_empty()) {
        let color = s.color;
        chart.draw_series(LineSeries::new(s.points, color.stroke_width(2))).map_err(err)?.label(s.name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    if let Some(step) = mark {
        let x = step.max(1) as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(x, lo), (x, hi)], RED.stroke_width(2))))
            .map_err(err)?
            .label("first non-finite")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
    }
    chart.configure_series_labels().label_font((FONT, 12)).background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw().map_err(err)?;
    root.present().map_err(err)
}

/// Renders the plot as SVG text.
pub fn svg(title: &str, trace: &Trace, mark: Option<usize>) -> Result<String> {
    let path = Path::new("trace.svg");
    font(path)?;
    let mut out = String::new();
    draw(path, SVGBackend::with_string(&mut out, (800, 480)).into_drawing_area(), title, trace, mark)?;
    Ok(out)
}

/// Renders the plot as a PNG file (written through a temporary file by the caller's directory swap).
pub fn png(path: &Path, title: &str, trace: &Trace, mark: Option<usize>) -> Result<()> {
    font(path)?;
    draw(path, BitMapBackend::new(path, (800, 480)).into_drawing_area(), title, trace, mark)
}

#[cfg(test)]
mod tests {
    use crate::run::{Trace, TraceRow};

    #[test]
    fn extreme_values_still_plot() {
        // A finite 1e308 once doubled to an infinite axis, on which plotters' log scale never ends.
        let rows = vec![TraceRow { step: 1, train_loss: 1e308, grad_norm: Some(5e-324), ..Default::default() }];
        let svg = super::svg("t", &Trace { layers: vec![], rows, dropped: 0, scaled: false }, Some(1)).unwrap();
        assert!(svg.contains("<svg"));
    }
}

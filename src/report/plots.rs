//! The search's plots as SVG text (plotters' SVG backend), to be inlined in the page: each model's
//! learning curves, and the best validation accuracy against wall-clock time. Text is drawn by
//! the browser in its own sans-serif: no font travels with the page.

use crate::error::{Error, Result};
use crate::train::EpochStats;
use plotters::prelude::*;
use std::ops::Range;

/// Training and validation: the two series of every curve.
const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VALIDATION_COLOUR: RGBColor = RGBColor(255, 127, 14);
const FONT: &str = "sans-serif";

fn plot_error<E: std::fmt::Debug>(e: E) -> Error {
    Error::Other(format!("drawing a plot: {e:?}"))
}

/// A range around `values` with a little room, within `clamp`; `fallback` when there are none.
fn padded_range(values: impl Iterator<Item = f64>, clamp: Range<f64>, fallback: Range<f64>) -> Range<f64> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return fallback;
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad).max(clamp.start)..(hi + pad).min(clamp.end)
}

/// One metric by epoch: training and validation.
struct Metric<'a> {
    name: &'a str,
    train: Vec<(f64, f64)>,
    validation: Vec<(f64, f64)>,
    clamp: Range<f64>,
}

fn draw_metric<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, metric: &Metric, epochs: usize) -> Result<()> {
    let y = padded_range(metric.train.iter().chain(&metric.validation).map(|p| p.1), metric.clamp.clone(), 0.0..1.0);
    let x = 0.5..epochs.max(1) as f64 + 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(metric.name, (FONT, 16))
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(44)
        .build_cartesian_2d(x, y)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_labels(epochs.clamp(2, 8))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(5)
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style((FONT, 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_error)?;
    for (points, colour) in [(&metric.train, TRAIN_COLOUR), (&metric.validation, VALIDATION_COLOUR)] {
        chart.draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2))).map_err(plot_error)?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 2, colour.filled()))).map_err(plot_error)?;
    }
    Ok(())
}

/// One model's learning curves: accuracy (left) and loss (right) by epoch, training in blue and
/// validation in orange.
pub fn learning_curves(title: &str, curve: &[EpochStats]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 210)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root.titled(title, (FONT, 17)).map_err(plot_error)?;
        let (left, right) = root.split_horizontally(260);
        let points = |f: &dyn Fn(&EpochStats) -> Option<f64>| -> Vec<(f64, f64)> {
            curve.iter().filter_map(|e| Some((e.epoch as f64, f(e)?))).filter(|p| p.1.is_finite()).collect()
        };
        let accuracy =
            Metric { name: "accuracy", train: points(&|e| Some(e.accuracy)), validation: points(&|e| e.val_accuracy), clamp: 0.0..1.0 };
        let loss = Metric { name: "loss", train: points(&|e| Some(e.loss)), validation: points(&|e| e.val_loss), clamp: 0.0..f64::MAX };
        let epochs = curve.iter().map(|e| e.epoch).max().unwrap_or(1);
        draw_metric(&left, &accuracy, epochs)?;
        draw_metric(&right, &loss, epochs)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A finished model on the time axis.
#[derive(Clone, Copy, Debug)]
pub struct TimedResult {
    /// Minutes since the search began.
    pub minutes: f64,
    pub val_accuracy: f64,
}

/// Each model's validation accuracy (points) when it finished, and the best so far (a step line),
/// against minutes since the search began.
pub fn best_over_time(results: &[TimedResult]) -> Result<String> {
    let mut sorted = results.to_vec();
    sorted.sort_by(|a, b| a.minutes.total_cmp(&b.minutes));
    let mut best = Vec::new();
    let mut so_far = f64::NEG_INFINITY;
    for r in &sorted {
        if r.val_accuracy > so_far {
            if so_far.is_finite() {
                // Hold the old best until this model finished: a step, not a slope.
                best.push((r.minutes, so_far));
            }
            so_far = r.val_accuracy;
            best.push((r.minutes, so_far));
        }
    }
    let end = sorted.last().map_or(1.0, |r| r.minutes).max(1e-3);
    if let Some(&(_, last)) = best.last() {
        best.push((end * 1.02, last));
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let y = padded_range(sorted.iter().map(|r| r.val_accuracy), 0.0..1.0, 0.0..1.0);
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(76)
            .build_cartesian_2d(0.0..end * 1.05, y)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("minutes since the search began")
            .y_desc("validation accuracy")
            .y_label_formatter(&|v| format!("{v:.4}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(best.iter().copied(), VALIDATION_COLOUR.stroke_width(2)))
            .map_err(plot_error)?
            .label("best so far")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], VALIDATION_COLOUR.stroke_width(2)));
        chart
            .draw_series(sorted.iter().map(|r| Circle::new((r.minutes, r.val_accuracy), 3, TRAIN_COLOUR.filled())))
            .map_err(plot_error)?
            .label("a model finished")
            .legend(|(x, y)| Circle::new((x + 9, y), 3, TRAIN_COLOUR.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(e: usize, acc: f64) -> EpochStats {
        EpochStats { epoch: e, seconds: 1.0, loss: 1.0 - acc, accuracy: acc, val_loss: Some(1.1 - acc), val_accuracy: Some(acc - 0.01) }
    }

    #[test]
    fn learning_curves_are_an_svg_with_both_series() {
        let svg = learning_curves("model 3", &[epoch(1, 0.5), epoch(2, 0.8), epoch(3, 0.9)]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("model 3") && svg.contains("accuracy") && svg.contains("loss"));
        // Two metrics, each a training and a validation line.
        let lines = |colour: &str| svg.lines().filter(|l| l.starts_with("<polyline") && l.contains(colour)).count();
        assert_eq!((lines("#1F77B4"), lines("#FF7F0E")), (2, 2), "{svg}");
    }

    #[test]
    fn a_one_epoch_curve_and_an_empty_one_still_draw() {
        assert!(learning_curves("one", &[epoch(1, 0.7)]).unwrap().starts_with("<svg"));
        assert!(learning_curves("none", &[]).unwrap().starts_with("<svg"));
        assert!(best_over_time(&[]).unwrap().starts_with("<svg"));
    }

    #[test]
    fn the_best_so_far_is_a_rising_step_line() {
        let results = [
            TimedResult { minutes: 3.0, val_accuracy: 0.97 },
            TimedResult { minutes: 1.0, val_accuracy: 0.95 },
            TimedResult { minutes: 5.0, val_accuracy: 0.96 },
        ];
        let svg = best_over_time(&results).unwrap();
        assert_eq!(svg.matches("<circle").count(), 3 + 1, "three models and the legend's marker");
        assert!(svg.contains("best so far"));
    }

    #[test]
    fn ranges_pad_and_clamp() {
        let r = padded_range([0.9, 0.99].into_iter(), 0.0..1.0, 0.0..1.0);
        assert!(r.start < 0.9 && r.end <= 1.0 && r.end > 0.99);
        assert_eq!(padded_range(std::iter::empty(), 0.0..1.0, 0.2..0.4), 0.2..0.4);
        assert_eq!(padded_range([f64::NAN].into_iter(), 0.0..1.0, 0.0..1.0), 0.0..1.0);
    }
}

//! The report's lists as CSV, for machines: one header line, then one row per item, fields quoted
//! where they hold a comma, a quote or a line break (RFC 4180).

use super::{ImageRef, Report, Sources};
use std::fmt::Write;

fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn row(out: &mut String, fields: &[String]) {
    let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
    let _ = writeln!(out, "{}", line.join(","));
}

fn image_fields(sources: &Sources, image: ImageRef) -> [String; 3] {
    let file = sources.file(image).map_or(String::new(), |f| f.path.display().to_string());
    [image.split.to_string(), image.index.to_string(), file]
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// Every CSV file of the report: (name, text).
pub fn all(report: &Report, sources: &Sources) -> Vec<(&'static str, String)> {
    let class = |c: usize| report.data.class_names.get(c).cloned().unwrap_or_else(|| c.to_string());

    let mut suspects = String::from("split,index,file,given,suggested,confidence,given_probability\n");
    for issues in [&report.train_labels, &report.test_labels].into_iter().flatten() {
        for s in &issues.suspects {
            let [split, index, file] = image_fields(sources, s.image);
            row(
                &mut suspects,
                &[split, index, file, class(s.given), class(s.suggested), s.confidence.to_string(), s.given_probability.to_string()],
            );
        }
    }

    let mut duplicates = String::from("a_split,a_index,a_file,b_split,b_index,b_file,distance,exact\n");
    for p in &report.health.duplicates.pairs {
        let [a_split, a_index, a_file] = image_fields(sources, p.a);
        let [b_split, b_index, b_file] = image_fields(sources, p.b);
        row(&mut duplicates, &[a_split, a_index, a_file, b_split, b_index, b_file, p.distance.to_string(), p.exact.to_string()]);
    }

    let mut flat = String::from("split,index,file,kind,detail\n");
    for f in &report.health.flat {
        let [split, index, file] = image_fields(sources, f.image);
        let kind = serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        row(&mut flat, &[split, index, file, kind, f.detail.clone()]);
    }

    let mut odd = String::from("split,index,file,height,width,channels,usual\n");
    for o in &report.health.odd_shapes {
        let [split, index, _] = image_fields(sources, o.image);
        row(
            &mut odd,
            &[
                split,
                index,
                o.path.display().to_string(),
                o.size[0].to_string(),
                o.size[1].to_string(),
                o.channels.to_string(),
                o.usual.clone(),
            ],
        );
    }

    let mut models = String::from("model,father,epoch,seconds,loss,accuracy,val_loss,val_accuracy\n");
    for r in report.search.iter().flat_map(|s| &s.records) {
        for e in &r.curve {
            row(
                &mut models,
                &[
                    r.id.to_string(),
                    r.father.map_or(String::new(), |f| f.to_string()),
                    e.epoch.to_string(),
                    e.seconds.to_string(),
                    e.loss.to_string(),
                    e.accuracy.to_string(),
                    opt(e.val_loss),
                    opt(e.val_accuracy),
                ],
            );
        }
    }

    let mut wrong = String::from("index,file,label,predicted,confidence\n");
    if let Some(e) = &report.evaluation {
        for i in e.wrong() {
            let [_, index, file] = image_fields(sources, ImageRef { split: super::Split::Test, index: i });
            row(&mut wrong, &[index, file, class(e.labels[i]), class(e.predicted[i]), e.confidence[i].to_string()]);
        }
    }

    vec![
        ("suspects.csv", suspects),
        ("duplicates.csv", duplicates),
        ("flat_images.csv", flat),
        ("odd_shapes.csv", odd),
        ("models.csv", models),
        ("wrong.csv", wrong),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }
}

//! The report as one HTML page: inline CSS, inline SVG plots, inline PNG images, no script. A
//! Content-Security-Policy forbids every load that is not a `data:` image, so a page that tried
//! to reach the network would fail loudly in a browser, not quietly depend on it.
//!
//! Every section carries an `id`, and every list a `data-count` with the number of rows of its
//! CSV beside the page, so a test (or a person) can check the page against the files.

use super::health::FlatKind;
use super::images::data_uri;
use super::labels::LabelIssues;
use super::plots::{best_over_time, learning_curves, TimedResult};
use super::tree::{escape, model_tree, TreeNode};
use super::{ImageRef, Report, Sources, Split, SHOWN};
use crate::error::Result;
use std::fmt::Write;

/// The ids of the page's sections, in order: what a reader (and the browser test) can rely on.
pub const SECTIONS: [&str; 13] = [
    "summary",
    "classes",
    "duplicates",
    "flat-images",
    "odd-shapes",
    "train-labels",
    "test-labels",
    "search",
    "best-over-time",
    "tree",
    "curves",
    "confusion",
    "wrong",
];

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 1.7em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.3em; margin: 1.6em 0 0.4em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
section { background: #fff; border: 1px solid #e4e4e4; border-radius: 8px; padding: 4px 18px 14px; margin: 14px 0; }
nav { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 0.92em; }
nav a { color: #1f77b4; text-decoration: none; }
.muted { color: #666; font-size: 0.92em; }
.verdict li { margin: 3px 0; }
.ok { color: #2a7b2a; } .warn { color: #b35900; font-weight: 600; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; }
td.left, th.left { text-align: left; }
.scroll { overflow-x: auto; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(118px, 1fr)); gap: 10px; margin: 10px 0; }
.gallery figure { margin: 0; text-align: center; font-size: 0.8em; background: #f6f6f6; border-radius: 6px; padding: 6px 2px; }
.gallery img { width: 84px; height: 84px; image-rendering: pixelated; object-fit: contain; background: #000; }
.pair img { width: 52px; height: 52px; }
.curves { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 8px; }
svg { max-width: 100%; height: auto; }
.tree svg { max-width: none; }
.legend span { display: inline-block; width: 14px; height: 4px; margin: 0 4px 3px 10px; vertical-align: middle; }
";

/// The page.
pub fn render(report: &Report, sources: &Sources) -> Result<String> {
    let mut html = String::new();
    let title = escape(&report.title);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\
         <title>{title}</title><style>{STYLE}</style></head><body><main>\n<h1>{title}</h1>\n"
    );
    let _ = write!(html, "<p class=\"muted\">{}</p>\n<nav>", escape(&describe_data(report)));
    for id in SECTIONS {
        let _ = write!(html, "<a href=\"#{id}\">{}</a>", id.replace('-', " "));
    }
    html.push_str("</nav>\n");
    summary(&mut html, report);
    classes(&mut html, report);
    duplicates(&mut html, report, sources)?;
    flat_images(&mut html, report, sources)?;
    odd_shapes(&mut html, report);
    label_section(&mut html, "train-labels", "Suspected label errors: training set", report.train_labels.as_ref(), report, sources)?;
    label_section(&mut html, "test-labels", "Suspected label errors: test set", report.test_labels.as_ref(), report, sources)?;
    search_sections(&mut html, report)?;
    confusion(&mut html, report);
    wrong(&mut html, report, sources)?;
    let _ = write!(
        html,
        "<p class=\"muted\">Beside this page: report.json (everything), suspects.csv, duplicates.csv, flat_images.csv, \
         odd_shapes.csv, models.csv, wrong.csv. Made in {:.1}s.</p>\n</main></body></html>\n",
        report.seconds
    );
    Ok(html)
}

fn describe_data(report: &Report) -> String {
    let d = &report.data;
    format!(
        "{}: {} training and {} test images of {}x{}, {} channel{}, {} classes",
        d.name,
        d.train,
        d.test,
        d.shape[1],
        d.shape[2],
        d.shape[0],
        if d.shape[0] == 1 { "" } else { "s" },
        d.class_names.len()
    )
}

fn open_section(html: &mut String, id: &str, title: &str, count: Option<usize>) {
    let count = count.map_or(String::new(), |n| format!(" data-count=\"{n}\""));
    let _ = writeln!(html, "<section id=\"{id}\"{count}><h2>{}</h2>", escape(title));
}

fn paragraph(html: &mut String, class: &str, text: &str) {
    let _ = writeln!(html, "<p class=\"{class}\">{}</p>", escape(text));
}

fn class_name(report: &Report, class: usize) -> String {
    report.data.class_names.get(class).cloned().unwrap_or_else(|| class.to_string())
}

/// The name of an image: its file when it came from one, else its set and index.
pub fn image_name(sources: &Sources, image: ImageRef) -> String {
    sources.file(image).map_or_else(|| format!("{} #{}", image.split, image.index), |f| f.path.display().to_string())
}

fn figure(html: &mut String, sources: &Sources, image: ImageRef, caption: &str) -> Result<()> {
    let set = sources.set(image.split);
    let name = escape(&image_name(sources, image));
    let _ = write!(
        html,
        "<figure><img src=\"{}\" alt=\"{name}\" title=\"{name}\"><figcaption>{}</figcaption></figure>",
        data_uri(set, image.index)?,
        caption
    );
    Ok(())
}

/// "Is my data dirty?" in a few lines, each a count with what it means.
fn summary(html: &mut String, report: &Report) {
    open_section(html, "summary", "Is the data dirty?", None);
    html.push_str("<ul class=\"verdict\">");
    let h = &report.health;
    let mut line = |bad: bool, text: String| {
        let _ = write!(html, "<li class=\"{}\">{}</li>", if bad { "warn" } else { "ok" }, escape(&text));
    };
    let c = &h.classes;
    line(
        c.imbalance > 3.0 || !c.empty_classes.is_empty(),
        if c.imbalance.is_finite() {
            format!("Class balance: the largest training class is {:.2}x the smallest.", c.imbalance)
        } else {
            format!("Class balance: {} classes have no training image.", c.empty_classes.len())
        },
    );
    let d = &h.duplicates;
    line(
        d.across > 0,
        format!(
            "Duplicates: {} pairs across train and test (they inflate test accuracy), {} within train, {} within test; {} of them exact.",
            d.across, d.within_train, d.within_test, d.exact
        ),
    );
    let count = |kind: FlatKind| h.flat.iter().filter(|f| f.kind == kind).count();
    let flat = h.flat.len();
    line(
        flat > 0,
        format!(
            "Blank or saturated images: {} constant, {} nearly blank, {} saturated.",
            count(FlatKind::Constant),
            count(FlatKind::NearlyBlank),
            count(FlatKind::Saturated)
        ),
    );
    line(!h.odd_shapes.is_empty(), format!("Images of another size or colour than the rest: {}.", h.odd_shapes.len()));
    for (issues, set, n) in [(&report.train_labels, "training", report.data.train), (&report.test_labels, "test", report.data.test)] {
        match issues {
            Some(l) => line(
                !l.suspects.is_empty(),
                format!(
                    "Suspected label errors in the {set} set: {} of {} ({:.2}%).",
                    l.suspects.len(),
                    l.examined,
                    100.0 * l.suspects.len() as f64 / l.examined.max(1) as f64
                ),
            ),
            None => line(false, format!("Label check of the {set} set ({n} images): not run.")),
        }
    }
    if let Some(e) = &report.evaluation {
        line(false, format!("The final model's test accuracy: {:.4} ({} of {} wrong).", e.accuracy, e.wrong().len(), e.predicted.len()));
    }
    html.push_str("</ul></section>\n");
}

fn classes(html: &mut String, report: &Report) {
    let c = &report.health.classes;
    open_section(html, "classes", "Classes", Some(c.names.len()));
    html.push_str("<div class=\"scroll\"><table><tr><th class=\"left\">class</th><th>train</th><th>test</th></tr>");
    for (i, name) in c.names.iter().enumerate() {
        let _ = write!(
            html,
            "<tr><td class=\"left\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            c.train.get(i).copied().unwrap_or(0),
            c.test.get(i).copied().unwrap_or(0)
        );
    }
    html.push_str("</table></div></section>\n");
}

fn duplicates(html: &mut String, report: &Report, sources: &Sources) -> Result<()> {
    let d = &report.health.duplicates;
    open_section(html, "duplicates", "Duplicates", Some(d.pairs.len()));
    paragraph(html, "muted", &d.method);
    let _ = write!(
        html,
        "<table><tr><th class=\"left\">where</th><th>pairs</th></tr><tr><td class=\"left\">across train and test</td><td>{}</td></tr>\
         <tr><td class=\"left\">within train</td><td>{}</td></tr><tr><td class=\"left\">within test</td><td>{}</td></tr>\
         <tr><td class=\"left\">of which exact</td><td>{}</td></tr></table>",
        d.across, d.within_train, d.within_test, d.exact
    );
    if !d.pairs.is_empty() {
        let _ = write!(
            html,
            "<p class=\"muted\">The {} closest pairs (all in duplicates.csv):</p><div class=\"gallery pair\">",
            d.pairs.len().min(SHOWN)
        );
        for p in d.pairs.iter().take(SHOWN) {
            let _ = write!(html, "<figure>");
            for image in [p.a, p.b] {
                let set = sources.set(image.split);
                let name = escape(&image_name(sources, image));
                let _ = write!(html, "<img src=\"{}\" alt=\"{name}\" title=\"{name}\"> ", data_uri(set, image.index)?);
            }
            let _ = write!(
                html,
                "<figcaption>{} #{} · {} #{}<br>{}</figcaption></figure>",
                p.a.split,
                p.a.index,
                p.b.split,
                p.b.index,
                if p.exact { "exact".to_string() } else { format!("distance {:.3}", p.distance) }
            );
        }
        html.push_str("</div>");
    }
    html.push_str("</section>\n");
    Ok(())
}

fn flat_images(html: &mut String, report: &Report, sources: &Sources) -> Result<()> {
    let flat = &report.health.flat;
    open_section(html, "flat-images", "Blank, constant or saturated images", Some(flat.len()));
    if flat.is_empty() {
        paragraph(html, "ok", "None found.");
    } else {
        html.push_str("<div class=\"gallery\">");
        for f in flat.iter().take(SHOWN) {
            figure(html, sources, f.image, &format!("{} #{}<br>{}", f.image.split, f.image.index, escape(&f.detail)))?;
        }
        html.push_str("</div>");
    }
    html.push_str("</section>\n");
    Ok(())
}

fn odd_shapes(html: &mut String, report: &Report) {
    let odd = &report.health.odd_shapes;
    open_section(html, "odd-shapes", "Images of another size or colour", Some(odd.len()));
    if odd.is_empty() {
        paragraph(html, "ok", "None found (or the data's format has one size for all).");
    } else {
        html.push_str("<div class=\"scroll\"><table><tr><th class=\"left\">file</th><th>size</th><th>channels</th><th class=\"left\">most have</th></tr>");
        for o in odd.iter().take(SHOWN * 4) {
            let _ = write!(
                html,
                "<tr><td class=\"left\">{}</td><td>{}x{}</td><td>{}</td><td class=\"left\">{}</td></tr>",
                escape(&o.path.display().to_string()),
                o.size[0],
                o.size[1],
                o.channels,
                escape(&o.usual)
            );
        }
        html.push_str("</table></div>");
    }
    html.push_str("</section>\n");
}

fn label_section(html: &mut String, id: &str, title: &str, issues: Option<&LabelIssues>, report: &Report, sources: &Sources) -> Result<()> {
    open_section(html, id, title, Some(issues.map_or(0, |l| l.suspects.len())));
    let Some(l) = issues else {
        paragraph(html, "muted", "Not run: it needs predictions that did not see the labels (a trained architecture).");
        html.push_str("</section>\n");
        return Ok(());
    };
    paragraph(html, "muted", &format!("Method: {}. {} images examined in {:.0}s.", l.method, l.examined, l.seconds));
    if l.suspects.is_empty() {
        paragraph(html, "ok", "No suspects.");
    } else {
        let _ = write!(
            html,
            "<p class=\"muted\">The {} most doubtful of {} (all in suspects.csv): given label → suggested label (its probability).</p><div class=\"gallery\">",
            l.suspects.len().min(SHOWN),
            l.suspects.len()
        );
        for s in l.suspects.iter().take(SHOWN) {
            let caption = format!(
                "#{} given <b>{}</b> → {} ({:.2})",
                s.image.index,
                escape(&class_name(report, s.given)),
                escape(&class_name(report, s.suggested)),
                s.confidence
            );
            figure(html, sources, s.image, &caption)?;
        }
        html.push_str("</div>");
    }
    html.push_str("</section>\n");
    Ok(())
}

fn search_sections(html: &mut String, report: &Report) -> Result<()> {
    let Some(search) = &report.search else {
        for (id, title) in [
            ("search", "The search"),
            ("best-over-time", "Best accuracy over time"),
            ("tree", "The tree of models"),
            ("curves", "Learning curves"),
        ] {
            open_section(html, id, title, Some(0));
            paragraph(html, "muted", "No search: this report covers the data alone.");
            html.push_str("</section>\n");
        }
        return Ok(());
    };
    let records = &search.records;
    open_section(html, "search", "The search", Some(records.len()));
    paragraph(html, "muted", &search.describe());
    html.push_str(
        "<div class=\"scroll\"><table><tr><th>model</th><th>father</th><th class=\"left\">operations</th><th>parameters</th>\
         <th>epochs</th><th>seconds</th><th>val loss</th><th>val accuracy</th><th class=\"left\">worker</th></tr>",
    );
    for r in records {
        let figure = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let status = match &r.status {
            crate::search::store::Status::Finished => figure(r.val_accuracy, 4),
            crate::search::store::Status::Failed { reason, .. } => format!("failed: {reason}"),
        };
        let _ = write!(
            html,
            "<tr><td>{}{}</td><td>{}</td><td class=\"left\">{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td class=\"left\">{}</td></tr>",
            r.id,
            if search.best == Some(r.id) { " ★" } else { "" },
            r.father.map_or("-".to_string(), |f| f.to_string()),
            escape(&r.operations.join(", ")),
            r.parameters,
            r.epochs,
            r.seconds,
            figure(r.val_loss, 4),
            escape(&status),
            escape(&r.worker)
        );
    }
    html.push_str("</table></div></section>\n");

    open_section(html, "best-over-time", "Best validation accuracy over time", None);
    let start = records.iter().filter_map(|r| r.started_at).fold(f64::INFINITY, f64::min);
    let timed: Vec<TimedResult> = records
        .iter()
        .filter(|r| r.finished())
        .filter_map(|r| Some(TimedResult { minutes: (r.finished_at? - start) / 60.0, val_accuracy: r.val_accuracy? }))
        .collect();
    if timed.is_empty() {
        paragraph(html, "muted", "No finished model has a time (histories written before netmorph kept one).");
    } else {
        html.push_str(&best_over_time(&timed)?);
    }
    html.push_str("</section>\n");

    open_section(html, "tree", "The tree of models", Some(records.len()));
    paragraph(html, "muted", "Each model starts from its father's trained weights through the morphisms named in its box (hover for all). Filled: the best; thick border: in the ensemble.");
    let nodes: Vec<TreeNode> = records
        .iter()
        .map(|r| TreeNode {
            id: r.id,
            father: r.father,
            operations: r.operations.clone(),
            val_accuracy: if r.finished() { r.val_accuracy } else { None },
        })
        .collect();
    let _ = writeln!(html, "<div class=\"scroll tree\">{}</div></section>", model_tree(&nodes, search.best, &search.ensemble));

    open_section(html, "curves", "Learning curves", Some(records.iter().filter(|r| !r.curve.is_empty()).count()));
    html.push_str(
        "<p class=\"legend muted\">By epoch:<span style=\"background:#1f77b4\"></span>training<span style=\"background:#ff7f0e\"></span>validation</p><div class=\"curves\">",
    );
    for r in records.iter().filter(|r| !r.curve.is_empty()) {
        let father = r.father.map_or(String::new(), |f| format!(" (from {f})"));
        html.push_str(&learning_curves(&format!("model {}{father}", r.id), &r.curve)?);
    }
    if let Some(history) = search.final_fit.as_ref().filter(|h| !h.epochs.is_empty()) {
        html.push_str(&learning_curves("final fit (all training images, no validation)", &history.epochs)?);
    }
    html.push_str("</div></section>\n");
    Ok(())
}

fn confusion(html: &mut String, report: &Report) {
    open_section(html, "confusion", "Confusion matrix of the final model (test set)", None);
    let Some(e) = &report.evaluation else {
        paragraph(html, "muted", "No final model to evaluate.");
        html.push_str("</section>\n");
        return;
    };
    html.push_str("<div class=\"scroll\"><table><tr><th class=\"left\">true ↓ predicted →</th>");
    for c in 0..e.confusion.len() {
        let _ = write!(html, "<th>{}</th>", escape(&class_name(report, c)));
    }
    html.push_str("</tr>");
    for (t, row) in e.confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        let _ = write!(html, "<tr><th class=\"left\">{}</th>", escape(&class_name(report, t)));
        for (p, &n) in row.iter().enumerate() {
            // Shade by the share of the true class: the diagonal blue, errors red.
            let share = n as f64 / total.max(1) as f64;
            let colour = if t == p {
                format!("rgba(31,119,180,{:.2})", share * 0.6)
            } else {
                format!("rgba(214,39,40,{:.2})", (share * 8.0).min(0.8))
            };
            let _ = write!(html, "<td style=\"background:{colour}\">{n}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table></div></section>\n");
}

fn wrong(html: &mut String, report: &Report, sources: &Sources) -> Result<()> {
    let wrong = report.evaluation.as_ref().map(|e| e.wrong()).unwrap_or_default();
    open_section(html, "wrong", "Test images the final model gets wrong", Some(wrong.len()));
    if let Some(e) = &report.evaluation {
        let _ = write!(
            html,
            "<p class=\"muted\">{} wrong; the {} most confident mistakes first (all in wrong.csv).</p><div class=\"gallery\">",
            wrong.len(),
            wrong.len().min(SHOWN * 2)
        );
        for &i in wrong.iter().take(SHOWN * 2) {
            let given = sources.test.labels[i] as usize;
            let caption = format!(
                "#{i} true <b>{}</b>, predicted {} ({:.2})",
                escape(&class_name(report, given)),
                escape(&class_name(report, e.predicted[i])),
                e.confidence[i]
            );
            figure(html, sources, ImageRef { split: Split::Test, index: i }, &caption)?;
        }
        html.push_str("</div>");
    } else {
        paragraph(html, "muted", "No final model to evaluate.");
    }
    html.push_str("</section>\n");
    Ok(())
}

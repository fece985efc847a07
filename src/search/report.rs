//! The tables a search prints, in the style AutoKeras 0.3 printed them: "Training model N", the
//! father and the added operations, the model's loss and metric, and a summary at the end.

use super::store::{best_record, ModelRecord, Status, StudyState};

/// A boxed table; cells may hold several lines. `title` spans the whole width.
pub fn table(title: Option<&str>, headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            let w = cell.lines().map(|l| l.chars().count()).max().unwrap_or(0);
            widths[i] = widths[i].max(w);
        }
    }
    let mut inner: usize = widths.iter().map(|w| w + 2).sum::<usize>() + columns.saturating_sub(1);
    if let Some(t) = title {
        let need = t.chars().count() + 2;
        if need > inner {
            // Widen the last column so the title fits.
            widths[columns - 1] += need - inner;
            inner = need;
        }
    }
    let rule = format!("+{}+\n", "-".repeat(inner));
    let mut out = String::new();
    if let Some(t) = title {
        out += &rule;
        out += &format!("|{}|\n", center(t, inner));
    }
    out += &rule;
    out += &line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(), &widths);
    out += &rule;
    for row in rows {
        let height = row.iter().map(|c| c.lines().count().max(1)).max().unwrap_or(1);
        for k in 0..height {
            let cells: Vec<String> = (0..columns).map(|i| row.get(i).and_then(|c| c.lines().nth(k)).unwrap_or("").to_string()).collect();
            out += &line(&cells, &widths);
        }
    }
    out += &rule;
    out
}

fn line(cells: &[String], widths: &[usize]) -> String {
    let parts: Vec<String> = cells.iter().zip(widths).map(|(c, &w)| format!(" {} ", center(c, w))).collect();
    format!("|{}|\n", parts.join("|"))
}

fn center(text: &str, width: usize) -> String {
    let len = text.chars().count();
    let pad = width.saturating_sub(len);
    format!("{}{}{}", " ".repeat(pad / 2), text, " ".repeat(pad - pad / 2))
}

/// "Training model N" and, for a child, its father and the morphisms added.
pub fn training(id: usize, father: Option<usize>, operations: &[String]) -> String {
    let mut out = table(None, &[&format!("Training model {id}")], &[]);
    // An empty body would print a rule twice; keep only the title box.
    out = out.lines().take(3).map(|l| format!("{l}\n")).collect();
    if let Some(f) = father {
        out += &table(None, &["Father model ID", "Added operation"], &[vec![f.to_string(), operations.join("\n")]]);
    }
    out
}

/// The model's result: id, validation loss and metric (validation accuracy) and why its training
/// ended (ranked out, early stopping, the time limit, the epoch cap), or why it failed.
pub fn result<A>(r: &ModelRecord<A>) -> String {
    match &r.status {
        Status::Finished => table(
            None,
            &["Model ID", "Loss", "Metric Value", "Ended by"],
            &[vec![r.id.to_string(), fmt_opt(r.val_loss, 6), fmt_opt(r.val_accuracy, 4), ended_by(r)]],
        ),
        Status::Failed { reason, .. } => table(None, &["Model ID", "Failed"], &[vec![r.id.to_string(), reason.clone()]]),
    }
}

/// Every model of the search, and the best.
pub fn summary<A>(records: &[ModelRecord<A>], best: Option<usize>) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let status = match &r.status {
                Status::Finished => ended_by(r),
                Status::Failed { reason, .. } => format!("failed: {}", truncate(reason, 40)),
            };
            vec![
                r.id.to_string(),
                r.father.map_or("-".into(), |f| f.to_string()),
                if r.operations.is_empty() { "(generator)".into() } else { r.operations.join("\n") },
                r.parameters.to_string(),
                r.epochs.to_string(),
                format!("{:.1}", r.seconds),
                fmt_opt(r.val_loss, 4),
                fmt_opt(r.val_accuracy, 4),
                status,
            ]
        })
        .collect();
    let mut out = table(
        Some("Search summary"),
        &["Model", "Father", "Operations", "Parameters", "Epochs", "Seconds", "Val loss", "Val accuracy", "Ended by"],
        &rows,
    );
    match best.and_then(|b| records.iter().find(|r| r.id == b)) {
        Some(b) => {
            out += &format!(
                "Best model: {} (validation accuracy {}, validation loss {})\n",
                b.id,
                fmt_opt(b.val_accuracy, 4),
                fmt_opt(b.val_loss, 4)
            )
        }
        None => out += "No model finished.\n",
    }
    out
}

/// A study's table for `--status`: its trials by state (counts first), each with its worker and
/// adapter, times and validation figures, and the best so far.
pub fn status(name: &str, state: &StudyState) -> String {
    let finished = state.records.iter().filter(|r| r.finished()).count();
    let mut out = format!(
        "{name}: {} trials: {} running, {finished} finished, {} failed\n",
        state.records.len() + state.running.len(),
        state.running.len(),
        state.records.len() - finished
    );
    let mut rows: Vec<(usize, Vec<String>)> = state
        .records
        .iter()
        .map(|r| {
            let state = match &r.status {
                Status::Finished => "finished".to_string(),
                Status::Failed { reason, .. } => format!("failed: {}", truncate(reason, 40)),
            };
            let worker = if r.worker.is_empty() { "-".to_string() } else { r.worker.clone() };
            (
                r.id,
                vec![
                    r.id.to_string(),
                    state,
                    worker,
                    r.father.map_or("-".into(), |f| f.to_string()),
                    r.epochs.to_string(),
                    format!("{:.1}", r.seconds),
                    fmt_opt(r.val_loss, 4),
                    fmt_opt(r.val_accuracy, 4),
                ],
            )
        })
        .collect();
    for r in &state.running {
        let state = if r.attempt > 1 { format!("running (attempt {})", r.attempt) } else { "running".to_string() };
        let silent = if r.silent > 30.0 { format!("\n(silent {:.0}s)", r.silent) } else { String::new() };
        rows.push((
            r.id,
            vec![
                r.id.to_string(),
                state,
                format!("{}{silent}", r.worker),
                r.spec.father.map_or("-".into(), |f| f.to_string()),
                "-".into(),
                format!("{:.1}", r.seconds),
                "-".into(),
                "-".into(),
            ],
        ));
    }
    rows.sort_by_key(|(id, _)| *id);
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, row)| row).collect();
    out += &table(None, &["Model", "State", "Worker (adapter)", "Father", "Epochs", "Seconds", "Val loss", "Val accuracy"], &rows);
    match best_record(&state.records) {
        Some(b) => {
            out += &format!(
                "Best so far: model {} (validation accuracy {}, validation loss {})\n",
                b.id,
                fmt_opt(b.val_accuracy, 4),
                fmt_opt(b.val_loss, 4)
            )
        }
        None => out += "No model has finished yet.\n",
    }
    out
}

/// Why a finished model's training ended, wrapped to keep the tables narrow.
fn ended_by<A>(r: &ModelRecord<A>) -> String {
    wrap(r.stopped.as_deref().unwrap_or("epoch cap"), ENDED_BY_WIDTH)
}

/// Wide enough for "no validation loss decrease after 5 epochs" on one line.
const ENDED_BY_WIDTH: usize = 44;

/// `text` broken into lines of at most `width` characters at spaces (a longer word keeps its line).
fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines.join("\n")
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_multiline_cells() {
        let t = table(Some("T"), &["a", "bb"], &[vec!["1".into(), "x\nlonger".into()]]);
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
        assert!(t.contains("longer") && t.lines().count() == 8, "{t}");
    }

    #[test]
    fn a_result_says_why_its_training_ended() {
        let mut record = ModelRecord {
            id: 4,
            father: Some(1),
            operations: vec![],
            architecture: (),
            parameters: 10,
            status: Status::Finished,
            epochs: 2,
            seconds: 3.0,
            val_loss: Some(0.05),
            val_accuracy: Some(0.9812),
            stopped: None,
            worker: String::new(),
            curve: vec![],
            started_at: None,
            finished_at: None,
        };
        assert!(result(&record).contains("epoch cap"), "{}", result(&record));
        record.stopped =
            Some("ranked out after epoch 2: best validation accuracy 0.9812 below the median 0.9840 of 4 children at that epoch".into());
        let t = result(&record);
        assert!(t.contains("Ended by") && t.contains("ranked out after epoch 2:") && t.contains("0.9840 of 4"), "{t}");
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]) && widths[0] < 100, "{t}");
        let summary = summary(&[record], Some(4));
        assert!(summary.contains("ranked out after epoch 2:") && summary.contains("Best model: 4"), "{summary}");
    }

    #[test]
    fn wrapping_breaks_at_spaces_within_the_width() {
        assert_eq!(wrap("epoch cap", 44), "epoch cap");
        assert_eq!(wrap("aa bb cc", 5), "aa bb\ncc");
        assert_eq!(wrap("averyverylongword x", 5), "averyverylongword\nx");
        let text = "ranked out after epoch 3: best validation accuracy 0.9812 below the median 0.9840 of 4 children at that epoch";
        let wrapped = wrap(text, ENDED_BY_WIDTH);
        assert!(wrapped.lines().all(|l| l.chars().count() <= ENDED_BY_WIDTH), "{wrapped}");
        assert_eq!(wrapped.replace('\n', " "), text);
    }

    #[test]
    fn training_table_names_the_father_and_operations() {
        let t = training(3, Some(1), &["to_deeper_model 2 Conv2d(64, 64, 3, 1)".into(), "to_wider_model 4 128".into()]);
        assert!(t.contains("Training model 3") && t.contains(" 1 ") && t.contains("to_wider_model 4 128"), "{t}");
        let widths: Vec<usize> = t.lines().skip(3).map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
    }
}

//! The report of a search, read from its store (a search directory or a study in PostgreSQL): the
//! same whether it is made at the end of the search or rebuilt later from what the store holds.

use super::labels::{test_label_issues, training_label_issues};
use super::{Report, ReportOptions, SearchSummary, Sources, TestEvaluation};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::search::classifier::{load_model, ClassifierConfig, ImageClassifier};
use crate::search::ensemble::SelectionStep;
use crate::search::store::{Store, FINAL_OUTCOME};
use crate::train::History;
use std::time::Instant;

/// The search as `store` holds it: every model, the best, the ensemble and the final step.
pub fn search_summary(store: &dyn Store) -> Result<SearchSummary> {
    let mut records = store.state()?.records;
    records.sort_by_key(|r| r.id);
    let best = store.best()?.map(|b| b.id);
    let ensemble = match store.get("ensemble")? {
        Some(v) => serde_json::from_value::<Vec<SelectionStep>>(v)
            .map_err(|e| Error::Store(format!("{}: the ensemble: {e}", store.name())))?
            .last()
            .map(|s| s.members.clone())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let outcome = store.get(FINAL_OUTCOME)?;
    let final_fit = outcome
        .as_ref()
        .and_then(|o| o.get("final_fit"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::from_value::<History>(v.clone()))
        .transpose()
        .map_err(|e| Error::Store(format!("{}: the final fit's history: {e}", store.name())))?;
    Ok(SearchSummary { store: store.name(), records, best, ensemble, final_fit, outcome })
}

/// The final model the search stored (`final.json` and `final.safetensors`), if it got that far.
pub fn final_model(store: &dyn Store) -> Result<Option<Graph>> {
    let (Some(json), Some(weights)) = (store.get_file("final.json")?, store.get_file("final.safetensors")?) else {
        return Ok(None);
    };
    let text = String::from_utf8(json).map_err(|_| Error::Store(format!("{}: final.json is not UTF-8", store.name())))?;
    let mut graph = Graph::from_json(&text).map_err(|e| Error::Store(format!("{}: final.json: {e}", store.name())))?;
    graph.load_weights(&weights).map_err(|e| Error::Store(format!("{}: final.safetensors: {e}", store.name())))?;
    Ok(Some(graph))
}

/// The whole report of the search in `store` on `sources`: the data's health; the search drawn;
/// the final model's confusion matrix, mistakes and test-set label suspects; and, with
/// `options.cross_validation`, the training set's label suspects from k-fold copies of the best
/// model's architecture, trained with `config`'s optimiser, batch size and augmentation.
pub fn search_report(
    device: &Device,
    name: &str,
    sources: &Sources,
    store: &dyn Store,
    config: &ClassifierConfig,
    options: &ReportOptions,
) -> Result<Report> {
    let start = Instant::now();
    let mut report = Report::of_data(name, sources, options);
    if config.verbose {
        println!("Report: data checked in {:.1}s", report.health.seconds);
    }
    let summary = search_summary(store)?;
    if let Some(graph) = final_model(store)? {
        let predicting = Instant::now();
        let probabilities = ImageClassifier::from_graph(device, graph)?.probabilities(sources.test)?;
        report.evaluation = Some(TestEvaluation::of(&probabilities, sources.test)?);
        report.test_labels = Some(test_label_issues(&probabilities, sources.test, predicting.elapsed())?);
    }
    if let (Some(cv), Some(best)) = (&options.cross_validation, summary.best) {
        let architecture = load_model(store, best)?;
        if config.verbose {
            println!(
                "Report: label check of the training set, {} folds of model {best}'s architecture, {} epochs each",
                cv.folds, cv.epochs
            );
        }
        report.train_labels = Some(training_label_issues(device, config, &architecture, sources.train, cv, None)?);
    }
    report.search = Some(summary);
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

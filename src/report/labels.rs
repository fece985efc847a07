//! Suspected label errors, by confident learning (Northcutt, Jiang and Chuang, 2021; cleanlab's
//! `filter_by="confident_learning"`), from predicted probabilities that did not see the label.
//!
//! # The rule
//! For each class `j`, its threshold `t_j` is the mean probability of `j` over the images labelled
//! `j`: how confident the model is, on average, about that class's own images. An image labelled
//! `i` is *confidently* of class `j` when `p_j >= t_j`; of the classes it clears, the most probable
//! is its suggested label. It is a suspect when that label is not `i`. Suspects are ranked by how
//! far the given label sits below the suggested one (`p_suggested - p_given`), largest first.
//!
//! Per-class thresholds, not one global cut, are the point: a class the model finds hard (low `t`)
//! still gets suspects, and a class it finds easy does not flood the list.
//!
//! # Where the probabilities come from
//! - **Training set:** out of sample, from [`cross_validated_probabilities`]: k copies of one
//!   architecture, each trained from scratch on k-1 folds and predicting the fold it did not see.
//! - **Test set:** the final model's predictions. The test set still chooses nothing: the suspects
//!   are reported, never used.

use super::{ImageRef, Split};
use crate::data::split::select;
use crate::data::ImageSet;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::search::classifier::{ClassifierConfig, FinalFit, ImageClassifier};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::time::{Duration, Instant};

/// One image whose given label the predictions doubt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelSuspect {
    pub image: ImageRef,
    pub given: usize,
    pub suggested: usize,
    /// The probability of the suggested label.
    pub confidence: f64,
    /// The probability of the given label.
    pub given_probability: f64,
}

impl LabelSuspect {
    /// How far the given label sits below the suggested one: the ranking key.
    pub fn margin(&self) -> f64 {
        self.confidence - self.given_probability
    }
}

/// The suspects of one set, and how they were found.
#[derive(Clone, Debug, Serialize)]
pub struct LabelIssues {
    pub split: Split,
    /// Where the probabilities came from and the rule, in one sentence for the report.
    pub method: String,
    /// Each class's confidence threshold `t_j`.
    pub thresholds: Vec<f64>,
    /// Ranked, the most doubtful first.
    pub suspects: Vec<LabelSuspect>,
    /// Images examined.
    pub examined: usize,
    /// Time taken (training the folds included).
    pub seconds: f64,
}

/// The suspects among `labels` by the confident-learning rule (see the [module docs](self)), from
/// `probabilities` (one row of `classes` per image, out of sample), ranked.
pub fn confident_learning(
    probabilities: &[Vec<f32>],
    labels: &[u8],
    classes: usize,
    split: Split,
) -> Result<(Vec<f64>, Vec<LabelSuspect>)> {
    if probabilities.len() != labels.len() {
        return Err(Error::Invalid(format!("{} rows of probabilities for {} labels", probabilities.len(), labels.len())));
    }
    if let Some((i, row)) = probabilities.iter().enumerate().find(|(_, row)| row.len() != classes) {
        return Err(Error::Invalid(format!("image {i} has {} class probabilities, not {classes}", row.len())));
    }
    let mut sums = vec![0.0f64; classes];
    let mut counts = vec![0usize; classes];
    for (row, &label) in probabilities.iter().zip(labels) {
        let label = label as usize;
        if label >= classes {
            return Err(Error::Invalid(format!("label {label} is not below the {classes} classes")));
        }
        sums[label] += row[label] as f64;
        counts[label] += 1;
    }
    // A class with no images has no threshold: no image is confidently of it.
    let thresholds: Vec<f64> = sums.iter().zip(&counts).map(|(&s, &c)| if c > 0 { s / c as f64 } else { f64::INFINITY }).collect();
    let mut suspects: Vec<LabelSuspect> = probabilities
        .iter()
        .zip(labels)
        .enumerate()
        .filter_map(|(index, (row, &label))| {
            let (suggested, confidence) = row
                .iter()
                .enumerate()
                .filter(|&(j, &p)| p as f64 >= thresholds[j])
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(j, &p)| (j, p as f64))?;
            (suggested != label as usize).then(|| LabelSuspect {
                image: ImageRef { split, index },
                given: label as usize,
                suggested,
                confidence,
                given_probability: row[label as usize] as f64,
            })
        })
        .collect();
    suspects.sort_by(|a, b| b.margin().total_cmp(&a.margin()).then(a.image.cmp(&b.image)));
    Ok((thresholds, suspects))
}

/// How the training set's out-of-sample probabilities are made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CrossValidation {
    /// Folds (k): each image is predicted by a copy trained on the other k-1.
    pub folds: usize,
    /// Epochs each copy trains.
    pub epochs: usize,
}

impl Default for CrossValidation {
    /// Four folds of three epochs: each copy sees 75% of the data, and a convnet on digits is
    /// past 98% after three epochs, confident enough for the thresholds to mean something.
    fn default() -> CrossValidation {
        CrossValidation { folds: 4, epochs: 3 }
    }
}

/// The folds of `labels`, stratified: each class's images are shuffled (seeded) and dealt in turn.
pub fn stratified_folds(labels: &[u8], folds: usize, seed: u64) -> Vec<Vec<usize>> {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let folds = folds.max(1);
    let mut out = vec![Vec::new(); folds];
    let mut turn = 0;
    for indices in &mut by_class {
        indices.shuffle(&mut rng);
        for &i in indices.iter() {
            out[turn % folds].push(i);
            turn += 1;
        }
    }
    for fold in &mut out {
        fold.sort_unstable();
    }
    out
}

/// Each training image's class probabilities from a copy of `architecture` that did not train on
/// it: `cv.folds` fresh copies, each trained `cv.epochs` epochs on the other folds with `config`'s
/// optimiser, batch size and augmentation. A `deadline` stops each copy's training early (the
/// probabilities are then less confident, but every image still gets one).
pub fn cross_validated_probabilities(
    device: &Device,
    config: &ClassifierConfig,
    architecture: &Graph,
    train: &ImageSet,
    cv: &CrossValidation,
    deadline: Option<Instant>,
) -> Result<Vec<Vec<f32>>> {
    if cv.folds < 2 {
        return Err(Error::Invalid(format!("cross-validation needs at least 2 folds, not {}", cv.folds)));
    }
    if train.n < cv.folds {
        return Err(Error::Invalid(format!("{} training images cannot be split into {} folds", train.n, cv.folds)));
    }
    let folds = stratified_folds(&train.labels, cv.folds, config.seed);
    let mut probabilities = vec![Vec::new(); train.n];
    for (k, held_out) in folds.iter().enumerate() {
        let mut is_held = vec![false; train.n];
        for &i in held_out {
            is_held[i] = true;
        }
        let rest: Vec<usize> = (0..train.n).filter(|&i| !is_held[i]).collect();
        let (fit_set, held_set) = (select(train, &rest), select(train, held_out));
        let fold_config =
            ClassifierConfig { seed: config.seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9), verbose: false, ..config.clone() };
        let mut copy = ImageClassifier::from_architecture(device, fold_config, architecture, &fit_set)?;
        let fold_start = Instant::now();
        let history = copy.final_fit(&fit_set, cv.epochs, FinalFit::Retrain, deadline)?;
        for (&i, p) in held_out.iter().zip(copy.probabilities(&held_set)?) {
            probabilities[i] = p;
        }
        if config.verbose {
            let last = history.epochs.last().map_or(String::new(), |e| format!(", training accuracy {:.4}", e.accuracy));
            println!(
                "Label check: fold {}/{} trained {} epochs in {:.0}s{last}",
                k + 1,
                cv.folds,
                history.epochs.len(),
                fold_start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(probabilities)
}

/// The training set's suspects: [`cross_validated_probabilities`] then [`confident_learning`].
pub fn training_label_issues(
    device: &Device,
    config: &ClassifierConfig,
    architecture: &Graph,
    train: &ImageSet,
    cv: &CrossValidation,
    deadline: Option<Instant>,
) -> Result<LabelIssues> {
    let start = Instant::now();
    let probabilities = cross_validated_probabilities(device, config, architecture, train, cv, deadline)?;
    let (thresholds, suspects) = confident_learning(&probabilities, &train.labels, train.classes, Split::Train)?;
    Ok(LabelIssues {
        split: Split::Train,
        method: format!(
            "out-of-sample probabilities from {k}-fold cross-validation ({k} fresh copies of the chosen architecture, {e} epochs \
             each), then confident learning: per-class thresholds t_j = mean p_j over the images labelled j; an image is a suspect \
             when the most probable class with p_j >= t_j is not its label",
            k = cv.folds,
            e = cv.epochs
        ),
        thresholds,
        suspects,
        examined: train.n,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The test set's suspects, from the final model's `probabilities` of it. Reported only: the test
/// set chooses nothing.
pub fn test_label_issues(probabilities: &[Vec<f32>], test: &ImageSet, took: Duration) -> Result<LabelIssues> {
    let (thresholds, suspects) = confident_learning(probabilities, &test.labels, test.classes, Split::Test)?;
    Ok(LabelIssues {
        split: Split::Test,
        method: "the final model's probabilities, then confident learning with per-class thresholds (as for the training set)".into(),
        thresholds,
        suspects,
        examined: test.n,
        seconds: took.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: &[f32]) -> Vec<f32> {
        p.to_vec()
    }

    #[test]
    fn a_confident_other_class_is_suspected_and_ranked_by_margin() {
        // Class 0's images are about 0.8 sure of 0; class 1's about 0.9 sure of 1.
        let probabilities = vec![
            row(&[0.8, 0.2]),
            row(&[0.85, 0.15]),
            row(&[0.75, 0.25]),
            row(&[0.1, 0.9]),
            row(&[0.05, 0.95]),
            // Labelled 1, but as sure of 0 as class 0's own images: a suspect.
            row(&[0.9, 0.1]),
            // Labelled 0, leaning to 1 but below class 1's threshold (0.65): not a suspect.
            row(&[0.4, 0.6]),
        ];
        let labels = [0, 0, 0, 1, 1, 1, 0];
        let (t, suspects) = confident_learning(&probabilities, &labels, 2, Split::Train).unwrap();
        assert!((t[0] - (0.8 + 0.85 + 0.75 + 0.4) / 4.0).abs() < 1e-6, "{t:?}");
        assert!((t[1] - (0.9 + 0.95 + 0.1) / 3.0).abs() < 1e-6, "{t:?}");
        assert_eq!(suspects.len(), 1, "{suspects:?}");
        assert_eq!(suspects[0].image, ImageRef { split: Split::Train, index: 5 });
        assert_eq!((suspects[0].given, suspects[0].suggested), (1, 0));
        assert!((suspects[0].margin() - 0.8).abs() < 1e-6);
    }

    #[test]
    fn suspects_are_ranked_largest_margin_first() {
        let mut probabilities = vec![row(&[0.9, 0.1]); 10];
        probabilities.extend(vec![row(&[0.1, 0.9]); 10]);
        probabilities.push(row(&[0.92, 0.08])); // labelled 1: margin 0.84
        probabilities.push(row(&[0.99, 0.01])); // labelled 1: margin 0.98
        let mut labels = vec![0u8; 10];
        labels.extend(vec![1u8; 12]);
        let (_, suspects) = confident_learning(&probabilities, &labels, 2, Split::Test).unwrap();
        let order: Vec<usize> = suspects.iter().map(|s| s.image.index).collect();
        assert_eq!(order, vec![21, 20]);
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        assert!(confident_learning(&[row(&[1.0, 0.0])], &[0, 1], 2, Split::Train).is_err());
        assert!(confident_learning(&[row(&[1.0])], &[0], 2, Split::Train).is_err());
        assert!(confident_learning(&[row(&[1.0, 0.0])], &[2], 2, Split::Train).is_err());
    }

    #[test]
    fn folds_are_stratified_and_cover_every_image_once() {
        let labels: Vec<u8> = (0..103).map(|i| (i % 3) as u8).collect();
        let folds = stratified_folds(&labels, 4, 7);
        let mut seen: Vec<usize> = folds.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        for fold in &folds {
            assert!((25..=26).contains(&fold.len()), "{}", fold.len());
            for class in 0..3u8 {
                let n = fold.iter().filter(|&&i| labels[i] == class).count();
                assert!((8..=9).contains(&n), "class {class}: {n}");
            }
        }
    }
}

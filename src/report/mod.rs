//! Is the data dirty, and what did the search do? The data health report (class balance,
//! duplicates, blank images, odd sizes, suspected label errors) and the search drawn (learning
//! curves, best accuracy against time, the tree of models, the confusion matrix, the test images
//! it gets wrong), written as one self-contained HTML page with CSV and JSON beside it.

pub mod duplicates;
pub mod health;
pub mod labels;
pub mod plots;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which set an image belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// One image of a data set: its set and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    pub split: Split,
    pub index: usize,
}

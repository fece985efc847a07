//! Data: IDX files (raw or gzip), MNIST and generic labelled image sets, a checked downloader, and
//! a device-resident dataset that gathers batches with one kernel.

pub mod dataset;
pub mod download;
pub mod idx;
pub mod mnist;

pub use dataset::{Augmentation, BatchOrder, Batches, DeviceDataset, ImageAugment, RandomShift, Residency};
pub use download::{download_files, download_mnist, DEFAULT_MIRROR, MNIST_SHA256};
pub use idx::{read_idx, IdxArray};
pub use mnist::{default_data_dir, ImageSet, Mnist, PIXEL_SCALE};

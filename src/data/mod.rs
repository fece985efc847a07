//! Data: IDX files (raw or gzip), MNIST and generic labelled image sets, a checked downloader, and
//! a device-resident dataset that gathers batches with one kernel. Users' own images (image
//! folders, CIFAR binaries, `.npy`, IDX under any names) load through [`load_data`].

pub mod cifar;
pub mod dataset;
pub mod download;
pub mod folder;
pub mod idx;
pub mod idx_folder;
pub mod load;
pub mod mnist;
pub mod npy;
pub mod split;

pub use dataset::{
    Augmentation, BatchOrder, Batches, Cutout, DeviceDataset, ImageAugment, RandomShift, Residency, ELASTIC_GRID, ELASTIC_POINTS,
    MAX_ROTATION_DEGREES, MAX_SCALE,
};
pub use download::{download_files, download_mnist, DEFAULT_MIRROR, MNIST_SHA256};
pub use folder::read_images;
pub use idx::{read_idx, IdxArray};
pub use load::{load_data, DataFormat, ImageFile, LoadOptions, LoadedData, DEFAULT_TEST_FRACTION};
pub use mnist::{default_data_dir, ImageSet, Mnist, PIXEL_SCALE};
pub use split::stratified_split;

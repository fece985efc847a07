//! Fetching MNIST: each `.gz` file that is missing from the cache is downloaded to a temporary
//! file, its decompressed contents checked against a known SHA-256, and only then renamed into
//! place, so the cache never holds a partial or corrupt file.

use super::idx::{gunzip, is_gzip};
use super::mnist::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A public mirror of the MNIST files (the original site refuses automated downloads).
pub const DEFAULT_MIRROR: &str = "https://storage.googleapis.com/cvdf-datasets/mnist/";

/// SHA-256 of each MNIST file after decompression (as in `data/mnist/SHA256SUMS`).
pub const MNIST_SHA256: [(&str, &str); 4] = [
    (TRAIN_IMAGES, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    (TRAIN_LABELS, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    (TEST_IMAGES, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    (TEST_LABELS, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
];

/// Downloads the four MNIST files from `base_url` into `cache_dir` where missing; returns the
/// folder, ready for [`super::Mnist::load`].
pub fn download_mnist(base_url: &str, cache_dir: &Path) -> Result<PathBuf> {
    download_files(base_url, cache_dir, &MNIST_SHA256)
}

/// Makes sure `cache_dir` holds each `(name, sha256)` file, as `name` or `name.gz`, with the given
/// SHA-256 of its decompressed contents; missing ones are fetched from `{base_url}{name}.gz`.
/// A cached `.gz` with a wrong checksum is deleted and fetched again; a downloaded file with a
/// wrong checksum is deleted and reported with the expected and actual hash.
pub fn download_files(base_url: &str, cache_dir: &Path, files: &[(&str, &str)]) -> Result<PathBuf> {
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(600))).build().into();
    for &(name, sha256) in files {
        let raw = cache_dir.join(name);
        if raw.is_file() {
            // A user's own uncompressed copy shadows the .gz when loading: check it, never delete it.
            verify(&raw, sha256)?;
            continue;
        }
        let gz = cache_dir.join(format!("{name}.gz"));
        if gz.is_file() {
            if verify(&gz, sha256).is_ok() {
                continue;
            }
            std::fs::remove_file(&gz).map_err(|e| Error::io(&gz, e))?;
        }
        let url = format!("{}/{name}.gz", base_url.trim_end_matches('/'));
        let part = cache_dir.join(format!(".{name}.gz.part-{}", std::process::id()));
        let fetched = fetch(&agent, &url, &part).and_then(|()| sha256_of_contents(&part));
        let checked = match fetched {
            Ok(actual) if actual == sha256.to_ascii_lowercase() => Ok(()),
            Ok(actual) => Err(Error::format(
                &gz,
                format!("downloaded from {url}, rejected and deleted: SHA-256 mismatch: expected {sha256}, got {actual}"),
            )),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        std::fs::rename(&part, &gz).map_err(|e| Error::io(&gz, e))?;
    }
    Ok(cache_dir.to_path_buf())
}

fn fetch(agent: &ureq::Agent, url: &str, dest: &Path) -> Result<()> {
    // Identity encoding: the body is stored as served, a .gz stays a .gz.
    let response =
        agent.get(url).header("Accept-Encoding", "identity").call().map_err(|e| Error::Other(format!("downloading {url}: {e}")))?;
    let mut body = response.into_body().into_reader();
    let mut file = std::fs::File::create(dest).map_err(|e| Error::io(dest, e))?;
    std::io::copy(&mut body, &mut file).map_err(|e| Error::Other(format!("downloading {url}: {e}")))?;
    file.sync_all().map_err(|e| Error::io(dest, e))
}

/// Checks the SHA-256 of a file's decompressed contents, naming the file, the expected and the
/// actual hash on a mismatch.
pub fn verify(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_of_contents(path)?;
    if actual != expected.to_ascii_lowercase() {
        return Err(Error::format(path, format!("SHA-256 mismatch: expected {expected}, got {actual}")));
    }
    Ok(())
}

/// Lower-case hex SHA-256 of a file's contents, decompressed first when it is gzip.
pub fn sha256_of_contents(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if is_gzip(&bytes) { gunzip(path, &bytes)? } else { bytes };
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

//! The IDX format of MNIST: a magic number (0x00 0x00, element type, number of dimensions), one
//! big-endian u32 per dimension, then the elements. Files may be gzip-compressed.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Element type code of unsigned bytes, the only one MNIST uses.
const TYPE_U8: u8 = 0x08;

/// An IDX array of unsigned bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file, raw or gzip-compressed (recognised by its magic bytes 1f 8b). The whole
/// file is checked before anything is returned: header, element type, and that the data holds
/// exactly the bytes the header promises. Nothing is allocated from the declared dimensions: a raw
/// file is read at its actual length, and a gzip stream is decompressed only up to one byte past
/// what its (decompressed) header promises, so a gzip bomb stops with an error instead of filling
/// memory.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if is_gzip(&bytes) { gunzip_idx(path, &bytes)? } else { bytes };
    parse_idx(path, &bytes)
}

/// Decompresses a gzip-compressed IDX file: the header first, then at most the data bytes it
/// declares plus one (so that trailing data is still detected by [`parse_idx`]).
fn gunzip_idx(path: &Path, compressed: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |e: std::io::Error| Error::format(path, format!("corrupt gzip data: {e}"));
    let mut stream = flate2::read::MultiGzDecoder::new(compressed);
    // The magic number, then one u32 per dimension; a short stream is left to parse_idx to name.
    let mut header = Vec::with_capacity(4 + 4 * 255);
    (&mut stream).take(4).read_to_end(&mut header).map_err(corrupt)?;
    if header.len() == 4 {
        let dims_len = 4 * header[3] as u64;
        (&mut stream).take(dims_len).read_to_end(&mut header).map_err(corrupt)?;
    }
    let declared = match header.get(3) {
        Some(&ndims) if header.len() == 4 + 4 * ndims as usize => {
            header[4..].chunks_exact(4).try_fold(1u64, |acc, c| acc.checked_mul(u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64))
        }
        _ => Some(0),
    };
    // An overflowing declaration is reported by parse_idx from the header alone.
    let cap = declared.map_or(0, |d| d.saturating_add(1));
    let mut out = header;
    (&mut stream).take(cap).read_to_end(&mut out).map_err(corrupt)?;
    Ok(out)
}

pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompresses a whole gzip stream (all members), naming `path` on failure.
pub(crate) fn gunzip(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).map_err(|e| Error::format(path, format!("corrupt gzip data: {e}")))?;
    Ok(out)
}

/// Parses IDX bytes; `path` only names the source in errors.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    let fail = |msg: String| Err(Error::format(path, msg));
    if bytes.is_empty() {
        return fail("empty file, expected an IDX header".into());
    }
    if bytes.len() < 4 {
        return fail(format!("truncated IDX header: {} bytes, the magic number alone needs 4", bytes.len()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return fail(format!(
            "not an IDX file: magic number {:02x} {:02x} {:02x} {:02x} does not start with 00 00",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    let (dtype, ndims) = (bytes[2], bytes[3] as usize);
    if dtype != TYPE_U8 {
        return fail(format!("element type 0x{dtype:02x} ({}) is not supported; only unsigned bytes (0x08) are", type_name(dtype)));
    }
    if ndims == 0 {
        return fail("the header declares zero dimensions".into());
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return fail(format!("truncated IDX header: {ndims} dimensions need {header} bytes, the file holds {}", bytes.len()));
    }
    let dims: Vec<usize> = bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let Some(expected) = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) else {
        return fail(format!("dimensions {dims:?} overflow"));
    };
    let actual = bytes.len() - header;
    if actual < expected {
        return fail(format!("truncated: dimensions {dims:?} promise {expected} bytes of data, the file holds {actual}"));
    }
    if actual > expected {
        return fail(format!("{} bytes of trailing data after the {expected} that dimensions {dims:?} promise", actual - expected));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "unknown type",
    }
}

/// The IDX encoding of an unsigned-byte array (for writing test data and caches).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    debug_assert_eq!(dims.iter().product::<usize>(), data.len());
    let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Gzip-compresses bytes (for writing test data and caches).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("netmorph-idx-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn err(path: &Path) -> String {
        let e = read_idx(path).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e:?}");
        let s = e.to_string();
        assert!(s.contains(&path.display().to_string()), "error does not name the file: {s}");
        s
    }

    #[test]
    fn reads_raw_and_gzip() {
        let dir = temp_dir("good");
        let data: Vec<u8> = (0..2 * 3 * 5).map(|i| (i * 7) as u8).collect();
        let bytes = encode_idx(&[2, 3, 5], &data);
        let want = IdxArray { dims: vec![2, 3, 5], data };
        assert_eq!(read_idx(write(&dir, "raw", &bytes)).unwrap(), want);
        assert_eq!(read_idx(write(&dir, "packed.gz", &gzip(&bytes))).unwrap(), want);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_files_are_errors_naming_file_and_problem() {
        let dir = temp_dir("bad");
        let good = encode_idx(&[4, 3], &[1; 12]);
        assert!(err(&write(&dir, "empty", &[])).contains("empty file"));
        assert!(err(&write(&dir, "short-magic", &good[..3])).contains("truncated IDX header"));
        assert!(err(&write(&dir, "short-dims", &good[..6])).contains("truncated IDX header"));
        assert!(err(&write(&dir, "truncated", &good[..good.len() - 1])).contains("promise 12 bytes of data, the file holds 11"));
        assert!(err(&write(&dir, "trailing", &[&good[..], &[0]].concat())).contains("1 bytes of trailing data"));
        let mut magic = good.clone();
        magic[0] = 0x42;
        assert!(err(&write(&dir, "magic", &magic)).contains("not an IDX file"));
        let mut f32_type = good.clone();
        f32_type[2] = 0x0d;
        let e = err(&write(&dir, "type", &f32_type));
        assert!(e.contains("0x0d") && e.contains("f32"), "{e}");
        let gz = gzip(&good);
        assert!(err(&write(&dir, "cut.gz", &gz[..gz.len() / 2])).contains("corrupt gzip"));
        assert!(err(&write(&dir, "truncated.gz", &gzip(&good[..good.len() - 2]))).contains("truncated"));
        let missing = dir.join("missing");
        assert!(matches!(read_idx(&missing), Err(Error::Io { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

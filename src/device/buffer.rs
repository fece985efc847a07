//! Pooled GPU buffers: a dropped buffer goes back to a free list keyed by its size class and is
//! handed out again, so a training step allocates nothing after the first one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Element type of a buffer. Tensors are f32; labels are u32; datasets may stay u8 on the device
/// (packed four to a 32-bit word) to fit the storage-binding limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U32,
    U8,
}

impl DType {
    pub fn bytes_for(self, len: usize) -> u64 {
        let b = (len as u64) * self.element_bytes_exact() as u64;
        b.div_ceil(4) * 4
    }
    pub fn element_bytes_exact(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::U8 => 1,
        }
    }
}

pub struct GpuBuffer {
    raw: Option<wgpu::Buffer>,
    len: usize,
    dtype: DType,
    pool: Arc<Mutex<BufferPool>>,
}

impl GpuBuffer {
    pub(super) fn new(raw: wgpu::Buffer, len: usize, dtype: DType, pool: Arc<Mutex<BufferPool>>) -> Self {
        GpuBuffer { raw: Some(raw), len, dtype, pool }
    }
    pub fn raw(&self) -> &wgpu::Buffer {
        self.raw.as_ref().expect("buffer present until drop")
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub(super) fn byte_len_padded(&self) -> u64 {
        self.raw().size()
    }
    /// A stable identity for optimizer state and caches.
    pub fn id(&self) -> usize {
        self as *const GpuBuffer as usize
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            if let Ok(mut pool) = self.pool.lock() {
                pool.give_back(raw);
            }
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} x {:?})", self.len, self.dtype)
    }
}

#[derive(Default)]
pub struct BufferPool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
}

/// Rounds a size up to its class: multiples of 256 bytes below 4 KiB, then eight classes per
/// power of two (at most 12.5% waste).
fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    if bytes <= 4096 {
        return bytes.div_ceil(256) * 256;
    }
    let pow = 63 - bytes.leading_zeros() as u64; // 2^pow <= bytes
    let step = 1u64 << (pow - 3);
    bytes.div_ceil(step) * step
}

/// The size of the pooled buffer for `bytes` (at most `limit`, the largest binding): its size
/// class, but never above the limit. Requests between 1.875 and 2 GiB round up to 2^31 bytes,
/// one over the 2^31 - 1 that Vulkan and DX12 allow.
fn pooled_size(bytes: u64, limit: u64) -> u64 {
    debug_assert!(bytes <= limit, "checked by the caller");
    // Buffer sizes are multiples of 4; `bytes` is one, so the cap still covers it.
    size_class(bytes).min(limit / 4 * 4).max(bytes)
}

impl BufferPool {
    /// A buffer of at least `bytes` (at most `limit`, the largest binding the device allows).
    pub(super) fn take(&mut self, device: &wgpu::Device, bytes: u64, limit: u64) -> wgpu::Buffer {
        let class = pooled_size(bytes, limit);
        if let Some(b) = self.free.get_mut(&class).and_then(|v| v.pop()) {
            return b;
        }
        device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: class,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }
    pub(super) fn clear(&mut self) {
        self.free.clear();
    }
    fn give_back(&mut self, raw: wgpu::Buffer) {
        self.free.entry(raw.size()).or_default().push(raw);
    }
}

#[cfg(test)]
mod tests {
    use super::{pooled_size, size_class};

    #[test]
    fn pooled_sizes_stay_within_the_binding_limit() {
        let vulkan = (1u64 << 31) - 1;
        for bytes in [2_013_265_924u64, 2_100_000_000, 2_147_483_644] {
            let size = pooled_size(bytes, vulkan);
            assert!(size >= bytes && size <= vulkan && size.is_multiple_of(4), "{bytes} -> {size}");
            assert!(size_class(bytes) > vulkan, "{bytes} is in the band that overshoots");
        }
        assert_eq!(pooled_size(100_000, vulkan), size_class(100_000), "below the limit, the class");
        assert_eq!(pooled_size(1000, 1000), 1000);
    }

    #[test]
    fn size_classes_cover_and_waste_little() {
        for b in [1u64, 255, 256, 257, 4095, 4097, 100_000, 188_160_000] {
            let c = size_class(b);
            assert!(c >= b && c.is_multiple_of(4), "{b} -> {c}");
            assert!(c <= 256 || (c as f64) <= (b as f64) * 1.125 + 256.0, "{b} -> {c}");
        }
    }
}

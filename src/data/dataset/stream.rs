//! A pass over a list of batches, and the streaming of a set that is not resident.
//!
//! A streamed pass groups consecutive batches into chunks of at most the set's chunk size, and each
//! chunk's images are gathered on the host in the pass's order (a worker thread copies them into
//! one contiguous buffer) and uploaded whole; the batches then gather from their chunk with
//! consecutive chunk-local indices. So an epoch keeps all of its randomness: the per-epoch shuffle
//! of the whole set ([`BatchOrder::epoch`](super::BatchOrder::epoch)) decides which images land in
//! which chunk and in what order, every image once, and a streamed epoch gathers exactly the
//! batches a resident one does, for the same bytes. The host-side gather is the price.
//!
//! Double buffering: when the first batch of chunk k is gathered, chunk k + 1's upload is recorded
//! too (its host gather having run on the worker meanwhile), and the worker starts on chunk k + 2.
//! Two chunks are on the device at a time; the GPU works through chunk k's steps with chunk k + 1
//! already queued behind them, and no step waits for the host to gather. (wgpu has one queue, so
//! the copy itself runs in order between kernels: what overlaps is the host's work with the GPU's.)

use super::{DeviceDataset, ImageAugment, Storage};
use crate::data::mnist::ImageSet;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;

/// The batches of one pass (an epoch, an evaluation) over a [`DeviceDataset`], gathered in turn.
pub struct Batches<'a> {
    data: &'a DeviceDataset,
    order: Arc<[Vec<u32>]>,
    stream: Option<Stream>,
}

impl<'a> Batches<'a> {
    pub(super) fn new(data: &'a DeviceDataset, order: Vec<Vec<u32>>) -> Result<Batches<'a>> {
        // Checked here, not only per batch: a streamed pass gathers chunks ahead on the host.
        if let Some(&bad) = order.iter().flatten().find(|&&i| i as usize >= data.n) {
            return Err(Error::Invalid(format!("batch index {bad} is out of range for a dataset of {} images", data.n)));
        }
        let order: Arc<[Vec<u32>]> = order.into();
        let stream = match &data.storage {
            Storage::Resident { .. } => None,
            Storage::Streamed { host, chunk_images } => Some(Stream::new(host.clone(), &order, *chunk_images)?),
        };
        Ok(Batches { data, order, stream })
    }

    /// The number of batches in the pass.
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The images of batch `step`.
    pub fn indices(&self, step: usize) -> &[u32] {
        &self.order[step]
    }

    /// The chunks this pass streams (0 for a resident set).
    pub fn chunks(&self) -> usize {
        self.stream.as_ref().map_or(0, |s| s.chunk_starts.len() - 1)
    }

    /// The chunks uploaded so far.
    pub fn chunks_uploaded(&self) -> usize {
        self.stream.as_ref().map_or(0, |s| s.uploaded)
    }

    /// Batch `step`'s images as f32 `[b, c, h, w]` in [0, 1], each augmented by its
    /// [`ImageAugment`] (an empty `augments`: none), and its labels as u32 `[b]`. A streamed set
    /// takes the steps in order: a step whose chunk is already dropped is an error.
    pub fn gather(&mut self, step: usize, augments: &[ImageAugment]) -> Result<(Tensor, Tensor)> {
        let len = self.order.get(step).map_or(0, Vec::len);
        self.gather_part(step, 0..len, augments)
    }

    /// The images at positions `part` of batch `step` (a micro-batch), as [`gather`](Self::gather)
    /// gives the whole batch; `augments`: one per image of the part, or none.
    pub fn gather_part(&mut self, step: usize, part: Range<usize>, augments: &[ImageAugment]) -> Result<(Tensor, Tensor)> {
        let Some(batch) = self.order.get(step) else {
            return Err(Error::Invalid(format!("batch {step} of a pass of {} batches", self.order.len())));
        };
        let Some(indices) = batch.get(part.clone()) else {
            return Err(Error::Invalid(format!("images {part:?} of batch {step}, which holds {}", batch.len())));
        };
        let Some(stream) = &mut self.stream else {
            return self.data.batch_augmented(indices, augments);
        };
        self.data.check_batch(indices, augments)?;
        let chunk = stream.chunk_of(step);
        stream.advance_to(chunk, step, &self.order, &self.data.device, self.data.image_shape())?;
        let loaded = stream.loaded.iter().find(|l| l.index == chunk).expect("advance_to loads the chunk");
        let offset = stream.offsets[step] + part.start as u32;
        let local: Vec<u32> = (offset..offset + indices.len() as u32).collect();
        self.data.gather(&loaded.images, &loaded.labels, loaded.len, &local, augments)
    }
}

/// A chunk's images and labels on the device.
struct LoadedChunk {
    index: usize,
    images: Tensor,
    labels: Tensor,
    len: usize,
}

struct Stream {
    host: Arc<ImageSet>,
    /// The first batch of each chunk, then the number of batches.
    chunk_starts: Vec<usize>,
    /// Where each batch's images begin within its chunk.
    offsets: Vec<u32>,
    /// The chunks on the device, in order: the one being gathered from and the next.
    loaded: VecDeque<LoadedChunk>,
    /// Host gathers running on worker threads, in chunk order.
    pending: VecDeque<(usize, JoinHandle<HostChunk>)>,
    /// The first chunk no worker has been started for.
    next_to_gather: usize,
    uploaded: usize,
}

impl Stream {
    fn new(host: Arc<ImageSet>, order: &[Vec<u32>], chunk_images: usize) -> Result<Stream> {
        let mut chunk_starts = vec![0];
        let mut offsets = Vec::with_capacity(order.len());
        let mut filled = 0;
        for (step, batch) in order.iter().enumerate() {
            if batch.len() > chunk_images {
                return Err(Error::Invalid(format!(
                    "a batch of {} images does not fit in a streamed chunk of {chunk_images} images of {} bytes",
                    batch.len(),
                    host.image_len()
                )));
            }
            if filled + batch.len() > chunk_images {
                chunk_starts.push(step);
                filled = 0;
            }
            offsets.push(filled as u32);
            filled += batch.len();
        }
        chunk_starts.push(order.len());
        Ok(Stream { host, chunk_starts, offsets, loaded: VecDeque::new(), pending: VecDeque::new(), next_to_gather: 0, uploaded: 0 })
    }

    fn chunks(&self) -> usize {
        self.chunk_starts.len() - 1
    }

    fn chunk_of(&self, step: usize) -> usize {
        self.chunk_starts.partition_point(|&start| start <= step) - 1
    }

    /// Makes chunk `chunk` and the next one resident, dropping those before, and starts the host
    /// gather of the one after.
    fn advance_to(&mut self, chunk: usize, step: usize, order: &Arc<[Vec<u32>]>, device: &Device, shape: [usize; 3]) -> Result<()> {
        if self.loaded.front().is_some_and(|l| l.index > chunk) {
            return Err(Error::Invalid(format!(
                "batch {step} lies in streamed chunk {chunk}, which this pass has already dropped: gather the batches in order"
            )));
        }
        self.loaded.retain(|l| l.index >= chunk);
        let last = self.chunks() - 1;
        self.next_to_gather = self.next_to_gather.max(chunk);
        while self.next_to_gather <= (chunk + 2).min(last) {
            self.start_gather(self.next_to_gather, order);
            self.next_to_gather += 1;
        }
        for index in chunk..=(chunk + 1).min(last) {
            if self.loaded.iter().any(|l| l.index == index) {
                continue;
            }
            let host = self.take_gathered(index, order)?;
            let (images, labels) = host.upload(device, shape)?;
            self.loaded.push_back(LoadedChunk { index, images, labels, len: host.labels.len() });
            self.uploaded += 1;
        }
        Ok(())
    }

    fn chunk_indices<'o>(&self, chunk: usize, order: &'o [Vec<u32>]) -> impl Iterator<Item = &'o u32> + Clone {
        order[self.chunk_starts[chunk]..self.chunk_starts[chunk + 1]].iter().flatten()
    }

    fn start_gather(&mut self, chunk: usize, order: &Arc<[Vec<u32>]>) {
        let (host, order) = (self.host.clone(), order.clone());
        let batches = self.chunk_starts[chunk]..self.chunk_starts[chunk + 1];
        let worker = std::thread::Builder::new()
            .name(format!("netmorph-chunk-{chunk}"))
            .spawn(move || HostChunk::gather(&host, order[batches].iter().flatten()));
        // Without a thread the chunk is gathered when it is needed.
        if let Ok(handle) = worker {
            self.pending.push_back((chunk, handle));
        }
    }

    /// Chunk `chunk`'s bytes: from its worker, or gathered here when it has none.
    fn take_gathered(&mut self, chunk: usize, order: &[Vec<u32>]) -> Result<HostChunk> {
        // Workers of chunks before it were skipped over (a pass that jumped ahead): left to finish.
        while let Some((index, handle)) = self.pending.pop_front() {
            if index == chunk {
                return handle.join().map_err(|_| Error::Other(format!("gathering streamed chunk {chunk} on the host panicked")));
            }
        }
        Ok(HostChunk::gather(&self.host, self.chunk_indices(chunk, order)))
    }
}

/// Images and labels copied out of a host set in a given order, ready to upload.
pub(super) struct HostChunk {
    bytes: Vec<u8>,
    labels: Vec<u32>,
}

impl HostChunk {
    pub(super) fn gather<'i>(set: &ImageSet, indices: impl IntoIterator<Item = &'i u32> + Clone) -> HostChunk {
        // Sized first: growing a 64 MiB buffer by doubling would copy it again and again.
        let count = indices.clone().into_iter().count();
        let (mut bytes, mut labels) = (Vec::with_capacity(count * set.image_len()), Vec::with_capacity(count));
        for &i in indices {
            bytes.extend_from_slice(set.image(i as usize));
            labels.push(set.labels[i as usize] as u32);
        }
        HostChunk { bytes, labels }
    }

    /// The images as packed bytes `[n, c, h, w]` and the labels as u32 `[n]` (recorded uploads).
    pub(super) fn upload(&self, device: &Device, [c, h, w]: [usize; 3]) -> Result<(Tensor, Tensor)> {
        let n = self.labels.len();
        Ok((Tensor::from_u8(device, &self.bytes, &[n, c, h, w])?, Tensor::from_u32(device, &self.labels, &[n])?))
    }
}

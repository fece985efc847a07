//! Records dispatches into one command encoder and one compute pass until a sync point, so a
//! training step is one submit. Kernel parameters go into a uniform arena that is uploaded once per
//! submit.

use super::buffer::GpuBuffer;
use super::kernel::Compiled;

/// The parameter arena's size where the adapter allows it (a step's dispatches rarely need more).
const ARENA_BYTES: u64 = 4 << 20;

pub(super) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    staged: Vec<u8>,
    arena: wgpu::Buffer,
    /// The arena's size: [`ARENA_BYTES`], or less on an adapter whose buffers are smaller.
    arena_bytes: usize,
    align: usize,
    pub dispatches: u64,
    pub submits: u64,
}

impl Recorder {
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits) -> Self {
        let align = limits.min_uniform_buffer_offset_alignment as u64;
        let arena_bytes = ARENA_BYTES.min(limits.max_buffer_size) / align * align;
        Recorder {
            encoder: None,
            pass: None,
            staged: Vec::new(),
            arena: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel params"),
                size: arena_bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            arena_bytes: arena_bytes as usize,
            align: align as usize,
            dispatches: 0,
            submits: 0,
        }
    }

    fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.pass = None; // a pass must end before the encoder records anything else
        self.encoder.get_or_insert_with(|| device.create_command_encoder(&Default::default()))
    }

    /// True when `bytes` more parameters would not fit in this submit's arena.
    pub fn params_full(&self, bytes: usize) -> bool {
        self.staged.len().div_ceil(self.align) * self.align + bytes.max(16) > self.arena_bytes
    }

    pub fn dispatch(&mut self, device: &wgpu::Device, k: &Compiled, params: &[u8], buffers: &[&GpuBuffer], wg: [u32; 3]) {
        let offset = self.staged.len().div_ceil(self.align) * self.align;
        let size = params.len().max(16).div_ceil(16) * 16;
        self.staged.resize(offset, 0);
        self.staged.extend_from_slice(params);
        self.staged.resize(offset + size, 0);

        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.arena,
                offset: offset as u64,
                size: std::num::NonZeroU64::new(size as u64),
            }),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.raw().as_entire_binding() });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &k.layout, entries: &entries });
        if self.pass.is_none() {
            let enc = self.encoder.get_or_insert_with(|| device.create_command_encoder(&Default::default()));
            self.pass = Some(enc.begin_compute_pass(&Default::default()).forget_lifetime());
        }
        let pass = self.pass.as_mut().unwrap();
        pass.set_pipeline(&k.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(wg[0], wg[1], wg[2]);
        self.dispatches += 1;
    }

    pub fn copy(&mut self, device: &wgpu::Device, src: &wgpu::Buffer, src_offset: u64, dst: &wgpu::Buffer, dst_offset: u64, bytes: u64) {
        self.encoder(device).copy_buffer_to_buffer(src, src_offset, dst, dst_offset, bytes);
    }

    pub fn clear(&mut self, device: &wgpu::Device, buf: &wgpu::Buffer, bytes: u64) {
        self.encoder(device).clear_buffer(buf, 0, Some(bytes));
    }

    pub fn submit(&mut self, queue: &wgpu::Queue) {
        self.pass = None;
        let Some(enc) = self.encoder.take() else { return };
        if !self.staged.is_empty() {
            // Written before this submit's commands run (queue order).
            queue.write_buffer(&self.arena, 0, &self.staged);
            self.staged.clear();
        }
        queue.submit([enc.finish()]);
        self.submits += 1;
    }
}

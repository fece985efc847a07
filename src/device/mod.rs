//! The device layer: a wgpu adapter and device, pooled buffers, a pipeline cache keyed by a typed
//! kernel key, and a recorder that puts every dispatch of a step into one command encoder and
//! submits it once. It knows nothing of gradients or layers.

mod buffer;
mod kernel;
mod knobs;
mod options;
mod recorder;
mod tuning;
mod wgsl;

pub use buffer::{DType, GpuBuffer};
pub use kernel::{Access, KernelSpec};
pub use knobs::{ConvDirect, ConvOrient, KernelKnobs};
pub use options::{DeviceOptions, ShaderChecks};
pub use tuning::{default_cache_dir, KernelTuning, TuningSummary};
pub use wgsl::{compose, specialise};

use crate::error::{Error, Result};
use buffer::BufferPool;
use kernel::PipelineCache;
use recorder::Recorder;
use std::sync::{Arc, Mutex};

/// A handle to one GPU (or lavapipe). Cheap to clone; every clone shares the same queue, caches
/// and pending commands.
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
    /// A lower binding limit than the adapter's (tests of code that splits work at the limit).
    max_binding_cap: Option<u64>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipelines: PipelineCache,
    pool: Arc<Mutex<BufferPool>>,
    recorder: Mutex<Recorder>,
    knobs: KernelKnobs,
    /// Kernel choices measured on this adapter (`None`: tuning is off).
    tuning: Option<Mutex<tuning::TuningTable>>,
    /// Set while one op's candidates are measured: the ops inside them measure nothing new.
    tuning_paused: std::sync::atomic::AtomicBool,
    /// Errors wgpu reported outside an error scope; turned into `Err` at the next sync point.
    errors: Arc<Mutex<Vec<Error>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// When set, every dispatch is submitted and waited for alone and its time added here by
    /// kernel name (a per-kernel breakdown for benchmarks; far slower than normal recording).
    profile: Mutex<Option<Vec<KernelTime>>>,
}

/// Time spent in one kernel while profiling.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub calls: u64,
    pub seconds: f64,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}

impl Device {
    /// Opens the best adapter: honours WGPU_BACKEND, WGPU_ADAPTER_NAME and WGPU_POWER_PREF, prefers
    /// a hardware GPU and falls back to any adapter (lavapipe on a machine without a GPU).
    pub fn new() -> Result<Device> {
        Device::with_options(&DeviceOptions::from_env()?)
    }

    /// [`Device::new`] with the given options instead of the environment's.
    pub fn with_options(options: &DeviceOptions) -> Result<Device> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(pick_adapter(&instance))?;
        Self::from_adapter(adapter, options)
    }

    /// A process-wide shared device, opened on first use. Tests and benchmarks share it so that
    /// the pipeline cache is warm and lavapipe is initialised once. Its kernels follow the built-in
    /// rules unless NETMORPH_TUNING asks for tuning ([`DeviceOptions::without_tuning_from_env`]).
    pub fn shared() -> Result<Device> {
        static SHARED: Mutex<Option<Device>> = Mutex::new(None);
        let mut slot = SHARED.lock().unwrap();
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = Device::with_options(&DeviceOptions::without_tuning_from_env()?)?;
        *slot = Some(d.clone());
        Ok(d)
    }

    fn from_adapter(adapter: wgpu::Adapter, options: &DeviceOptions) -> Result<Device> {
        let info = adapter.get_info();
        // The adapter's own limits (lavapipe and real GPUs allow far more than the defaults), or
        // lower ones where the options ask.
        let limits = options.limits(&adapter.limits());
        let checks = options.shader_checks.unwrap_or(ShaderChecks::for_backend(info.backend));
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("netmorph"),
            // Subgroup operations where the adapter has them (kernels with a subgroup variant check
            // `subgroup_size` before using it).
            required_features: adapter.features() & wgpu::Features::SUBGROUP,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::DeviceRequest { adapter: info.name.clone(), reason: e.to_string() })?;

        let errors: Arc<Mutex<Vec<Error>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let err = match e {
                wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
                other => Error::Gpu(other.to_string()),
            };
            sink.lock().unwrap().push(err);
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *lost_sink.lock().unwrap() = Some(format!("{reason:?}: {msg}"));
        });
        let recorder = Recorder::new(&device, &limits);
        Ok(Device {
            inner: Arc::new(Inner {
                pipelines: PipelineCache::new(checks),
                knobs: options.knobs.clone(),
                tuning_paused: std::sync::atomic::AtomicBool::new(false),
                tuning: match &options.kernel_tuning {
                    KernelTuning::Off => None,
                    KernelTuning::On { cap, cache } => Some(Mutex::new(tuning::TuningTable::open(&info, *cap, cache.as_deref()))),
                },
                pool: Arc::new(Mutex::new(BufferPool::default())),
                recorder: Mutex::new(recorder),
                device,
                queue,
                info,
                limits,
                errors,
                lost,
                profile: Mutex::new(None),
            }),
            max_binding_cap: None,
        })
    }

    /// The adapter's name and backend, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    pub fn name(&self) -> String {
        format!("{} ({:?})", self.inner.info.name, self.inner.info.backend)
    }

    /// The driver's own description, e.g. "Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)".
    pub fn driver_info(&self) -> &str {
        &self.inner.info.driver_info
    }

    /// A short identifier for benchmark ids: the adapter's name with only [a-z0-9-].
    pub fn bench_id(&self) -> String {
        let mut s: String = self.inner.info.name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        while s.contains("--") {
            s = s.replace("--", "-");
        }
        s.trim_matches('-').split('-').take(3).collect::<Vec<_>>().join("-")
    }

    /// The number of invocations in a subgroup, when subgroup operations are enabled and the
    /// adapter runs every subgroup at one size (lavapipe: its SIMD width, 8 with AVX2).
    pub fn subgroup_size(&self) -> Option<u32> {
        let info = &self.inner.info;
        let fixed = info.subgroup_min_size == info.subgroup_max_size;
        (self.inner.device.features().contains(wgpu::Features::SUBGROUP) && fixed).then_some(info.subgroup_min_size)
    }

    pub fn is_cpu(&self) -> bool {
        self.inner.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The settings for comparing and tuning kernels by hand, read when the device opened.
    pub fn knobs(&self) -> &KernelKnobs {
        &self.inner.knobs
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// Whether kernels are chosen by measurement on this device.
    pub fn tunes_kernels(&self) -> bool {
        self.inner.tuning.is_some()
    }

    /// The kernel measured fastest for a problem class, when one was (in this run or an earlier
    /// one on the same adapter, driver and version).
    pub fn tuned_choice(&self, class: &str) -> Option<String> {
        self.inner.tuning.as_ref()?.lock().unwrap().choice(class).map(str::to_string)
    }

    /// How long this run may still spend measuring the kernels of `class` (zero when tuning is off,
    /// or paused, or the cap is reached: the class is then counted as left to the rules).
    pub fn tuning_time_left(&self, class: &str) -> std::time::Duration {
        if self.inner.tuning_paused.load(std::sync::atomic::Ordering::Relaxed) {
            return std::time::Duration::ZERO;
        }
        self.inner.tuning.as_ref().map_or(std::time::Duration::ZERO, |t| t.lock().unwrap().time_left(class))
    }

    /// Runs `f` with no new measuring: an op that times its candidates (a convolution's plans)
    /// compares them with the kernels already chosen inside them (the GEMMs' rules, or their
    /// measured choices), instead of measuring every inner kernel of every candidate.
    pub fn without_new_tuning<R>(&self, f: impl FnOnce() -> R) -> R {
        use std::sync::atomic::Ordering;
        let was = self.inner.tuning_paused.swap(true, Ordering::Relaxed);
        let result = f();
        self.inner.tuning_paused.store(was, Ordering::Relaxed);
        result
    }

    /// Keeps the choice measured for a class (on disk too, where the table has a file). A choice
    /// that cannot be written is kept in memory, with a warning: it is only a cache.
    pub fn record_tuned_choice(&self, class: &str, choice: &str, spent: std::time::Duration) {
        if let Some(table) = &self.inner.tuning {
            if let Err(e) = table.lock().unwrap().record(class, choice, spent) {
                eprintln!("warning: the kernel choices are kept in memory only: {e}");
            }
        }
    }

    /// What kernel tuning did in this run (`None` when it is off).
    pub fn tuning_summary(&self) -> Option<TuningSummary> {
        Some(self.inner.tuning.as_ref()?.lock().unwrap().summary())
    }

    /// The checks compiled into this device's shaders.
    pub fn shader_checks(&self) -> ShaderChecks {
        self.inner.pipelines.checks()
    }

    /// The largest buffer one storage binding may cover, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        let adapter = self.inner.limits.max_storage_buffer_binding_size.min(self.inner.limits.max_buffer_size);
        self.max_binding_cap.map_or(adapter, |cap| cap.min(adapter))
    }

    /// This device (the same queue, caches and pending commands) with its binding limit lowered
    /// to `bytes`: allocations above it fail and [`max_binding_bytes`](Self::max_binding_bytes)
    /// reports it, so that tests can make data sets "too large" at small sizes.
    pub fn with_max_binding_bytes(&self, bytes: u64) -> Device {
        Device { inner: self.inner.clone(), max_binding_cap: Some(bytes) }
    }

    /// A buffer of at least `len` elements of `dtype`, from the pool. Its contents are undefined:
    /// kernels overwrite their outputs entirely, or the caller zeroes it with [`Device::zero`].
    pub fn alloc(&self, len: usize, dtype: DType, what: &str) -> Result<Arc<GpuBuffer>> {
        let bytes = dtype.bytes_for(len);
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge { what: what.to_string(), bytes, limit, adapter: self.inner.info.name.clone() });
        }
        let raw = self.inner.pool.lock().unwrap().take(&self.inner.device, bytes, limit);
        Ok(Arc::new(GpuBuffer::new(raw, len, dtype, self.inner.pool.clone())))
    }

    /// Uploads `data` into a new buffer, in order with the recorded commands (a pooled buffer may
    /// still be read by a dispatch that is recorded but not yet submitted).
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T], dtype: DType, what: &str) -> Result<Arc<GpuBuffer>> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let len = bytes.len() / dtype.element_bytes_exact();
        let buf = self.alloc(len, dtype, what)?;
        if !bytes.is_empty() {
            let padded = (bytes.len() as u64).div_ceil(4) * 4;
            let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("upload"),
                size: padded,
                usage: wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            });
            {
                let mut view =
                    staging.slice(..).get_mapped_range_mut().map_err(|e| Error::Gpu(format!("mapping an upload buffer: {e}")))?;
                view.slice(..bytes.len()).copy_from_slice(bytes);
            }
            staging.unmap();
            self.inner.recorder.lock().unwrap().copy(&self.inner.device, &staging, 0, buf.raw(), 0, padded);
        }
        Ok(buf)
    }

    /// Overwrites a whole buffer with zeros (recorded in order).
    pub fn zero(&self, buf: &GpuBuffer) {
        self.inner.recorder.lock().unwrap().clear(&self.inner.device, buf.raw(), buf.byte_len_padded());
    }

    /// Copies `bytes` bytes from the start of `src` to the start of `dst` (recorded in order).
    pub fn copy(&self, src: &GpuBuffer, dst: &GpuBuffer, bytes: u64) {
        self.copy_region(src, 0, dst, 0, bytes);
    }

    /// Copies `bytes` bytes between byte offsets (multiples of 4), recorded in order.
    pub fn copy_region(&self, src: &GpuBuffer, src_offset: u64, dst: &GpuBuffer, dst_offset: u64, bytes: u64) {
        self.inner.recorder.lock().unwrap().copy(&self.inner.device, src.raw(), src_offset, dst.raw(), dst_offset, bytes);
    }

    /// Records one dispatch of `kernel` with `params` at binding 0 and `buffers` at bindings 1...
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        kernel: &KernelSpec,
        constants: &[(&'static str, u32)],
        params: &P,
        buffers: &[&GpuBuffer],
        workgroups: [u32; 3],
    ) -> Result<()> {
        if buffers.len() != kernel.bindings.len() {
            return Err(Error::Invalid(format!("kernel {} takes {} buffers, {} given", kernel.name, kernel.bindings.len(), buffers.len())));
        }
        let max = self.inner.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::Invalid(format!(
                "kernel {}: {workgroups:?} workgroups exceed the adapter's {max} per dimension",
                kernel.name
            )));
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        let pipeline = self.inner.pipelines.get(&self.inner.device, kernel, constants)?;
        if let Some(wgsl) = pipeline.params_size.filter(|&n| n as usize != std::mem::size_of::<P>()) {
            return Err(Error::Invalid(format!(
                "kernel {}: its WGSL parameter struct is {wgsl} bytes but the Rust one is {} bytes (a field on one side only?)",
                kernel.name,
                std::mem::size_of::<P>()
            )));
        }
        let mut rec = self.inner.recorder.lock().unwrap();
        if rec.params_full(std::mem::size_of::<P>()) {
            rec.submit(&self.inner.queue);
        }
        rec.dispatch(&self.inner.device, &pipeline, bytemuck::bytes_of(params), buffers, workgroups);
        drop(rec);
        if self.inner.profile.lock().unwrap().is_some() {
            self.time_last_dispatch(kernel.name)?;
        }
        Ok(())
    }

    /// Starts a per-kernel profile: from now on each dispatch runs alone and is timed.
    pub fn start_profile(&self) -> Result<()> {
        self.sync()?;
        *self.inner.profile.lock().unwrap() = Some(Vec::new());
        Ok(())
    }

    /// Ends the profile and returns the time per kernel, largest first.
    pub fn finish_profile(&self) -> Vec<KernelTime> {
        let mut times = self.inner.profile.lock().unwrap().take().unwrap_or_default();
        times.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        times
    }

    fn time_last_dispatch(&self, kernel: &'static str) -> Result<()> {
        let start = std::time::Instant::now();
        self.sync()?;
        let seconds = start.elapsed().as_secs_f64();
        if let Some(times) = self.inner.profile.lock().unwrap().as_mut() {
            match times.iter_mut().find(|t| t.kernel == kernel) {
                Some(t) => {
                    t.calls += 1;
                    t.seconds += seconds;
                }
                None => times.push(KernelTime { kernel, calls: 1, seconds }),
            }
        }
        Ok(())
    }

    /// Submits everything recorded so far, without waiting.
    pub fn flush(&self) -> Result<()> {
        self.inner.recorder.lock().unwrap().submit(&self.inner.queue);
        self.check()
    }

    /// Submits and waits until the GPU has finished all work (for timing).
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.inner.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// Reads a buffer's first `len` elements back to the CPU as raw 32-bit words (submits and waits).
    pub fn read_words(&self, buf: &GpuBuffer, len: usize) -> Result<Vec<u32>> {
        let bytes = (len as u64) * 4;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.inner.recorder.lock().unwrap().copy(&self.inner.device, buf.raw(), 0, &staging, 0, bytes);
        self.flush()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.inner.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("waiting for a readback: {e}")))?;
        self.check()?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback never completed".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        let out = {
            let view = staging.slice(..).get_mapped_range().map_err(|e| Error::Gpu(format!("reading a readback buffer: {e}")))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// Releases the pooled buffers no tensor uses (between models of different shapes).
    pub fn trim_pool(&self) {
        self.inner.pool.lock().unwrap().clear();
    }

    /// Number of dispatches recorded since the device was created (for overhead accounting).
    pub fn dispatch_count(&self) -> u64 {
        self.inner.recorder.lock().unwrap().dispatches
    }

    /// Number of submits since the device was created.
    pub fn submit_count(&self) -> u64 {
        self.inner.recorder.lock().unwrap().submits
    }

    /// Turns errors wgpu reported asynchronously into a Rust error. Every queued error is taken
    /// (one failed piece of work often queues several), so none is left to fail the next model:
    /// an out-of-memory first, as it is what a search avoids by trying smaller models, and the
    /// count of the others in its message.
    fn check(&self) -> Result<()> {
        if let Some(msg) = self.inner.lost.lock().unwrap().clone() {
            return Err(Error::DeviceLost(msg));
        }
        let queued = std::mem::take(&mut *self.inner.errors.lock().unwrap());
        let others = queued.len().saturating_sub(1);
        let Some(first) = queued.into_iter().min_by_key(|e| !matches!(e, Error::OutOfMemory(_))) else { return Ok(()) };
        Err(match (first, others) {
            (first, 0) => first,
            (Error::OutOfMemory(msg), n) => Error::OutOfMemory(format!("{msg} (and {n} more errors of the same work)")),
            (Error::Gpu(msg), n) => Error::Gpu(format!("{msg} (and {n} more errors of the same work)")),
            (first, _) => first,
        })
    }
}

async fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    if std::env::var("WGPU_ADAPTER_NAME").is_ok() {
        return wgpu::util::initialize_adapter_from_env_or_default(instance, None)
            .await
            .map_err(|e| Error::NoAdapter(format!("WGPU_ADAPTER_NAME is set but {e}")));
    }
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let adapters = instance.enumerate_adapters(backends).await;
    let rank = |a: &wgpu::Adapter| -> u32 {
        let i = a.get_info();
        let kind = match i.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        // Vulkan, Metal and DX12 before GL: compute on GL is limited.
        let backend = if i.backend == wgpu::Backend::Gl { 10 } else { 0 };
        kind + backend
    };
    let pref = wgpu::PowerPreference::from_env();
    let mut adapters: Vec<wgpu::Adapter> = adapters.into_iter().collect();
    if pref == Some(wgpu::PowerPreference::LowPower) {
        adapters.sort_by_key(|a| {
            let r = rank(a);
            if r == 1 {
                0
            } else {
                r + 1
            }
        });
    } else {
        adapters.sort_by_key(rank);
    }
    if let Some(a) = adapters.into_iter().next() {
        return Ok(a);
    }
    instance.request_adapter(&wgpu::RequestAdapterOptions::default()).await.map_err(|e| Error::NoAdapter(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_queued_error_is_taken_at_once() {
        // A device of its own: on the shared one, another test's sync could take these errors.
        let device = crate::testing::own_device();
        let too_large = device.limits().max_buffer_size + 4;
        for _ in 0..3 {
            // Invalid: larger than the device allows (a validation error, queued by wgpu).
            let _ = device.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("too large"),
                size: too_large,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
        }
        let err = device.sync().expect_err("the invalid buffers are reported");
        assert!(err.to_string().contains("and 2 more errors"), "{err}");
        device.sync().expect("nothing is left for the next work");
    }

    /// A shader whose parameter struct has three fields, given Rust parameters of two and of three.
    #[test]
    fn parameters_that_differ_from_the_shader_struct_are_an_error() {
        static KERNEL: super::KernelSpec = super::KernelSpec {
            name: "three_fields",
            source: "struct Params { n: u32, scale: f32, offset: u32 }\n\
                     @group(0) @binding(0) var<uniform> p: Params;\n\
                     @group(0) @binding(1) var<storage, read_write> out: array<f32>;\n\
                     @compute @workgroup_size(1) fn main() { out[p.offset] = f32(p.n) * p.scale; }",
            entry: "main",
            bindings: &[super::Access::ReadWrite],
        };
        let device = crate::testing::device();
        let out = crate::Tensor::zeros(&device, &[4]).unwrap();
        let e = device.dispatch(&KERNEL, &[], &[2u32, 0], &[out.buffer()], [1, 1, 1]).unwrap_err().to_string();
        assert!(e.contains("three_fields") && e.contains("12 bytes") && e.contains("8 bytes"), "{e}");
        device.dispatch(&KERNEL, &[], &[2u32, 3.0f32.to_bits(), 1], &[out.buffer()], [1, 1, 1]).unwrap();
        assert_eq!(out.to_vec().unwrap(), vec![0.0, 6.0, 0.0, 0.0]);
    }
}

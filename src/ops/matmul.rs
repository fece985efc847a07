//! Matrix multiply: one strided, batched GEMM that dense and conv use in forward and backward, and
//! the `matmul` op on 2-D tensors with optional transposes. A launch picks a kernel from the
//! operands' strides: when each operand is contiguous along one axis and 16-byte aligned, a
//! `shaders/matmul_vec4.wgsl` variant that loads vec4s along that axis; otherwise the generic
//! scalar kernel in `shaders/matmul.wgsl`, which takes any strides. The kernels of
//! `shaders/matmul_subgroup.wgsl`, whose invocations share their loads by shuffles, run in the
//! AkBn, AmBn and AkBk layouts on adapters with subgroups of one fixed size from 4 to 128 (a power
//! of two: lavapipe's 8, NVIDIA's and Apple's 32): [`plan`] picks them for large products at 8
//! lanes (measured faster there), the tuner times them at every size ([`candidates`]).
//! `shaders/matmul_tiled.wgsl` ([`Variant::Workgroup`]) is the classic GPU GEMM through workgroup
//! memory, for any strides; [`plan`] does not pick it yet (a tuner will), [`candidates`] lists it.

mod tuning;

use super::Backward;
use crate::device::{Access, Device, GpuBuffer, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

const BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::ReadWrite];
const VEC4_SOURCE: &str = include_str!("../../shaders/matmul_vec4.wgsl");

static GEMM: KernelSpec =
    KernelSpec { name: "matmul", source: include_str!("../../shaders/matmul.wgsl"), entry: "main", bindings: BINDINGS };
static GEMM_AK_BN: KernelSpec = KernelSpec { name: "matmul_vec4", source: VEC4_SOURCE, entry: "ak_bn", bindings: BINDINGS };
static GEMM_AM_BN: KernelSpec = KernelSpec { name: "matmul_vec4", source: VEC4_SOURCE, entry: "am_bn", bindings: BINDINGS };
static GEMM_AK_BK: KernelSpec = KernelSpec { name: "matmul_vec4", source: VEC4_SOURCE, entry: "ak_bk", bindings: BINDINGS };
const SUBGROUP_SOURCE: &str = include_str!("../../shaders/matmul_subgroup.wgsl");
static GEMM_AK_BN_SUBGROUP: KernelSpec =
    KernelSpec { name: "matmul_subgroup", source: SUBGROUP_SOURCE, entry: "ak_bn_sg", bindings: BINDINGS };
static GEMM_AM_BN_SUBGROUP: KernelSpec =
    KernelSpec { name: "matmul_subgroup", source: SUBGROUP_SOURCE, entry: "am_bn_sg", bindings: BINDINGS };
static GEMM_AK_BK_SUBGROUP: KernelSpec =
    KernelSpec { name: "matmul_subgroup", source: SUBGROUP_SOURCE, entry: "ak_bk_sg", bindings: BINDINGS };
static GEMM_AK_BK_SUBGROUP_C4: KernelSpec =
    KernelSpec { name: "matmul_subgroup", source: SUBGROUP_SOURCE, entry: "ak_bk_sg_c4", bindings: BINDINGS };
static GEMM_AK_BN_SUBGROUP_C4: KernelSpec =
    KernelSpec { name: "matmul_subgroup", source: SUBGROUP_SOURCE, entry: "ak_bn_sg_c4", bindings: BINDINGS };
static GEMM_AM_BN_SUBGROUP_C4: KernelSpec =
    KernelSpec { name: "matmul_subgroup", source: SUBGROUP_SOURCE, entry: "am_bn_sg_c4", bindings: BINDINGS };
static GEMM_TILED: KernelSpec =
    KernelSpec { name: "matmul_tiled", source: include_str!("../../shaders/matmul_tiled.wgsl"), entry: "main", bindings: BINDINGS };
/// The subgroup sizes the subgroup kernels run with: powers of two from 4 to 128.
pub fn subgroup_lanes_supported(lanes: u32) -> bool {
    lanes.is_power_of_two() && (4..=128).contains(&lanes)
}

/// The subgroup sizes at which [`plan`] picks the subgroup kernels by itself: where they were
/// measured faster than the vec4 kernels, lavapipe's 8. With 4 (lavapipe on 128-bit vectors) the
/// AkBn one ran 1024³ in 352 ms against the vec4 kernel's 189 ms; other sizes (GPUs) are not
/// measured: the tuner times the subgroup kernels there among the others ([`candidates`]).
const PLANNED_SUBGROUP_LANES: [u32; 1] = [8];

/// The adapter's subgroup size when the subgroup kernels run with it.
pub fn subgroup_lanes(device: &Device) -> Option<u32> {
    device.subgroup_size().filter(|&l| subgroup_lanes_supported(l))
}

/// A product side this short gets a tile fitted to it ([`Tiling::fitted`]).
const SMALL_SIDE: u32 = 16;
/// Accumulators of a fitted small tile: 9x8 ran well on lavapipe, 9x16 fell off the cliff.
const SMALL_TILE_REGISTERS: u32 = 72;

pub const BIAS_N: u32 = 1;
pub const BIAS_M: u32 = 2;
pub const ACCUMULATE: u32 = 4;
pub const REDUCE_BATCH: u32 = 8;

/// Where an operand's elements are: element (row, col) of batch `b` is at
/// `offset + b * batch + row * row + col * col`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strides {
    pub row: u32,
    pub col: u32,
    pub batch: u32,
    pub offset: u32,
}

impl Strides {
    /// A row-major `rows x cols` matrix, or its transpose when `transposed`.
    pub fn matrix(rows: usize, cols: usize, transposed: bool) -> Strides {
        // `rows x cols` is the logical shape; storage is `cols x rows` when transposed.
        if transposed {
            Strides { row: 1, col: rows as u32, batch: (rows * cols) as u32, offset: 0 }
        } else {
            Strides { row: cols as u32, col: 1, batch: (rows * cols) as u32, offset: 0 }
        }
    }
    pub fn with_batch(self, batch: usize) -> Strides {
        Strides { batch: batch as u32, ..self }
    }
}

/// One GEMM launch: C (m x n) = A (m x k) * B (k x n), for `batch` matrices.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: Strides,
    pub b: Strides,
    pub c: Strides,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    sa_m: u32,
    sa_k: u32,
    sa_b: u32,
    a_off: u32,
    sb_k: u32,
    sb_n: u32,
    sb_b: u32,
    b_off: u32,
    sc_m: u32,
    sc_n: u32,
    sc_b: u32,
    c_off: u32,
    flags: u32,
    _pad: [u32; 3],
}

/// Register tile (rows x cols of C per invocation) and workgroup shape. Parameters, not constants:
/// lavapipe likes big register tiles, real GPUs may prefer others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub tm: u32,
    pub tn: u32,
    pub wg_x: u32,
    pub wg_y: u32,
    /// The step along k of [`Variant::Workgroup`] (the depth of its tiles in workgroup memory); the
    /// other kernels step k by their own vec4s and ignore it. [`Tiling::new`] sets [`DEFAULT_BK`],
    /// so the other kernels' tilings are written as before; [`Tiling::with_bk`] sets another.
    pub bk: u32,
}

/// The k-step of [`Tiling::new`]: 16, the usual depth of a 64 x 64 block's tiles on GPUs.
pub const DEFAULT_BK: u32 = 16;

impl Tiling {
    pub const fn new(tm: u32, tn: u32, wg_x: u32, wg_y: u32) -> Self {
        Tiling { tm, tn, wg_x, wg_y, bk: DEFAULT_BK }
    }
    pub const fn with_bk(self, bk: u32) -> Self {
        Tiling { bk, ..self }
    }
    /// The tiling NETMORPH_GEMM_TILING="TMxTN/WXxWY" or "TMxTN/WXxWY/BK" forces on every launch of
    /// [`gemm`], when it was set as `device` opened (for tuning on a new adapter by hand).
    pub fn forced(device: &Device) -> Option<Tiling> {
        let knobs = device.knobs();
        let [tm, tn, wg_x, wg_y] = knobs.gemm_tiling?;
        Some(Tiling::new(tm, tn, wg_x, wg_y).with_bk(knobs.gemm_k_step.unwrap_or(DEFAULT_BK)))
    }

    /// The tiling of the row-major kernel ([`Variant::AkBn`]) that [`gemm`] uses on `device`.
    pub fn default_for(device: &Device) -> Tiling {
        Tiling::default_for_variant(device, Variant::AkBn)
    }

    /// The tiling [`gemm`] uses for variant `v` on `device`: NETMORPH_GEMM_TILING if set, else
    /// [`Tiling::lavapipe`] on CPU adapters and [`Tiling::GPU`] on GPUs.
    pub fn default_for_variant(device: &Device, v: Variant) -> Tiling {
        if let Some(t) = Tiling::forced(device) {
            return t;
        }
        if v.is_subgroup() {
            subgroup_lanes(device).map_or(Tiling::SUBGROUP, Tiling::subgroup)
        } else if device.is_cpu() {
            Tiling::lavapipe(v)
        } else if v == Variant::Workgroup {
            Tiling::WORKGROUP
        } else {
            Tiling::GPU
        }
    }

    /// For GPUs: a conventional 4x4 register tile in 16x16 workgroups (not tuned: no GPU was at hand).
    pub const GPU: Tiling = Tiling::new(4, 4, 16, 16);

    /// For [`Variant::Workgroup`] on GPUs, the textbook shared-memory GEMM: 4x4 register tiles in
    /// 16x16 workgroups (64 x 64 blocks of C), k in steps of 16 (8.1 KiB of workgroup memory, so
    /// several workgroups fit per multiprocessor). Not tuned: no GPU was at hand.
    pub const WORKGROUP: Tiling = Tiling::new(4, 4, 16, 16).with_bk(16);

    /// The tilings worth trying for [`Variant::Workgroup`]: the default; 8x8 tiles in 16x16 (128 x
    /// 128 blocks, twice the FMAs per workgroup-memory read, for large products); 8x8 tiles in 8x8
    /// (64 x 64 blocks from 64 invocations, for GPUs with small workgroups or few registers); 4x4
    /// tiles in 8x8 (32 x 32 blocks, more workgroups for small products); the one-element tiles of
    /// the textbook kernel; and lavapipe's register tile (8x16 in 8x8).
    pub const WORKGROUP_CANDIDATES: [Tiling; 6] = [
        Tiling::WORKGROUP,
        Tiling::new(8, 8, 16, 16).with_bk(8),
        Tiling::new(8, 8, 8, 8).with_bk(16),
        Tiling::new(4, 4, 8, 8).with_bk(8),
        Tiling::new(1, 1, 16, 16).with_bk(16),
        Tiling::new(8, 16, 8, 8).with_bk(8),
    ];

    /// The subgroup kernels' geometries for subgroups of `lanes` (a supported size, else none),
    /// the default ([`Tiling::subgroup`]) first; each kernel fits them all ([`Variant::fits`]). A
    /// subgroup computes WG_Y x WG_X tiles, so its block of C grows with the lane count while the
    /// tiles shrink to what a GPU's registers hold: 8x16 tiles up to 8 lanes (lavapipe's, tuned
    /// there), 8x8 at 16, 4x8 and 4x4 from 32 on (not tuned: no such adapter was at hand).
    pub fn subgroup_candidates(lanes: u32) -> &'static [Tiling] {
        Tiling::SUBGROUP_CANDIDATES.iter().find(|(l, _)| *l == lanes).map_or(&[], |(_, tilings)| &tilings[..])
    }

    /// [`Tiling::subgroup_candidates`] per subgroup size.
    pub const SUBGROUP_CANDIDATES: [(u32, [Tiling; 2]); 6] = [
        (4, [Tiling::new(8, 16, 2, 2), Tiling::new(16, 8, 2, 2)]),
        (8, [Tiling::SUBGROUP, Tiling::new(16, 8, 4, 2)]),
        (16, [Tiling::new(8, 8, 4, 4), Tiling::new(4, 8, 4, 4)]),
        (32, [Tiling::new(4, 8, 4, 8), Tiling::new(8, 8, 4, 8)]),
        (64, [Tiling::new(4, 4, 8, 8), Tiling::new(4, 8, 8, 8)]),
        (128, [Tiling::new(4, 4, 16, 8), Tiling::new(4, 8, 16, 8)]),
    ];

    /// The subgroup kernels' default geometry for subgroups of `lanes`, a supported size
    /// ([`subgroup_lanes_supported`]): [`Tiling::SUBGROUP`] at 8 lanes.
    pub fn subgroup(lanes: u32) -> Tiling {
        Tiling::subgroup_candidates(lanes).first().copied().unwrap_or_else(|| panic!("no subgroup tiling for {lanes} lanes"))
    }

    /// The invocations of a workgroup: for the subgroup kernels, the subgroup size it is for.
    pub const fn lanes(self) -> u32 {
        self.wg_x * self.wg_y
    }

    /// The rows and columns of C one workgroup computes.
    pub const fn block(self) -> (u32, u32) {
        (self.tm * self.wg_y, self.tn * self.wg_x)
    }

    /// Bytes of workgroup memory [`Variant::Workgroup`] declares with this tiling: its A and B tiles,
    /// BK rows of BM + 1 and BN + 1 words (one word of padding per row, as in `matmul_tiled.wgsl`).
    pub fn workgroup_bytes(self) -> u64 {
        let (bm, bn) = (self.tm as u64 * self.wg_y as u64, self.tn as u64 * self.wg_x as u64);
        4 * self.bk as u64 * ((bm + 1) + (bn + 1))
    }

    /// The subgroup kernels' at 8 lanes (lavapipe): 8x16 tiles, the subgroup's 8 invocations as 2
    /// columns by 4 rows of tiles (a 32 x 32 block of C). On lavapipe 16x8 tiles as 4 x 2 ran about
    /// as fast.
    pub const SUBGROUP: Tiling = Tiling::new(8, 16, 2, 4);

    /// Whether the subgroup kernel `v` computes with this tiling on subgroups of `self.lanes()`
    /// invocations (a supported size), one subgroup per workgroup. The H invocations of a tile row
    /// (column) share the E vectors of A (B) it needs per step, the first min(H, E) of them owning
    /// E / min(H, E) each (`shaders/matmul_subgroup.wgsl`), so min(H, E) must divide E; E is TM rows
    /// (`AkBn`, `AkBk`) or TM / 4 vec4s (`AmBn`) of A, and TN / 4 vec4s (`AkBn`, `AmBn`) or TN
    /// columns (`AkBk`) of B. Whether the adapter's subgroups have that size is checked at launch.
    fn suits_subgroup(self, v: Variant) -> bool {
        let lanes = self.lanes();
        let shared = |h: u32, e: u32| e > 0 && e.is_multiple_of(h.min(e));
        let (rows, cols) = (lanes / self.wg_y, lanes / self.wg_x);
        subgroup_lanes_supported(lanes)
            && self.tn.is_multiple_of(4)
            && match v {
                Variant::AkBnSubgroup => shared(rows, self.tm) && shared(cols, self.tn / 4),
                Variant::AmBnSubgroup => self.tm.is_multiple_of(4) && shared(rows, self.tm / 4) && shared(cols, self.tn / 4),
                Variant::AkBkSubgroup => shared(rows, self.tm) && shared(cols, self.tn),
                _ => false,
            }
    }

    /// The fastest tiling measured on lavapipe (`benches/matmul.rs`, 2-core AMD EPYC, Mesa 25).
    /// Loads are per-lane and bounds-checked there, so they dominate: large tiles pay until the
    /// tile no longer fits the registers (AkBn falls off a cliff at 8x24 and 16x8).
    pub fn lavapipe(v: Variant) -> Tiling {
        match v {
            Variant::Scalar => Tiling::new(4, 8, 16, 4),
            Variant::AkBn | Variant::AmBk => Tiling::new(8, 16, 8, 8),
            Variant::AmBn => Tiling::new(16, 8, 8, 8),
            Variant::AkBk => Tiling::new(8, 16, 2, 4),
            Variant::AkBnSubgroup | Variant::AmBnSubgroup | Variant::AkBkSubgroup => Tiling::SUBGROUP,
            // The fastest of the three candidates measured on lavapipe at 1024³ (9.0 GFLOP/s; 8x8 in
            // 16x16: 7.1, the GPU default: 5.1), half the subgroup kernel's: `plan` does not pick it.
            Variant::Workgroup => Tiling::new(8, 16, 8, 8).with_bk(8),
        }
    }

    /// This tiling cut to the shape of `g` as variant `v` runs it. A side of at most 16 that the
    /// workgroup's tiles would overhang gets a tile that covers it exactly (rounded up to the 4 a
    /// vec4 axis needs, the other side of the tile shrunk to stay clear of the register cliff),
    /// and a workgroup's lanes that would find no tile along one axis go to the other. Lavapipe
    /// runs a workgroup's lanes as SIMD lanes, so idle ones are lost: conv1's weight gradient
    /// (32 x 9 per image) ran 2x faster with a 9x8 tile than with the default 8x16.
    pub fn fitted(self, v: Variant, g: &Gemm) -> Tiling {
        if v.is_subgroup() {
            // A fixed geometry: every invocation of the subgroup owns a part of the loads.
            return self;
        }
        // AmBk runs the AkBn kernel on the transposed product.
        let (m, n) = if v == Variant::AmBk { (g.n, g.m) } else { (g.m, g.n) };
        let m_unit = if v == Variant::AmBn { 4 } else { 1 };
        let n_unit = if matches!(v, Variant::Scalar | Variant::Workgroup) { 1 } else { 4 };
        let (m, n) = (m.max(1) as u32, n.max(1) as u32);
        let mut t = self;
        if m <= SMALL_SIDE && m < t.tm * t.wg_y {
            t.tm = m.next_multiple_of(m_unit);
            t.tn = t.tn.min(((SMALL_TILE_REGISTERS / t.tm) / n_unit * n_unit).max(n_unit));
        } else if n <= SMALL_SIDE && n < t.tn * t.wg_x {
            t.tn = n.next_multiple_of(n_unit);
            t.tm = t.tm.min(((SMALL_TILE_REGISTERS / t.tn) / m_unit * m_unit).max(m_unit));
        }
        // Workgroup sides stay powers of two (as the defaults are), so few pipelines get compiled.
        let lanes = t.wg_x * t.wg_y;
        let (rows, cols) = (m.div_ceil(t.tm).next_power_of_two(), n.div_ceil(t.tn).next_power_of_two());
        if rows < t.wg_y {
            t.wg_y = rows;
            t.wg_x = (lanes / rows).min(cols.max(t.wg_x));
        } else if cols < t.wg_x {
            t.wg_x = cols;
            t.wg_y = (lanes / cols).min(rows.max(t.wg_y));
        }
        t
    }

    /// The tilings worth trying (benchmarked, and tested for every variant).
    pub const CANDIDATES: [Tiling; 6] = [
        Tiling::new(8, 16, 8, 8),
        Tiling::new(16, 8, 8, 8),
        Tiling::new(8, 16, 2, 4),
        Tiling::new(4, 8, 16, 4),
        Tiling::GPU,
        Tiling::new(1, 1, 16, 16),
    ];
    /// "TMxTN/WXxWY", or "TMxTN/WXxWY/BK" for [`Variant::Workgroup`]'s k-step.
    pub fn parse(s: &str) -> Option<Tiling> {
        let (t, w) = s.split_once('/')?;
        let (w, bk) = match w.split_once('/') {
            Some((w, bk)) => (w, bk.parse().ok()?),
            None => (w, DEFAULT_BK),
        };
        let (tm, tn) = t.split_once('x')?;
        let (wx, wy) = w.split_once('x')?;
        Some(Tiling::new(tm.parse().ok()?, tn.parse().ok()?, wx.parse().ok()?, wy.parse().ok()?).with_bk(bk))
    }
}

/// The kernel a launch runs. The vec4 variants are named after the axis along which each operand
/// is contiguous: `AkBn` is A row-major `[m, k]` and B row-major `[k, n]`; `Am..` is A stored
/// `[k, m]` (transposed), `..Bk` is B stored `[n, k]` (transposed). `AmBk` runs the `AkBn` kernel on
/// the transposed product Cᵀ = Bᵀ Aᵀ. `Scalar` takes any strides. The `..Subgroup` variants take
/// the layout of their namesake and need an adapter whose subgroups have one size, a power of two
/// from 4 to 128 ([`Device::subgroup_size`], [`subgroup_lanes`]), equal to the tiling's invocations.
/// `Workgroup` takes any strides and stages its operands in workgroup memory (for GPUs; in neither
/// list below, so [`plan`] never picks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Scalar,
    AkBn,
    AmBn,
    AkBk,
    AmBk,
    AkBnSubgroup,
    AmBnSubgroup,
    AkBkSubgroup,
    Workgroup,
}

impl Variant {
    /// One variant per layout, each running on any adapter.
    pub const ALL: [Variant; 5] = [Variant::Scalar, Variant::AkBn, Variant::AmBn, Variant::AkBk, Variant::AmBk];
    /// The variants that need subgroups ([`subgroup_lanes`]), one per layout they share with `ALL`.
    pub const SUBGROUP: [Variant; 3] = [Variant::AkBnSubgroup, Variant::AmBnSubgroup, Variant::AkBkSubgroup];

    pub fn is_subgroup(self) -> bool {
        Variant::SUBGROUP.contains(&self)
    }

    /// The variant of the same layout without subgroup operations.
    pub fn layout(self) -> Variant {
        match self {
            Variant::AkBnSubgroup => Variant::AkBn,
            Variant::AmBnSubgroup => Variant::AmBn,
            Variant::AkBkSubgroup => Variant::AkBk,
            v => v,
        }
    }

    /// The subgroup variant of this layout, if there is one.
    fn subgroup(self) -> Option<Variant> {
        match self {
            Variant::AkBn => Some(Variant::AkBnSubgroup),
            Variant::AmBn => Some(Variant::AmBnSubgroup),
            Variant::AkBk => Some(Variant::AkBkSubgroup),
            _ => None,
        }
    }

    /// The fastest variant that can run `g` with tiling `t`.
    pub fn select(g: &Gemm, t: Tiling) -> Variant {
        Variant::ALL[1..].iter().copied().find(|v| v.fits(g, t)).unwrap_or(Variant::Scalar)
    }

    /// Whether this variant computes `g` with tiling `t`: each operand is contiguous along the axis
    /// the variant loads vec4s from, every other stride and offset in use is a multiple of 4, and
    /// the tile is a multiple of 4 along an m or n axis that holds vec4s.
    pub fn fits(self, g: &Gemm, t: Tiling) -> bool {
        let (a_along_m, b_along_n) = match self {
            Variant::Scalar => return true,
            Variant::Workgroup => return t.bk > 0,
            Variant::AkBnSubgroup | Variant::AmBnSubgroup | Variant::AkBkSubgroup => {
                return self.layout().fits(g, t) && t.suits_subgroup(self)
            }
            Variant::AmBk => return Variant::AkBn.fits(&transposed(g), t),
            Variant::AkBn => (false, true),
            Variant::AmBn => (true, true),
            Variant::AkBk => (false, false),
        };
        let batches = g.batch;
        let a_ok = if a_along_m {
            vec4_operand(g.a.row, (g.a.col, g.k), (g.a.batch, batches), g.a.offset) && t.tm.is_multiple_of(4)
        } else {
            vec4_operand(g.a.col, (g.a.row, g.m), (g.a.batch, batches), g.a.offset)
        };
        let b_ok = if b_along_n {
            vec4_operand(g.b.col, (g.b.row, g.k), (g.b.batch, batches), g.b.offset) && t.tn.is_multiple_of(4)
        } else {
            // Columns go four at a time (their vec4s along k transposed into vec4s along n).
            vec4_operand(g.b.row, (g.b.col, g.n), (g.b.batch, batches), g.b.offset) && t.tn.is_multiple_of(4)
        };
        a_ok && b_ok
    }

    /// The kernel for `g`: the subgroup kernels store C as vec4s where its layout allows.
    fn kernel_for(self, g: &Gemm) -> &'static KernelSpec {
        match self {
            Variant::AkBnSubgroup if vec4_c(g) => &GEMM_AK_BN_SUBGROUP_C4,
            Variant::AmBnSubgroup if vec4_c(g) => &GEMM_AM_BN_SUBGROUP_C4,
            Variant::AkBkSubgroup if vec4_c(g) => &GEMM_AK_BK_SUBGROUP_C4,
            v => v.kernel(),
        }
    }

    fn kernel(self) -> &'static KernelSpec {
        match self {
            Variant::Scalar => &GEMM,
            Variant::AkBn | Variant::AmBk => &GEMM_AK_BN,
            Variant::AmBn => &GEMM_AM_BN,
            Variant::AkBk => &GEMM_AK_BK,
            Variant::AkBnSubgroup => &GEMM_AK_BN_SUBGROUP,
            Variant::AmBnSubgroup => &GEMM_AM_BN_SUBGROUP,
            Variant::AkBkSubgroup => &GEMM_AK_BK_SUBGROUP,
            Variant::Workgroup => &GEMM_TILED,
        }
    }

    /// An error naming the kernel and the limit when `device` cannot run this variant with tiling
    /// `t`: too many invocations per workgroup, a workgroup side too long, or (`Workgroup`) tiles
    /// larger than the workgroup memory.
    pub fn check_limits(self, device: &Device, t: Tiling) -> Result<()> {
        let limits = device.limits();
        let kernel = self.kernel().name;
        let over = |what: String, limit: &str, max: u64| {
            Error::Invalid(format!(
                "gemm: kernel {kernel} ({self:?}) with {t:?} needs {what}; adapter {} allows {max} ({limit})",
                device.name()
            ))
        };
        let lanes = t.wg_x as u64 * t.wg_y as u64;
        if lanes > limits.max_compute_invocations_per_workgroup as u64 {
            return Err(over(
                format!("{lanes} invocations"),
                "max_compute_invocations_per_workgroup",
                limits.max_compute_invocations_per_workgroup as u64,
            ));
        }
        if t.wg_x > limits.max_compute_workgroup_size_x {
            return Err(over(
                format!("a workgroup {} wide", t.wg_x),
                "max_compute_workgroup_size_x",
                limits.max_compute_workgroup_size_x as u64,
            ));
        }
        if t.wg_y > limits.max_compute_workgroup_size_y {
            return Err(over(
                format!("a workgroup {} high", t.wg_y),
                "max_compute_workgroup_size_y",
                limits.max_compute_workgroup_size_y as u64,
            ));
        }
        let bytes = if self == Variant::Workgroup { t.workgroup_bytes() } else { 0 };
        if bytes > limits.max_compute_workgroup_storage_size as u64 {
            return Err(over(
                format!("{bytes} bytes of workgroup memory"),
                "max_compute_workgroup_storage_size",
                limits.max_compute_workgroup_storage_size as u64,
            ));
        }
        Ok(())
    }
}

/// Every (variant, tiling) pair that can run `g` on `device`, for a tuner to time: each variant
/// with its candidate tilings ([`Tiling::CANDIDATES`]; [`Tiling::subgroup_candidates`] for the
/// adapter's subgroup size where the kernels support it; [`Tiling::WORKGROUP_CANDIDATES`]) where it fits `g` and the
/// adapter's limits. The tilings are as listed, not fitted to the shape; the vec4 variants also
/// need operand buffers padded to 16 bytes (pooled buffers are).
pub fn candidates(device: &Device, g: &Gemm) -> Vec<(Variant, Tiling)> {
    let lanes = subgroup_lanes(device);
    let subgroups: &[Variant] = if lanes.is_some() { &Variant::SUBGROUP } else { &[] };
    let tilings = |v: Variant| -> &'static [Tiling] {
        if v.is_subgroup() {
            Tiling::subgroup_candidates(lanes.unwrap_or(0))
        } else if v == Variant::Workgroup {
            &Tiling::WORKGROUP_CANDIDATES
        } else {
            &Tiling::CANDIDATES
        }
    };
    Variant::ALL
        .iter()
        .chain(subgroups)
        .chain(&[Variant::Workgroup])
        .flat_map(|&v| tilings(v).iter().map(move |&t| (v, t)))
        .filter(|&(v, t)| v.fits(g, t) && v.check_limits(device, t).is_ok())
        .collect()
}

/// The same product transposed, Cᵀ = Bᵀ Aᵀ: the operands trade places and every operand's row and
/// column strides swap (the caller swaps the A and B buffers too).
fn transposed(g: &Gemm) -> Gemm {
    let t = |s: Strides| Strides { row: s.col, col: s.row, ..s };
    let bias_swapped = ((g.flags & BIAS_N) << 1) | ((g.flags & BIAS_M) >> 1);
    Gemm { m: g.n, n: g.m, k: g.k, batch: g.batch, a: t(g.b), b: t(g.a), c: t(g.c), flags: (g.flags & !(BIAS_N | BIAS_M)) | bias_swapped }
}

/// C can be stored as vec4s along n: contiguous there, and n and every other stride and offset in
/// use multiples of 4, so that each vec4 of a tile lies wholly inside C or wholly outside. On
/// lavapipe a store costs as much as a load, one per lane: products with a short k (the seed's
/// conv2 input gradient: k = 64) spent a quarter of their time storing scalars.
fn vec4_c(g: &Gemm) -> bool {
    let batches = if g.flags & REDUCE_BATCH != 0 { 1 } else { g.batch };
    vec4_operand(g.c.col, (g.c.row, g.m), (g.c.batch, batches), g.c.offset) && g.n.is_multiple_of(4)
}

/// An operand can be read as vec4s along an axis when its stride there is 1 and every other
/// (stride, extent) pair in use keeps vec4 boundaries: the stride is a multiple of 4, or the extent
/// is 1 so the stride is never applied.
fn vec4_operand(unit_stride: u32, other: (u32, usize), batch: (u32, usize), offset: u32) -> bool {
    let aligned = |(stride, extent): (u32, usize)| stride.is_multiple_of(4) || extent <= 1;
    unit_stride == 1 && aligned(other) && aligned(batch) && offset.is_multiple_of(4)
}

/// Records one GEMM. `bias` is required when `flags` has BIAS_N or BIAS_M. The kernel variant is
/// picked from the strides, with its default tiling for this adapter fitted to the shape ([`plan`]),
/// or, where the device tunes kernels, the one measured fastest for the product's class.
pub fn gemm(device: &Device, g: &Gemm, a: &GpuBuffer, b: &GpuBuffer, bias: Option<&GpuBuffer>, c: &GpuBuffer) -> Result<()> {
    let vec4 = vec4_buffers(a, b);
    let rule = if vec4 { plan(device, g) } else { plan_variant(device, g, Variant::Scalar) };
    let (v, t) = tuning::choose(device, g, a, b, bias, c, rule, vec4)?;
    gemm_variant(device, g, a, b, bias, c, t, v)
}

/// The variant and tiling [`gemm`] uses for `g` on `device`: the first vec4 variant that fits with
/// its default tiling, else the scalar kernel; the tiling fitted to the shape.
pub fn plan(device: &Device, g: &Gemm) -> (Variant, Tiling) {
    let v = Variant::ALL[1..].iter().copied().find(|&v| v.fits(g, Tiling::default_for_variant(device, v))).unwrap_or(Variant::Scalar);
    // The subgroup kernels where both sides fill a subgroup's block of C (32 x 32 at 8 lanes); a
    // shorter side keeps the fitted tiles of the other kernels.
    let sub = subgroup_lanes(device).filter(|_| plans_subgroups(device)).map(Tiling::subgroup).and_then(|t| {
        let (bm, bn) = t.block();
        let s = v.subgroup().filter(|s| g.m >= bm as usize && g.n >= bn as usize && s.fits(g, t))?;
        Some((s, t))
    });
    let planned = match sub {
        Some(planned) => planned,
        None => plan_variant(device, g, v),
    };
    if device.knobs().log_gemm {
        eprintln!("gemm m{} n{} k{} batch {} flags {}: {:?} {:?}", g.m, g.n, g.k, g.batch, g.flags, planned.0, planned.1);
    }
    planned
}

/// Whether [`plan`] (at the sizes it picks them for) and the tuner may pick the subgroup kernels on
/// `device`: subgroups of a supported size ([`subgroup_lanes`]), no tiling forced through
/// NETMORPH_GEMM_TILING, and not turned off by NETMORPH_GEMM_SUBGROUP=0 (for comparisons).
pub fn subgroups_allowed(device: &Device) -> bool {
    subgroup_lanes(device).is_some() && Tiling::forced(device).is_none() && !device.knobs().no_subgroups
}

/// Whether [`plan`] picks the subgroup kernels on `device` (for products that suit them): where
/// [`subgroups_allowed`], at the sizes they were measured faster at ([`PLANNED_SUBGROUP_LANES`]).
pub fn plans_subgroups(device: &Device) -> bool {
    subgroups_allowed(device) && subgroup_lanes(device).is_some_and(|l| PLANNED_SUBGROUP_LANES.contains(&l))
}

fn plan_variant(device: &Device, g: &Gemm, v: Variant) -> (Variant, Tiling) {
    let t = Tiling::default_for_variant(device, v);
    // A tiling forced through the environment is run as given (tuning); a fitted one keeps the
    // variant's constraints (checked anyway).
    if Tiling::forced(device).is_some() {
        return (v, t);
    }
    let fitted = t.fitted(v, g);
    (v, if v.fits(g, fitted) { fitted } else { t })
}

/// [`gemm`] with a given tiling; the fastest variant that fits is chosen.
pub fn gemm_tiled(
    device: &Device,
    g: &Gemm,
    a: &GpuBuffer,
    b: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    c: &GpuBuffer,
    t: Tiling,
) -> Result<()> {
    let v = if vec4_buffers(a, b) { Variant::select(g, t) } else { Variant::Scalar };
    gemm_variant(device, g, a, b, bias, c, t, v)
}

/// The vec4 kernels may read the rest of the 16 bytes that hold an operand's last element (pooled
/// buffers are always padded so).
fn vec4_buffers(a: &GpuBuffer, b: &GpuBuffer) -> bool {
    a.raw().size().is_multiple_of(16) && b.raw().size().is_multiple_of(16)
}

/// [`gemm_tiled`] with a given kernel variant (tests and benchmarks compare them); an error if the
/// variant does not fit the operands' layout or the tiling.
#[allow(clippy::too_many_arguments)]
pub fn gemm_variant(
    device: &Device,
    g: &Gemm,
    a: &GpuBuffer,
    b: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    c: &GpuBuffer,
    t: Tiling,
    v: Variant,
) -> Result<()> {
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(());
    }
    if (g.flags & (BIAS_N | BIAS_M)) != 0 && bias.is_none() {
        return Err(Error::Invalid("gemm: bias flag without a bias buffer".into()));
    }
    if t.tm == 0 || t.tn == 0 || t.wg_x == 0 || t.wg_y == 0 {
        return Err(Error::Invalid(format!("gemm: empty tiling {t:?}")));
    }
    if !v.fits(g, t) {
        return Err(Error::Invalid(format!("gemm: variant {v:?} does not fit {g:?} with {t:?}")));
    }
    v.check_limits(device, t)?;
    if v.is_subgroup() && subgroup_lanes(device) != Some(t.lanes()) {
        return Err(Error::Invalid(format!(
            "gemm: variant {v:?} with {t:?} needs subgroups of {} invocations; adapter {} has {:?}",
            t.lanes(),
            device.name(),
            device.subgroup_size()
        )));
    }
    if v == Variant::AmBk {
        return gemm_variant(device, &transposed(g), b, a, bias, c, t, Variant::AkBn);
    }
    let params = GemmParams {
        m: g.m as u32,
        n: g.n as u32,
        k: g.k as u32,
        batch: g.batch as u32,
        sa_m: g.a.row,
        sa_k: g.a.col,
        sa_b: g.a.batch,
        a_off: g.a.offset,
        sb_k: g.b.row,
        sb_n: g.b.col,
        sb_b: g.b.batch,
        b_off: g.b.offset,
        sc_m: g.c.row,
        sc_n: g.c.col,
        sc_b: g.c.batch,
        c_off: g.c.offset,
        flags: g.flags,
        _pad: [0; 3],
    };
    let z = if g.flags & REDUCE_BATCH != 0 { 1 } else { g.batch as u32 };
    let wg = [super::groups(g.n, (t.tn * t.wg_x) as usize), super::groups(g.m, (t.tm * t.wg_y) as usize), z];
    let consts = [("TM", t.tm), ("TN", t.tn), ("WG_X", t.wg_x), ("WG_Y", t.wg_y), ("BK", t.bk)];
    let with_lanes = [("TM", t.tm), ("TN", t.tn), ("WG_X", t.wg_x), ("WG_Y", t.wg_y), ("LANES", t.lanes())];
    // Only the workgroup kernel has BK and only the subgroup kernels LANES: the others' pipelines
    // stay keyed by their four constants.
    let consts = if v == Variant::Workgroup {
        &consts[..]
    } else if v.is_subgroup() {
        &with_lanes[..]
    } else {
        &consts[..4]
    };
    device.dispatch(v.kernel_for(g), consts, &params, &[a, b, bias.unwrap_or(a), c], wg)
}

/// op(A) * op(B) for 2-D tensors, op = transpose where asked. A is `[m, k]` (`[k, m]` when
/// `trans_a`), B is `[k, n]` (`[n, k]` when `trans_b`).
pub fn matmul(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    let (m, k, n) = matmul_shape(a.shape(), b.shape(), trans_a, trans_b)?;
    let out = Tensor::uninit(a.device(), &[m, n], "matmul output")?;
    let g = Gemm {
        m,
        n,
        k,
        batch: 1,
        a: Strides::matrix(m, k, trans_a),
        b: Strides::matrix(k, n, trans_b),
        c: Strides::matrix(m, n, false),
        flags: 0,
    };
    gemm(a.device(), &g, a.buffer(), b.buffer(), None, out.buffer())?;
    Ok(out)
}

/// The shape rule: returns (m, k, n) or an error naming both shapes.
pub fn matmul_shape(a: &[usize], b: &[usize], trans_a: bool, trans_b: bool) -> Result<(usize, usize, usize)> {
    if a.len() != 2 || b.len() != 2 {
        return Err(Error::shape("matmul", format!("expects 2-D operands, got {a:?} and {b:?}")));
    }
    let (m, k) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let (k2, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("inner dimensions differ: {a:?}{} x {b:?}{}", if trans_a { "^T" } else { "" }, if trans_b { "^T" } else { "" }),
        ));
    }
    Ok((m, k, n))
}

/// Forward with its backward, for the tape.
pub fn matmul_op(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<(Tensor, MatmulBackward)> {
    let out = matmul(a, b, trans_a, trans_b)?;
    Ok((out, MatmulBackward { a: a.clone(), b: b.clone(), trans_a, trans_b }))
}

pub struct MatmulBackward {
    a: Tensor,
    b: Tensor,
    trans_a: bool,
    trans_b: bool,
}

impl Backward for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    // C = op(A) op(B):  dop(A) = dC op(B)^T,  dop(B) = op(A)^T dC.
    fn backward(&self, dc: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b, ta, tb) = (&self.a, &self.b, self.trans_a, self.trans_b);
        let da = if ta { matmul(b, dc, tb, true)? } else { matmul(dc, b, false, !tb)? };
        let db = if tb { matmul(dc, a, true, ta)? } else { matmul(a, dc, !ta, false)? };
        Ok(vec![Some(da), Some(db)])
    }
}

/// f64 CPU reference.
pub mod cpu {
    /// op(A) op(B) with A, B row-major as stored.
    pub fn matmul(a: &[f64], a_shape: [usize; 2], b: &[f64], b_shape: [usize; 2], ta: bool, tb: bool) -> Vec<f64> {
        let (m, k) = if ta { (a_shape[1], a_shape[0]) } else { (a_shape[0], a_shape[1]) };
        let n = if tb { b_shape[0] } else { b_shape[1] };
        let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
        let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
        c
    }

    /// The strided GEMM of [`super::gemm`]: updates `c` in place (it holds the old C when the flags
    /// have ACCUMULATE); elements of `c` outside the output are left alone.
    pub fn gemm(g: &super::Gemm, a: &[f64], b: &[f64], bias: Option<&[f64]>, c: &mut [f64]) {
        use super::{ACCUMULATE, BIAS_M, BIAS_N, REDUCE_BATCH};
        let at = |s: &super::Strides, bi: usize, r: usize, col: usize| {
            s.offset as usize + bi * s.batch as usize + r * s.row as usize + col * s.col as usize
        };
        let reduce = g.flags & REDUCE_BATCH != 0;
        let outputs = if reduce { 1 } else { g.batch };
        for zo in 0..outputs {
            let batches = if reduce { 0..g.batch } else { zo..zo + 1 };
            for i in 0..g.m {
                for j in 0..g.n {
                    let mut v: f64 =
                        batches.clone().map(|bi| (0..g.k).map(|p| a[at(&g.a, bi, i, p)] * b[at(&g.b, bi, p, j)]).sum::<f64>()).sum();
                    if g.flags & BIAS_N != 0 {
                        v += bias.expect("bias")[j];
                    }
                    if g.flags & BIAS_M != 0 {
                        v += bias.expect("bias")[i];
                    }
                    let ci = at(&g.c, zo, i, j);
                    c[ci] = if g.flags & ACCUMULATE != 0 { c[ci] + v } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn matmul_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(1);
        for case in 0..24 {
            let (m, k, n) =
                if case == 0 { (1, 1, 1) } else { (rand_dim(&mut rng, 1, 70), rand_dim(&mut rng, 1, 70), rand_dim(&mut rng, 1, 70)) };
            let ta = case % 2 == 1;
            let tb = case % 4 >= 2;
            let a_shape = if ta { [k, m] } else { [m, k] };
            let b_shape = if tb { [n, k] } else { [k, n] };
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let ga = tensor(&dev, &a, &a_shape);
            let gb = tensor(&dev, &b, &b_shape);
            let got = matmul(&ga, &gb, ta, tb).unwrap().to_vec().unwrap();
            let want = cpu::matmul(&a, a_shape, &b, b_shape, ta, tb);
            assert_close(&got, &want, 1e-4, &format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"));
        }
    }

    /// A random layout of a `rows x cols` matrix per batch, contiguous along rows (stored
    /// transposed) or along cols, with padded strides, an offset and, for inputs, maybe a shared
    /// (0) batch stride; `aligned` keeps every stride and offset a multiple of 4. Returns the
    /// strides and the number of elements the buffer needs.
    fn random_layout(
        rng: &mut TestRng,
        rows: usize,
        cols: usize,
        batch: usize,
        along_rows: bool,
        aligned: bool,
        input: bool,
    ) -> (Strides, usize) {
        use rand::Rng;
        let unit = if aligned { 4 } else { 1 };
        let (inner, outer) = if along_rows { (rows, cols) } else { (cols, rows) };
        let lead = inner.div_ceil(unit) * unit + unit * rng.random_range(0..=1);
        let span = lead * (outer - 1) + inner;
        let batch_stride =
            if input && rng.random_range(0..4) == 0 { 0 } else { (lead * outer).div_ceil(unit) * unit + unit * rng.random_range(0..=1) };
        let offset = unit * rng.random_range(0..=2);
        let (row, col) = if along_rows { (1, lead) } else { (lead, 1) };
        let s = Strides { row: row as u32, col: col as u32, batch: batch_stride as u32, offset: offset as u32 };
        (s, offset + batch_stride * (batch - 1) + span)
    }

    /// Runs `g` on the GPU with variant `v` and tiling `t` from random data and checks the whole C
    /// buffer (elements outside the output must keep their old values) against the f64 reference.
    fn check_gemm(dev: &Device, rng: &mut TestRng, g: &Gemm, lens: [usize; 3], t: Tiling, v: Variant, what: &str) {
        check_gemm_within(dev, rng, g, lens, t, v, 1.0, what);
    }

    /// [`check_gemm`] with the tolerance times `slack`.
    #[allow(clippy::too_many_arguments)]
    fn check_gemm_within(dev: &Device, rng: &mut TestRng, g: &Gemm, lens: [usize; 3], t: Tiling, v: Variant, slack: f64, what: &str) {
        let a = rand_vec(rng, lens[0]);
        let b = rand_vec(rng, lens[1]);
        let c0 = rand_vec(rng, lens[2]);
        let bias = rand_vec(rng, g.m.max(g.n));
        let (ga, gb, gbias, gc) =
            (tensor(dev, &a, &[lens[0]]), tensor(dev, &b, &[lens[1]]), tensor(dev, &bias, &[bias.len()]), tensor(dev, &c0, &[lens[2]]));
        gemm_variant(dev, g, ga.buffer(), gb.buffer(), Some(gbias.buffer()), gc.buffer(), t, v).unwrap();
        let mut want = c0.clone();
        cpu::gemm(g, &a, &b, Some(&bias), &mut want);
        // f32 rounding grows with the square root of the terms summed (up to 3 x 80 here).
        let terms = g.k * if g.flags & REDUCE_BATCH != 0 { g.batch } else { 1 };
        assert_close(&gc.to_vec().unwrap(), &want, slack * 1e-4 * (terms as f64 / 64.0).sqrt().max(1.0), what);
    }

    /// A random GEMM whose operands are contiguous along the axes `v` loads (any layout for
    /// `Scalar`), aligned for vec4 loads unless `aligned` is false, with random flags.
    fn random_gemm(rng: &mut TestRng, v: Variant, aligned: bool, max_dim: usize) -> (Gemm, [usize; 3]) {
        let (m, k, n) = (rand_dim(rng, 1, max_dim), rand_dim(rng, 1, max_dim), rand_dim(rng, 1, max_dim));
        random_gemm_of(rng, v, aligned, (m, k, n), None)
    }

    /// [`random_gemm`] of the given m, k, n, and `flags` when given.
    fn random_gemm_of(
        rng: &mut TestRng,
        v: Variant,
        aligned: bool,
        (m, k, n): (usize, usize, usize),
        flags: Option<u32>,
    ) -> (Gemm, [usize; 3]) {
        use rand::Rng;
        let batch = rand_dim(rng, 1, 3);
        let (a_along_m, b_along_n) = match v.layout() {
            Variant::Scalar | Variant::Workgroup => (rng.random_bool(0.5), rng.random_bool(0.5)),
            Variant::AkBn => (false, true),
            Variant::AmBn => (true, true),
            Variant::AkBk => (false, false),
            Variant::AmBk => (true, false),
            Variant::AkBnSubgroup | Variant::AmBnSubgroup | Variant::AkBkSubgroup => unreachable!("layout() has no subgroup variant"),
        };
        let flags = flags.unwrap_or_else(|| {
            [0, BIAS_N, BIAS_M, BIAS_N | BIAS_M][rng.random_range(0..4)]
                | if rng.random_bool(0.5) { ACCUMULATE } else { 0 }
                | if rng.random_bool(0.3) { REDUCE_BATCH } else { 0 }
        });
        let (a, a_len) = random_layout(rng, m, k, batch, a_along_m, aligned, true);
        let (b, b_len) = random_layout(rng, k, n, batch, !b_along_n, aligned, true);
        let c_batches = if flags & REDUCE_BATCH != 0 { 1 } else { batch };
        let c_transposed = rng.random_bool(0.3);
        let (c, c_len) = random_layout(rng, m, n, c_batches, c_transposed, false, false);
        (Gemm { m, n, k, batch, a, b, c, flags }, [a_len, b_len, c_len])
    }

    #[test]
    fn every_variant_matches_reference_on_random_layouts() {
        let dev = device();
        let mut rng = rng(5);
        let mut picked = std::collections::HashMap::new();
        for case in 0..60 {
            let target = Variant::ALL[case % Variant::ALL.len()];
            let aligned = case % 6 != 5;
            let (g, lens) = random_gemm(&mut rng, target, aligned, 23);
            let (v, t) = plan(&dev, &g);
            if aligned && target != Variant::Scalar {
                assert_eq!(v, target, "{g:?}");
            }
            *picked.entry(format!("{v:?}")).or_insert(0) += 1;
            check_gemm(&dev, &mut rng, &g, lens, t, v, &format!("{v:?} {g:?}"));
            if v != Variant::Scalar {
                let ts = Tiling::default_for_variant(&dev, Variant::Scalar);
                check_gemm(&dev, &mut rng, &g, lens, ts, Variant::Scalar, &format!("Scalar {g:?}"));
            }
        }
        eprintln!("variants exercised: {picked:?}");
        for v in Variant::ALL {
            assert!(picked.get(&format!("{v:?}")).copied().unwrap_or(0) >= 5, "{v:?} exercised too rarely: {picked:?}");
        }
    }

    #[test]
    fn subgroup_variants_match_reference() {
        let dev = device();
        let lanes = subgroup_lanes_of(&dev);
        // What the child of `subgroup_variants_match_reference_at_4_lanes` reports.
        eprintln!("subgroup lanes: {lanes:?} on {}", dev.name());
        let Some(lanes) = lanes else { return };
        let tilings = Tiling::subgroup_candidates(lanes);
        assert!(tilings.len() >= 2 && tilings.iter().all(|t| t.lanes() == lanes), "{tilings:?}");
        let mut rng = rng(6);
        // Sides up to 80: blocks cut by both edges, m not a multiple of 4, k % 4 leftovers, batches,
        // every flag; every geometry for this lane count, and some where a tile row's (column's)
        // invocations outnumber the A (B) vectors they share, so that some own none (as with 4x4
        // tiles at 32 lanes and more): one B vec4 per tile column, one A vec4 (`AmBn`) or one A row
        // per tile row.
        let half = lanes / 2;
        let thin = [Tiling::new(4, 4, 2, half), Tiling::new(4, 4, half, 2), Tiling::new(1, 4, 2, half)];
        for case in 0..24 {
            let v = Variant::SUBGROUP[case % Variant::SUBGROUP.len()];
            let (g, lens) = random_gemm(&mut rng, v, true, 80);
            let thin = thin.iter().filter(|t| v != Variant::AmBnSubgroup || t.tm.is_multiple_of(4));
            for &t in tilings.iter().chain(thin) {
                assert!(v.fits(&g, t), "{v:?} {t:?} {g:?}");
                // Four runs per product draw more data than the test's first version did; the f32
                // rounding tail of one draw (k = 80) reached 1.24e-4 against 1.1e-4, so the slack
                // of the workgroup test (any wrong ownership gives errors of order 1).
                check_gemm_within(&dev, &mut rng, &g, lens, t, v, 2.0, &format!("{v:?} {t:?} {g:?}"));
            }
        }
        // C row-major and aligned, n a multiple of 4: stored as vec4s (`_c4`), edges and flags included.
        let mut stored4 = 0;
        for case in 0..18 {
            let v = Variant::SUBGROUP[case % Variant::SUBGROUP.len()];
            let t = tilings[case / Variant::SUBGROUP.len() % tilings.len()];
            let (mut g, _) = random_gemm(&mut rng, v, true, 80);
            g.n = g.n.next_multiple_of(4);
            let (a, a_len) = random_layout(&mut rng, g.m, g.k, g.batch, v == Variant::AmBnSubgroup, true, true);
            let (b, b_len) = random_layout(&mut rng, g.k, g.n, g.batch, v == Variant::AkBkSubgroup, true, true);
            let c_batches = if g.flags & REDUCE_BATCH != 0 { 1 } else { g.batch };
            let (c, c_len) = random_layout(&mut rng, g.m, g.n, c_batches, false, true, false);
            (g.a, g.b, g.c) = (a, b, c);
            stored4 += vec4_c(&g) as usize;
            check_gemm(&dev, &mut rng, &g, [a_len, b_len, c_len], t, v, &format!("{v:?} vec4 C {t:?} {g:?}"));
        }
        assert_eq!(stored4, 18, "every aligned C is stored as vec4s");
        // One subgroup per workgroup, of the adapter's size.
        let other = Tiling::subgroup(if lanes == 8 { 4 } else { 8 });
        let buf = dev.alloc(64 * 64, crate::device::DType::F32, "operand").unwrap();
        let square = Gemm { m: 64, n: 64, k: 64, batch: 1, ..Gemm::default() };
        let square =
            Gemm { a: Strides::matrix(64, 64, false), b: Strides::matrix(64, 64, false), c: Strides::matrix(64, 64, false), ..square };
        let e = gemm_variant(&dev, &square, &buf, &buf, None, &buf, other, Variant::AkBnSubgroup).unwrap_err().to_string();
        assert!(e.contains("needs subgroups of"), "{e}");
        if !subgroups_allowed(&dev) {
            return;
        }
        // The tuner times every geometry of this size; plan picks the default one at the sizes
        // where it was measured faster (8), when both sides fill a subgroup's block (32 x 32).
        let st = Tiling::subgroup(lanes);
        let (bm, bn) = st.block();
        let (m, n, k) = (2 * bm as usize, 3 * bn as usize, 40);
        let big = Gemm {
            m,
            n,
            k,
            batch: 1,
            a: Strides::matrix(m, k, false),
            b: Strides::matrix(k, n, false),
            c: Strides::matrix(m, n, false),
            flags: 0,
        };
        let listed = candidates(&dev, &big);
        assert!(tilings.iter().all(|&t| listed.contains(&(Variant::AkBnSubgroup, t))), "{tilings:?} in {listed:?}");
        if !PLANNED_SUBGROUP_LANES.contains(&lanes) {
            assert!(!plan(&dev, &big).0.is_subgroup(), "{lanes} lanes: {:?}", plan(&dev, &big));
            return;
        }
        if lanes == 8 {
            assert_eq!(st, Tiling::SUBGROUP);
        }
        let short = bm as usize / 2;
        assert_eq!(plan(&dev, &big), (Variant::AkBnSubgroup, st));
        assert_eq!(plan(&dev, &Gemm { a: Strides::matrix(m, k, true), ..big }).0, Variant::AmBnSubgroup);
        assert_eq!(plan(&dev, &Gemm { m: short, ..big }).0, Variant::AkBn);
        assert_eq!(plan(&dev, &Gemm { b: Strides::matrix(k, n, true), ..big }).0, Variant::AkBkSubgroup);
        assert_eq!(plan(&dev, &Gemm { m: short, b: Strides::matrix(k, n, true), ..big }).0, Variant::AkBk);
    }

    /// [`subgroup_variants_match_reference`] again in a child process at another subgroup size:
    /// lavapipe with LP_NATIVE_VECTOR_WIDTH=128 runs subgroups of 4 (SSE width). On another adapter
    /// the child runs at whatever size it has (and says so).
    #[test]
    fn subgroup_variants_match_reference_at_4_lanes() {
        crate::testing::rerun_at_4_lanes(&format!("{}::subgroup_variants_match_reference", module_path!().split_once("::").unwrap().1));
    }

    #[test]
    fn unaligned_layouts_fall_back_to_scalar() {
        let t = Tiling::new(8, 8, 8, 8);
        let square = |s: usize| Gemm {
            m: s,
            n: s,
            k: s,
            batch: 2,
            a: Strides::matrix(s, s, false),
            b: Strides::matrix(s, s, false),
            c: Strides::matrix(s, s, false),
            flags: 0,
        };
        assert_eq!(Variant::select(&square(8), t), Variant::AkBn);
        assert_eq!(Variant::select(&square(9), t), Variant::Scalar); // row stride 9
        let shifted = Gemm { a: Strides { offset: 2, ..square(8).a }, ..square(8) };
        assert_eq!(Variant::select(&shifted, t), Variant::Scalar);
        let odd_batch = Gemm { b: square(8).b.with_batch(66), ..square(8) };
        assert_eq!(Variant::select(&odd_batch, t), Variant::Scalar);
        // A tile that is not a multiple of 4 along n cannot hold vec4s of B.
        assert_eq!(Variant::select(&square(8), Tiling::new(8, 2, 8, 8)), Variant::Scalar);
        let dev = device();
        let buf = dev.alloc(9 * 9 * 2, crate::device::DType::F32, "operand").unwrap();
        let e = gemm_variant(&dev, &square(9), &buf, &buf, None, &buf, t, Variant::AkBn).unwrap_err().to_string();
        assert!(e.contains("AkBn"), "{e}");
    }

    #[test]
    fn default_tilings_are_candidates() {
        for v in Variant::ALL {
            assert!(Tiling::CANDIDATES.contains(&Tiling::lavapipe(v)), "{v:?}");
        }
        assert!(Tiling::CANDIDATES.contains(&Tiling::GPU));
        assert!(Tiling::WORKGROUP_CANDIDATES.contains(&Tiling::lavapipe(Variant::Workgroup)));
        assert!(Tiling::WORKGROUP_CANDIDATES.contains(&Tiling::WORKGROUP));
        assert_eq!(Tiling::parse("8x16/2x4"), Some(Tiling::new(8, 16, 2, 4)));
        assert_eq!(Tiling::parse("4x4/16x16/8"), Some(Tiling::new(4, 4, 16, 16).with_bk(8)));
        assert_eq!(Tiling::parse("8x16"), None);
    }

    #[test]
    fn workgroup_variant_matches_reference() {
        let dev = device();
        let mut rng = rng(7);
        // The candidates (1x1 tiles among them, BK 8 and 16) and an odd tiling: BK = 7, and tiles of
        // 12 x 7 and 7 x 40 elements for 32 invocations (the last round of loads partial).
        let mut tilings = Tiling::WORKGROUP_CANDIDATES.to_vec();
        tilings.push(Tiling::new(3, 5, 8, 4).with_bk(7));
        // Outputs of up to 129 x 129 and 224 products: far more elements than the other tests check,
        // so the f32 rounding tail reaches 1.3x their tolerance; the scalar kernel gives the same
        // bits here (same fma order: the zeros past k add nothing).
        const ROUNDING_SLACK: f64 = 2.0;
        // Sides of 1, primes, one past a block (129 = 2 x 64 + 1), then random ones up to 80; the
        // 16 flag combinations in turn; any layout, strides and offsets not multiples of 4.
        let fixed = [(1, 1, 1), (37, 61, 129), (129, 1, 37), (61, 129, 1), (1, 37, 61), (64, 64, 64)];
        let (mut batched, mut k_steps_cut) = (0, 0);
        for case in 0..32 {
            let dims = fixed
                .get(case)
                .copied()
                .unwrap_or_else(|| (rand_dim(&mut rng, 1, 80), rand_dim(&mut rng, 1, 80), rand_dim(&mut rng, 1, 80)));
            let flags = [BIAS_N, BIAS_M, ACCUMULATE, REDUCE_BATCH]
                .iter()
                .enumerate()
                .filter(|(bit, _)| case >> bit & 1 == 1)
                .fold(0, |f, (_, b)| f | b);
            let (g, lens) = random_gemm_of(&mut rng, Variant::Workgroup, case % 2 == 0, dims, Some(flags));
            batched += (g.batch > 1) as usize;
            for &t in &tilings {
                k_steps_cut += !g.k.is_multiple_of(t.bk as usize) as usize;
                let what = format!("Workgroup {t:?} {g:?}");
                check_gemm_within(&dev, &mut rng, &g, lens, t, Variant::Workgroup, ROUNDING_SLACK, &what);
            }
        }
        assert!(batched >= 8 && k_steps_cut >= 100, "batched {batched}, k not a multiple of BK {k_steps_cut}");
    }

    #[test]
    fn workgroup_tilings_are_checked_against_the_adapter() {
        let dev = device();
        let g = Gemm {
            m: 8,
            n: 8,
            k: 8,
            batch: 1,
            a: Strides::matrix(8, 8, false),
            b: Strides::matrix(8, 8, false),
            c: Strides::matrix(8, 8, false),
            flags: 0,
        };
        let buf = dev.alloc(64, crate::device::DType::F32, "operand").unwrap();
        let limits = dev.limits();
        let deep = Tiling::new(8, 8, 16, 16).with_bk(limits.max_compute_workgroup_storage_size / 4);
        let e = gemm_variant(&dev, &g, &buf, &buf, None, &buf, deep, Variant::Workgroup).unwrap_err().to_string();
        assert!(e.contains("matmul_tiled") && e.contains("max_compute_workgroup_storage_size"), "{e}");
        let side = (limits.max_compute_invocations_per_workgroup + 1).next_power_of_two().isqrt();
        let wide = Tiling::new(1, 1, side, side);
        let e = gemm_variant(&dev, &g, &buf, &buf, None, &buf, wide, Variant::Workgroup).unwrap_err().to_string();
        assert!(e.contains("matmul_tiled") && e.contains("max_compute_invocations_per_workgroup"), "{e}");
        assert!(!Variant::Workgroup.fits(&g, Tiling::WORKGROUP.with_bk(0)));
        // Every candidate fits this adapter; the tuner's list has them, and plan never picks them.
        let listed = candidates(&dev, &g);
        for t in Tiling::WORKGROUP_CANDIDATES {
            assert!(listed.contains(&(Variant::Workgroup, t)), "{t:?} in {listed:?}");
        }
        assert!(listed.contains(&(Variant::AkBn, Tiling::GPU)) && listed.contains(&(Variant::Scalar, Tiling::GPU)));
        assert_ne!(plan(&dev, &g).0, Variant::Workgroup);
    }

    #[test]
    fn workgroup_bytes_match_the_shader() {
        for t in Tiling::WORKGROUP_CANDIDATES.into_iter().chain([Tiling::new(3, 5, 8, 4).with_bk(7)]) {
            let consts = [("TM", t.tm), ("TN", t.tn), ("WG_X", t.wg_x), ("WG_Y", t.wg_y), ("BK", t.bk)];
            let (source, overrides) = crate::device::specialise(&crate::device::compose(GEMM_TILED.source).unwrap(), &consts);
            assert!(overrides.is_empty(), "every tile size is a rewritten const: {overrides:?}");
            let module = naga::front::wgsl::parse_str(&source).unwrap();
            let declared: u64 = module
                .global_variables
                .iter()
                .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
                .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()) as u64)
                .sum();
            assert_eq!(declared, t.workgroup_bytes(), "{t:?}");
        }
    }

    #[test]
    fn fitted_tilings_cover_small_sides_exactly() {
        let t = Tiling::new(8, 16, 2, 4);
        // conv1's weight gradient per image, transposed: 9 x 32.
        let g = Gemm { m: 9, n: 32, k: 676, batch: 128, ..Gemm::default() };
        assert_eq!(t.fitted(Variant::AkBk, &g), Tiling::new(9, 8, 4, 1));
        // AmBn loads A as vec4s along m: the tile rounds up to 12 rows.
        assert_eq!(Tiling::new(16, 8, 8, 8).fitted(Variant::AmBn, &Gemm { m: 9, n: 676, ..g }), Tiling::new(12, 4, 64, 1));
        // A narrow n, and AmBk's transposed product.
        assert_eq!(Tiling::new(8, 16, 8, 8).fitted(Variant::AkBn, &Gemm { m: 500, n: 6, ..g }), Tiling::new(8, 8, 1, 64));
        assert_eq!(Tiling::new(8, 16, 8, 8).fitted(Variant::AmBk, &Gemm { m: 6, n: 500, ..g }), Tiling::new(8, 8, 1, 64));
        // Lanes move in powers of two.
        assert_eq!(Tiling::new(8, 16, 8, 8).fitted(Variant::AkBn, &Gemm { m: 20, n: 676, ..g }), Tiling::new(8, 16, 16, 4));
        // Only the idle lanes move when no side is small: 32 rows need 4 of the 8 lane rows.
        assert_eq!(Tiling::new(8, 16, 8, 8).fitted(Variant::AkBn, &Gemm { m: 32, n: 676, ..g }), Tiling::new(8, 16, 16, 4));
        let big = Gemm { m: 1024, n: 1024, ..g };
        assert_eq!(t.fitted(Variant::AkBk, &big), t, "a large product keeps the tuned tiling");
    }

    #[test]
    fn every_tiling_agrees_for_every_variant() {
        let dev = device();
        let mut rng = rng(2);
        for v in Variant::ALL {
            let (g, lens) = random_gemm(&mut rng, v, true, 41);
            for t in Tiling::CANDIDATES {
                let used = if v.fits(&g, t) { v } else { Variant::Scalar };
                check_gemm(&dev, &mut rng, &g, lens, t, used, &format!("{v:?} (ran {used:?}) tiling {t:?} {g:?}"));
            }
        }
    }

    #[test]
    fn batched_reduce_bias_and_accumulate() {
        let dev = device();
        let mut rng = rng(3);
        let (bsz, m, k, n) = (3, 5, 7, 6);
        let a = rand_vec(&mut rng, bsz * m * k);
        let b = rand_vec(&mut rng, bsz * k * n);
        let bias = rand_vec(&mut rng, m);
        let c0 = rand_vec(&mut rng, m * n);
        let ga = tensor(&dev, &a, &[bsz, m, k]);
        let gb = tensor(&dev, &b, &[bsz, k, n]);
        let gbias = tensor(&dev, &bias, &[m]);
        let gc = tensor(&dev, &c0, &[m, n]);
        let g = Gemm {
            m,
            n,
            k,
            batch: bsz,
            a: Strides::matrix(m, k, false),
            b: Strides::matrix(k, n, false),
            c: Strides::matrix(m, n, false).with_batch(0),
            flags: REDUCE_BATCH | ACCUMULATE | BIAS_M,
        };
        gemm(&dev, &g, ga.buffer(), gb.buffer(), Some(gbias.buffer()), gc.buffer()).unwrap();
        let mut want = c0.clone();
        for bi in 0..bsz {
            let p = cpu::matmul(&a[bi * m * k..(bi + 1) * m * k], [m, k], &b[bi * k * n..(bi + 1) * k * n], [k, n], false, false);
            for (w, v) in want.iter_mut().zip(p) {
                *w += v;
            }
        }
        // The bias is added once per output element by the kernel.
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] += bias[i];
            }
        }
        assert_close(&gc.to_vec().unwrap(), &want, 1e-4, "reduce+accumulate+bias");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dev = device();
        let mut rng = rng(4);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (m, k, n) = (3, 4, 5);
            let a_shape = if ta { [k, m] } else { [m, k] };
            let b_shape = if tb { [n, k] } else { [k, n] };
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let w = rand_vec(&mut rng, m * n); // L = sum(w * C)
            let loss = |a: &[f64], b: &[f64]| dot(&cpu::matmul(a, a_shape, b, b_shape, ta, tb), &w);
            let num_da = numeric_grad(&a, |x| loss(x, &b));
            let num_db = numeric_grad(&b, |x| loss(&a, x));
            let (_, bw) = matmul_op(&tensor(&dev, &a, &a_shape), &tensor(&dev, &b, &b_shape), ta, tb).unwrap();
            let grads = bw.backward(&tensor(&dev, &w, &[m, n])).unwrap();
            assert_close(&grads[0].as_ref().unwrap().to_vec().unwrap(), &num_da, 1e-4, "dA");
            assert_close(&grads[1].as_ref().unwrap().to_vec().unwrap(), &num_db, 1e-4, "dB");
        }
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let a = Tensor::zeros(&dev, &[2, 3]).unwrap();
        let b = Tensor::zeros(&dev, &[4, 5]).unwrap();
        let e = matmul(&a, &b, false, false).unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    }
}

//! Settings for comparing kernels by hand and tuning them on a new adapter, read from the
//! environment once, when the device opens: the ops ask the device, never the environment, and a
//! wrong value is an error that names the variable.

use crate::error::{Error, Result};

/// Which direct kernels serve a convolution's small reductions (NETMORPH_CONV_DIRECT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvDirect {
    /// `0`: im2col + GEMM for every pass.
    Off,
    /// `quads`: the older direct forward, 4 outputs of a plane per invocation, and GEMM gradients.
    Quads,
    /// `rows` (the default): a row segment per invocation, and direct gradients.
    #[default]
    Rows,
}

/// Which way round a convolution's GEMMs run (NETMORPH_CONV_ORIENT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvOrient {
    /// Transposed when the rows fill tiles clearly better than the columns (the default).
    #[default]
    Auto,
    Normal,
    Transposed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelKnobs {
    /// NETMORPH_GEMM_TILING=TMxTN/WXxWY[/BK]: one tiling `[tm, tn, wg_x, wg_y]` for every GEMM,
    /// and the k-step of the workgroup-memory GEMM when BK is given.
    pub gemm_tiling: Option<[u32; 4]>,
    pub gemm_k_step: Option<u32>,
    /// NETMORPH_GEMM_SUBGROUP=0: no subgroup kernels, GEMM or conv (for comparisons).
    pub no_subgroups: bool,
    /// NETMORPH_GEMM_LOG=1: every GEMM's shape, kernel and tiling, and every tuning, on stderr.
    pub log_gemm: bool,
    pub conv_direct: ConvDirect,
    pub conv_orient: ConvOrient,
    /// NETMORPH_ROW_CO: output channels per invocation of the direct row kernels.
    pub row_channels: Option<u32>,
    /// NETMORPH_ROW_FY: output rows per invocation of the direct forward.
    pub row_outputs: Option<u32>,
}

impl KernelKnobs {
    pub fn from_env() -> Result<KernelKnobs> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<KernelKnobs> {
        let bad = |name: &str, value: &str, expected: &str| Error::Invalid(format!("{name}={value:?}: expected {expected}"));
        let flag = |name: &str, on: &str, off: &str| match var(name) {
            None => Ok(false),
            Some(v) if v == on => Ok(true),
            Some(v) if v == off => Ok(false),
            Some(v) => Err(bad(name, &v, &format!("{on} or {off}"))),
        };
        let count = |name: &str| match var(name) {
            None => Ok(None),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=64).contains(&n) => Ok(Some(n)),
                _ => Err(bad(name, &v, "a whole number from 1 to 64")),
            },
        };
        let (gemm_tiling, gemm_k_step) = match var("NETMORPH_GEMM_TILING") {
            None => (None, None),
            Some(v) => {
                let (tiling, k_step) =
                    parse_tiling(&v).ok_or_else(|| bad("NETMORPH_GEMM_TILING", &v, "TMxTN/WXxWY or TMxTN/WXxWY/BK, e.g. 8x16/8x8"))?;
                (Some(tiling), k_step)
            }
        };
        let conv_direct = match var("NETMORPH_CONV_DIRECT").as_deref() {
            None | Some("rows") => ConvDirect::Rows,
            Some("0") => ConvDirect::Off,
            Some("quads") => ConvDirect::Quads,
            Some(v) => return Err(bad("NETMORPH_CONV_DIRECT", v, "0, quads or rows")),
        };
        let conv_orient = match var("NETMORPH_CONV_ORIENT").as_deref() {
            None | Some("auto") => ConvOrient::Auto,
            Some("normal") => ConvOrient::Normal,
            Some("transposed") => ConvOrient::Transposed,
            Some(v) => return Err(bad("NETMORPH_CONV_ORIENT", v, "auto, normal or transposed")),
        };
        Ok(KernelKnobs {
            gemm_tiling,
            gemm_k_step,
            no_subgroups: flag("NETMORPH_GEMM_SUBGROUP", "0", "1")?,
            log_gemm: flag("NETMORPH_GEMM_LOG", "1", "0")?,
            conv_direct,
            conv_orient,
            row_channels: count("NETMORPH_ROW_CO")?,
            row_outputs: count("NETMORPH_ROW_FY")?,
        })
    }
}

/// "TMxTN/WXxWY" or "TMxTN/WXxWY/BK", every number at least 1 and at most 256.
fn parse_tiling(s: &str) -> Option<([u32; 4], Option<u32>)> {
    let number = |v: &str| v.trim().parse::<u32>().ok().filter(|n| (1..=256).contains(n));
    let mut parts = s.split('/');
    let (t, w, k) = (parts.next()?, parts.next()?, parts.next());
    if parts.next().is_some() {
        return None;
    }
    let (tm, tn) = t.split_once('x')?;
    let (wx, wy) = w.split_once('x')?;
    let k_step = match k {
        Some(k) => Some(number(k)?),
        None => None,
    };
    Some(([number(tm)?, number(tn)?, number(wx)?, number(wy)?], k_step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(vars: &[(&str, &str)]) -> Result<KernelKnobs> {
        KernelKnobs::from_lookup(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn every_knob_reads() {
        assert_eq!(knobs(&[]).unwrap(), KernelKnobs::default());
        let k = knobs(&[
            ("NETMORPH_GEMM_TILING", "8x16/8x8"),
            ("NETMORPH_GEMM_SUBGROUP", "0"),
            ("NETMORPH_GEMM_LOG", "1"),
            ("NETMORPH_CONV_DIRECT", "quads"),
            ("NETMORPH_CONV_ORIENT", "transposed"),
            ("NETMORPH_ROW_CO", "4"),
            ("NETMORPH_ROW_FY", "2"),
        ])
        .unwrap();
        assert_eq!((k.gemm_tiling, k.gemm_k_step), (Some([8, 16, 8, 8]), None));
        assert!(k.no_subgroups && k.log_gemm);
        assert_eq!(
            (k.conv_direct, k.conv_orient, k.row_channels, k.row_outputs),
            (ConvDirect::Quads, ConvOrient::Transposed, Some(4), Some(2))
        );
        let k = knobs(&[("NETMORPH_GEMM_TILING", "4x4/16x16/8")]).unwrap();
        assert_eq!((k.gemm_tiling, k.gemm_k_step), (Some([4, 4, 16, 16]), Some(8)));
    }

    #[test]
    fn a_wrong_value_names_its_variable() {
        for (name, value) in [
            ("NETMORPH_GEMM_TILING", "8x16"),
            ("NETMORPH_GEMM_TILING", "0x16/8x8"),
            ("NETMORPH_GEMM_TILING", "8x16/8x8/4/4"),
            ("NETMORPH_GEMM_SUBGROUP", "off"),
            ("NETMORPH_CONV_DIRECT", "fast"),
            ("NETMORPH_CONV_ORIENT", "sideways"),
            ("NETMORPH_ROW_CO", "0"),
            ("NETMORPH_ROW_FY", "-1"),
        ] {
            let e = knobs(&[(name, value)]).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(value), "{e}");
        }
    }
}

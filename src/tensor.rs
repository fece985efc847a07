//! A tensor: a shape and a pooled device buffer. Cloning shares the buffer; reshaping is free.

use crate::device::{DType, Device, GpuBuffer};
use crate::error::{Error, Result};
use std::sync::Arc;

#[derive(Clone)]
pub struct Tensor {
    buf: Arc<GpuBuffer>,
    shape: Vec<usize>,
    device: Device,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.shape, self.buf.dtype())
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A new tensor whose contents are undefined until a kernel writes it.
    pub fn uninit(device: &Device, shape: &[usize], what: &str) -> Result<Tensor> {
        Self::uninit_typed(device, shape, DType::F32, what)
    }

    pub fn uninit_typed(device: &Device, shape: &[usize], dtype: DType, what: &str) -> Result<Tensor> {
        let what = format!("{what} {shape:?}");
        let buf = device.alloc(numel(shape), dtype, &what)?;
        Ok(Tensor { buf, shape: shape.to_vec(), device: device.clone() })
    }

    pub fn zeros(device: &Device, shape: &[usize]) -> Result<Tensor> {
        let t = Self::uninit(device, shape, "zeros")?;
        device.zero(&t.buf);
        Ok(t)
    }

    pub fn from_slice(device: &Device, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let buf = device.upload(data, DType::F32, &format!("tensor {shape:?}"))?;
        Ok(Tensor { buf, shape: shape.to_vec(), device: device.clone() })
    }

    pub fn from_u32(device: &Device, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let buf = device.upload(data, DType::U32, &format!("tensor {shape:?}"))?;
        Ok(Tensor { buf, shape: shape.to_vec(), device: device.clone() })
    }

    /// Bytes kept packed four to a word on the device (datasets: 4x smaller than f32).
    pub fn from_u8(device: &Device, data: &[u8], shape: &[usize]) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let buf = device.upload(data, DType::U8, &format!("tensor {shape:?}"))?;
        Ok(Tensor { buf, shape: shape.to_vec(), device: device.clone() })
    }

    pub fn full(device: &Device, shape: &[usize], value: f32) -> Result<Tensor> {
        Self::from_slice(device, &vec![value; numel(shape)], shape)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dims(&self) -> usize {
        self.shape.len()
    }
    pub fn dim(&self, i: usize) -> usize {
        self.shape[i]
    }
    pub fn len(&self) -> usize {
        numel(&self.shape)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        self.buf.dtype()
    }
    pub fn buffer(&self) -> &GpuBuffer {
        &self.buf
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Identity of the underlying buffer (optimizer state is keyed by it).
    pub fn id(&self) -> usize {
        self.buf.id()
    }

    /// The same data with another shape of the same size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.len() {
            return Err(Error::shape("reshape", format!("cannot reshape {:?} ({} elements) to {shape:?}", self.shape, self.len())));
        }
        Ok(Tensor { buf: self.buf.clone(), shape: shape.to_vec(), device: self.device.clone() })
    }

    /// Reads the tensor back (submits pending work and waits).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        if self.dtype() != DType::F32 {
            return Err(Error::Invalid(format!("to_vec on a {:?} tensor", self.dtype())));
        }
        let words = self.device.read_words(&self.buf, self.len())?;
        Ok(bytemuck::cast_slice(&words).to_vec())
    }

    pub fn to_u32_vec(&self) -> Result<Vec<u32>> {
        if self.dtype() != DType::U32 {
            return Err(Error::Invalid(format!("to_u32_vec on a {:?} tensor", self.dtype())));
        }
        self.device.read_words(&self.buf, self.len())
    }

    /// A copy in a new buffer (recorded in order).
    pub fn deep_clone(&self) -> Result<Tensor> {
        let t = Self::uninit_typed(&self.device, &self.shape, self.dtype(), "copy")?;
        t.copy_from(self)?;
        Ok(t)
    }

    /// Overwrites this tensor with `src`'s contents (same shape and type), in order with
    /// recorded work; nothing is read back.
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.shape != self.shape || src.dtype() != self.dtype() {
            return Err(Error::Invalid(format!(
                "copy_from: source {:?} {:?} does not match destination {:?} {:?}",
                src.dtype(),
                src.shape,
                self.dtype(),
                self.shape
            )));
        }
        self.device.copy(&src.buf, &self.buf, self.dtype().bytes_for(self.len()));
        Ok(())
    }

    /// Overwrites this tensor's contents with `data` (same length), in order with recorded work.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        check_len(data.len(), &self.shape)?;
        let src = self.device.upload(data, DType::F32, "write")?;
        self.device.copy(&src, &self.buf, DType::F32.bytes_for(data.len()));
        Ok(())
    }

    pub(crate) fn expect_f32(&self, op: &'static str) -> Result<()> {
        if self.dtype() != DType::F32 {
            return Err(Error::shape(op, format!("expects f32 input, got {:?} {:?}", self.dtype(), self.shape)));
        }
        Ok(())
    }
}

fn check_len(len: usize, shape: &[usize]) -> Result<()> {
    if len != numel(shape) {
        return Err(Error::shape("tensor", format!("{len} values do not fill shape {shape:?} ({} elements)", numel(shape))));
    }
    Ok(())
}

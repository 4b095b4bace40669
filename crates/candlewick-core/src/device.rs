//! Choosing the device and dtype, and saying why.

use candle_core::{DType, Device};

use crate::error::{expected, Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(expected("one of \"auto\", \"cpu\", \"cuda\"", "device", format!("{other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DTypeRequest {
    /// f16 on CUDA, f32 on the CPU.
    #[default]
    Auto,
    F32,
    F16,
}

impl std::str::FromStr for DTypeRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            other => Err(expected("one of \"auto\", \"f32\", \"f16\"", "dtype", format!("{other:?}"))),
        }
    }
}

/// The device and dtype a pipeline runs on, and why they were chosen.
#[derive(Debug, Clone)]
pub struct DeviceChoice {
    pub device: Device,
    pub dtype: DType,
    /// "cpu" or "cuda:0".
    pub name: String,
    /// One sentence: why this device (for logs and the pipeline's `deviceReason`).
    pub reason: String,
}

/// Whether this build was compiled with CUDA support.
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

pub fn choose(device: DeviceRequest, dtype: DTypeRequest) -> Result<DeviceChoice> {
    let (device, name, reason) = match device {
        DeviceRequest::Cpu => (Device::Cpu, "cpu".to_string(), "device \"cpu\" was requested".to_string()),
        DeviceRequest::Cuda => match cuda_device() {
            Ok(d) => (d, "cuda:0".to_string(), "device \"cuda\" was requested".to_string()),
            Err(why) => return Err(Error::Device(format!("device \"cuda\" was requested but {why}"))),
        },
        DeviceRequest::Auto => match cuda_device() {
            Ok(d) => (d, "cuda:0".to_string(), "device \"auto\": a CUDA GPU is available".to_string()),
            Err(why) => (Device::Cpu, "cpu".to_string(), format!("device \"auto\" fell back to the CPU: {why}")),
        },
    };
    let dtype = match (dtype, device.is_cuda()) {
        (DTypeRequest::Auto, true) => DType::F16,
        (DTypeRequest::Auto, false) | (DTypeRequest::F32, _) => DType::F32,
        // f16 on the CPU works (slowly); it is how the fp16 weight variant is tested without a GPU.
        (DTypeRequest::F16, _) => DType::F16,
    };
    Ok(DeviceChoice { device, dtype, name, reason })
}

#[cfg(feature = "cuda")]
fn cuda_device() -> std::result::Result<Device, String> {
    Device::new_cuda(0).map_err(|e| {
        let driver = match driver_cuda_version() {
            Some((major, minor)) if major < 13 => format!(
                "; the NVIDIA driver supports CUDA {major}.{minor}, and this build needs CUDA 13.0 or newer: update the driver"
            ),
            Some((major, minor)) => format!("; the NVIDIA driver supports CUDA {major}.{minor}"),
            None => String::new(),
        };
        format!("no usable CUDA GPU was found ({e}){driver}")
    })
}

/// The CUDA version the installed driver supports, as (major, minor).
#[cfg(feature = "cuda")]
fn driver_cuda_version() -> Option<(i32, i32)> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let mut version = 0;
    // SAFETY: cuDriverGetVersion only writes the int it is given; it needs no cuInit.
    let status = unsafe { sys::cuDriverGetVersion(&mut version) };
    (status == sys::CUresult::CUDA_SUCCESS).then_some((version / 1000, (version % 1000) / 10))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> std::result::Result<Device, String> {
    Err("this build of candlewick was compiled without CUDA (install the linux-x64-gnu-cuda package)".into())
}

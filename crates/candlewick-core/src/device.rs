//! Choosing the device and dtype, and saying why.

use candle_core::{DType, Device};

use crate::error::{expected, Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    #[default]
    Auto,
    Cpu,
    /// The first CUDA GPU ("cuda").
    Cuda,
    /// The CUDA GPU with this ordinal ("cuda:1"), as PyTorch numbers them (after CUDA_VISIBLE_DEVICES).
    CudaOrdinal(usize),
}

/// The most GPUs one host is taken to have ("cuda:N" beyond it is a typo, not a device).
pub const MAX_CUDA_ORDINAL: usize = 1023;

impl std::str::FromStr for DeviceRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => match other.strip_prefix("cuda:") {
                Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.len() <= 4 => {
                    match n.parse::<usize>() {
                        Ok(ordinal) if ordinal <= MAX_CUDA_ORDINAL => Ok(Self::CudaOrdinal(ordinal)),
                        _ => Err(expected(
                            &format!("\"cuda:N\" with N between 0 and {MAX_CUDA_ORDINAL}"),
                            "device",
                            format!("{other:?}"),
                        )),
                    }
                }
                Some(_) => Err(expected(
                    &format!("\"cuda:N\" with N between 0 and {MAX_CUDA_ORDINAL}"),
                    "device",
                    format!("{other:?}"),
                )),
                None => Err(expected("one of \"auto\", \"cpu\", \"cuda\"", "device", format!("{other:?}"))),
            },
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
        DeviceRequest::Cuda => match cuda_device(0) {
            Ok(d) => (d, "cuda:0".to_string(), "device \"cuda\" was requested".to_string()),
            Err(why) => return Err(Error::Device(format!("device \"cuda\" was requested but {why}"))),
        },
        DeviceRequest::CudaOrdinal(ordinal) => match cuda_device(ordinal) {
            Ok(d) => (d, format!("cuda:{ordinal}"), format!("device \"cuda:{ordinal}\" was requested")),
            Err(why) => return Err(Error::Device(format!("device \"cuda:{ordinal}\" was requested but {why}"))),
        },
        DeviceRequest::Auto => match cuda_device(0) {
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

/// How many CUDA GPUs the driver shows this process (0 in a build without CUDA, or without a driver).
#[cfg(feature = "cuda")]
pub fn cuda_device_count() -> usize {
    use candle_core::cuda_backend::cudarc::driver::result;
    if result::init().is_err() {
        return 0;
    }
    result::device::get_count().map_or(0, |n| n.max(0) as usize)
}

#[cfg(not(feature = "cuda"))]
pub fn cuda_device_count() -> usize {
    0
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> std::result::Result<Device, String> {
    let count = cuda_device_count();
    if count > 0 && ordinal >= count {
        return Err(format!(
            "this host has {count} CUDA GPU{} (cuda:0 to cuda:{})",
            if count == 1 { "" } else { "s" },
            count.saturating_sub(1)
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| {
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
fn cuda_device(_ordinal: usize) -> std::result::Result<Device, String> {
    Err("this build of candlewick was compiled without CUDA (install the linux-x64-gnu-cuda package)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_with_an_ordinal_and_bad_ones_say_what_is_allowed() {
        assert_eq!("cuda".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda);
        assert_eq!("cuda:0".parse::<DeviceRequest>().unwrap(), DeviceRequest::CudaOrdinal(0));
        assert_eq!("cuda:7".parse::<DeviceRequest>().unwrap(), DeviceRequest::CudaOrdinal(7));
        let message = |s: &str| s.parse::<DeviceRequest>().unwrap_err().to_string();
        assert_eq!(message("gpu"), "Expected one of \"auto\", \"cpu\", \"cuda\" for device but received \"gpu\"");
        for bad in ["cuda:", "cuda:-1", "cuda:x", "cuda:1024", "cuda:99999", "cuda: 1"] {
            assert_eq!(
                message(bad),
                format!("Expected \"cuda:N\" with N between 0 and 1023 for device but received {bad:?}")
            );
        }
    }

    #[test]
    fn a_cuda_ordinal_without_a_cuda_build_or_gpu_is_a_device_error_naming_it() {
        if cuda_compiled() && cuda_device_count() > 3 {
            return;
        }
        let error = choose(DeviceRequest::CudaOrdinal(3), DTypeRequest::Auto).unwrap_err().to_string();
        assert!(error.starts_with("device \"cuda:3\" was requested but "), "{error}");
    }
}

//! Devices: `cpu` or `cuda:N`, with candle's CUDA gating.
//!
//! With the `cuda` feature off the CUDA path still compiles and returns
//! [`Error::CudaNotCompiled`], so callers need no `cfg`.

use candle_core::Device;

use crate::error::{Error, Result};
use crate::scenario::DeviceName;

/// Opens the device named in a scenario.
pub(crate) fn open(s: &str) -> Result<Device> {
    match DeviceName::parse(s) {
        Ok(DeviceName::Cpu) => Ok(Device::Cpu),
        Ok(DeviceName::Cuda(n)) if cfg!(feature = "cuda") => Ok(Device::new_cuda(n)?),
        Ok(DeviceName::Cuda(_)) => Err(Error::CudaNotCompiled(s.to_string())),
        Err(message) => Err(Error::Invalid { location: "train.device".into(), key: "train.device".into(), message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "cuda"))]
    fn cuda_without_feature_says_how_to_build() {
        let err = open("cuda:0").unwrap_err().to_string();
        assert!(err.contains("not compiled with CUDA") && err.contains("--features cuda"), "{err}");
    }
}

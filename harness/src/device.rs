//! Devices: `cpu` or `cuda:N`, with candle's CUDA gating.
//!
//! With the `cuda` feature off the CUDA path still compiles and returns
//! [`Error::CudaNotCompiled`], so callers need no `cfg`.

use candle_core::Device;

use crate::error::{Error, Result};

/// A device as written in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceName {
    /// The CPU.
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse(s: &str) -> std::result::Result<DeviceName, String> {
    match s {
        "cpu" => Ok(DeviceName::Cpu),
        "cuda" => Ok(DeviceName::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceName::Cuda)
            .ok_or_else(|| format!("expected `cpu` or `cuda:N`, got `{s}`")),
    }
}

/// Opens the device named in a scenario.
pub fn open(s: &str) -> Result<Device> {
    match parse(s) {
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
    fn parses_names() {
        assert_eq!(parse("cpu"), Ok(DeviceName::Cpu));
        assert_eq!(parse("cuda:1"), Ok(DeviceName::Cuda(1)));
        assert!(parse("cuda:x").is_err());
    }

    #[test]
    #[cfg(not(feature = "cuda"))]
    fn cuda_without_feature_says_how_to_build() {
        let err = open("cuda:0").unwrap_err().to_string();
        assert!(err.contains("not compiled with CUDA") && err.contains("--features cuda"), "{err}");
    }
}

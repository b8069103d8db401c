//! Device and precision selection.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::error::KernelError;

/// Where the model runs. `auto` picks CUDA device 0 when libtorch sees one, else the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub fn resolve(self) -> Result<Device, KernelError> {
        match self {
            DeviceSpec::Auto if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceSpec::Auto | DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(i) => {
                let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
                if i < count {
                    Ok(Device::Cuda(i))
                } else {
                    Err(KernelError::Device(format!(
                        "cuda:{i} requested but libtorch sees {count} CUDA device(s)"
                    )))
                }
            }
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device {s:?}: expected auto, cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Numeric precision of the model weights and the item table on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    pub(crate) fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Fp16 => Kind::Half,
            Precision::Bf16 => Kind::BFloat16,
        }
    }

    pub fn is_half(self) -> bool {
        self != Precision::Fp32
    }

    /// Half precision on the CPU is slow in libtorch and numerically different from what the
    /// exporter validated, so it is refused rather than silently served.
    pub fn check_device(self, device: Device) -> Result<(), KernelError> {
        if self.is_half() && device == Device::Cpu {
            return Err(KernelError::PrecisionUnsupported {
                precision: self.to_string(),
                device: "cpu".into(),
            });
        }
        Ok(())
    }

    /// Default absolute score tolerance for golden-set replay at this precision.
    pub fn default_golden_tolerance(self) -> f32 {
        match self {
            Precision::Fp32 => 1e-3,
            Precision::Fp16 => 2e-2,
            Precision::Bf16 => 1e-1,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!(
                "unknown precision {s:?}: expected fp32, fp16 or bf16"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn half_precision_is_refused_on_cpu() {
        assert!(Precision::Fp32.check_device(Device::Cpu).is_ok());
        let err = Precision::Fp16.check_device(Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("fp16"), "{err}");
        assert!(Precision::Bf16.check_device(Device::Cpu).is_err());
        assert!(Precision::Bf16.check_device(Device::Cuda(0)).is_ok());
    }
}

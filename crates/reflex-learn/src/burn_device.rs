//! Where burn's networks run: its `flex` CPU backend (always built), or a GPU through burn's
//! wgpu backend (Vulkan, Metal or DirectX 12, whichever the machine offers), built only with the
//! `gpu` feature. The default build needs no GPU, no GPU driver and no GPU crate.
//!
//! Both devices carry autodiff. [`BurnDevice::open`] opens the device and names it, or says why
//! it cannot: a build without the feature, or a machine whose graphics stack offers no adapter.
//! A software Vulkan driver (Mesa's lavapipe) counts as an adapter, and is named as such, so a
//! figure measured on it is never mistaken for a GPU's.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A device burn's networks can run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BurnDevice {
    /// burn's `flex` CPU backend.
    #[default]
    Cpu,
    /// The default adapter of burn's wgpu backend (built with the `gpu` feature).
    Gpu,
}

/// A device opened for use.
#[derive(Clone, Debug)]
pub struct OpenedDevice {
    /// The device, with autodiff.
    pub device: Device,
    /// What it is: `cpu (burn flex)`, or the adapter's own name.
    pub name: String,
    /// The adapter is a CPU rasteriser (Mesa's llvmpipe/lavapipe or the like), not a GPU.
    pub software: bool,
}

impl BurnDevice {
    /// Whether this build can open [`BurnDevice::Gpu`].
    pub const GPU_BUILT: bool = cfg!(feature = "gpu");

    /// Opens the device, or names what is missing.
    pub fn open(self) -> Result<OpenedDevice, String> {
        match self {
            BurnDevice::Cpu => Ok(OpenedDevice {
                device: Device::flex().autodiff(),
                name: "cpu (burn flex)".into(),
                software: false,
            }),
            BurnDevice::Gpu => open_gpu(),
        }
    }
}

/// What [`BurnDevice::open`] says for `gpu` in a build without the `gpu` feature.
#[cfg_attr(feature = "gpu", allow(dead_code))]
const NO_GPU_BACKEND: &str = "device `gpu`: this build has no GPU backend; build with \
     `--features gpu` (burn's wgpu backend: Vulkan, Metal or DirectX 12)";

#[cfg(not(feature = "gpu"))]
fn open_gpu() -> Result<OpenedDevice, String> {
    Err(NO_GPU_BACKEND.into())
}

#[cfg(feature = "gpu")]
fn open_gpu() -> Result<OpenedDevice, String> {
    use burn::tensor::DeviceKind;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    // Opening the device is lazy and panics inside the runtime when no adapter is found: open
    // it here, where that can be turned into an error that says what to install.
    let identity = catch_unwind(AssertUnwindSafe(|| device.identity())).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("no reason given");
        format!(
            "device `gpu`: burn's wgpu backend found no usable adapter ({why}); a GPU driver \
             with Vulkan (or Metal, DirectX 12) is needed, e.g. Debian's mesa-vulkan-drivers \
             and libvulkan1"
        )
    })?;
    let name = identity
        .map(|i| i.name)
        .unwrap_or_else(|| "wgpu adapter".into());
    let software = is_software(&name);
    Ok(OpenedDevice {
        device: device.autodiff(),
        name,
        software,
    })
}

/// Whether an adapter's name is that of a CPU rasteriser rather than a GPU.
pub fn is_software(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "llvmpipe",
        "lavapipe",
        "swiftshader",
        "softpipe",
        "software",
    ]
    .iter()
    .any(|s| n.contains(s))
}

impl FromStr for BurnDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(BurnDevice::Cpu),
            "gpu" => Ok(BurnDevice::Gpu),
            other => Err(format!("device `{other}`: expected `cpu` or `gpu`")),
        }
    }
}

impl fmt::Display for BurnDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BurnDevice::Cpu => "cpu",
            BurnDevice::Gpu => "gpu",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_by_name() {
        for d in [BurnDevice::Cpu, BurnDevice::Gpu] {
            assert_eq!(d.to_string().parse::<BurnDevice>(), Ok(d));
        }
        let e = "cuda".parse::<BurnDevice>().unwrap_err();
        assert!(e.contains("`cuda`") && e.contains("`gpu`"), "{e}");
        assert_eq!(BurnDevice::default(), BurnDevice::Cpu);
    }

    #[test]
    fn software_rasterisers_are_told_from_gpus() {
        assert!(is_software("llvmpipe (LLVM 15.0.6, 256 bits)"));
        assert!(is_software("SwiftShader Device (Subzero)"));
        assert!(!is_software("NVIDIA GeForce RTX 4090"));
        assert!(!is_software("AMD Radeon 8060S Graphics"));
    }

    /// Built with `gpu` (as CI builds the tests, on Mesa's lavapipe), the GPU opens and is
    /// named; built without it, opening it says how to build it.
    #[test]
    fn the_gpu_opens_where_built_and_says_how_to_build_it_where_not() {
        assert_eq!(BurnDevice::Cpu.open().unwrap().name, "cpu (burn flex)");
        let opened = BurnDevice::Gpu.open();
        assert_eq!(
            opened.is_ok(),
            BurnDevice::GPU_BUILT,
            "built with gpu: {}; {:?}",
            BurnDevice::GPU_BUILT,
            opened.as_ref().err()
        );
        match opened {
            Ok(d) => {
                assert!(!d.name.is_empty());
                assert_eq!(d.software, is_software(&d.name));
            }
            Err(e) => {
                assert_eq!(e, NO_GPU_BACKEND);
                assert!(e.contains("--features gpu"), "{e}");
            }
        }
    }
}

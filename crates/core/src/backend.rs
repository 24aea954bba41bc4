//! Backend aliases and the one switch between them.
//!
//! Library code never picks a backend: learners are generic over `B: Backend` and run their
//! meta-parameters on `Autodiff<B>` and, for exact second-order gradients, their inner loop on
//! [`SecondOrder<B>`] = `Autodiff<Autodiff<B>>`. Binaries pick one of the aliases below, usually
//! through [`BackendKind`] and the [`with_backend!`](crate::with_backend) macro.
//!
//! | alias | backend | use |
//! |---|---|---|
//! | [`Cpu`] | burn-flex, f32 | default CPU backend (measured faster than ndarray on Conv4) |
//! | [`FlexCpu`] | burn-flex, f32 | pure-Rust SIMD + rayon |
//! | [`NdArrayCpu`] | burn-ndarray, f32 | the design card's CPU backend |
//! | [`NdArrayF64`] | burn-ndarray, f64 | finite-difference gradient checks |
//! | `Gpu` | burn-wgpu, f32 | GPU (Vulkan/Metal/DX12), behind the `wgpu` feature |
//!
//! The CPU aliases are behind this crate's features `flex` (`FlexCpu`; `Cpu` is it when on)
//! and `ndarray` (`NdArrayCpu`, `NdArrayF64`, [`init_f64`]; `Cpu` without `flex`), both on by
//! default. The other library crates take core without them, so a program compiles the
//! backends it names and no others; `with_backend!` answers a kind whose backend is not
//! compiled in with a typed error, as it does for `wgpu`.

use burn::backend::Autodiff;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// burn-flex (pure Rust, SIMD, rayon), f32.
#[cfg(feature = "flex")]
pub type FlexCpu = burn::backend::Flex;
/// burn-ndarray, f32.
#[cfg(feature = "ndarray")]
pub type NdArrayCpu = burn::backend::NdArray<f32>;
/// burn-ndarray, f64 — for gradient checks. Note: burn-ndarray's f32 and f64 backends share one
/// default dtype per process; set it with [`init_f64`] before creating any tensor.
#[cfg(feature = "ndarray")]
pub type NdArrayF64 = burn::backend::NdArray<f64>;
/// The default CPU backend (see README for the measurement behind this choice).
#[cfg(feature = "flex")]
pub type Cpu = FlexCpu;
/// The default CPU backend: burn-ndarray when burn-flex is not compiled in.
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type Cpu = NdArrayCpu;
/// burn-wgpu (GPU), f32.
#[cfg(feature = "wgpu")]
pub type Gpu = burn::backend::Wgpu;
/// First-order autodiff over `B`: where meta-parameters live.
pub type FirstOrder<B> = Autodiff<B>;
/// Nested autodiff used for exact second-order meta-gradients.
pub type SecondOrder<B> = Autodiff<Autodiff<B>>;

/// Make the f64 ndarray backend really compute in f64 in this process.
///
/// burn-ndarray keeps one default float dtype per process for all its element types; whichever
/// backend creates a tensor first wins, silently. Call this before any tensor is made; it returns
/// `false` if the dtype could not be set (another dtype was fixed first).
#[cfg(feature = "ndarray")]
pub fn init_f64() -> bool {
    use burn::tensor::{DType, Tensor};
    let device = Default::default();
    let _ = burn::tensor::set_default_dtypes::<NdArrayF64>(&device, DType::F64, DType::I64);
    let probe = Tensor::<NdArrayF64, 1>::from_floats([1.0], &device);
    probe.dtype() == DType::F64
}

/// The backend a binary runs on, chosen at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex (default CPU).
    #[default]
    Flex,
    /// burn-ndarray.
    Ndarray,
    /// burn-wgpu (needs the `wgpu` feature).
    Wgpu,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
        })
    }
}

impl FromStr for BackendKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "flex" | "cpu" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(crate::Error::config(
                "backend",
                format!("unknown backend `{other}` (expected flex, ndarray or wgpu)"),
            )),
        }
    }
}

/// Run a generic block on the backend named by a [`BackendKind`] — the one switch.
///
/// ```
/// use metalearn_core::{backend::BackendKind, with_backend};
/// fn name<B: burn::tensor::backend::Backend>() -> String { B::name(&Default::default()) }
/// let kind = BackendKind::Ndarray;
/// let n: Result<String, metalearn_core::Error> = with_backend!(kind, B => Ok(name::<B>()));
/// assert!(n.unwrap().contains("ndarray"));
/// ```
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, $b:ident => $body:expr) => {{
        match $kind {
            $crate::backend::BackendKind::Flex => $crate::__with_flex!($b => $body),
            $crate::backend::BackendKind::Ndarray => $crate::__with_ndarray!($b => $body),
            $crate::backend::BackendKind::Wgpu => $crate::__with_wgpu!($b => $body),
        }
    }};
}

#[doc(hidden)]
#[cfg(feature = "wgpu")]
#[macro_export]
macro_rules! __with_wgpu {
    ($b:ident => $body:expr) => {{
        type $b = $crate::backend::Gpu;
        $body
    }};
}

#[doc(hidden)]
#[cfg(not(feature = "wgpu"))]
#[macro_export]
macro_rules! __with_wgpu {
    ($b:ident => $body:expr) => {{
        Err($crate::backend::not_compiled_in("wgpu").into())
    }};
}

#[doc(hidden)]
#[cfg(feature = "flex")]
#[macro_export]
macro_rules! __with_flex {
    ($b:ident => $body:expr) => {{
        type $b = $crate::backend::FlexCpu;
        $body
    }};
}

#[doc(hidden)]
#[cfg(not(feature = "flex"))]
#[macro_export]
macro_rules! __with_flex {
    ($b:ident => $body:expr) => {{
        Err($crate::backend::not_compiled_in("flex").into())
    }};
}

#[doc(hidden)]
#[cfg(feature = "ndarray")]
#[macro_export]
macro_rules! __with_ndarray {
    ($b:ident => $body:expr) => {{
        type $b = $crate::backend::NdArrayCpu;
        $body
    }};
}

#[doc(hidden)]
#[cfg(not(feature = "ndarray"))]
#[macro_export]
macro_rules! __with_ndarray {
    ($b:ident => $body:expr) => {{
        Err($crate::backend::not_compiled_in("ndarray").into())
    }};
}

/// The error of [`with_backend!`](crate::with_backend) for a backend this build of
/// metalearn-core does not include (its feature is off).
#[doc(hidden)]
pub fn not_compiled_in(feature: &str) -> crate::Error {
    crate::Error::config(
        "backend",
        format!("{feature} requested but metalearn-core was built without the `{feature}` feature"),
    )
}

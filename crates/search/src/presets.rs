//! Ready-made spaces for the zoo's models, and the functions that turn their architectures into
//! real burn modules.

use crate::space::{Architecture, SearchSpace};
use crate::{Error, Result};
use metalearn_zoo::{Conv4Config, MlpConfig};

/// A Conv4-like few-shot backbone: number of conv blocks, filters per block, kernel size.
/// Constraint: 5×5 kernels only with up to 32 filters (a compute budget).
pub const CONV_SPACE_TOML: &str = r#"
[[decisions]]
name = "blocks"
choices = [2, 3, 4]

[[decisions]]
name = "filters"
choices = [16, 32, 64]

[[decisions]]
name = "kernel"
choices = [3, 5]

[[constraints]]
if = { decision = "kernel", in = [5] }
then = { decision = "filters", in = [16, 32] }
"#;

/// An MLP: number of hidden layers and their width.
pub const MLP_SPACE_TOML: &str = r#"
[[decisions]]
name = "hidden_layers"
choices = [1, 2, 3]

[[decisions]]
name = "width"
choices = [20, 40, 80, 160]
"#;

/// The Conv4-like backbone space ([`CONV_SPACE_TOML`]).
pub fn conv_space() -> Result<SearchSpace> {
    SearchSpace::from_toml(CONV_SPACE_TOML)
}

/// The MLP space ([`MLP_SPACE_TOML`]).
pub fn mlp_space() -> Result<SearchSpace> {
    SearchSpace::from_toml(MLP_SPACE_TOML)
}

fn int(space: &SearchSpace, arch: &Architecture, name: &str) -> Result<usize> {
    let v = space.value(arch, name)?;
    v.as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| Error::InvalidSpace(format!("`{name}` = {v} is not a non-negative integer")))
}

/// The Conv4 configuration of an architecture of a space with `blocks`, `filters` and `kernel`
/// decisions (e.g. [`conv_space`]), for `ways` classes and `input_size`² images.
pub fn conv4_config(
    space: &SearchSpace,
    arch: &Architecture,
    ways: usize,
    input_size: usize,
) -> Result<Conv4Config> {
    space.check(arch)?;
    let cfg = Conv4Config::new(ways)
        .with_blocks(int(space, arch, "blocks")?)
        .with_filters(int(space, arch, "filters")?)
        .with_kernel(int(space, arch, "kernel")?)
        .with_input_size(input_size);
    cfg.validate()?;
    Ok(cfg)
}

/// The MLP configuration of an architecture of a space with `hidden_layers` and `width`
/// decisions (e.g. [`mlp_space`]).
pub fn mlp_config(
    space: &SearchSpace,
    arch: &Architecture,
    inputs: usize,
    outputs: usize,
) -> Result<MlpConfig> {
    space.check(arch)?;
    let layers = int(space, arch, "hidden_layers")?;
    let width = int(space, arch, "width")?;
    let mut widths = vec![inputs];
    widths.extend(std::iter::repeat_n(width, layers));
    widths.push(outputs);
    let cfg = MlpConfig::new(widths);
    cfg.validate()?;
    Ok(cfg)
}

//! Saving and restoring the learners' training state ([`Checkpoint`](metalearn_core::Checkpoint)):
//! the parts every learner shares (a model, an Adam optimiser).

use crate::inner::AB;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, Optimizer};
use burn::tensor::backend::Backend;
use metalearn_core::checkpoint::{
    load_module_bytes, module_to_bytes, record_from_bytes, record_to_bytes,
};
use metalearn_core::{params, LearnerState, Result};

/// The outer optimiser every learner here uses.
pub(crate) type OuterAdam<B, M> = OptimizerAdaptor<Adam, M, AB<B>>;

/// Add `module` as part `name`.
pub(crate) fn put_module<B: Backend, M: AutodiffModule<AB<B>>>(
    state: LearnerState,
    name: &str,
    module: &M,
) -> Result<LearnerState> {
    Ok(state.with_part(name, module_to_bytes::<AB<B>, M>(module)?))
}

/// Add the optimiser's state as part `name` (which must start with
/// [`OPTIMIZER_PREFIX`](metalearn_core::checkpoint::OPTIMIZER_PREFIX)).
pub(crate) fn put_optim<B: Backend, M: AutodiffModule<AB<B>>>(
    state: LearnerState,
    name: &str,
    optim: &OuterAdam<B, M>,
) -> Result<LearnerState> {
    debug_assert!(name.starts_with(metalearn_core::checkpoint::OPTIMIZER_PREFIX));
    Ok(state.with_part(name, record_to_bytes::<AB<B>, _>(optim.to_record())?))
}

/// Part `name` loaded into (a copy of) `current`, tracked for gradients.
pub(crate) fn take_module<B: Backend, M: AutodiffModule<AB<B>>>(
    state: &LearnerState,
    name: &str,
    current: &M,
    device: &B::Device,
) -> Result<M> {
    let m = load_module_bytes::<AB<B>, M>(current.clone(), state.part(name)?, device)?;
    Ok(params::require_grad(m))
}

/// The optimiser saved as part `name`, or a fresh one when the state has none (a model-only
/// state, [`LearnerState::without_optimizer`]).
pub(crate) fn take_optim<B: Backend, M: AutodiffModule<AB<B>>>(
    state: &LearnerState,
    name: &str,
    device: &B::Device,
) -> Result<OuterAdam<B, M>> {
    let fresh: OuterAdam<B, M> = AdamConfig::new().init();
    Ok(match state.parts.get(name) {
        Some(bytes) => fresh.load_record(record_from_bytes::<AB<B>, _>(bytes, device)?),
        None => fresh,
    })
}

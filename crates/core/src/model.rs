//! The one trait a user's model implements to plug into every learner.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// A burn module that maps a batch of inputs of rank `D` (batch first) to a matrix of outputs
/// `[batch, outputs]` (regression values or class logits).
///
/// This is the whole contract: any `#[derive(Module)]` struct generic over `B: Backend` that
/// implements it works with every learner in metalearn. For exact second-order MAML the same
/// struct must also implement it on `Autodiff<Autodiff<B>>`, which a blanket `impl<B: Backend>`
/// gives for free — but note burn 0.21's nested-autodiff traps (see `docs/ARCHITECTURE.md`):
/// `nn::Linear::forward` and `nn::pool::MaxPool2d` cannot be differentiated twice; use
/// matmul + bias and reshape-based pooling (`metalearn-zoo` shows how).
///
/// ```
/// use burn::prelude::*;
/// use metalearn_core::MetaModule;
///
/// #[derive(Module, Debug)]
/// struct Affine<B: Backend> {
///     w: burn::module::Param<Tensor<B, 2>>,
/// }
///
/// impl<B: Backend> MetaModule<B, 2> for Affine<B> {
///     fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
///         x.matmul(self.w.val())
///     }
/// }
/// ```
pub trait MetaModule<B: Backend, const D: usize>: Module<B> {
    /// Forward pass on a batch: `[batch, ...] -> [batch, outputs]`.
    fn forward(&self, inputs: Tensor<B, D>) -> Tensor<B, 2>;

    /// The output width this model gives for examples of shape `example` (one example's
    /// dimensions, without the batch dimension), or [`Error::ShapeMismatch`](crate::Error)
    /// naming what does not fit (input width, channels, image size).
    ///
    /// Learners call it before the first burn op of every episode, so data of the wrong shape is
    /// a typed error instead of a panic inside burn. The default knows nothing (`Ok(None)`):
    /// the output width is then checked after the forward pass, and an input burn cannot take
    /// surfaces as burn's panic, caught and returned as
    /// [`Error::TaskPanicked`](crate::Error::TaskPanicked).
    fn output_width(&self, example: &[usize]) -> crate::Result<Option<usize>> {
        let _ = example;
        Ok(None)
    }
}

/// Check `episode` against `model` before any burn op: the episode itself
/// ([`EpisodeData::validate`](crate::episode::EpisodeData::validate)), the input rank `D`, and
/// the model's input shape and output width ([`MetaModule::output_width`]).
pub fn check_episode<B: Backend, M: MetaModule<B, D>, const D: usize>(
    model: &M,
    episode: &crate::episode::EpisodeData,
) -> crate::Result<()> {
    let width = model.output_width(example_shape(episode, D)?)?;
    episode.check_width(width)
}

/// The episode validated for rank-`rank` inputs, and one example's shape.
fn example_shape(episode: &crate::episode::EpisodeData, rank: usize) -> crate::Result<&[usize]> {
    episode.validate()?;
    episode.check_rank(rank)?;
    Ok(&episode.support.input_shape[1..])
}

/// A model that can run `T` tasks at once with per-task ("fast") weights stacked along a leading
/// task dimension — what `torch.func.vmap` gives in PyTorch. Learners use it as a fast path for
/// small per-task problems, where one batched matmul beats `T` tiny ones.
///
/// `params[i]` is parameter `i` of the module (in [`Module::visit`] order), flattened and stacked
/// over tasks: `[T, numel_i]`. `inputs` is `[T, n, features]`, each example flattened row-major
/// (rank-`D` episodes: an image `[C, H, W]` becomes `C·H·W` features); the result is
/// `[T, n, outputs]`. Whatever normalises over a batch (batch norm) does so per task. The module
/// itself only supplies the architecture (shapes); its own parameter values are not used.
/// `D` is the rank of the episodes' inputs, as in [`MetaModule`] (2 unless said otherwise).
pub trait TaskBatchedModule<B: Backend, const D: usize = 2>: MetaModule<B, D> {
    /// Forward `T` tasks with stacked fast weights. `example` is one example's shape before
    /// flattening (`[features]`, or `[C, H, W]` for images), already checked against the model
    /// by [`MetaModule::output_width`].
    fn forward_tasks(
        &self,
        params: &[Tensor<B, 2>],
        inputs: Tensor<B, 3>,
        example: &[usize],
    ) -> Tensor<B, 3>;
}

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, HasAutodiffModule};

/// Everything a learner needs of a user's model `M<Autodiff<B>>`: it runs on `Autodiff<B>`
/// (meta-parameters), on `B` (cheap evaluation) and on `Autodiff<Autodiff<B>>` (exact
/// second-order inner loops). Every `#[derive(Module)] struct M<B: Backend>` that implements
/// [`MetaModule`] for all `B: Backend` gets this for free.
pub trait MetaTrainable<B: Backend, const D: usize>:
    AutodiffModule<Autodiff<B>, InnerModule: MetaModule<B, D>>
    + MetaModule<Autodiff<B>, D>
    + HasAutodiffModule<Autodiff<Autodiff<B>>, TrainModule: MetaModule<Autodiff<Autodiff<B>>, D>>
{
}

impl<B: Backend, const D: usize, T> MetaTrainable<B, D> for T where
    T: AutodiffModule<Autodiff<B>, InnerModule: MetaModule<B, D>>
        + MetaModule<Autodiff<B>, D>
        + HasAutodiffModule<Autodiff<Autodiff<B>>, TrainModule: MetaModule<Autodiff<Autodiff<B>>, D>>
{
}

/// [`MetaTrainable`] plus the task-batched fast path on both autodiff levels.
pub trait BatchedMetaTrainable<B: Backend, const D: usize = 2>:
    MetaTrainable<B, D>
    + TaskBatchedModule<Autodiff<B>, D>
    + HasAutodiffModule<
        Autodiff<Autodiff<B>>,
        TrainModule: TaskBatchedModule<Autodiff<Autodiff<B>>, D>,
    >
{
}

impl<B: Backend, T, const D: usize> BatchedMetaTrainable<B, D> for T where
    T: MetaTrainable<B, D>
        + TaskBatchedModule<Autodiff<B>, D>
        + HasAutodiffModule<
            Autodiff<Autodiff<B>>,
            TrainModule: TaskBatchedModule<Autodiff<Autodiff<B>>, D>,
        >
{
}

/// A model with an embedding (its body): what metric-based learners (Prototypical Networks) and
/// the fine-tuning baseline use. For a classifier, `embed` is everything before the final
/// linear layer.
pub trait EmbeddingModule<B: Backend, const D: usize>: Module<B> {
    /// `[batch, ...] -> [batch, embedding_dim]`.
    fn embed(&self, inputs: Tensor<B, D>) -> Tensor<B, 2>;

    /// Check that the body takes examples of shape `example` (without the batch dimension);
    /// see [`MetaModule::output_width`]. The default accepts everything.
    fn check_embed_input(&self, example: &[usize]) -> crate::Result<()> {
        let _ = example;
        Ok(())
    }
}

/// [`check_episode`] for an embedding model (no output width to match).
pub fn check_embed_episode<B: Backend, M: EmbeddingModule<B, D>, const D: usize>(
    model: &M,
    episode: &crate::episode::EpisodeData,
) -> crate::Result<()> {
    model.check_embed_input(example_shape(episode, D)?)
}

/// Outputs for `query` computed *non-transductively*: each query example goes through the
/// network in one batch with the whole support set and alone among the queries, so batch-norm
/// statistics never mix query examples (Nichol et al. 2018's evaluation protocol, under which
/// Reptile's Omniglot numbers are reported).
///
/// `f(joint, n_support)` receives `[support; one query example]` and returns the output row(s)
/// for the example(s) after the first `n_support` rows (`[1, outputs]`). The rows are stacked in
/// query order. Costs one forward pass of `n_support + 1` examples per query example.
///
/// The transductive alternative (the MAML paper's, and metalearn's default) is one forward pass
/// over the query batch, which normalises each query example with the statistics of all of them.
pub fn non_transductive<B: Backend, const D: usize>(
    support: Tensor<B, D>,
    query: Tensor<B, D>,
    mut f: impl FnMut(Tensor<B, D>, usize) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    let n_support = support.dims()[0];
    let n_query = query.dims()[0];
    let rows: Vec<Tensor<B, 2>> = (0..n_query)
        .map(|j| {
            let joint = Tensor::cat(vec![support.clone(), query.clone().narrow(0, j, 1)], 0);
            f(joint, n_support)
        })
        .collect();
    Tensor::cat(rows, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn non_transductive_sees_support_and_one_query() {
        let dev = Default::default();
        let s = Tensor::<NdArray, 2>::from_floats([[1.0], [3.0]], &dev);
        let q = Tensor::<NdArray, 2>::from_floats([[10.0], [20.0], [30.0]], &dev);
        // Centre by the batch mean: the query row minus the mean of support ∪ {query}.
        let out = non_transductive(s, q, |x, n| {
            let centred = x.clone() - x.mean_dim(0);
            centred.narrow(0, n, 1)
        });
        let v: Vec<f32> = out.into_data().to_vec().unwrap();
        let want = [10.0 - 14.0 / 3.0, 20.0 - 24.0 / 3.0, 30.0 - 34.0 / 3.0];
        for (a, b) in v.iter().zip(want) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{v:?}");
        }
    }
}

//! N-way K-shot classification episodes over a labelled class dataset.

use metalearn_core::episode::{EpisodeData, HostBatch, TaskDistribution, TaskKind};
use metalearn_core::error::{ensure_nonzero, Error, Result};
use metalearn_core::seed::rng;
use rand::seq::index;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A dataset organised by class: `num_classes` classes, each holding `class_len(c)` examples of
/// one shape.
pub trait ClassDataset: Send + Sync {
    /// Number of classes.
    fn num_classes(&self) -> usize;
    /// Number of examples of class `class`.
    fn class_len(&self, class: usize) -> usize;
    /// Shape of one example (e.g. `[1, 28, 28]`).
    fn example_shape(&self) -> &[usize];
    /// Append example `index` of class `class` to `out`.
    fn write_example(&self, class: usize, index: usize, out: &mut Vec<f32>) -> Result<()>;
}

/// Classes held in memory, each as a contiguous block of examples.
#[derive(Debug, Clone)]
pub struct InMemoryClasses {
    shape: Vec<usize>,
    example_len: usize,
    classes: Vec<Vec<f32>>,
}

impl InMemoryClasses {
    /// Build from per-class example blocks; each block's length must be a multiple of the
    /// example size.
    pub fn new(shape: Vec<usize>, classes: Vec<Vec<f32>>) -> Result<Self> {
        let example_len: usize = shape.iter().product();
        if example_len == 0 {
            return Err(Error::ShapeMismatch(format!(
                "example shape {shape:?} holds no value"
            )));
        }
        for (c, block) in classes.iter().enumerate() {
            if block.len() % example_len != 0 {
                return Err(Error::ShapeMismatch(format!(
                    "class {c} holds {} values, not a multiple of {example_len}",
                    block.len()
                )));
            }
        }
        Ok(Self {
            shape,
            example_len,
            classes,
        })
    }

    /// Copy examples `examples` (indices within each class) of each of `classes` of `dataset`,
    /// in that class order: e.g. a train / validation / test split of the drawings of some
    /// Omniglot characters for a supervised problem.
    ///
    /// Errors: an empty selection, an unknown class, or a class with fewer examples than
    /// `examples.end`.
    pub fn select(
        dataset: &dyn ClassDataset,
        classes: &[usize],
        examples: std::ops::Range<usize>,
    ) -> Result<Self> {
        if classes.is_empty() || examples.is_empty() {
            return Err(Error::Unsatisfiable(
                "select needs at least one class and one example".into(),
            ));
        }
        let blocks = classes
            .iter()
            .map(|&c| {
                if c >= dataset.num_classes() || dataset.class_len(c) < examples.end {
                    return Err(Error::Unsatisfiable(format!(
                        "class {c} does not have examples {examples:?}"
                    )));
                }
                let mut block = Vec::new();
                for i in examples.clone() {
                    dataset.write_example(c, i, &mut block)?;
                }
                Ok(block)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(dataset.example_shape().to_vec(), blocks)
    }

    /// Every example with its class as label (class by class): a classification batch over
    /// all classes, for scoring a classifier on a held-out split.
    pub fn labelled_batch(&self) -> Result<HostBatch> {
        let mut inputs = Vec::new();
        let mut labels = Vec::new();
        for (c, block) in self.classes.iter().enumerate() {
            inputs.extend_from_slice(block);
            labels.extend(std::iter::repeat_n(c, block.len() / self.example_len));
        }
        let mut shape = vec![labels.len()];
        shape.extend_from_slice(&self.shape);
        HostBatch::classification(inputs, shape, labels, self.classes.len())
    }
}

impl ClassDataset for InMemoryClasses {
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn class_len(&self, class: usize) -> usize {
        self.classes
            .get(class)
            .map_or(0, |b| b.len() / self.example_len)
    }
    fn example_shape(&self) -> &[usize] {
        &self.shape
    }
    fn write_example(&self, class: usize, index: usize, out: &mut Vec<f32>) -> Result<()> {
        let block = self
            .classes
            .get(class)
            .ok_or_else(|| Error::Unsatisfiable(format!("no class {class}")))?;
        let start = index * self.example_len;
        let ex = block
            .get(start..start + self.example_len)
            .ok_or_else(|| Error::Unsatisfiable(format!("class {class} has no example {index}")))?;
        out.extend_from_slice(ex);
        Ok(())
    }
}

/// Episode shape: `ways` classes, `shots` support and `query` query examples per class.
///
/// | field | meaning | valid |
/// |---|---|---|
/// | `ways` | classes per episode (N) | 1 ≤ N ≤ number of classes |
/// | `shots` | support examples per class (K) | ≥ 1 |
/// | `query` | query examples per class | ≥ 1, K + query ≤ smallest class used |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NWayKShotConfig {
    /// Classes per episode.
    pub ways: usize,
    /// Support examples per class.
    pub shots: usize,
    /// Query examples per class.
    pub query: usize,
}

impl NWayKShotConfig {
    /// `ways`-way `shots`-shot episodes with `query` query examples per class.
    pub fn new(ways: usize, shots: usize, query: usize) -> Self {
        Self { ways, shots, query }
    }

    /// Check the fields on their own.
    pub fn validate(&self) -> Result<()> {
        ensure_nonzero("ways", self.ways)?;
        ensure_nonzero("shots", self.shots)?;
        ensure_nonzero("query", self.query)
    }
}

/// N-way K-shot episodes over a [`ClassDataset`].
///
/// Classes are drawn without replacement and relabelled `0..N` in draw order; per class,
/// `K + query` distinct examples are drawn, the first `K` form the support set and the rest the
/// query set, so support and query are disjoint and balanced.
#[derive(Clone)]
pub struct NWayKShot<D: ClassDataset> {
    dataset: Arc<D>,
    config: NWayKShotConfig,
    eligible: Vec<usize>,
}

impl<D: ClassDataset> std::fmt::Debug for NWayKShot<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NWayKShot")
            .field("config", &self.config)
            .field("classes", &self.eligible.len())
            .finish()
    }
}

impl<D: ClassDataset> NWayKShot<D> {
    /// Build the sampler; a request the dataset cannot meet is an [`Error::Unsatisfiable`].
    pub fn new(dataset: Arc<D>, config: NWayKShotConfig) -> Result<Self> {
        config.validate()?;
        let need = config.shots + config.query;
        let n = dataset.num_classes();
        if config.ways > n {
            return Err(Error::Unsatisfiable(format!(
                "{} ways requested but the dataset has {n} classes",
                config.ways
            )));
        }
        if let Some(c) = (0..n).find(|&c| dataset.class_len(c) < need) {
            return Err(Error::Unsatisfiable(format!(
                "class {c} has {} examples but shots + query = {need}",
                dataset.class_len(c)
            )));
        }
        Ok(Self {
            dataset,
            config,
            eligible: (0..n).collect(),
        })
    }

    /// The episode shape.
    pub fn config(&self) -> NWayKShotConfig {
        self.config
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }

    /// Sample an episode and also return the dataset classes it used (in label order).
    pub fn sample_with_classes(&self, seed: u64) -> Result<(EpisodeData, Vec<usize>)> {
        let c = self.config;
        let mut r = rng(seed);
        let classes: Vec<usize> = index::sample(&mut r, self.eligible.len(), c.ways)
            .into_iter()
            .map(|i| self.eligible[i])
            .collect();
        let ex_len: usize = self.dataset.example_shape().iter().product();
        let mut sx = Vec::with_capacity(c.ways * c.shots * ex_len);
        let mut qx = Vec::with_capacity(c.ways * c.query * ex_len);
        let (mut sy, mut qy) = (Vec::new(), Vec::new());
        for (label, &class) in classes.iter().enumerate() {
            let picks = index::sample(&mut r, self.dataset.class_len(class), c.shots + c.query);
            for (k, i) in picks.into_iter().enumerate() {
                if k < c.shots {
                    self.dataset.write_example(class, i, &mut sx)?;
                    sy.push(label);
                } else {
                    self.dataset.write_example(class, i, &mut qx)?;
                    qy.push(label);
                }
            }
        }
        let shape = |n: usize| {
            let mut s = vec![n];
            s.extend_from_slice(self.dataset.example_shape());
            s
        };
        let support = HostBatch::classification(sx, shape(sy.len()), sy, c.ways)?;
        let query = HostBatch::classification(qx, shape(qy.len()), qy, c.ways)?;
        Ok((
            EpisodeData {
                kind: TaskKind::Classification { ways: c.ways },
                support,
                query,
            },
            classes,
        ))
    }
}

impl<D: ClassDataset> TaskDistribution for NWayKShot<D> {
    fn kind(&self) -> TaskKind {
        TaskKind::Classification {
            ways: self.config.ways,
        }
    }

    fn sample(&self, seed: u64) -> Result<EpisodeData> {
        self.sample_with_classes(seed).map(|(e, _)| e)
    }
}

/// Plain supervised minibatches over all classes of a [`ClassDataset`], for pretraining
/// baselines: an "episode" holds two independent batches (support, query) of `batch` examples
/// drawn uniformly (class, then example), labelled with their global class ids.
#[derive(Clone)]
pub struct ClassBatches<D: ClassDataset> {
    dataset: Arc<D>,
    batch: usize,
}

impl<D: ClassDataset> std::fmt::Debug for ClassBatches<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassBatches")
            .field("batch", &self.batch)
            .finish()
    }
}

impl<D: ClassDataset> ClassBatches<D> {
    /// Batches of `batch` examples; the dataset must have classes and no empty class.
    pub fn new(dataset: Arc<D>, batch: usize) -> Result<Self> {
        ensure_nonzero("batch", batch)?;
        let n = dataset.num_classes();
        if n == 0 {
            return Err(Error::Unsatisfiable("the dataset has no class".into()));
        }
        if let Some(c) = (0..n).find(|&c| dataset.class_len(c) == 0) {
            return Err(Error::Unsatisfiable(format!("class {c} is empty")));
        }
        Ok(Self { dataset, batch })
    }

    fn draw(&self, r: &mut impl rand::Rng) -> Result<HostBatch> {
        let n = self.dataset.num_classes();
        let mut x = Vec::new();
        let mut labels = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            let c = r.random_range(0..n);
            let i = r.random_range(0..self.dataset.class_len(c));
            self.dataset.write_example(c, i, &mut x)?;
            labels.push(c);
        }
        let mut shape = vec![self.batch];
        shape.extend_from_slice(self.dataset.example_shape());
        HostBatch::classification(x, shape, labels, n)
    }
}

impl<D: ClassDataset> TaskDistribution for ClassBatches<D> {
    fn kind(&self) -> TaskKind {
        TaskKind::Classification {
            ways: self.dataset.num_classes(),
        }
    }

    fn sample(&self, seed: u64) -> Result<EpisodeData> {
        let mut r = rng(seed);
        Ok(EpisodeData {
            kind: self.kind(),
            support: self.draw(&mut r)?,
            query: self.draw(&mut r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Class `c`'s example `i` is the single value `c * 1000 + i` (shape [1]), so that an episode
    /// can be decoded back into (class, example) pairs.
    fn toy(classes: usize, per_class: usize) -> Arc<InMemoryClasses> {
        let blocks = (0..classes)
            .map(|c| (0..per_class).map(|i| (c * 1000 + i) as f32).collect())
            .collect();
        Arc::new(InMemoryClasses::new(vec![1], blocks).unwrap())
    }

    #[test]
    fn select_and_labelled_batch() {
        let d = toy(4, 5);
        let s = InMemoryClasses::select(d.as_ref(), &[3, 1], 2..4).unwrap();
        let b = s.labelled_batch().unwrap();
        assert_eq!(b.inputs, vec![3002.0, 3003.0, 1002.0, 1003.0]);
        assert_eq!(b.labels.as_deref(), Some(&[0, 0, 1, 1][..]));
        assert_eq!(b.input_shape, vec![4, 1]);
        assert!(InMemoryClasses::select(d.as_ref(), &[9], 0..1).is_err());
        assert!(InMemoryClasses::select(d.as_ref(), &[0], 3..6).is_err());
        assert!(InMemoryClasses::select(d.as_ref(), &[], 0..1).is_err());
    }

    proptest! {
        #[test]
        fn episodes_are_balanced_disjoint_and_reproducible(
            classes in 2usize..30, per_class in 2usize..25,
            ways in 1usize..30, shots in 1usize..10, query in 1usize..10, seed in any::<u64>(),
        ) {
            let ds = toy(classes, per_class);
            let cfg = NWayKShotConfig::new(ways, shots, query);
            let s = NWayKShot::new(ds, cfg);
            if ways > classes || shots + query > per_class {
                prop_assert!(matches!(s, Err(Error::Unsatisfiable(_))));
                return Ok(());
            }
            let s = s.unwrap();
            let (ep, used) = s.sample_with_classes(seed).unwrap();
            // classes drawn without replacement
            let mut u = used.clone(); u.sort(); u.dedup();
            prop_assert_eq!(u.len(), ways);
            let sl = ep.support.labels.clone().unwrap();
            let ql = ep.query.labels.clone().unwrap();
            prop_assert_eq!(sl.len(), ways * shots);
            prop_assert_eq!(ql.len(), ways * query);
            for l in 0..ways {
                prop_assert_eq!(sl.iter().filter(|&&x| x == l).count(), shots);
                prop_assert_eq!(ql.iter().filter(|&&x| x == l).count(), query);
            }
            // labels remapped to 0..N consistently with the class of each example
            for (b, labels) in [(&ep.support, &sl), (&ep.query, &ql)] {
                for (v, &l) in b.inputs.iter().zip(labels) {
                    prop_assert_eq!((*v as usize) / 1000, used[l]);
                }
            }
            // support and query disjoint
            for v in &ep.query.inputs {
                prop_assert!(!ep.support.inputs.contains(v));
            }
            prop_assert_eq!(&ep, &s.sample(seed).unwrap());
        }
    }

    #[test]
    fn zero_counts_are_config_errors() {
        let ds = toy(5, 5);
        for cfg in [
            NWayKShotConfig::new(0, 1, 1),
            NWayKShotConfig::new(2, 0, 1),
            NWayKShotConfig::new(2, 1, 0),
        ] {
            assert!(matches!(
                NWayKShot::new(ds.clone(), cfg),
                Err(Error::InvalidConfig { .. })
            ));
        }
    }
}

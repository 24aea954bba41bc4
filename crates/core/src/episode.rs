//! Episodes (a task's support and query sets) and task distributions.
//!
//! Task distributions produce host-side [`EpisodeData`] (plain `Vec<f32>` plus shapes), which is
//! `Send`, cheap to move between rayon workers and independent of the backend; a learner turns it
//! into tensors on whatever backend and autodiff level it needs with [`EpisodeData::to_episode`].

use crate::{Error, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// What a task asks for; decides the loss and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// Real-valued outputs; mean squared error.
    Regression,
    /// `ways`-way classification; cross-entropy and accuracy.
    Classification {
        /// Number of classes in an episode.
        ways: usize,
    },
}

impl TaskKind {
    /// "5-way classification" or "regression".
    pub fn describe(&self) -> String {
        match self {
            Self::Regression => "regression".into(),
            Self::Classification { ways } => format!("{ways}-way classification"),
        }
    }
}

/// Check a meta-batch: not empty, every episode valid, all of the same kind; returns the kind.
pub fn check_meta_batch(episodes: &[EpisodeData]) -> Result<TaskKind> {
    let kind = episodes.first().ok_or(Error::Empty("meta-batch"))?.kind;
    for (i, e) in episodes.iter().enumerate() {
        e.validate()?;
        if e.kind != kind {
            return Err(Error::ShapeMismatch(format!(
                "episode {i} of the meta-batch is {} but episode 0 is {}",
                e.kind.describe(),
                kind.describe()
            )));
        }
    }
    Ok(kind)
}

/// One labelled set (support or query) on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostBatch {
    /// Inputs, row-major, batch first.
    pub inputs: Vec<f32>,
    /// Shape of `inputs` (first dimension = number of examples).
    pub input_shape: Vec<usize>,
    /// Targets `[n, target_dim]`: regression values, or one-hot rows for classification.
    pub targets: Vec<f32>,
    /// Width of a target row.
    pub target_dim: usize,
    /// Class labels in `0..ways` for classification, `None` for regression.
    pub labels: Option<Vec<usize>>,
}

impl HostBatch {
    /// A regression batch; checks that the sizes agree.
    pub fn regression(
        inputs: Vec<f32>,
        input_shape: Vec<usize>,
        targets: Vec<f32>,
        target_dim: usize,
    ) -> Result<Self> {
        let b = Self {
            inputs,
            input_shape,
            targets,
            target_dim,
            labels: None,
        };
        b.check()?;
        Ok(b)
    }

    /// A classification batch with labels in `0..ways` (targets become one-hot rows).
    pub fn classification(
        inputs: Vec<f32>,
        input_shape: Vec<usize>,
        labels: Vec<usize>,
        ways: usize,
    ) -> Result<Self> {
        if let Some(bad) = labels.iter().find(|&&l| l >= ways) {
            return Err(Error::ShapeMismatch(format!(
                "label {bad} out of range for {ways} ways"
            )));
        }
        let mut targets = vec![0.0; labels.len() * ways];
        for (i, &l) in labels.iter().enumerate() {
            targets[i * ways + l] = 1.0;
        }
        let b = Self {
            inputs,
            input_shape,
            targets,
            target_dim: ways,
            labels: Some(labels),
        };
        b.check()?;
        Ok(b)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.input_shape.first().copied().unwrap_or(0)
    }

    /// `true` when the batch holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self) -> Result<()> {
        let n: usize = self.input_shape.iter().product();
        if n != self.inputs.len() {
            return Err(Error::ShapeMismatch(format!(
                "inputs hold {} values but shape {:?} needs {n}",
                self.inputs.len(),
                self.input_shape
            )));
        }
        if self.targets.len() != self.len() * self.target_dim {
            return Err(Error::ShapeMismatch(format!(
                "targets hold {} values, expected {} x {}",
                self.targets.len(),
                self.len(),
                self.target_dim
            )));
        }
        Ok(())
    }

    /// Tensors on backend `B`; the input rank must be `D`.
    pub fn to_batch<B: Backend, const D: usize>(&self, device: &B::Device) -> Result<Batch<B, D>> {
        if self.input_shape.len() != D {
            return Err(Error::ShapeMismatch(format!(
                "model takes rank-{D} inputs but the episode's inputs have shape {:?}",
                self.input_shape
            )));
        }
        let inputs = Tensor::<B, D>::from_data(
            TensorData::new(self.inputs.clone(), self.input_shape.clone()),
            device,
        );
        let targets = Tensor::<B, 2>::from_data(
            TensorData::new(self.targets.clone(), [self.len(), self.target_dim]),
            device,
        );
        Ok(Batch {
            inputs,
            targets,
            labels: self.labels.clone(),
        })
    }
}

/// A task: a support set to adapt on and a query set to evaluate on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeData {
    /// What the task asks for.
    pub kind: TaskKind,
    /// Examples the learner adapts on.
    pub support: HostBatch,
    /// Held-out examples of the same task.
    pub query: HostBatch,
}

impl EpisodeData {
    /// Check that the episode is usable: support and query sets hold at least one example
    /// each, share the example shape and target width, and agree with `kind` (classification:
    /// labels present, one-hot targets `ways` wide; regression: no labels).
    pub fn validate(&self) -> Result<()> {
        if self.support.is_empty() {
            return Err(Error::Empty("episode support set (0 examples)"));
        }
        if self.query.is_empty() {
            return Err(Error::Empty("episode query set (0 examples)"));
        }
        self.support.check()?;
        self.query.check()?;
        if self.support.input_shape.get(1..) != self.query.input_shape.get(1..) {
            return Err(Error::ShapeMismatch(format!(
                "support examples have shape {:?} but query examples {:?}",
                &self.support.input_shape[1..],
                self.query.input_shape.get(1..).unwrap_or(&[])
            )));
        }
        if self.support.target_dim != self.query.target_dim {
            return Err(Error::ShapeMismatch(format!(
                "support targets are {} wide but query targets {}",
                self.support.target_dim, self.query.target_dim
            )));
        }
        for (name, b) in [("support", &self.support), ("query", &self.query)] {
            match (self.kind, &b.labels) {
                (TaskKind::Regression, Some(_)) => {
                    return Err(Error::ShapeMismatch(format!(
                        "a regression episode whose {name} set has class labels"
                    )))
                }
                (TaskKind::Classification { ways }, None) => {
                    return Err(Error::ShapeMismatch(format!(
                        "a {ways}-way classification episode whose {name} set has no labels"
                    )))
                }
                (TaskKind::Classification { ways }, Some(labels)) => {
                    if b.target_dim != ways {
                        return Err(Error::ShapeMismatch(format!(
                            "a {ways}-way episode whose {name} targets are {} wide",
                            b.target_dim
                        )));
                    }
                    if labels.len() != b.len() || labels.iter().any(|&l| l >= ways) {
                        return Err(Error::ShapeMismatch(format!(
                            "{name} labels do not fit {} examples of {ways} classes",
                            b.len()
                        )));
                    }
                }
                (TaskKind::Regression, None) => {}
            }
        }
        Ok(())
    }

    /// Check that the inputs have rank `rank` (batch dimension included).
    pub fn check_rank(&self, rank: usize) -> Result<()> {
        if self.support.input_shape.len() != rank {
            return Err(Error::ShapeMismatch(format!(
                "model takes rank-{rank} inputs but the episode's inputs have shape {:?}",
                self.support.input_shape
            )));
        }
        Ok(())
    }

    /// Check a model's output width against the targets (`None`: unknown, accepted).
    pub fn check_width(&self, width: Option<usize>) -> Result<()> {
        match width {
            Some(w) if w != self.support.target_dim => Err(Error::ShapeMismatch(format!(
                "the model gives {w} outputs but the episode needs {} ({})",
                self.support.target_dim,
                self.kind.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// Tensors on backend `B`.
    pub fn to_episode<B: Backend, const D: usize>(
        &self,
        device: &B::Device,
    ) -> Result<Episode<B, D>> {
        Ok(Episode {
            kind: self.kind,
            support: self.support.to_batch(device)?,
            query: self.query.to_batch(device)?,
        })
    }
}

impl HostBatch {
    /// The examples of `self` followed by those of `other` (same example shape and target width).
    pub fn concat(&self, other: &HostBatch) -> Result<HostBatch> {
        if self.input_shape.get(1..) != other.input_shape.get(1..)
            || self.target_dim != other.target_dim
        {
            return Err(Error::ShapeMismatch(format!(
                "cannot concatenate batches of shapes {:?} and {:?}",
                self.input_shape, other.input_shape
            )));
        }
        let mut input_shape = self.input_shape.clone();
        if let Some(n) = input_shape.first_mut() {
            *n += other.len();
        }
        let labels = match (&self.labels, &other.labels) {
            (Some(a), Some(b)) => Some(a.iter().chain(b).copied().collect()),
            _ => None,
        };
        Ok(HostBatch {
            inputs: self.inputs.iter().chain(&other.inputs).copied().collect(),
            input_shape,
            targets: self.targets.iter().chain(&other.targets).copied().collect(),
            target_dim: self.target_dim,
            labels,
        })
    }
}

impl HostBatch {
    /// The examples at `rows`, in that order (an index may repeat).
    pub fn select(&self, rows: &[usize]) -> Result<HostBatch> {
        let n = self.len();
        if let Some(bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::ShapeMismatch(format!(
                "example {bad} selected from a batch of {n}"
            )));
        }
        let width = self.input_shape.get(1..).map_or(1, |s| s.iter().product());
        let mut input_shape = self.input_shape.clone();
        if let Some(first) = input_shape.first_mut() {
            *first = rows.len();
        }
        let pick = |values: &[f32], w: usize| -> Vec<f32> {
            rows.iter()
                .flat_map(|&r| values[r * w..(r + 1) * w].iter().copied())
                .collect()
        };
        Ok(HostBatch {
            inputs: pick(&self.inputs, width),
            input_shape,
            targets: pick(&self.targets, self.target_dim),
            target_dim: self.target_dim,
            labels: self
                .labels
                .as_ref()
                .map(|l| rows.iter().map(|&r| l[r]).collect()),
        })
    }
}

impl EpisodeData {
    /// The episode with its query examples added to the support set (for learners such as
    /// Reptile that train on all of a meta-training task's data).
    pub fn all_as_support(&self) -> Result<EpisodeData> {
        let all = self.support.concat(&self.query)?;
        Ok(EpisodeData {
            kind: self.kind,
            support: all.clone(),
            query: all,
        })
    }
}

/// A labelled set as tensors.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend, const D: usize> {
    /// `[n, ...]` inputs.
    pub inputs: Tensor<B, D>,
    /// `[n, target_dim]` targets (one-hot for classification).
    pub targets: Tensor<B, 2>,
    /// Class labels (classification only).
    pub labels: Option<Vec<usize>>,
}

/// An episode as tensors.
#[derive(Debug, Clone)]
pub struct Episode<B: Backend, const D: usize> {
    /// What the task asks for.
    pub kind: TaskKind,
    /// Support set.
    pub support: Batch<B, D>,
    /// Query set.
    pub query: Batch<B, D>,
}

/// A distribution over tasks, sampled reproducibly from a seed.
pub trait TaskDistribution: Send + Sync {
    /// What every task of this distribution asks for.
    fn kind(&self) -> TaskKind;
    /// Sample one task; the same seed gives the same episode.
    fn sample(&self, seed: u64) -> Result<EpisodeData>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn select_picks_examples_with_their_targets_and_labels() {
        let b = super::HostBatch::classification(
            vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5],
            vec![3, 2],
            vec![2, 0, 1],
            3,
        )
        .unwrap();
        let s = b.select(&[2, 0, 2]).unwrap();
        assert_eq!(s.input_shape, vec![3, 2]);
        assert_eq!(s.inputs, vec![2.0, 2.5, 0.0, 0.5, 2.0, 2.5]);
        assert_eq!(s.labels, Some(vec![1, 2, 1]));
        assert_eq!(&s.targets[..3], &[0.0, 1.0, 0.0]);
        assert!(b.select(&[3]).is_err(), "out of range is an error");
    }

    use super::*;

    #[test]
    fn bad_shapes_are_errors() {
        assert!(HostBatch::regression(vec![0.0; 3], vec![2, 1], vec![0.0; 2], 1).is_err());
        assert!(HostBatch::classification(vec![0.0; 2], vec![2, 1], vec![0, 5], 2).is_err());
        let b = HostBatch::classification(vec![0.0; 2], vec![2, 1], vec![1, 0], 2).unwrap();
        assert_eq!(b.targets, vec![0.0, 1.0, 1.0, 0.0]);
        let r = b.to_batch::<crate::backend::NdArrayCpu, 4>(&Default::default());
        assert!(matches!(r, Err(Error::ShapeMismatch(_))));
    }
}

//! Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
//! Network").
//!
//! The student is trained on
//!
//! `L = α · T² · KL(softmax(z_teacher / T) ‖ softmax(z_student / T)) + (1 − α) · CE(y, z_student)`
//!
//! ([`distillation_loss`]): soft targets at temperature `T` carry the teacher's "dark knowledge"
//! about how classes resemble each other, and `T²` keeps their gradient scale independent of `T`.
//! The teacher is one model or an ensemble (the average of its members' softened probabilities,
//! [`soft_targets`]); it runs on the plain backend, so it is never updated. Students can be any
//! model with the same number of outputs — smaller Conv4s, MLPs.
//!
//! - [`Distiller`]: supervised distillation on batches (e.g. `metalearn_tasks::ClassBatches`).
//! - [`EpisodicDistiller`]: *meta*-distillation of a metric-based meta-learner: on each few-shot
//!   episode the student's prototype classifier is trained to match the teacher's (soft targets
//!   from the teacher's prototypes). The student is then a Prototypical-Network embedding — an
//!   initialisation that [`ProtoNet`](crate::ProtoNet) can keep meta-training and evaluates with
//!   the standard protocol.
//!
//! Batch norm: the zoo's models normalise with batch statistics; teacher and student see the
//! same batches.

use crate::inner::AB;
use crate::outer::{outer_checkpoint_methods, Outer};
use crate::protonet::{proto_curve, prototype_logits, ways};
use crate::Result as UpdateResult;
use burn::config::Config;
use burn::module::AutodiffModule;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::episode::{EpisodeData, HostBatch, TaskDistribution};
use metalearn_core::error::{check_weights, ensure_positive, Error};

type CoreResult<T> = metalearn_core::Result<T>;
use metalearn_core::learner::{AdaptationCurve, MetaLearner, StepStats};
use metalearn_core::loss::{accuracy, cross_entropy};
use metalearn_core::model::{EmbeddingModule, MetaModule};
use metalearn_core::SeedStream;

/// Distillation hyper-parameters.
///
/// | name | default | meaning | valid |
/// |---|---|---|---|
/// | `temperature` | 4.0 | softmax temperature `T` of the soft targets | > 0 |
/// | `alpha` | 0.9 | weight of the soft-target term (1 − α on the labels) | [0, 1] |
/// | `learning_rate` | 0.001 | Adam learning rate of the student | > 0 |
/// | `transductive` | true | ([`EpisodicDistiller`] evaluation) query batch in one forward pass | — |
///
/// `alpha = 0` trains the student on the labels alone (the baseline every distillation result is
/// compared with); `alpha = 1` on the teacher alone.
#[derive(Config, Debug)]
pub struct DistillConfig {
    /// Temperature `T`.
    #[config(default = 4.0)]
    pub temperature: f64,
    /// Weight α of the soft-target term.
    #[config(default = 0.9)]
    pub alpha: f64,
    /// Adam learning rate of the student.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Evaluate the query batch in one forward pass ([`EpisodicDistiller`]).
    #[config(default = true)]
    pub transductive: bool,
}

impl DistillConfig {
    /// Check every field.
    pub fn validate(&self) -> CoreResult<()> {
        ensure_positive("temperature", self.temperature)?;
        ensure_positive("learning_rate", self.learning_rate)?;
        check_alpha(self.alpha)
    }
}

fn check_alpha(alpha: f64) -> CoreResult<()> {
    if (0.0..=1.0).contains(&alpha) {
        Ok(())
    } else {
        Err(Error::config(
            "alpha",
            format!("must be in [0, 1], got {alpha}"),
        ))
    }
}

/// The teacher's soft targets: `Σₖ wₖ softmax(zₖ / T)` over one or more teachers' logits
/// (weights normalised to sum to 1).
///
/// Errors: no logits, a weight count that differs, negative / non-finite weights or weights not
/// summing to a positive number, `T ≤ 0`, logits of different shapes.
pub fn soft_targets<B: Backend>(
    teacher_logits: &[Tensor<B, 2>],
    weights: &[f64],
    temperature: f64,
) -> CoreResult<Tensor<B, 2>> {
    ensure_positive("temperature", temperature)?;
    let first = teacher_logits.first().ok_or(Error::Empty("teachers"))?;
    let total = check_weights(weights, teacher_logits.len(), "teachers")?;
    let mut acc = Tensor::<B, 2>::zeros(first.dims(), &first.device());
    for (z, &w) in teacher_logits.iter().zip(weights) {
        if z.dims() != first.dims() {
            return Err(Error::ShapeMismatch(format!(
                "teacher logits {:?} and {:?}",
                first.dims(),
                z.dims()
            )));
        }
        acc = acc + softmax(z.clone().mul_scalar(1.0 / temperature), 1).mul_scalar(w / total);
    }
    Ok(acc)
}

/// Hinton et al.'s student loss, averaged over the batch:
/// `α · T² · KL(p ‖ softmax(z / T)) + (1 − α) · CE(y, z)` with `p` = `soft` (the teacher's soft
/// targets at temperature `T`, rows summing to 1), `z` = `student_logits`, `y` = one-hot
/// `labels`. `KL(p‖q) = Σ_c p_c (ln p_c − ln q_c)`; classes with `p_c = 0` contribute 0.
///
/// Errors: `T ≤ 0`, `α ∉ [0, 1]`, shapes that differ.
pub fn distillation_loss<B: Backend>(
    student_logits: Tensor<B, 2>,
    soft: Tensor<B, 2>,
    labels: Tensor<B, 2>,
    temperature: f64,
    alpha: f64,
) -> CoreResult<Tensor<B, 1>> {
    ensure_positive("temperature", temperature)?;
    check_alpha(alpha)?;
    let dims = student_logits.dims();
    if soft.dims() != dims || labels.dims() != dims {
        return Err(Error::ShapeMismatch(format!(
            "student logits {dims:?}, soft targets {:?}, labels {:?}",
            soft.dims(),
            labels.dims()
        )));
    }
    let n = dims[0].max(1) as f64;
    let log_q = log_softmax(student_logits.clone().mul_scalar(1.0 / temperature), 1);
    // p ln p is a constant of the student; the clamp only guards 0 · ln 0.
    let p_log_p = soft.clone() * soft.clone().clamp_min(1e-30).log();
    let kl = (p_log_p - soft * log_q).sum().mul_scalar(1.0 / n);
    let soft_term = kl.mul_scalar(alpha * temperature * temperature);
    let hard_term = cross_entropy(student_logits, labels).mul_scalar(1.0 - alpha);
    Ok(soft_term + hard_term)
}

/// Supervised distillation of a teacher (or an ensemble of teachers) into a student.
///
/// `T` is the teacher type on the plain backend `B` (never updated); `S` the student on
/// `Autodiff<B>`.
pub struct Distiller<B: Backend, S: AutodiffModule<AB<B>>, T, const D: usize> {
    outer: Outer<B, S>,
    teachers: Vec<T>,
    weights: Vec<f64>,
    config: DistillConfig,
    device: B::Device,
}

impl<B: Backend, S: AutodiffModule<AB<B>>, T, const D: usize> std::fmt::Debug
    for Distiller<B, S, T, D>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distiller")
            .field("config", &self.config)
            .field("teachers", &self.teachers.len())
            .field("iterations", &self.outer.iterations())
            .finish()
    }
}

impl<B, S, T, const D: usize> Distiller<B, S, T, D>
where
    B: Backend,
    S: AutodiffModule<AB<B>> + MetaModule<AB<B>, D>,
    T: MetaModule<B, D>,
{
    /// Distil the ensemble `teachers` (weights `weights`, normalised) into `student`.
    ///
    /// Errors: an invalid config, no teachers, bad weights.
    pub fn new(
        config: DistillConfig,
        student: S,
        teachers: Vec<T>,
        weights: Vec<f64>,
        device: B::Device,
    ) -> UpdateResult<Self> {
        config.validate()?;
        if teachers.is_empty() {
            return Err(Error::Empty("teachers").into());
        }
        check_weights(&weights, teachers.len(), "teachers")?;
        Ok(Self {
            outer: Outer::new(student),
            teachers,
            weights,
            config,
            device,
        })
    }

    /// One teacher with weight 1.
    pub fn single(
        config: DistillConfig,
        student: S,
        teacher: T,
        device: B::Device,
    ) -> UpdateResult<Self> {
        Self::new(config, student, vec![teacher], vec![1.0], device)
    }

    /// The student.
    pub fn student(&self) -> &S {
        self.outer.model()
    }

    /// The distillation loss of the student on `batch` (classification, one-hot targets).
    pub fn loss(&self, batch: &HostBatch) -> CoreResult<Tensor<AB<B>, 1>> {
        if batch.is_empty() {
            return Err(Error::Empty("distillation batch (0 examples)"));
        }
        let example = batch.input_shape.get(1..).unwrap_or(&[]);
        let widths = std::iter::once(self.student().output_width(example)?).chain(
            self.teachers
                .iter()
                .map(|t| t.output_width(example))
                .collect::<CoreResult<Vec<_>>>()?,
        );
        for w in widths.flatten() {
            if w != batch.target_dim {
                return Err(Error::ShapeMismatch(format!(
                    "a model gives {w} outputs but the batch has {} classes",
                    batch.target_dim
                )));
            }
        }
        let x = batch.to_batch::<B, D>(&self.device)?;
        let z: Vec<Tensor<B, 2>> = self
            .teachers
            .iter()
            .map(|t| t.forward(x.inputs.clone()))
            .collect();
        let soft = soft_targets(&z, &self.weights, self.config.temperature)?;
        let xs = batch.to_batch::<AB<B>, D>(&self.device)?;
        let out = self.student().forward(xs.inputs);
        distillation_loss(
            out,
            Tensor::from_inner(soft),
            xs.targets,
            self.config.temperature,
            self.config.alpha,
        )
    }

    /// One Adam step of the student on `batch`; returns the loss. On a non-finite loss the
    /// student is left unchanged and the error says so.
    pub fn step(&mut self, batch: &HostBatch) -> CoreResult<f64> {
        let loss = self.loss(batch)?;
        let stats = self
            .outer
            .step_loss(self.config.learning_rate, loss, None)?;
        Ok(stats.meta_loss)
    }

    /// `iterations` steps on batches drawn from `data` (support and query of each draw, e.g.
    /// `metalearn_tasks::ClassBatches`), draw `i` with seed `seed.child(i)`. Returns the losses.
    pub fn fit(
        &mut self,
        data: &dyn TaskDistribution,
        iterations: usize,
        seed: SeedStream,
    ) -> CoreResult<Vec<f64>> {
        (0..iterations)
            .map(|i| {
                let ep = data.sample(seed.child(i as u64).seed())?.all_as_support()?;
                self.step(&ep.support)
            })
            .collect()
    }
}

/// Meta-distillation of a Prototypical-Network teacher into a (smaller) student embedding.
///
/// On each episode: teacher logits = negative squared distances of the teacher's query
/// embeddings to the teacher's prototypes, student logits likewise from the student's
/// embeddings, and the student minimises [`distillation_loss`] between them (the hard term on
/// the query labels). As a [`MetaLearner`] it evaluates like a ProtoNet (prototypes from the
/// support set; no adaptation steps).
pub struct EpisodicDistiller<B: Backend, S: AutodiffModule<AB<B>>, T, const D: usize> {
    outer: Outer<B, S>,
    teacher: T,
    config: DistillConfig,
    meta_batch_size: usize,
    device: B::Device,
}

impl<B: Backend, S: AutodiffModule<AB<B>>, T, const D: usize> std::fmt::Debug
    for EpisodicDistiller<B, S, T, D>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpisodicDistiller")
            .field("config", &self.config)
            .field("iterations", &self.outer.iterations())
            .finish()
    }
}

impl<B, S, T, const D: usize> EpisodicDistiller<B, S, T, D>
where
    B: Backend,
    S: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    S::InnerModule: EmbeddingModule<B, D>,
    T: EmbeddingModule<B, D>,
{
    /// Distil `teacher`'s prototype classifier into `student`, `meta_batch_size` episodes per
    /// update.
    pub fn new(
        config: DistillConfig,
        student: S,
        teacher: T,
        meta_batch_size: usize,
        device: B::Device,
    ) -> UpdateResult<Self> {
        config.validate()?;
        metalearn_core::error::ensure_nonzero("meta_batch_size", meta_batch_size)?;
        Ok(Self {
            outer: Outer::new(student),
            teacher,
            config,
            meta_batch_size,
            device,
        })
    }

    /// The student embedding.
    pub fn student(&self) -> &S {
        self.outer.model()
    }
}

impl<B, S, T, const D: usize> MetaLearner<D> for EpisodicDistiller<B, S, T, D>
where
    B: Backend,
    S: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    S::InnerModule: EmbeddingModule<B, D>,
    T: EmbeddingModule<B, D>,
{
    /// The student embedding and the episode's prototypes.
    type Adapted = (S::InnerModule, Tensor<B, 2>);

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> CoreResult<StepStats> {
        metalearn_core::episode::check_meta_batch(episodes)?;
        let (t, a) = (self.config.temperature, self.config.alpha);
        let mut total: Option<Tensor<AB<B>, 1>> = None;
        let (mut acc, mut n) = (0.0, 0usize);
        for ep in episodes {
            ways(ep)?;
            let s = ep.support.to_batch::<B, D>(&self.device)?;
            let q = ep.query.to_batch::<B, D>(&self.device)?;
            let teacher = prototype_logits(
                self.teacher.embed(s.inputs.clone()),
                s.targets.clone(),
                self.teacher.embed(q.inputs.clone()),
            );
            let soft = soft_targets(&[teacher], &[1.0], t)?;
            let student = prototype_logits(
                self.student().embed(Tensor::from_inner(s.inputs)),
                Tensor::from_inner(s.targets),
                self.student().embed(Tensor::from_inner(q.inputs)),
            );
            if let Some(l) = &q.labels {
                acc += accuracy(student.clone().inner(), l);
                n += 1;
            }
            let loss = distillation_loss(
                student,
                Tensor::from_inner(soft),
                Tensor::from_inner(q.targets),
                t,
                a,
            )?;
            total = Some(match total {
                Some(x) => x + loss,
                None => loss,
            });
        }
        let loss = total
            .ok_or(Error::Empty("meta-batch"))?
            .mul_scalar(1.0 / episodes.len() as f64);
        self.outer.step_loss(
            self.config.learning_rate,
            loss,
            (n > 0).then(|| acc / n as f64),
        )
    }

    fn meta_batch_size(&self) -> usize {
        self.meta_batch_size
    }

    fn adapt(&self, episode: &EpisodeData, _steps: usize) -> CoreResult<Self::Adapted> {
        ways(episode)?;
        let model = self.student().valid();
        let s = episode.support.to_batch::<B, D>(&self.device)?;
        let protos = crate::prototypes(model.embed(s.inputs), s.targets);
        Ok((model, protos))
    }

    fn adaptation_curve(
        &self,
        episode: &EpisodeData,
        _steps: usize,
    ) -> CoreResult<AdaptationCurve> {
        proto_curve(
            &self.student().valid(),
            episode,
            self.config.transductive,
            &self.device,
        )
    }
}

impl<B, S, T, const D: usize> metalearn_core::Checkpoint for EpisodicDistiller<B, S, T, D>
where
    B: Backend,
    S: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    S::InnerModule: EmbeddingModule<B, D>,
    T: EmbeddingModule<B, D>,
{
    // The teacher is fixed (rebuilt by whoever resumes); the state is the student's.
    outer_checkpoint_methods!("EpisodicDistiller");
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalearn_core::loss::scalar;
    use metalearn_core::params;
    // f32 here (unit tests share a process, and NdArray's default float type with it); the
    // f64 finite-difference check of the gradient is in tests/gradcheck_f64.rs.
    type Bk = metalearn_core::backend::NdArrayCpu;

    #[test]
    fn loss_matches_hand_computation() {
        let d = Default::default();
        let z = [[1.0, -0.5, 2.0], [0.3, 0.0, -1.0]];
        let zt = [[2.0, 0.0, 1.0], [-1.0, 1.0, 0.5]];
        let y = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]];
        let (t, a) = (2.5, 0.7);
        let soft = soft_targets(&[Tensor::<Bk, 2>::from_floats(zt, &d)], &[1.0], t).unwrap();
        let loss = distillation_loss(
            Tensor::<Bk, 2>::from_floats(z, &d),
            soft,
            Tensor::<Bk, 2>::from_floats(y, &d),
            t,
            a,
        )
        .unwrap();
        let sm = |v: [f64; 3], t: f64| {
            let e: Vec<f64> = v.iter().map(|x| (x / t).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|x| x / s).collect::<Vec<_>>()
        };
        let mut want = 0.0;
        for i in 0..2 {
            let p = sm(zt[i], t);
            let q = sm(z[i], t);
            let kl: f64 = (0..3).map(|c| p[c] * (p[c].ln() - q[c].ln())).sum();
            let q1 = sm(z[i], 1.0);
            let ce: f64 = -(0..3).map(|c| y[i][c] * q1[c].ln()).sum::<f64>();
            want += (a * t * t * kl + (1.0 - a) * ce) / 2.0;
        }
        assert!((scalar(loss) - want).abs() < 1e-5, "{want}");
    }

    #[test]
    fn ensemble_soft_targets_average_probabilities() {
        let d = Default::default();
        let a = Tensor::<Bk, 2>::from_floats([[1.0, 0.0]], &d);
        let b = Tensor::<Bk, 2>::from_floats([[0.0, 3.0]], &d);
        let p: Vec<f64> = soft_targets(&[a, b], &[1.0, 1.0], 1.0)
            .unwrap()
            .into_data()
            .iter::<f64>()
            .collect();
        let pa = 1.0 / (1.0 + (-1.0f64).exp());
        let pb = 1.0 / (1.0 + 3.0f64.exp());
        assert!((p[0] - 0.5 * (pa + pb)).abs() < 1e-6);
        assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let d = Default::default();
        let z = Tensor::<Bk, 2>::zeros([2, 3], &d);
        let wrong = Tensor::<Bk, 2>::zeros([2, 4], &d);
        assert!(matches!(
            distillation_loss(z.clone(), z.clone(), z.clone(), 0.0, 0.5),
            Err(Error::InvalidConfig {
                field: "temperature",
                ..
            })
        ));
        assert!(matches!(
            distillation_loss(z.clone(), z.clone(), z.clone(), 1.0, 1.5),
            Err(Error::InvalidConfig { field: "alpha", .. })
        ));
        assert!(matches!(
            distillation_loss(z.clone(), wrong.clone(), z.clone(), 1.0, 0.5),
            Err(Error::ShapeMismatch(_))
        ));
        assert!(matches!(
            soft_targets::<Bk>(&[], &[], 1.0),
            Err(Error::Empty(_))
        ));
        assert!(matches!(
            soft_targets(&[z.clone(), wrong], &[1.0, 1.0], 1.0),
            Err(Error::ShapeMismatch(_))
        ));
        assert!(matches!(
            soft_targets(&[z.clone(), z], &[0.0, 0.0], 1.0),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(DistillConfig::new()
            .with_temperature(-1.0)
            .validate()
            .is_err());
        assert!(DistillConfig::new().with_alpha(-0.1).validate().is_err());
        assert!(DistillConfig::new().validate().is_ok());
    }

    /// Blob episodes: 3 classes around fixed centres in 4-D.
    fn blob_batch(seed: u64, n: usize) -> HostBatch {
        use rand::Rng;
        let mut r = metalearn_core::seed::rng(seed);
        let centres = [
            [2.0, 0.0, 0.0, 1.0],
            [0.0, 2.0, 0.0, -1.0],
            [0.0, 0.0, 2.0, 0.0],
        ];
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % 3;
            for v in centres[c] {
                x.push(v + r.random::<f32>() - 0.5);
            }
            y.push(c);
        }
        HostBatch::classification(x, vec![n, 4], y, 3).unwrap()
    }

    #[test]
    fn distiller_student_learns_to_match_its_teacher() {
        use metalearn_zoo::MlpConfig;
        let d = Default::default();
        let teacher = MlpConfig::new(vec![4, 16, 3]).init::<Bk>(1, &d).unwrap();
        let student = MlpConfig::new(vec![4, 8, 3])
            .init::<burn::backend::Autodiff<Bk>>(2, &d)
            .unwrap();
        let mut dist = Distiller::<Bk, _, _, 2>::single(
            DistillConfig::new()
                .with_alpha(1.0)
                .with_learning_rate(1e-2),
            student,
            teacher,
            d,
        )
        .unwrap();
        let batch = blob_batch(0, 60);
        let before = scalar(dist.loss(&batch).unwrap().inner());
        for _ in 0..150 {
            dist.step(&batch).unwrap();
        }
        let after = scalar(dist.loss(&batch).unwrap().inner());
        assert!(after < 0.2 * before, "{before} -> {after}");
        // a non-finite batch is a typed error and leaves the student as it was
        let mut bad = batch.clone();
        bad.targets[0] = f32::NAN;
        let p = params::to_vec(dist.student());
        let r = dist.step(&bad);
        assert!(matches!(r, Err(Error::Diverged { .. })), "{r:?}");
        assert_eq!(p, params::to_vec(dist.student()));
    }

    #[test]
    fn episodic_distiller_lowers_its_loss() {
        use metalearn_core::episode::TaskKind;
        use metalearn_zoo::MlpConfig;
        let d = Default::default();
        let teacher = MlpConfig::new(vec![4, 16, 3]).init::<Bk>(1, &d).unwrap();
        let student = MlpConfig::new(vec![4, 8, 3])
            .init::<burn::backend::Autodiff<Bk>>(2, &d)
            .unwrap();
        let mut dist = EpisodicDistiller::<Bk, _, _, 2>::new(
            DistillConfig::new().with_learning_rate(1e-2),
            student,
            teacher,
            1,
            d,
        )
        .unwrap();
        let ep = EpisodeData {
            kind: TaskKind::Classification { ways: 3 },
            support: blob_batch(1, 9),
            query: blob_batch(2, 15),
        };
        let first = dist.meta_step(std::slice::from_ref(&ep)).unwrap().meta_loss;
        let mut last = first;
        for _ in 0..100 {
            last = dist.meta_step(std::slice::from_ref(&ep)).unwrap().meta_loss;
        }
        assert!(last < 0.5 * first, "{first} -> {last}");
        let curve = dist.adaptation_curve(&ep, 0).unwrap();
        assert_eq!(curve.len(), 1);
    }
}

//! Learner state as bytes: what a checkpoint holds, with an integrity check.
//!
//! A learner that can be checkpointed implements [`Checkpoint`]: it hands out its whole training
//! state — the model, the outer optimiser's state, any learned hyper-parameters (Meta-SGD's
//! rates) and its global iteration counter — as a [`LearnerState`], and takes one back. Every
//! schedule the learners have (Reptile's ε annealing, ProtoNet's learning-rate halving) is a
//! function of the iteration counter, and the episodes of iteration `i` are drawn with seeds
//! derived from `i` ([`MetaLearner::meta_train`](crate::MetaLearner::meta_train)), so no random
//! number generator state needs saving: restoring a state and continuing gives bit-identical
//! parameters to a run that never stopped.
//!
//! [`LearnerState::to_bytes`] writes a self-describing container (magic, version, a JSON header
//! naming the parts, the parts, and a SHA-256 of everything before it); [`LearnerState::from_bytes`]
//! refuses a truncated or altered file with [`Error::Corrupt`] before decoding anything. Parts
//! are burn records in named MessagePack ([`record_to_bytes`]), whose decoder reports errors
//! instead of panicking.

use crate::episode::EpisodeData;
use crate::learner::{AdaptationCurve, MetaLearner, StepMetrics, StepStats};
use crate::{Error, Result};
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const MAGIC: &[u8; 8] = b"MLSTATE\0";
const VERSION: u32 = 1;
/// Parts whose name starts with this prefix hold optimiser state: needed to resume training,
/// not to use the model ([`LearnerState::without_optimizer`]).
pub const OPTIMIZER_PREFIX: &str = "optim";

/// The training state of a learner: named binary parts plus its iteration counter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LearnerState {
    /// Which learner wrote it (e.g. `"MAML"`); checked on load.
    pub learner: String,
    /// Meta-iterations done.
    pub iterations: usize,
    /// Named parts (`"model"`, `"optim"`, …), each a burn record or JSON.
    pub parts: BTreeMap<String, Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    learner: String,
    iterations: usize,
    parts: Vec<(String, usize)>,
}

impl LearnerState {
    /// An empty state for `learner` at `iterations`.
    pub fn new(learner: impl Into<String>, iterations: usize) -> Self {
        Self {
            learner: learner.into(),
            iterations,
            parts: BTreeMap::new(),
        }
    }

    /// Add a part.
    pub fn with_part(mut self, name: impl Into<String>, bytes: Vec<u8>) -> Self {
        self.parts.insert(name.into(), bytes);
        self
    }

    /// The part called `name`, or [`Error::Corrupt`] naming it.
    pub fn part(&self, name: &str) -> Result<&[u8]> {
        self.parts
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::corrupt("learner state", format!("has no part `{name}`")))
    }

    /// Fail unless the state was written by `learner`.
    pub fn expect_learner(&self, learner: &str) -> Result<()> {
        if self.learner == learner {
            Ok(())
        } else {
            Err(Error::corrupt(
                "learner state",
                format!("was written by {}, not {learner}", self.learner),
            ))
        }
    }

    /// The state without optimiser parts: what using (not resuming) the model needs.
    pub fn without_optimizer(mut self) -> Self {
        self.parts.retain(|k, _| !k.starts_with(OPTIMIZER_PREFIX));
        self
    }

    /// Serialise with a trailing SHA-256 checksum.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = Header {
            learner: self.learner.clone(),
            iterations: self.iterations,
            parts: self
                .parts
                .iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect(),
        };
        let header = serde_json::to_vec(&header).map_err(|e| Error::Serde(e.to_string()))?;
        let body: usize = self.parts.values().map(Vec::len).sum();
        let mut out = Vec::with_capacity(8 + 4 + 8 + header.len() + body + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for v in self.parts.values() {
            out.extend_from_slice(v);
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Parse bytes written by [`to_bytes`](Self::to_bytes); a wrong magic, a truncated file or
    /// any flipped bit gives [`Error::Corrupt`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: &str| Error::corrupt("learner state", reason.to_string());
        if bytes.len() < 8 + 4 + 8 + 32 || &bytes[..8] != MAGIC {
            return Err(bad(
                "is not a metalearn state file (bad magic or too short)",
            ));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad("checksum mismatch (truncated or altered)"));
        }
        let version = u32::from_le_bytes(body[8..12].try_into().map_err(|_| bad("short"))?);
        if version != VERSION {
            return Err(bad(&format!(
                "has format version {version}, this build reads {VERSION}"
            )));
        }
        let hlen = u64::from_le_bytes(body[12..20].try_into().map_err(|_| bad("short"))?) as usize;
        let rest = &body[20..];
        if hlen > rest.len() {
            return Err(bad("header longer than the file"));
        }
        let header: Header =
            serde_json::from_slice(&rest[..hlen]).map_err(|e| bad(&format!("header: {e}")))?;
        let mut at = hlen;
        let mut parts = BTreeMap::new();
        for (name, len) in header.parts {
            let end = at
                .checked_add(len)
                .filter(|&e| e <= rest.len())
                .ok_or_else(|| bad("part longer than the file"))?;
            parts.insert(name, rest[at..end].to_vec());
            at = end;
        }
        if at != rest.len() {
            return Err(bad("trailing bytes after the last part"));
        }
        Ok(Self {
            learner: header.learner,
            iterations: header.iterations,
            parts,
        })
    }
}

/// Encode a burn record (a module's, an optimiser's) at full precision.
pub fn record_to_bytes<B: Backend, R: Record<B>>(record: R) -> Result<Vec<u8>> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(record, ())
        .map_err(|e| Error::Serde(e.to_string()))
}

/// Decode a burn record written by [`record_to_bytes`] onto `device`.
pub fn record_from_bytes<B: Backend, R: Record<B>>(bytes: &[u8], device: &B::Device) -> Result<R> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .load(bytes.to_vec(), device)
        .map_err(|e| Error::corrupt("record", e.to_string()))
}

/// A module's parameters (and parameter ids) as bytes.
pub fn module_to_bytes<B: Backend, M: Module<B>>(module: &M) -> Result<Vec<u8>> {
    record_to_bytes::<B, _>(module.clone().into_record())
}

/// Load parameters written by [`module_to_bytes`] into `module`, refusing a record whose
/// parameter shapes differ from the module's (a different architecture or number of ways).
pub fn load_module_bytes<B: Backend, M: Module<B>>(
    module: M,
    bytes: &[u8],
    device: &B::Device,
) -> Result<M> {
    let record = record_from_bytes::<B, M::Record>(bytes, device)?;
    let before = shapes(&module);
    let loaded = module.load_record(record);
    let after = shapes(&loaded);
    if before != after {
        return Err(Error::ShapeMismatch(format!(
            "saved parameters have shapes {after:?}, the model has {before:?}"
        )));
    }
    Ok(loaded)
}

fn shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    crate::params::tensors(module)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// A learner whose whole training state can be saved and restored.
pub trait Checkpoint {
    /// A short stable name (`"MAML"`, `"Reptile"`), stored in the state and checked on load.
    fn learner_name(&self) -> &'static str;

    /// Meta-iterations done so far (global: it continues across `meta_train` calls and resumes).
    fn iterations(&self) -> usize;

    /// The learned parameters (the model's, then any learned hyper-parameters such as
    /// Meta-SGD's rates) as host values in visiting order: what "the same model" means when
    /// two runs are compared (parameter ids differ between processes, values must not).
    fn parameters(&self) -> Vec<f64>;

    /// Everything needed to continue training exactly: model, optimiser state, learned
    /// hyper-parameters, iteration counter.
    fn state(&self) -> Result<LearnerState>;

    /// Restore a state from [`state`](Self::state). A state without optimiser parts
    /// ([`LearnerState::without_optimizer`]) restores the model and keeps a fresh optimiser.
    /// On error the learner is left as it was.
    fn load_state(&mut self, state: &LearnerState) -> Result<()>;
}

/// An object-safe learner: what a training program that picks its learner at run time (from a
/// file, by name) needs. Build one with [`DynLearner::boxed`].
pub trait AnyLearner: Checkpoint + Send + Sync {
    /// One meta-update ([`MetaLearner::meta_step`]).
    fn meta_step(&mut self, episodes: &[EpisodeData]) -> Result<StepStats>;
    /// Episodes per meta-update.
    fn meta_batch_size(&self) -> usize;
    /// Query metrics after `steps` adaptation steps ([`MetaLearner::evaluate`]).
    fn evaluate(&self, episode: &EpisodeData, steps: usize) -> Result<StepMetrics>;
    /// Query metrics after 0..=`steps` adaptation steps ([`MetaLearner::adaptation_curve`]).
    fn adaptation_curve(&self, episode: &EpisodeData, steps: usize) -> Result<AdaptationCurve>;
    /// Query outputs after `steps` adaptation steps ([`MetaLearner::predict`]).
    fn predict(&self, episode: &EpisodeData, steps: usize) -> Result<Vec<f32>>;
}

/// Wraps a [`MetaLearner`] over rank-`D` inputs as an [`AnyLearner`].
#[derive(Debug)]
pub struct DynLearner<L, const D: usize>(pub L);

impl<L, const D: usize> DynLearner<L, D>
where
    L: MetaLearner<D> + Checkpoint + Send + Sync + 'static,
{
    /// Box `learner` as an [`AnyLearner`].
    pub fn boxed(learner: L) -> Box<dyn AnyLearner> {
        Box::new(Self(learner))
    }
}

impl<L: Checkpoint, const D: usize> Checkpoint for DynLearner<L, D> {
    fn learner_name(&self) -> &'static str {
        self.0.learner_name()
    }
    fn iterations(&self) -> usize {
        self.0.iterations()
    }
    fn parameters(&self) -> Vec<f64> {
        self.0.parameters()
    }
    fn state(&self) -> Result<LearnerState> {
        self.0.state()
    }
    fn load_state(&mut self, state: &LearnerState) -> Result<()> {
        self.0.load_state(state)
    }
}

impl<L, const D: usize> AnyLearner for DynLearner<L, D>
where
    L: MetaLearner<D> + Checkpoint + Send + Sync,
{
    fn meta_step(&mut self, episodes: &[EpisodeData]) -> Result<StepStats> {
        self.0.meta_step(episodes)
    }
    fn meta_batch_size(&self) -> usize {
        self.0.meta_batch_size()
    }
    fn evaluate(&self, episode: &EpisodeData, steps: usize) -> Result<StepMetrics> {
        self.0.evaluate(episode, steps)
    }
    fn adaptation_curve(&self, episode: &EpisodeData, steps: usize) -> Result<AdaptationCurve> {
        self.0.adaptation_curve(episode, steps)
    }
    fn predict(&self, episode: &EpisodeData, steps: usize) -> Result<Vec<f32>> {
        self.0.predict(episode, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LearnerState {
        LearnerState::new("MAML", 7)
            .with_part("model", vec![1, 2, 3, 4])
            .with_part("optim", vec![9; 100])
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let b = s.to_bytes().unwrap();
        assert_eq!(LearnerState::from_bytes(&b).unwrap(), s);
    }

    #[test]
    fn truncation_and_bit_flips_are_detected() {
        let b = sample().to_bytes().unwrap();
        for cut in [0, 5, 20, b.len() / 2, b.len() - 1] {
            let e = LearnerState::from_bytes(&b[..cut]).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        }
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(LearnerState::from_bytes(&c).is_err(), "flip at byte {i}");
        }
    }

    #[test]
    fn without_optimizer_keeps_the_model() {
        let s = sample().without_optimizer();
        assert!(s.part("model").is_ok());
        assert!(s.part("optim").is_err());
        assert!(s.expect_learner("Reptile").is_err());
    }
}

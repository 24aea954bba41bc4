//! Seeding: every random choice in metalearn flows from a `u64` seed.
//!
//! [`SeedStream`] derives independent child seeds with SplitMix64, so that e.g. the seed of task
//! `j` of meta-batch `i` depends only on `(seed, i, j)` and not on thread scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The random generator used everywhere (portable and stable across platforms and versions).
pub type Rng = ChaCha8Rng;

/// Build the crate's RNG from a seed.
pub fn rng(seed: u64) -> Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// SplitMix64 finaliser: a bijective mixing of a 64-bit value.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic tree of seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeedStream {
    seed: u64,
}

impl SeedStream {
    /// Root of the stream.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The seed of this node.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Child stream number `index` (independent of every other index).
    pub fn child(&self, index: u64) -> Self {
        Self {
            seed: mix(self.seed ^ mix(index.wrapping_add(0xA076_1D64_78BD_642F))),
        }
    }

    /// Child stream for a named purpose (e.g. `"init"`, `"train"`, `"test"`).
    pub fn named(&self, name: &str) -> Self {
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        self.child(h)
    }

    /// An RNG seeded from this node.
    pub fn rng(&self) -> Rng {
        rng(self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_distinct_and_stable() {
        let s = SeedStream::new(7);
        assert_eq!(s.child(3), SeedStream::new(7).child(3));
        assert_ne!(s.child(3), s.child(4));
        assert_ne!(s.named("train"), s.named("test"));
    }
}

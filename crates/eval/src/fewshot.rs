//! The standard few-shot classification protocol and the published numbers to compare with.

use crate::steps::{meta_test_final, StepsCurve};
use crate::Result;
use metalearn_core::{MetaLearner, SeedStream, TaskDistribution};
use serde::{Deserialize, Serialize};

/// An N-way K-shot evaluation setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// Classes per episode.
    pub ways: usize,
    /// Support examples per class.
    pub shots: usize,
}

impl Setting {
    /// The four Omniglot settings every paper reports: 5-way 1/5-shot, 20-way 1/5-shot.
    pub const OMNIGLOT: [Setting; 4] = [
        Setting { ways: 5, shots: 1 },
        Setting { ways: 5, shots: 5 },
        Setting { ways: 20, shots: 1 },
        Setting { ways: 20, shots: 5 },
    ];

    /// `5-way 1-shot`.
    pub fn label(&self) -> String {
        format!("{}-way {}-shot", self.ways, self.shots)
    }
}

/// Query examples per class in the standard protocol.
pub const QUERY_PER_CLASS: usize = 15;

/// Published Omniglot accuracies (%) in the order of [`Setting::OMNIGLOT`].
///
/// MAML and first-order MAML: Finn et al. 2017, Table 1; Prototypical Networks: Snell et al.
/// 2017, Table 1; Reptile: Nichol et al. 2018, Table 1 ("Reptile + Transduction" for `Reptile`,
/// whose evaluation here is transductive by default, and "Reptile" for
/// `Reptile (non-transductive)`); Meta-SGD: Li et al. 2017, Table 1; ANIL: Raghu et al. 2020,
/// Table 2 (20-way only); MAML++: Antoniou et al. 2019, Table 1. BOIL (Oh et al. 2021) reports
/// no Omniglot numbers.
pub fn published(learner: &str) -> Option<[Option<f64>; 4]> {
    Some(match learner {
        "MAML" => [Some(98.7), Some(99.9), Some(95.8), Some(98.9)],
        "FOMAML" => [Some(98.3), Some(99.2), Some(89.4), Some(97.9)],
        "ProtoNet" => [Some(98.8), Some(99.7), Some(96.0), Some(98.9)],
        "Reptile" => [Some(97.68), Some(99.48), Some(89.43), Some(97.12)],
        "Reptile (non-transductive)" => [Some(95.39), Some(98.90), Some(88.14), Some(96.65)],
        "Meta-SGD" => [Some(99.53), Some(99.93), Some(95.93), Some(98.97)],
        "ANIL" => [None, None, Some(96.2), Some(98.0)],
        "MAML++" => [Some(99.47), Some(99.93), Some(97.76), Some(99.65)],
        _ => return None,
    })
}

/// One learner's result in one setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingResult {
    /// The setting.
    pub setting: Setting,
    /// Adaptation steps at test time.
    pub test_steps: usize,
    /// Query metrics over the test episodes: after `test_steps` steps (the last point; the
    /// benchmark scores only that one, `meta_test_final`) or after 0..=test_steps steps.
    pub curve: StepsCurve,
}

impl SettingResult {
    /// Final accuracy (%) and its 95% CI half-width.
    pub fn accuracy_pct(&self) -> Option<(f64, f64)> {
        let p = self.curve.points.last()?;
        let a = p.accuracy.as_ref()?;
        Some((100.0 * a.mean, 100.0 * a.ci95))
    }
}

/// Test episodes of one setting, e.g. N-way K-shot episodes of the meta-test classes with
/// [`QUERY_PER_CLASS`] queries per class.
pub type SettingTasks<'a> =
    dyn Fn(Setting) -> metalearn_core::Result<Box<dyn TaskDistribution>> + 'a;

/// The standard protocol over several settings: `learner` adapted with `steps` steps (its
/// query metrics after the last one) on `episodes` test episodes of each of `settings`, drawn
/// from `tasks(setting)`. Setting `(ways, shots)` draws its episodes from
/// `seed.child(100 · ways + shots)`, so adding or dropping a setting leaves the others'
/// episodes — and numbers — unchanged.
pub fn test_settings<L: MetaLearner<D> + Sync, const D: usize>(
    learner: &L,
    tasks: &SettingTasks<'_>,
    settings: &[Setting],
    episodes: usize,
    steps: usize,
    seed: SeedStream,
) -> Result<Vec<SettingResult>> {
    settings
        .iter()
        .map(|&setting| {
            let t = tasks(setting)?;
            let seed = seed.child(setting.ways as u64 * 100 + setting.shots as u64);
            Ok(SettingResult {
                setting,
                test_steps: steps,
                curve: meta_test_final(learner, t.as_ref(), episodes, steps, seed)?,
            })
        })
        .collect()
}

/// Markdown table: one row per learner, one column per setting, ours ± CI beside the published.
pub fn markdown_table(rows: &[(String, Vec<SettingResult>)]) -> String {
    let mut s = String::from("| learner |");
    for set in Setting::OMNIGLOT {
        s.push_str(&format!(
            " {} (ours) | {} (paper) |",
            set.label(),
            set.label()
        ));
    }
    s.push_str("\n|---|");
    for _ in Setting::OMNIGLOT {
        s.push_str("---|---|");
    }
    s.push('\n');
    for (name, results) in rows {
        s.push_str(&format!("| {name} |"));
        let paper = published(name);
        for (k, set) in Setting::OMNIGLOT.iter().enumerate() {
            let ours = results
                .iter()
                .find(|r| r.setting == *set)
                .and_then(SettingResult::accuracy_pct)
                .map_or("—".to_string(), |(m, c)| format!("{m:.1} ± {c:.1}"));
            let p = paper
                .and_then(|p| p[k])
                .map_or("—".to_string(), |v| format!("{v}"));
            s.push_str(&format!(" {ours} | {p} |"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalearn_core::learner::StepMetrics;

    #[test]
    fn table_has_ours_and_paper() {
        let curve = StepsCurve::from_curves(&[vec![StepMetrics {
            steps: 0,
            loss: 0.1,
            accuracy: Some(0.9),
        }]])
        .unwrap();
        let r = SettingResult {
            setting: Setting::OMNIGLOT[0],
            test_steps: 0,
            curve,
        };
        let t = markdown_table(&[("MAML".into(), vec![r])]);
        assert!(t.contains("| MAML | 90.0 ± 0.0 | 98.7 |"), "{t}");
        assert!(t.contains("—"));
    }

    /// Nearest class mean of the support set, on the host: adaptation without parameters.
    struct NearestMean;

    impl MetaLearner<2> for NearestMean {
        type Adapted = ();
        fn meta_step(
            &mut self,
            _: &[metalearn_core::episode::EpisodeData],
        ) -> metalearn_core::Result<metalearn_core::learner::StepStats> {
            Err(metalearn_core::Error::Unsupported("no training".into()))
        }
        fn meta_batch_size(&self) -> usize {
            1
        }
        fn adapt(
            &self,
            _: &metalearn_core::episode::EpisodeData,
            _: usize,
        ) -> metalearn_core::Result<()> {
            Ok(())
        }
        fn adaptation_curve(
            &self,
            ep: &metalearn_core::episode::EpisodeData,
            steps: usize,
        ) -> metalearn_core::Result<Vec<StepMetrics>> {
            let metalearn_core::TaskKind::Classification { ways } = ep.kind else {
                return Err(metalearn_core::Error::Unsupported("classification".into()));
            };
            let dim = ep.support.input_shape[1..].iter().product::<usize>();
            let labels = |b: &metalearn_core::episode::HostBatch| -> Vec<usize> {
                b.labels.clone().unwrap_or_default()
            };
            let mut means = vec![vec![0.0f64; dim]; ways];
            let mut counts = vec![0.0; ways];
            for (x, &l) in ep.support.inputs.chunks(dim).zip(&labels(&ep.support)) {
                counts[l] += 1.0;
                for (m, v) in means[l].iter_mut().zip(x) {
                    *m += f64::from(*v);
                }
            }
            let q = labels(&ep.query);
            let correct = ep
                .query
                .inputs
                .chunks(dim)
                .zip(&q)
                .filter(|(x, &l)| {
                    let d = |c: usize| -> f64 {
                        x.iter()
                            .zip(&means[c])
                            .map(|(v, m)| (f64::from(*v) - m / counts[c]).powi(2))
                            .sum()
                    };
                    (0..ways).all(|c| d(l) <= d(c))
                })
                .count();
            let acc = correct as f64 / q.len() as f64;
            Ok((0..=steps)
                .map(|steps| StepMetrics {
                    steps,
                    loss: 1.0 - acc,
                    accuracy: Some(acc),
                })
                .collect())
        }
    }

    #[test]
    fn test_settings_runs_each_setting_on_its_own_episodes() {
        use metalearn_tasks::{InMemoryClasses, NWayKShot, NWayKShotConfig};
        use std::sync::Arc;
        // 30 classes of 2-D points: class c around (c, 0) with a spread of about one class
        // spacing (hashed noise), so nearest-mean gets many but not all queries right.
        let noise = |a: usize, b: usize| ((a * 7919 + b * 104_729) % 1009) as f32 / 1009.0 - 0.5;
        let blocks: Vec<Vec<f32>> = (0..30)
            .map(|c| {
                (0..25)
                    .flat_map(|i| [c as f32 + 2.5 * noise(i, c), 2.5 * noise(c + 31, i + 7)])
                    .collect()
            })
            .collect();
        let data = Arc::new(InMemoryClasses::new(vec![2], blocks).unwrap());
        let tasks = |s: Setting| -> metalearn_core::Result<Box<dyn TaskDistribution>> {
            Ok(Box::new(NWayKShot::new(
                data.clone(),
                NWayKShotConfig::new(s.ways, s.shots, QUERY_PER_CLASS.min(10)),
            )?))
        };
        let seed = SeedStream::new(3);
        let all = test_settings(&NearestMean, &tasks, &Setting::OMNIGLOT, 20, 2, seed).unwrap();
        assert_eq!(all.len(), 4);
        for r in &all {
            assert_eq!(r.test_steps, 2);
            assert_eq!(r.curve.points.len(), 1, "the last step only");
            let (acc, ci) = r.accuracy_pct().unwrap();
            let chance = 100.0 / r.setting.ways as f64;
            assert!(
                acc > 3.0 * chance && acc < 100.0,
                "{}: {acc}",
                r.setting.label()
            );
            assert!(ci >= 0.0);
        }
        // 5-shot means are better estimates than 1-shot ones.
        let acc: Vec<f64> = all.iter().map(|r| r.accuracy_pct().unwrap().0).collect();
        // Means of 5 shots beat single shots.
        assert!(acc[1] > acc[0] && acc[3] > acc[2], "{acc:?}");
        // A setting's numbers do not depend on which other settings run.
        let one =
            test_settings(&NearestMean, &tasks, &Setting::OMNIGLOT[2..3], 20, 2, seed).unwrap();
        assert_eq!(one[0], all[2]);
        // A setting the classes cannot satisfy is an error, not a panic.
        let too_many = [Setting { ways: 31, shots: 1 }];
        assert!(test_settings(&NearestMean, &tasks, &too_many, 2, 0, seed).is_err());
    }
}

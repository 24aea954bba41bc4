//! The standard few-shot classification protocol and the published numbers to compare with.

use crate::steps::StepsCurve;
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
/// Table 2 (20-way only).
pub fn published(learner: &str) -> Option<[Option<f64>; 4]> {
    Some(match learner {
        "MAML" => [Some(98.7), Some(99.9), Some(95.8), Some(98.9)],
        "FOMAML" => [Some(98.3), Some(99.2), Some(89.4), Some(97.9)],
        "ProtoNet" => [Some(98.8), Some(99.7), Some(96.0), Some(98.9)],
        "Reptile" => [Some(97.68), Some(99.48), Some(89.43), Some(97.12)],
        "Reptile (non-transductive)" => [Some(95.39), Some(98.90), Some(88.14), Some(96.65)],
        "Meta-SGD" => [Some(99.53), Some(99.93), Some(95.93), Some(98.97)],
        "ANIL" => [None, None, Some(96.2), Some(98.0)],
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
}

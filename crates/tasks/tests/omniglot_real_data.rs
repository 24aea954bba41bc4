//! Omniglot on the real data (read through the same loader users run). Needs `METALEARN_DATA`
//! pointing at a folder that holds `omniglot/images_background.zip` and
//! `omniglot/images_evaluation.zip` (CI sets it to `../shared/data`); without it the tests say
//! loudly that they were skipped.
#![allow(clippy::unwrap_used)]

use metalearn_core::TaskDistribution;
use metalearn_tasks::{
    ClassDataset, NWayKShot, NWayKShotConfig, Omniglot, OmniglotConfig, OmniglotSplit,
};
use std::sync::Arc;

fn load() -> Option<Arc<Omniglot>> {
    let Some(dir) = std::env::var_os("METALEARN_DATA") else {
        eprintln!(
            "\n!!!!! SKIPPED: METALEARN_DATA is not set; Omniglot real-data test not run !!!!!\n"
        );
        return None;
    };
    let dir = std::path::PathBuf::from(dir);
    Some(Arc::new(
        Omniglot::load(Some(&dir), &OmniglotConfig::new()).unwrap(),
    ))
}

#[test]
fn real_omniglot_counts_pixels_splits_and_rotations() {
    let Some(o) = load() else { return };
    let (bg, ev) = o.lake_split();
    assert_eq!(bg.len(), 964);
    assert_eq!(ev.len(), 659);
    assert_eq!(o.drawers(), 20);
    let alphabets: std::collections::BTreeSet<_> =
        o.characters().iter().map(|c| c.alphabet.clone()).collect();
    assert_eq!(alphabets.len(), 50);

    // Pixel format: 28×28, values in [0, 1], ink = 1 (mostly background: ~8% ink at 105×105).
    let img = o.image(0, 0).unwrap();
    assert_eq!(img.len(), 28 * 28);
    assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
    let mean: f32 = (0..50)
        .map(|c| o.image(c * 30, 3).unwrap().iter().sum::<f32>() / 784.0)
        .sum::<f32>()
        / 50.0;
    assert!(mean > 0.03 && mean < 0.25, "mean ink {mean}");

    let (train, val, test) = o.vinyals_split();
    assert_eq!((train.len(), val.len(), test.len()), (1100, 100, 423));
    let mut all: Vec<_> = train.iter().chain(&val).chain(&test).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1623);

    // The named splits (what experiment files and the bench suites load).
    let [tr, va, te] = o.split(OmniglotSplit::Vinyals, true);
    assert_eq!(
        (tr.num_classes(), va.num_classes(), te.num_classes()),
        (4400, 400, 1692)
    );
    let [tr, va, te] = o.split(OmniglotSplit::Lake, false);
    assert_eq!(
        (tr.num_classes(), va.num_classes(), te.num_classes()),
        (864, 100, 659)
    );
    // Lake: validation characters are background characters not trained on.
    let mut a = Vec::new();
    let mut b = Vec::new();
    va.write_example(0, 0, &mut a).unwrap();
    for c in 0..tr.num_classes() {
        b.clear();
        tr.write_example(c, 0, &mut b).unwrap();
        assert_ne!(a, b, "validation character 0 is training class {c}");
    }

    // Rotations are distinct classes with distinct images.
    let classes = o.classes(test.clone(), true);
    assert_eq!(classes.num_classes(), 423 * 4);
    let imgs: Vec<Vec<f32>> = (0..4)
        .map(|r| {
            let mut v = Vec::new();
            classes.write_example(r, 0, &mut v).unwrap();
            v
        })
        .collect();
    for a in 0..4 {
        for b in a + 1..4 {
            assert_ne!(imgs[a], imgs[b], "rotations {a} and {b} coincide");
        }
    }
    let s = NWayKShot::new(Arc::new(classes), NWayKShotConfig::new(20, 5, 15)).unwrap();
    let ep = s.sample(0).unwrap();
    assert_eq!(ep.support.input_shape, vec![100, 1, 28, 28]);
    assert_eq!(ep.query.input_shape, vec![300, 1, 28, 28]);

    // The cache makes later loads fast and identical.
    let again = Omniglot::load(None, &OmniglotConfig::new()).unwrap();
    assert_eq!(again.image(7, 7), o.image(7, 7));
}

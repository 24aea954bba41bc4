//! `metalearn adapt`: the shipped ProtoNet model classifies a user's own images (Omniglot
//! characters it never saw, written as PNG files), and a folder of the user's images trains and
//! tests.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use metalearn::experiment::{Experiment, FolderSplit, OmniglotSplit};
use metalearn::run::{adapt, omniglot_classes, train};
use metalearn::tasks::ClassDataset;
use metalearn::train::Progress;
use std::path::Path;

use crate::common;

/// Write a 28×28 image with ink = 1 as a PNG of dark ink on white, as scanned characters are.
fn write_png(path: &Path, pixels: &[f32], size: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes: Vec<u8> = pixels
        .iter()
        .map(|&v| (255.0 * (1.0 - v.clamp(0.0, 1.0))).round() as u8)
        .collect();
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, size as u32, size as u32);
        e.set_color(png::ColorType::Grayscale);
        e.set_depth(png::BitDepth::Eight);
        let mut w = e.write_header().unwrap();
        w.write_image_data(&bytes).unwrap();
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn adapt_classifies_new_characters_far_above_chance() {
    let root = std::env::temp_dir().join(format!("ml-adapt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // A model as a user downloads it: the shipped directory (experiment file and `best/`),
    // read only. (Training then adapting is `a_folder_of_the_users_images_trains_and_tests`.)
    let run =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/omniglot/protonet-5way-1shot");

    // Five test-split characters (never seen in training): one labelled drawing each, and
    // four more drawings of each to classify.
    let [_, _, test] = omniglot_classes(OmniglotSplit::Vinyals, false, 28).unwrap();
    let (support, query) = (root.join("support"), root.join("query"));
    let mut truth = Vec::new();
    let mut img = Vec::new();
    for (k, class) in [3usize, 50, 111, 222, 400].into_iter().enumerate() {
        let name = format!("char{k}");
        for i in 0..5 {
            img.clear();
            test.write_example(class, i, &mut img).unwrap();
            if i == 0 {
                write_png(&support.join(&name).join("0.png"), &img, 28);
            } else {
                let file = format!("{name}_{i}.png");
                write_png(&query.join(&file), &img, 28);
                truth.push((file, name.clone()));
            }
        }
    }
    let predictions = adapt(&run, &support, &query, None).unwrap();
    assert_eq!(predictions.len(), 20);
    let correct = predictions
        .iter()
        .filter(|p| truth.iter().any(|(f, c)| *f == p.file && *c == p.class))
        .count();
    // Chance is 4 of 20; the shipped model scores 99.3% on 5-way 1-shot test episodes.
    assert!(correct >= 17, "{correct}/20 correct: {predictions:#?}");
    for p in &predictions {
        let s: f64 = p.probabilities.iter().sum();
        assert!((s - 1.0).abs() < 1e-6 && p.probability <= 1.0);
    }

    // The command prints one line per query image.
    let out = common::run_ok([
        "adapt".as_ref(),
        "--run-dir".as_ref(),
        run.as_os_str(),
        "--support".as_ref(),
        support.as_os_str(),
        "--query".as_ref(),
        query.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 20, "{text}");
    assert!(text.lines().all(|l| l.split('\t').count() == 3), "{text}");

    // A folder of the wrong kind is an error, not a panic.
    let e = adapt(&run, &query, &query, None).unwrap_err().to_string();
    assert!(e.contains("class folders"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// `[task] source = "folder"`: Omniglot characters written as a folder of PNG class folders
/// (dark ink on white, as a user's scans would be) train a ProtoNet that classifies the
/// folder's held-out classes far above chance — the same path a user's own dataset takes.
#[test]
fn a_folder_of_the_users_images_trains_and_tests() {
    let root = std::env::temp_dir().join(format!("ml-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let [_, _, test] = omniglot_classes(OmniglotSplit::Vinyals, false, 28).unwrap();
    let images = root.join("images");
    let mut img = Vec::new();
    for class in 0..40 {
        for i in 0..10 {
            img.clear();
            test.write_example(class * 10, i, &mut img).unwrap();
            write_png(
                &images.join(format!("c{class:02}")).join(format!("{i}.png")),
                &img,
                28,
            );
        }
    }
    let text = format!(
        r#"
seed = 5
[task]
source = "folder"
path = "{}"
val_fraction = 0.2
test_fraction = 0.25
image_size = 28
grayscale = true
invert = true
ways = 5
shots = 1
queries = 5
[learner]
kind = "protonet"
[budget]
iterations = 60
validate_every = 30
val_episodes = 20
checkpoint_every = 30
[eval]
episodes = 40
queries = 5
"#,
        images.display()
    );
    // 15 test queries per class need 16 images per class: named, not a panic.
    let e = metalearn::run::tasks(
        &Experiment::parse(
            &text.replace("episodes = 40\nqueries = 5", "episodes = 40"),
            "f.toml",
        )
        .unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("the test split") && e.contains("10 examples"),
        "{e}"
    );
    let exp = Experiment::parse(&text, "folder.toml").unwrap();
    let run = root.join("run");
    let s = train(&exp, &run, Progress::Quiet).unwrap();
    assert_eq!(s.iterations, 60);
    let r = metalearn::run::eval(&run, Default::default()).unwrap();
    let acc = r.accuracy.unwrap();
    // 10 test classes the model never saw; chance is 20%.
    assert!(
        acc > 0.55,
        "5-way 1-shot accuracy {acc} on the folder's test classes"
    );
    // The split is by whole classes: disjoint, covering every folder (40 = 22 + 8 + 10).
    let image = metalearn::tasks::ImageFolderConfig::new()
        .with_size(28)
        .with_grayscale(true)
        .with_invert(true);
    let splits =
        metalearn::run::folder_classes(&images, FolderSplit::Random, (0.2, 0.25), 0, image)
            .unwrap();
    let mut names: Vec<&String> = splits.iter().flat_map(|s| &s.names).collect();
    assert_eq!(
        splits.iter().map(|s| s.names.len()).collect::<Vec<_>>(),
        [22, 8, 10]
    );
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 40);
    // … and the same on every call (split_seed).
    let a = metalearn::run::tasks(&exp).unwrap();
    let b = metalearn::run::tasks(&exp).unwrap();
    assert_eq!(
        a.test.sample(7).unwrap().support.inputs,
        b.test.sample(7).unwrap().support.inputs
    );
    std::fs::remove_dir_all(&root).unwrap();
}

//! The success classifier on simulated pick_cube frames: it learns to tell success from the
//! rest on episodes it never saw, survives a save and load unchanged, and refuses damaged
//! files naming them.

use reflex_classifier::{train, Classifier, ClassifierConfig};
use reflex_jobs::classifier::collect_frames;
use reflex_sim::Task;

/// 30 noisy-expert episodes train it (a short schedule: the CLI's default trains longer, to 95%
/// held-out); 8 others test it. About five in six frames are negatives, so both classes are
/// checked: a classifier that says "no" to everything scores 84% accuracy and fails here
/// (with this schedule: 94 and 100% of positives, 79 and 68% of negatives right in two runs
/// before the weights were seeded; seeded, 94% and 72%, the same in every run here).
#[test]
fn learns_success_from_frames_and_round_trips() {
    let task = Task::load("pick_cube").unwrap();
    let frames = collect_frames(&task, 30, 100, 64, 8).unwrap();
    let heldout = collect_frames(&task, 8, 500, 64, 8).unwrap();
    assert!(frames.positives() >= 20, "{} positives", frames.positives());
    assert!(
        heldout.positives() >= 8,
        "{} positives",
        heldout.positives()
    );
    let cfg = ClassifierConfig {
        epochs: 8,
        batch: 32,
        lr: 3e-3,
        ..Default::default()
    };
    let (clf, loss) = train(&frames, "pick_cube", &cfg, |_, _| {}).unwrap();
    let acc = clf.evaluate(&heldout).unwrap();
    eprintln!("loss {loss}, held-out {acc:?}");
    // Both classes well above chance (0.5), and together well above it.
    assert!(acc.true_positive_rate > 0.6, "{acc:?}");
    assert!(acc.true_negative_rate > 0.6, "{acc:?}");
    let balanced = (acc.true_positive_rate + acc.true_negative_rate) / 2.0;
    assert!(balanced > 0.75, "{acc:?}");

    let dir = std::env::temp_dir().join(format!("reflex-clf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    clf.save(&dir).unwrap();
    let back = Classifier::load(&dir).unwrap();
    let n = 3 * 64 * 64 * 16;
    assert_eq!(
        clf.probabilities(&heldout.images[..n]).unwrap(),
        back.probabilities(&heldout.images[..n]).unwrap()
    );

    // A truncated weights file and a bad size are refused naming the file.
    let weights = dir.join("classifier.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = Classifier::load(&dir)
        .err()
        .expect("truncated weights refused")
        .to_string();
    assert!(err.contains("classifier.safetensors"), "{err}");
    std::fs::write(&weights, &bytes).unwrap();
    let meta = dir.join("classifier.json");
    std::fs::write(
        &meta,
        r#"{"size": 60, "threshold": 0.5, "task": "pick_cube"}"#,
    )
    .unwrap();
    let err = Classifier::load(&dir)
        .err()
        .expect("bad size refused")
        .to_string();
    assert!(
        err.contains("classifier.json") && err.contains("size"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Frames without a single success cannot train a classifier: the error says so.
#[test]
fn training_without_positives_is_refused() {
    let task = Task::load("pick_cube").unwrap();
    let mut frames = collect_frames(&task, 1, 7, 32, 0).unwrap();
    frames.labels.iter_mut().for_each(|l| *l = false);
    let err = train(
        &frames,
        "pick_cube",
        &ClassifierConfig::default(),
        |_, _| {},
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("positive"), "{err}");
}

//! The pixel encoder's weights file against the reference safetensors library (Python) and a
//! numpy forward pass written the way PyTorch defines convolutions: a file Python writes in
//! `torch.nn` layout loads and computes numpy's features, and a file Reflex writes reads back in
//! Python to the tick's features.

mod common;

use reflex_policy::{ConvEncoder, EncoderShape};
use std::path::Path;

fn run_script(mode: &str, weights: &Path, spec: &Path) -> serde_json::Value {
    common::run_script("safetensors_encoder.py", mode, weights, spec)
}

fn assert_matches(enc: &mut ConvEncoder, images: &[Vec<u8>], numpy: &serde_json::Value) {
    let mut got = vec![0.0f32; enc.features()];
    let want = numpy["features"].as_array().unwrap();
    assert_eq!(want.len(), images.len());
    for (img, w) in images.iter().zip(want) {
        enc.forward(img, &mut got).unwrap();
        for (a, b) in got.iter().zip(w.as_array().unwrap()) {
            let b = b.as_f64().unwrap();
            assert!((f64::from(*a) - b).abs() < 1e-4, "{a} vs numpy {b}");
        }
    }
}

#[test]
fn encoder_weights_move_between_python_safetensors_and_reflex() {
    let dir = std::env::temp_dir().join(format!("reflex-encoder-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Two 24x24 cameras; odd output sides (12, 6, 3) check the flatten order.
    let shape = EncoderShape::small(24, 2);
    let images: Vec<Vec<u8>> = (0..3u64)
        .map(|j| {
            (0..shape.input_len() as u64)
                .map(|i| ((i * 2_654_435_761 + j * 97) % 256) as u8)
                .collect()
        })
        .collect();
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        serde_json::json!({ "shape": shape, "images": images }).to_string(),
    )
    .unwrap();

    // Python writes; the tick agrees with numpy.
    let from_py = dir.join("from_python.safetensors");
    let want = run_script("write", &from_py, &spec);
    let mut enc = ConvEncoder::load(&from_py).unwrap();
    assert_eq!(enc.shape(), &shape);
    assert_matches(&mut enc, &images, &want);

    // Reflex writes (other weights: the first layer's doubled); Python reads and agrees.
    let mut params = enc.params().clone();
    params.convs[0].0.iter_mut().for_each(|v| *v *= 2.0);
    let mut mine = ConvEncoder::new(params).unwrap();
    let to_py = dir.join("from_reflex.safetensors");
    mine.save(&to_py).unwrap();
    let theirs = run_script("read", &to_py, &spec);
    assert_ne!(theirs, want, "the second file holds other weights");
    assert_matches(&mut mine, &images, &theirs);
    std::fs::remove_dir_all(&dir).unwrap();
}

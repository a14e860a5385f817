//! The batch-1 MLP: numbers against a plain f64 reference, both kernels, the weights file and
//! its errors, and weights exchanged with the reference safetensors library (Python).

mod common;

use reflex_policy::{Activation, DimMismatch, Mlp, WeightsError};
use std::path::Path;

fn random_mlp(dims: &[usize], seed: u64) -> Mlp {
    let mut m = Mlp::zeros(dims, Activation::Relu, Activation::Identity);
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
    };
    for i in 0..m.num_layers() {
        let (w, b) = m.layer_mut(i).unwrap();
        w.iter_mut().for_each(|v| *v = next());
        b.iter_mut().for_each(|v| *v = next());
    }
    m
}

/// The same network evaluated naively in f64 from its own weights file.
fn reference(m: &Mlp, x: &[f32]) -> Vec<f64> {
    let bytes = m.to_safetensors();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let n = m.num_layers();
    let mut v: Vec<f64> = x.iter().map(|a| *a as f64).collect();
    for i in 0..n {
        let w = st.tensor(&format!("layers.{i}.weight")).unwrap();
        let b = st.tensor(&format!("layers.{i}.bias")).unwrap();
        let f = |d: &[u8]| -> Vec<f64> {
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect()
        };
        let (w, b) = (f(w.data()), f(b.data()));
        let out = b.len();
        let mut y = vec![0.0; out];
        for o in 0..out {
            y[o] = b[o] + (0..v.len()).map(|k| w[o * v.len() + k] * v[k]).sum::<f64>();
            if i + 1 < n {
                y[o] = y[o].max(0.0);
            }
        }
        v = y;
    }
    v
}

#[test]
fn forward_matches_an_f64_reference_with_both_kernels() {
    // Widths that are not multiples of 4 or 8 exercise the remainder paths.
    for dims in [vec![39, 256, 256, 7], vec![46, 33, 17, 5], vec![3, 2]] {
        let mut m = random_mlp(&dims, 11);
        let x: Vec<f32> = (0..dims[0]).map(|i| (i as f32 * 0.37).sin()).collect();
        let want = reference(&m, &x);
        let mut y = vec![0.0; *dims.last().unwrap()];
        for fast in [true, false] {
            m.set_fast_kernel(fast);
            m.forward(&x, &mut y).unwrap();
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{dims:?} fast={fast}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn a_zero_network_outputs_exactly_zero_and_dimensions_are_checked() {
    let mut m = Mlp::zeros(&[46, 256, 256, 7], Activation::Relu, Activation::Tanh);
    let mut y = [1.0f32; 7];
    m.forward(&[0.3; 46], &mut y).unwrap();
    assert_eq!(y, [0.0; 7]);
    assert_eq!(
        m.forward(&[0.3; 45], &mut y),
        Err(DimMismatch {
            expected: 46,
            got: 45
        })
    );
    let mut short = [0.0f32; 6];
    assert_eq!(
        m.forward(&[0.3; 46], &mut short),
        Err(DimMismatch {
            expected: 7,
            got: 6
        })
    );
}

#[test]
fn weights_survive_a_save_and_load_bit_for_bit() {
    let m = random_mlp(&[39, 64, 7], 3);
    let dir = std::env::temp_dir().join(format!("reflex-mlp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.safetensors");
    m.save(&path).unwrap();
    let mut back = Mlp::load(&path).unwrap();
    assert_eq!(back.dims(), vec![39, 64, 7]);
    // Compare values, not bytes: the metadata map's key order in the header is not fixed.
    let mut m = m;
    for i in 0..m.num_layers() {
        let (w0, b0) = m
            .layer_mut(i)
            .map(|(w, b)| (w.to_vec(), b.to_vec()))
            .unwrap();
        let (w1, b1) = back
            .layer_mut(i)
            .map(|(w, b)| (w.to_vec(), b.to_vec()))
            .unwrap();
        assert!(
            w0.iter().zip(&w1).all(|(a, b)| a.to_bits() == b.to_bits()),
            "layer {i} weights"
        );
        assert!(
            b0.iter().zip(&b1).all(|(a, b)| a.to_bits() == b.to_bits()),
            "layer {i} biases"
        );
    }
    let x = [0.25f32; 39];
    let (mut y0, mut y1) = ([0f32; 7], [0f32; 7]);
    m.forward(&x, &mut y0).unwrap();
    back.forward(&x, &mut y1).unwrap();
    assert_eq!(y0, y1, "the activations survive too");
    assert!(!path.with_extension("safetensors.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn load_err(bytes: &[u8]) -> String {
    match Mlp::from_safetensors(bytes, Path::new("runs/x/policy.safetensors")) {
        Ok(_) => panic!("accepted a bad file"),
        Err(e) => e.to_string(),
    }
}

fn file_with(tensors: Vec<(&str, Vec<f32>, Vec<usize>)>, meta: &[(&str, &str)]) -> Vec<u8> {
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|(n, v, s)| {
            (
                n.to_owned(),
                v.iter().flat_map(|f| f.to_le_bytes()).collect(),
                s,
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, d, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let meta = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn bad_weights_files_name_the_file_and_the_tensor() {
    let good = random_mlp(&[4, 3, 2], 1).to_safetensors();
    let e = load_err(&good[..good.len() - 5]);
    assert!(
        e.starts_with("runs/x/policy.safetensors: not a safetensors file"),
        "{e}"
    );
    let e = load_err(b"garbage");
    assert!(e.contains("not a safetensors file"), "{e}");

    let e = load_err(&file_with(
        vec![("layers.0.weight", vec![0.0; 12], vec![3, 4])],
        &[],
    ));
    assert!(e.contains("`layers.0.bias`: missing"), "{e}");
    let e = load_err(&file_with(
        vec![
            ("layers.0.weight", vec![0.0; 12], vec![3, 4]),
            ("layers.0.bias", vec![0.0; 3], vec![3]),
            ("layers.1.weight", vec![0.0; 10], vec![2, 5]),
            ("layers.1.bias", vec![0.0; 2], vec![2]),
        ],
        &[],
    ));
    assert!(
        e.contains("`layers.1.weight`: takes 5 inputs but the previous layer gives 3"),
        "{e}"
    );
    let e = load_err(&file_with(
        vec![
            ("layers.0.weight", vec![0.0, f32::NAN, 0.0, 0.0], vec![1, 4]),
            ("layers.0.bias", vec![0.0], vec![1]),
        ],
        &[],
    ));
    assert!(
        e.contains("`layers.0.weight`: element 1 is not finite"),
        "{e}"
    );
    let e = load_err(&file_with(
        vec![
            ("layers.0.weight", vec![0.0; 4], vec![1, 4]),
            ("layers.0.bias", vec![0.0], vec![1]),
            ("critic.0.weight", vec![0.0], vec![1]),
        ],
        &[],
    ));
    assert!(e.contains("`critic.0.weight`: unexpected tensor"), "{e}");
    let e = load_err(&file_with(
        vec![
            ("layers.0.weight", vec![0.0; 4], vec![1, 4]),
            ("layers.0.bias", vec![0.0], vec![1]),
        ],
        &[("output_activation", "softmax")],
    ));
    assert!(
        e.contains("`output_activation`") && e.contains("softmax"),
        "{e}"
    );
    let e = load_err(&file_with(
        vec![
            ("layers.0.weight", vec![0.0; 4], vec![1, 4]),
            ("layers.0.bias", vec![0.0], vec![1]),
            ("layers.2.weight", vec![0.0; 1], vec![1, 1]),
            ("layers.2.bias", vec![0.0], vec![1]),
        ],
        &[],
    ));
    assert!(e.contains("without gaps"), "{e}");
    let e = Mlp::load(Path::new("/nonexistent/policy.safetensors")).unwrap_err();
    assert!(
        matches!(e, WeightsError::Io { .. })
            && e.to_string()
                .starts_with("/nonexistent/policy.safetensors:")
    );
}

/// Runs the reference script in `mode` on a weights file and a spec; returns its JSON report.
fn run_script(mode: &str, weights: &Path, spec: &Path) -> serde_json::Value {
    common::run_script("safetensors_mlp.py", mode, weights, spec)
}

/// Our forward pass on each input agrees with numpy's `outputs` to 1e-5.
fn assert_matches_numpy(m: &mut Mlp, inputs: &[Vec<f32>], numpy: &serde_json::Value) {
    let mut y = vec![0.0f32; m.output_dim()];
    for (x, want) in inputs.iter().zip(numpy["outputs"].as_array().unwrap()) {
        m.forward(x, &mut y).unwrap();
        for (a, b) in y.iter().zip(want.as_array().unwrap()) {
            let b = b.as_f64().unwrap();
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs numpy {b}");
        }
    }
}

#[test]
fn weights_move_between_python_safetensors_and_reflex_in_both_directions() {
    let dir = std::env::temp_dir().join(format!("reflex-mlp-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inputs: Vec<Vec<f32>> = (0..5)
        .map(|j| {
            (0..39)
                .map(|i| ((i * 7 + j * 3) as f32 * 0.11).cos())
                .collect()
        })
        .collect();
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        serde_json::json!({ "dims": [39, 256, 256, 7], "inputs": inputs }).to_string(),
    )
    .unwrap();

    // Python writes; we read and agree with numpy's forward pass.
    let from_py = dir.join("from_python.safetensors");
    let want = run_script("write", &from_py, &spec);
    let mut m = Mlp::load(&from_py).unwrap();
    assert_eq!(m.dims(), vec![39, 256, 256, 7]);
    assert_matches_numpy(&mut m, &inputs, &want);

    // We write; Python reads and agrees with our forward pass.
    let mine = random_mlp(&[39, 256, 256, 7], 5);
    let to_py = dir.join("from_reflex.safetensors");
    mine.save(&to_py).unwrap();
    let theirs = run_script("read", &to_py, &spec);
    let mut mine = mine;
    assert_matches_numpy(&mut mine, &inputs, &theirs);
    std::fs::remove_dir_all(&dir).unwrap();
}

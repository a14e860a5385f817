//! The shipped URDF against programs nobody here wrote: ROS's URDF parser must accept it with the
//! same joints and limits, and MuJoCo's kinematics and gravity torques must match our ArmModel.
//! The Python peers are installed by `scripts/test.sh` into `target/pyenv`.

use nalgebra::{Matrix3, Vector3};
use reflex_core::{ArmModel, Frames, ARM_DOF};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let venv = repo().join("target/pyenv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh, which installs mujoco and urdf-parser-py there",
        venv.display()
    );
    venv
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

#[test]
fn ros_parser_and_mujoco_agree_with_our_model() {
    let urdf = repo().join("urdf/reflex_arm.urdf");
    let model = ArmModel::from_urdf_file(&urdf, "link0", "tcp").unwrap();

    // Deterministic configurations spread over the joint ranges (xorshift).
    let mut configs = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..25 {
        let mut q = [0.0; ARM_DOF];
        for (v, l) in q.iter_mut().zip(&model.limits) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            *v = l.lower + 0.05 + u * (l.upper - l.lower - 0.1);
        }
        configs.push(q.to_vec());
    }

    let mut child = Command::new(python())
        .arg(repo().join("tests/interop/urdf_reference.py"))
        .arg(&urdf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&configs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "reference script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let ros = &report["ros_parser"];
    let revolute: Vec<&str> = ros["revolute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = model.joint_names.iter().map(String::as_str).collect();
    assert_eq!(revolute, ours);
    assert_eq!(ros["prismatic"].as_array().unwrap().len(), 2);
    for (name, l) in model.joint_names.iter().zip(&model.limits) {
        let got = floats(&ros["limits"][name]);
        assert_eq!(got, vec![l.lower, l.upper, l.velocity, l.effort], "{name}");
    }

    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), configs.len());
    let mut frames = Frames::default();
    let mut tau = [0.0; ARM_DOF];
    for s in samples {
        let q: [f64; ARM_DOF] = floats(&s["q"]).try_into().unwrap();
        model.forward(&q, &mut frames);
        let p = Vector3::from_column_slice(&floats(&s["tcp_m"]));
        let err = (frames.tcp.translation.vector - p).norm();
        assert!(
            err < 1e-6,
            "TCP position differs from MuJoCo by {err} m at {q:?}"
        );
        let r_ref = Matrix3::from_row_slice(&floats(&s["tcp_rot"]));
        let r_ours = *frames.tcp.rotation.to_rotation_matrix().matrix();
        // Frobenius distance: robust where `Rotation3::angle` would take acos of 1 + 1e-16.
        let diff = (r_ref - r_ours).norm();
        assert!(
            diff < 1e-6,
            "TCP orientation differs by {diff} (Frobenius) at {q:?}"
        );
        model.gravity_compensation(&frames, Vector3::new(0.0, 0.0, -9.81), &mut tau);
        for (i, g) in floats(&s["gravity_nm"]).iter().enumerate() {
            assert!(
                (tau[i] - g).abs() < 1e-5,
                "joint {i}: gravity torque {} vs MuJoCo {g} at {q:?}",
                tau[i]
            );
        }
    }
}

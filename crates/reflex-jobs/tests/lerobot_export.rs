//! A recorded session with camera frames, exported as a LeRobot dataset and read back by the
//! programs LeRobot itself reads it with: pyarrow, pandas and Hugging Face `datasets` (PyPI),
//! and ffprobe/ffmpeg for the videos. Needs the `lerobot` feature, the system's ffmpeg and
//! target/pyenv with pyarrow, pandas and datasets (scripts/test.sh installs them).
#![cfg(feature = "lerobot")]

use reflex_jobs::export::{export_lerobot, ExportSpec};
use reflex_jobs::teleop::cameras::{stream_path, StreamReader};
use reflex_jobs::teleop::operator::{run_scripted_operator, OperatorRule};
use reflex_jobs::teleop::record::read_recording;
use reflex_jobs::teleop::{TeleopSession, TeleopSpec};
use reflex_sim::Task;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHECK: &str = r#"
import json, sys, pathlib
import pyarrow.parquet as pq, pandas as pd, datasets
root = pathlib.Path(sys.argv[1])
info = json.loads((root / "meta/info.json").read_text())
stats = json.loads((root / "meta/stats.json").read_text())
data = pq.read_table(root / "data/chunk-000/file-000.parquet")
eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pandas()
tasks = pd.read_parquet(root / "meta/tasks.parquet")
ds = datasets.load_dataset("parquet", data_files=str(root / "data/chunk-000/file-000.parquet"), split="train")
state_type = data.schema.field("observation.state").type
out = {
    "codebase_version": info["codebase_version"],
    "fps": info["fps"],
    "total_frames": info["total_frames"],
    "total_episodes": info["total_episodes"],
    "rows": data.num_rows,
    "ds_rows": ds.num_rows,
    "ds_state_len": len(ds[0]["observation.state"]),
    "ds_features": sorted(ds.features.keys()),
    "state_type": str(state_type),
    "state_dim": info["features"]["observation.state"]["shape"][0],
    "episode_lengths": [int(x) for x in eps["length"]],
    "from_index": [int(x) for x in eps["dataset_from_index"]],
    "to_index": [int(x) for x in eps["dataset_to_index"]],
    "front_from_ts": [float(x) for x in eps["videos/observation.images.front/from_timestamp"]],
    "episode_index_per_row": [int(x) for x in data.column("episode_index").to_pylist()],
    "frame_index_per_row": [int(x) for x in data.column("frame_index").to_pylist()],
    "done_rows": int(sum(data.column("next.done").to_pylist())),
    "interventions": int(sum(data.column("complementary_info.is_intervention").to_pylist())),
    "task_index_name": tasks.index.name,
    "tasks": list(tasks.index),
    "task_indices": [int(x) for x in tasks["task_index"]],
    "stats_keys": sorted(stats.keys()),
    "image_mean_shape": [len(stats["observation.images.front"]["mean"]), len(stats["observation.images.front"]["mean"][0])],
    "video_features": sorted(k for k, v in info["features"].items() if v["dtype"] == "video"),
}
print(json.dumps(out))
"#;

fn ffprobe_frames(path: &Path) -> (u64, String, u64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,codec_name,width,height",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let s = &v["streams"][0];
    (
        s["nb_read_frames"].as_str().unwrap().parse().unwrap(),
        s["codec_name"].as_str().unwrap().to_string(),
        s["width"].as_u64().unwrap(),
        s["height"].as_u64().unwrap(),
    )
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn a_recorded_session_exports_as_a_lerobot_dataset_that_pyarrow_pandas_and_datasets_read() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join("target/pyenv/bin/python");
    assert!(
        python.exists() && Command::new("ffmpeg").arg("-version").output().is_ok(),
        "needs ffmpeg and target/pyenv with pyarrow, pandas and datasets: run scripts/test.sh"
    );
    let root = std::env::temp_dir().join(format!("reflex-lerobot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (session_dir, out) = (root.join("session"), root.join("dataset"));

    // A short session on `reach`: the scripted expert acts; the scripted operator drives the
    // first steps of some episodes (a bounded share), so takeovers are in the data too.
    let task = Task::load("reach").unwrap();
    let model = reflex_sim::Env::new(task.clone()).unwrap().model().clone();
    let session = TeleopSession::start(&TeleopSpec {
        robot: Default::default(),
        task: task.clone(),
        policy: "scripted".into(),
        residual: None,
        servo_rate_hz: Some(250.0),
        seed: 40,
        bind: "127.0.0.1:0".parse().unwrap(),
        learn: None,
        record: Some(session_dir.clone()),
        record_frames: true,
        success_hold_steps: 0,
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let operator = {
        let (url, stop, task, model) = (session.ws_url(), stop.clone(), task.clone(), model);
        let rule = OperatorRule {
            patience_steps: 0,
            max_share: 0.3,
            ..Default::default()
        };
        std::thread::spawn(move || run_scripted_operator(&url, &task, &model, rule, &stop))
    };
    let started = Instant::now();
    let report = session
        .run_until(|s| s.episodes().len() >= 3 || started.elapsed() > Duration::from_secs(40))
        .unwrap();
    stop.store(true, Ordering::Release);
    let _ = operator.join().unwrap();
    println!("{report:?}");
    let frames = report.frames_recorded.expect("frames were recorded");
    let (header, recorded) = read_recording(&session_dir).unwrap();
    assert!(recorded.len() >= 3, "{} episodes recorded", recorded.len());
    assert_eq!(header.cameras, vec!["front", "wrist"]);
    assert_eq!(header.policy_rate_hz, task.control_rate_hz);
    let steps: usize = recorded.iter().map(|e| e.actions.len()).sum();
    assert!(
        frames as usize >= steps,
        "{frames} frames for {steps} recorded steps"
    );
    for e in &recorded {
        let f = e.frames.as_ref().expect("every episode has its frames");
        assert_eq!(f.at.len(), e.actions.len());
        assert!(f.at.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(e.observations.len(), e.actions.len());
    }
    let held: usize = recorded
        .iter()
        .map(|e| e.intervened.iter().filter(|&&b| b).count())
        .sum();

    let r = export_lerobot(
        &ExportSpec {
            sessions: vec![session_dir.clone()],
            out: out.clone(),
            robot_type: "reflex_sim_arm".into(),
            only_successes: false,
        },
        |_| {},
    )
    .unwrap();
    println!("{r:?}");
    assert_eq!(r.episodes as usize, recorded.len());
    assert_eq!(r.frames as usize, steps);
    assert_eq!(r.fps, 10);

    // Read back by pyarrow, pandas and datasets.
    let py = Command::new(&python)
        .arg("-c")
        .arg(CHECK)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "the readers refused the dataset:\n{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    println!("{v}");
    let n = steps as u64;
    assert_eq!(v["codebase_version"], "v3.0");
    assert_eq!(v["fps"], 10);
    assert_eq!(v["total_frames"], n);
    assert_eq!(v["rows"], n);
    assert_eq!(v["ds_rows"], n, "datasets reads every row");
    let dim = recorded[0].observations[0].len() as u64;
    assert_eq!(v["state_dim"], dim);
    assert_eq!(v["ds_state_len"], dim);
    assert!(
        v["state_type"]
            .as_str()
            .unwrap()
            .starts_with("fixed_size_list<item: float>"),
        "{}",
        v["state_type"]
    );
    for f in [
        "observation.state",
        "action",
        "next.reward",
        "next.done",
        "timestamp",
    ] {
        assert!(
            v["ds_features"].as_array().unwrap().iter().any(|x| x == f),
            "{f} missing from {}",
            v["ds_features"]
        );
    }
    let lengths: Vec<u64> = recorded.iter().map(|e| e.actions.len() as u64).collect();
    assert_eq!(v["episode_lengths"], serde_json::json!(lengths));
    // Episodes tile the rows; each row knows its episode and place.
    let (from, to) = (
        v["from_index"].as_array().unwrap(),
        v["to_index"].as_array().unwrap(),
    );
    let mut next = 0;
    for (k, (f, t)) in from.iter().zip(to).enumerate() {
        assert_eq!(f.as_u64().unwrap(), next);
        assert_eq!(t.as_u64().unwrap() - f.as_u64().unwrap(), lengths[k]);
        let ts = v["front_from_ts"][k].as_f64().unwrap();
        assert!(
            (ts - next as f64 / 10.0).abs() < 1e-9,
            "episode {k} from {ts}"
        );
        let rows = f.as_u64().unwrap() as usize..t.as_u64().unwrap() as usize;
        for (j, row) in rows.enumerate() {
            assert_eq!(v["episode_index_per_row"][row], k as u64);
            assert_eq!(v["frame_index_per_row"][row], j as u64);
        }
        next = t.as_u64().unwrap();
    }
    assert_eq!(v["done_rows"], recorded.len() as u64);
    assert_eq!(v["interventions"], held as u64);
    assert_eq!(v["task_index_name"], "task");
    assert_eq!(v["tasks"], serde_json::json!([task.instruction]));
    assert_eq!(v["task_indices"], serde_json::json!([0]));
    assert_eq!(v["image_mean_shape"], serde_json::json!([3, 1]));
    assert_eq!(
        v["video_features"],
        serde_json::json!(["observation.images.front", "observation.images.wrist"])
    );

    // The videos: AV1, one frame per row, and each episode's first frame where its timestamp
    // says (closer to the session's own lossless frame than the previous episode's last).
    for camera in ["front", "wrist"] {
        let video = out.join(format!(
            "videos/observation.images.{camera}/chunk-000/file-000.mp4"
        ));
        let (count, codec, w, h) = ffprobe_frames(&video);
        assert_eq!((count, codec.as_str(), w, h), (n, "av1", 160, 120));
    }
    let video = out.join("videos/observation.images.front/chunk-000/file-000.mp4");
    let mut exported = StreamReader::open(&video, 160, 120).unwrap();
    let mut lossless =
        StreamReader::open(&stream_path(&session_dir, 0, "front"), 160, 120).unwrap();
    let (mut a, mut b, mut prev) = (Vec::new(), Vec::new(), Vec::new());
    for (k, e) in recorded.iter().enumerate().skip(1) {
        let row = from[k].as_u64().unwrap();
        exported.seek_read(row - 1, &mut a).unwrap();
        prev.clone_from(&a);
        exported.seek_read(row, &mut a).unwrap();
        lossless
            .seek_read(e.frames.as_ref().unwrap().at[0], &mut b)
            .unwrap();
        let (same, other) = (mean_abs_diff(&a, &b), mean_abs_diff(&prev, &b));
        println!("episode {k}: |exported - recorded| {same:.2}, previous frame {other:.2}");
        assert!(same < 4.0, "episode {k}: lossy copy differs by {same:.2}");
        assert!(
            same < other,
            "episode {k}: misaligned ({same:.2} vs {other:.2})"
        );
    }

    // A second export into the same directory is refused, naming it.
    let e = export_lerobot(
        &ExportSpec {
            sessions: vec![session_dir.clone()],
            out: out.clone(),
            robot_type: "x".into(),
            only_successes: false,
        },
        |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    // A recording without observations (made before they were kept) is refused, naming the
    // file and the episode; nothing is written.
    let old = root.join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::copy(session_dir.join("header.json"), old.join("header.json")).unwrap();
    let mut first = recorded[0].clone();
    first.observations.clear();
    first.rewards.clear();
    std::fs::write(
        old.join("recording.jsonl"),
        serde_json::to_string(&first).unwrap() + "\n",
    )
    .unwrap();
    let e = export_lerobot(
        &ExportSpec {
            sessions: vec![session_dir.clone(), old.clone()],
            out: root.join("dataset2"),
            robot_type: "x".into(),
            only_successes: false,
        },
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("old/recording.jsonl") && e.contains(&format!("episode {}", first.episode)),
        "{e}"
    );
    assert!(!root.join("dataset2").exists());
    let _ = std::fs::remove_dir_all(&root);
}

//! Every answer kept in `tests/fixtures/answers` (written in the shapes VLMs really answer in:
//! prose, code fences, grid cells, thousandths, trailing commas, refusals) parses to what
//! `expected.json` says, or fails with the error it names.

use reflex_reward::parse::{parse_keypoints, parse_preference, parse_success, Grid, Preference};
use serde_json::Value;
use std::path::Path;

#[test]
fn fixtures_parse_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/answers");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let g = &manifest["grid"];
    let grid = Grid {
        width: g["width"].as_u64().unwrap() as usize,
        height: g["height"].as_u64().unwrap() as usize,
        cols: g["cols"].as_u64().unwrap() as usize,
        rows: g["rows"].as_u64().unwrap() as usize,
    };
    let pt = |v: &Value| [v[0].as_f64().unwrap(), v[1].as_f64().unwrap()];
    let close = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6;
    let answers = manifest["answers"].as_array().unwrap();
    assert!(answers.len() >= 12);
    for a in answers {
        let file = a["file"].as_str().unwrap();
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let error = a.get("error").and_then(Value::as_str);
        let err_text = match a["kind"].as_str().unwrap() {
            "keypoints" => match parse_keypoints(&text, &grid) {
                Ok(k) => {
                    assert!(error.is_none(), "{file}: parsed {k:?}, expected an error");
                    assert!(close(k.affordance, pt(&a["affordance"])), "{file}: {k:?}");
                    let want = a["waypoints"].as_array().unwrap();
                    assert_eq!(k.waypoints.len(), want.len(), "{file}");
                    for (got, w) in k.waypoints.iter().zip(want) {
                        assert!(close(*got, pt(w)), "{file}: {k:?}");
                    }
                    continue;
                }
                Err(e) => e.to_string(),
            },
            "preference" => match parse_preference(&text) {
                Ok(p) => {
                    assert!(error.is_none(), "{file}: parsed {p:?}, expected an error");
                    let want = match a["label"].as_i64().unwrap() {
                        0 => Preference::First,
                        _ => Preference::Second,
                    };
                    assert_eq!(p, want, "{file}");
                    continue;
                }
                Err(e) => e.to_string(),
            },
            "success" => match parse_success(&text) {
                Ok(s) => {
                    assert!(error.is_none(), "{file}: parsed {s}, expected an error");
                    assert_eq!(s, a["success"].as_bool().unwrap(), "{file}");
                    continue;
                }
                Err(e) => e.to_string(),
            },
            k => panic!("{file}: unknown kind {k}"),
        };
        let want = error.unwrap_or_else(|| panic!("{file}: unexpected error: {err_text}"));
        assert!(
            err_text.contains(want),
            "{file}: `{err_text}` lacks `{want}`"
        );
    }
}

//! `scalars.jsonl`: what researchers plot. One JSON object per line, sampled about once a second
//! while training and at every evaluation, with namespaced keys: `losses/*` (critic TD error,
//! actor), `values/*` (Q), `charts/*` (entropy, temperature, success rate, throughput),
//! `learner/*` (clip rate, rollbacks, interrupted steps, replay records synced), `runtime/*`
//! (dropped transitions, deadline misses), `reward/<term>` (the mean of each of the robot's
//! named reward terms over the steps since the last line) and `stage/<counter>` (the reward
//! source's counters). Every line carries `env_steps`, `updates` and `wall_s`. A resumed run
//! appends.

use super::config::{stage, TrainError};
use std::io::Write;
use std::path::Path;

/// The open `scalars.jsonl` and the reward terms summed since the last line.
pub(crate) struct Scalars {
    file: std::io::BufWriter<std::fs::File>,
    term_names: Vec<String>,
    term_sums: Vec<f64>,
    term_steps: u64,
}

impl Scalars {
    /// Opens (appends to) `out/scalars.jsonl`; `term_names` names the robot's reward terms.
    pub(crate) fn open(out: &Path, term_names: Vec<String>) -> Result<Self, TrainError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out.join("scalars.jsonl"))
            .map_err(stage("scalars.jsonl"))?;
        Ok(Self {
            file: std::io::BufWriter::new(file),
            term_sums: vec![0.0; term_names.len()],
            term_names,
            term_steps: 0,
        })
    }

    /// Adds one judged step's reward terms.
    pub(crate) fn add_terms(&mut self, terms: &reflex_core::RewardTerms) {
        for (s, v) in self.term_sums.iter_mut().zip(terms.values()) {
            if v.is_finite() {
                *s += v;
            }
        }
        self.term_steps += 1;
    }

    /// Writes one line: `values` (namespaced keys; non-finite values are left out), the mean
    /// reward terms since the last line, and every number in `stage` (a reward stage's report)
    /// under `stage/`.
    pub(crate) fn write(
        &mut self,
        values: &[(&str, f64)],
        stage_report: Option<&serde_json::Value>,
    ) -> Result<(), TrainError> {
        let mut line = serde_json::Map::new();
        for (k, v) in values {
            if v.is_finite() {
                line.insert((*k).to_owned(), (*v).into());
            }
        }
        if self.term_steps > 0 {
            for (name, sum) in self.term_names.iter().zip(&self.term_sums) {
                line.insert(
                    format!("reward/{name}"),
                    (sum / self.term_steps as f64).into(),
                );
            }
            self.term_sums.fill(0.0);
            self.term_steps = 0;
        }
        if let Some(r) = stage_report {
            flatten("stage", r, &mut line);
        }
        let text = serde_json::Value::Object(line).to_string();
        writeln!(self.file, "{text}")
            .and_then(|_| self.file.flush())
            .map_err(stage("scalars.jsonl"))
    }
}

/// Every number in `v`, keyed by its path under `prefix` (`stage/keypoints/planned`).
fn flatten(
    prefix: &str,
    v: &serde_json::Value,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    match v {
        serde_json::Value::Number(n) => {
            out.insert(prefix.to_owned(), serde_json::Value::Number(n.clone()));
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}/{k}"), v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_namespaced_values_mean_terms_and_flattened_counters() {
        let dir = std::env::temp_dir().join(format!("reflex-scalars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("scalars.jsonl"));
        let mut s = Scalars::open(&dir, vec!["reach".into(), "success".into()]).unwrap();
        let mut t = reflex_core::RewardTerms::new(2);
        t.set(0, 0.5);
        s.add_terms(&t);
        t.set(0, 1.5);
        t.set(1, 10.0);
        s.add_terms(&t);
        let report = serde_json::json!({"keypoints": {"planned": 3, "name": "x"}});
        s.write(
            &[("losses/critic", 0.25), ("values/q_mean", f64::NAN)],
            Some(&report),
        )
        .unwrap();
        s.write(&[("charts/success_rate", 0.5)], None).unwrap();
        drop(s);
        let text = std::fs::read_to_string(dir.join("scalars.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["losses/critic"], 0.25);
        assert!(lines[0].get("values/q_mean").is_none(), "NaN left out");
        assert_eq!(lines[0]["reward/reach"], 1.0);
        assert_eq!(lines[0]["reward/success"], 5.0);
        assert_eq!(lines[0]["stage/keypoints/planned"], 3);
        assert!(
            lines[1].get("reward/reach").is_none(),
            "terms reset after a line"
        );
        assert_eq!(lines[1]["charts/success_rate"], 0.5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

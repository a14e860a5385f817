//! Several seeds of one run, read together: `reflex train --seeds 0,1,2` trains each seed into
//! `<out>/s<seed>/`, then [`study`] writes `study.json` (the mean and a 95% bootstrap interval
//! of the held-out success, of the last stopping evaluation, and of the steps and minutes to
//! the target) and `band.png` (every seed's curve, their mean and the mean's bootstrap band).
//! `reflex study` reads run directories trained any other way.

use super::config::{stage, TrainError};
use super::plot::text_font;
use super::report::{write_atomic, Confirmation, RunState, Summary};
use plotters::prelude::*;
use reflex_core::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Resamples of every bootstrap interval.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// Coverage of every interval.
pub const CONFIDENCE: f64 = 0.95;

/// A mean over seeds and its percentile bootstrap interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The mean of the values.
    pub mean: f64,
    /// Lower end of the interval.
    pub lo: f64,
    /// Upper end of the interval.
    pub hi: f64,
    /// Values it stands on.
    pub n: usize,
}

/// The mean of `values` and its percentile bootstrap interval at [`CONFIDENCE`] over
/// `resamples` resamples drawn with `seed` (`None` for no values). With a handful of seeds the
/// interval is coarse (three values have ten distinct resample means): it shows the spread
/// honestly, not a precision the runs do not have.
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            (0..n)
                .map(|_| values[(rng.next_u64() % n as u64) as usize])
                .sum::<f64>()
                / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some(Interval {
        mean,
        lo: at(tail),
        hi: at(1.0 - tail),
        n,
    })
}

/// One seed's run, as the study reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyRun {
    /// The run's seed.
    pub seed: u64,
    /// Its directory.
    pub dir: PathBuf,
    /// The cloned base's success (stopping seeds).
    pub base_success_rate: f64,
    /// The last stopping evaluation.
    pub final_success_rate: f64,
    /// The held-out success (none if the run has no held-out evaluation).
    pub heldout_success_rate: Option<f64>,
    /// Steps when a stopping evaluation first reached the target.
    pub steps_to_target: Option<u64>,
    /// Minutes then.
    pub minutes_to_target: Option<f64>,
    /// Online steps.
    pub env_steps: u64,
    /// Updates per online step.
    pub utd: f64,
    /// Online steps per second of training.
    pub env_steps_per_s: f64,
    /// Seconds of the run.
    pub wall_s: f64,
    /// Why it stopped.
    pub stop_reason: String,
    /// Its confirmations of the target on fresh scenes.
    #[serde(default)]
    pub confirmations: Vec<Confirmation>,
    /// Which weights it handed over (`last` or `best evaluation`; none if interrupted).
    #[serde(default)]
    pub handed_over: Option<String>,
}

/// `study.json`: several seeds of one task and reward source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// The task.
    pub task: String,
    /// The reward source the runs trained with.
    pub reward: String,
    /// The runs, in the order given.
    pub runs: Vec<StudyRun>,
    /// Coverage of the intervals.
    pub confidence: f64,
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// Episodes of each run's held-out evaluation (0 if a run has none).
    pub heldout_episodes: usize,
    /// The target success the runs stopped at.
    pub target_success: f64,
    /// The held-out success: the figure to report (none unless every run has one).
    pub heldout_success: Option<Interval>,
    /// The last stopping evaluation (biased upwards: it chose when to stop).
    pub final_success: Interval,
    /// The cloned base.
    pub base_success: Interval,
    /// Runs that reached the target.
    pub reached_target: usize,
    /// Steps to the target over the runs that reached it (`n` says how many).
    pub steps_to_target: Option<Interval>,
    /// Minutes to the target over the runs that reached it.
    pub minutes_to_target: Option<Interval>,
    /// Updates per online step.
    pub utd: Interval,
    /// Over every confirmation of every run: the stopping evaluation's success minus the
    /// confirmation's on fresh scenes, the upward bias of stopping on scenes seen before (none
    /// without confirmations).
    #[serde(default)]
    pub selection_gap: Option<Interval>,
}

/// Reads the finished runs in `dirs` (their `summary.json` and `progress.json`), writes
/// `out/study.json` and `out/band.png`, and returns the study. The runs must share a task and
/// reward source; an unreadable run is named.
pub fn study(dirs: &[PathBuf], out: &Path) -> Result<Study, TrainError> {
    if dirs.is_empty() {
        return Err(stage("study")("no run directories"));
    }
    let mut runs = Vec::new();
    let mut curves = Vec::new();
    let mut config: Option<(Summary, PathBuf)> = None;
    for dir in dirs {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| stage("study")(format!("{}: {e}", path.display())))
                .map(|t| (t, path))
        };
        let (text, path) = read("summary.json")?;
        let s: Summary = serde_json::from_str(&text)
            .map_err(|e| stage("study")(format!("{}: {e}", path.display())))?;
        let (text, path) = read("progress.json")?;
        let state: RunState = serde_json::from_str(&text)
            .map_err(|e| stage("study")(format!("{}: {e}", path.display())))?;
        if let Some((first, first_dir)) = &config {
            if first.task != s.task || first.reward != s.reward {
                return Err(stage("study")(format!(
                    "{}: task `{}` with reward `{}`, but {} is task `{}` with reward `{}`",
                    dir.display(),
                    s.task,
                    s.reward,
                    first_dir.display(),
                    first.task,
                    first.reward
                )));
            }
        }
        runs.push(StudyRun {
            seed: s.seed,
            dir: dir.clone(),
            base_success_rate: s.base_success_rate,
            final_success_rate: s.final_success_rate,
            heldout_success_rate: s.heldout.as_ref().map(|h| h.success_rate),
            steps_to_target: s.steps_to_target,
            minutes_to_target: s.minutes_to_target,
            env_steps: s.env_steps,
            utd: s.updates as f64 / s.env_steps.max(1) as f64,
            env_steps_per_s: s.env_steps_per_s,
            wall_s: s.wall_s,
            stop_reason: s.stop_reason.clone(),
            confirmations: s.confirmations.clone(),
            handed_over: s.handed_over.as_ref().map(|h| h.why.clone()),
        });
        curves.push((
            s.seed,
            state
                .evals
                .iter()
                .map(|r| (r.env_steps as f64, r.success_rate))
                .collect::<Vec<_>>(),
        ));
        if config.is_none() {
            config = Some((s, dir.clone()));
        }
    }
    let (first, _) = config.expect("at least one run was read");
    let heldout_episodes = first.heldout.as_ref().map_or(0, |h| h.episodes);
    let target_success = first.config["target_success"].as_f64().unwrap_or(f64::NAN);
    let interval =
        |values: Vec<f64>, salt: u64| bootstrap_mean(&values, BOOTSTRAP_RESAMPLES, 0x5EED ^ salt);
    let heldout: Option<Vec<f64>> = runs.iter().map(|r| r.heldout_success_rate).collect();
    let reached: Vec<&StudyRun> = runs
        .iter()
        .filter(|r| r.steps_to_target.is_some())
        .collect();
    let study = Study {
        task: first.task.clone(),
        reward: first.reward.clone(),
        confidence: CONFIDENCE,
        resamples: BOOTSTRAP_RESAMPLES,
        heldout_episodes,
        target_success,
        heldout_success: heldout.and_then(|v| interval(v, 1)),
        final_success: interval(runs.iter().map(|r| r.final_success_rate).collect(), 2)
            .expect("at least one run"),
        base_success: interval(runs.iter().map(|r| r.base_success_rate).collect(), 3)
            .expect("at least one run"),
        reached_target: reached.len(),
        steps_to_target: interval(
            reached
                .iter()
                .filter_map(|r| r.steps_to_target.map(|s| s as f64))
                .collect(),
            4,
        ),
        minutes_to_target: interval(
            reached.iter().filter_map(|r| r.minutes_to_target).collect(),
            5,
        ),
        utd: interval(runs.iter().map(|r| r.utd).collect(), 6).expect("at least one run"),
        selection_gap: interval(
            runs.iter()
                .flat_map(|r| &r.confirmations)
                .map(|c| c.eval_success_rate - c.success_rate)
                .collect(),
            7,
        ),
        runs,
    };
    std::fs::create_dir_all(out).map_err(stage("creating the study directory"))?;
    let text = serde_json::to_string_pretty(&study).map_err(stage("study.json"))?;
    write_atomic(&out.join("study.json"), text.as_bytes())?;
    let title = format!(
        "{}, reward {}: {} seeds",
        study.task,
        study.reward,
        study.runs.len()
    );
    if let Err(e) = plot_band(&out.join("band.png"), &title, &curves) {
        tracing::warn!("band.png not drawn: {e}");
    }
    Ok(study)
}

/// Grid points of the band.
const BAND_POINTS: usize = 60;

/// Each curve's value at `x`: linear between its evaluations, its last value after its last
/// one (a run that stopped at the target stays there), its first before its first.
fn value_at(curve: &[(f64, f64)], x: f64) -> Option<f64> {
    let first = curve.first()?;
    if x <= first.0 {
        return Some(first.1);
    }
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            let t = if x1 > x0 { (x - x0) / (x1 - x0) } else { 1.0 };
            return Some(y0 + t * (y1 - y0));
        }
    }
    curve.last().map(|p| p.1)
}

/// The mean curve of several seeds on a common grid and its bootstrap band: `(x, mean, lo, hi)`.
pub fn band(curves: &[Vec<(f64, f64)>]) -> Vec<(f64, f64, f64, f64)> {
    let max_x = curves
        .iter()
        .filter_map(|c| c.last().map(|p| p.0))
        .fold(0.0, f64::max);
    (0..=BAND_POINTS)
        .filter_map(|i| {
            let x = max_x * i as f64 / BAND_POINTS as f64;
            let values: Vec<f64> = curves.iter().filter_map(|c| value_at(c, x)).collect();
            bootstrap_mean(&values, 2_000, i as u64).map(|b| (x, b.mean, b.lo, b.hi))
        })
        .collect()
}

/// Draws `band.png`: each seed's curve thin, the mean thick, the bootstrap band shaded.
fn plot_band(path: &Path, title: &str, curves: &[(u64, Vec<(f64, f64)>)]) -> Result<(), String> {
    let text = text_font();
    let points: Vec<Vec<(f64, f64)>> = curves.iter().map(|c| c.1.clone()).collect();
    let band = band(&points);
    let max_x = band.last().map_or(1.0, |b| b.0).max(1.0);
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56);
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..max_x * 1.02, 0.0..1.02)
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("environment steps")
            .y_desc("success (stopping evaluations)")
            .label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    let mut area: Vec<(f64, f64)> = band.iter().map(|b| (b.0, b.3)).collect();
    area.extend(band.iter().rev().map(|b| (b.0, b.2)));
    chart
        .draw_series(std::iter::once(Polygon::new(area, BLUE.mix(0.18).filled())))
        .map_err(|e| e.to_string())?;
    for (_, c) in curves {
        chart
            .draw_series(LineSeries::new(c.clone(), BLACK.mix(0.35).stroke_width(1)))
            .map_err(|e| e.to_string())?;
    }
    let series = chart
        .draw_series(LineSeries::new(
            band.iter().map(|b| (b.0, b.1)),
            BLUE.stroke_width(3),
        ))
        .map_err(|e| e.to_string())?;
    if text {
        series.label(format!(
            "mean of {} seeds, {:.0}% bootstrap band",
            curves.len(),
            100.0 * CONFIDENCE
        ));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_interval_holds_the_mean_and_spans_the_spread() {
        let b = bootstrap_mean(&[0.9, 0.95, 1.0], BOOTSTRAP_RESAMPLES, 1).unwrap();
        assert!((b.mean - 0.95).abs() < 1e-12, "{b:?}");
        assert!(b.lo < b.mean && b.mean < b.hi, "{b:?}");
        assert!(b.lo >= 0.9 && b.hi <= 1.0, "{b:?}");
        // Equal values leave no spread; one value is its own interval.
        let b = bootstrap_mean(&[0.5; 4], 100, 1).unwrap();
        assert_eq!((b.lo, b.hi), (0.5, 0.5));
        assert_eq!(bootstrap_mean(&[0.7], 100, 1).unwrap().hi, 0.7);
        assert!(bootstrap_mean(&[], 100, 1).is_none());
        // Many values from a known spread: the interval narrows around the mean
        // (normal approximation: 1.96 * 0.29 / 10 = 0.057 each side for uniform values).
        let v: Vec<f64> = (0..100).map(|i| i as f64 / 99.0).collect();
        let b = bootstrap_mean(&v, BOOTSTRAP_RESAMPLES, 7).unwrap();
        let half = (b.hi - b.lo) / 2.0;
        assert!((0.045..0.07).contains(&half), "{b:?}");
    }

    #[test]
    fn a_stopped_run_is_carried_at_its_last_evaluation_in_the_band() {
        let early = vec![(0.0, 0.4), (100.0, 1.0)];
        let late = vec![(0.0, 0.2), (100.0, 0.4), (200.0, 0.8)];
        let b = band(&[early, late]);
        assert_eq!(b.first().unwrap().0, 0.0);
        let last = b.last().unwrap();
        assert_eq!(last.0, 200.0);
        assert!((last.1 - 0.9).abs() < 1e-12, "{last:?}");
        assert!(last.2 <= 0.8 + 1e-12 && last.3 >= 1.0 - 1e-12, "{last:?}");
        // Halfway to the first evaluation after the start: linear.
        let mid = b.iter().find(|p| (p.0 - 50.0).abs() < 2.0).unwrap();
        assert!(
            (mid.1 - ((0.4 + 0.6 * mid.0 / 100.0) + (0.2 + 0.2 * mid.0 / 100.0)) / 2.0).abs()
                < 1e-9
        );
    }
}

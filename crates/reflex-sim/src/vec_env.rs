//! N environments stepped in parallel on the rayon pool (all cores by default).

use crate::env::{Env, Step};
use crate::error::SimError;
use crate::task::Task;
use rayon::prelude::*;
use reflex_core::{Action, Observation};

/// A batch of environments of one task.
pub struct VecEnv {
    envs: Vec<Env>,
}

impl VecEnv {
    /// `n` environments of `task`, sharing one parsed arm.
    pub fn new(task: &Task, n: usize) -> Result<Self, SimError> {
        let first = Env::new(task.clone())?;
        let template = first.template().clone();
        let mut envs = Vec::with_capacity(n.max(1));
        envs.push(first);
        for _ in 1..n.max(1) {
            envs.push(Env::from_template(task.clone(), template.clone())?);
        }
        Ok(Self { envs })
    }

    /// Number of environments.
    pub fn len(&self) -> usize {
        self.envs.len()
    }

    /// Always false: a batch holds at least one environment.
    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    /// The environments.
    pub fn envs(&self) -> &[Env] {
        &self.envs
    }

    /// Resets environment `i` with `seed`.
    pub fn reset_one(&mut self, i: usize, seed: u64) -> Result<Observation, SimError> {
        self.envs[i].reset(seed)
    }

    /// Resets every environment; environment `i` gets seed `seed + i`.
    pub fn reset_all(&mut self, seed: u64, out: &mut [Observation]) -> Result<(), SimError> {
        self.envs
            .par_iter_mut()
            .zip(out.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, (e, o))| {
                *o = e.reset(seed + i as u64)?;
                Ok(())
            })
    }

    /// Steps every environment with its action, in parallel; results go to `out`.
    pub fn step(&mut self, actions: &[Action], out: &mut Vec<Step>) -> Result<(), SimError> {
        let results: Result<Vec<Step>, SimError> = self
            .envs
            .par_iter_mut()
            .zip(actions.par_iter())
            .map(|(e, a)| e.step(a))
            .collect();
        *out = results?;
        Ok(())
    }
}

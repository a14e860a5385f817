//! `reflex bench pixels`: what seeing through cameras costs. For each image side, the tick's
//! encoder (`reflex_policy::ConvEncoder`, one stacked image of the wrist and front cameras,
//! batch 1) and one training update of the same encoder in burn on a batch (random shift,
//! forward with the graph kept, the critic's gradient carried back, an Adam step), the part of
//! an image-based SAC update that state observations do not pay; the update both in burn and on
//! `reflex_learn::conv_net`'s own kernels. With `device = gpu` (a build with the `gpu` feature),
//! burn's update is also timed on the GPU's wgpu adapter, which the report names; a CPU
//! rasteriser standing in for a GPU (Mesa's lavapipe) is reported as `software`.

use super::{latency_us, BenchReport};
use anyhow::{anyhow, Result};
use reflex_core::Rng;
use reflex_learn::burn_device::{BurnDevice, OpenedDevice};
use reflex_learn::conv_net::{ConvNet, ConvTape};
use reflex_learn::nn::Adam;
use reflex_learn::pixel_sac::{PixelAgent, PixelBatch, PixelConfig};
use reflex_learn::pixels::{random_shift, EncoderTrainConfig, EncoderTrainer};
use reflex_learn::sac::AgentConfig;
use reflex_policy::{ConvEncoder, EncoderShape};
use std::time::Instant;

/// Settings of `reflex bench pixels`.
#[derive(Clone, Debug)]
pub struct BenchPixelsSpec {
    /// Image sides to measure, pixels (square).
    pub sides: Vec<usize>,
    /// Cameras stacked (3 channels each).
    pub cameras: usize,
    /// Images per training update.
    pub batch: usize,
    /// Encoder forward passes to time at batch 1.
    pub samples: usize,
    /// Training updates to time per side.
    pub updates: usize,
    /// Also time burn's update here: [`BurnDevice::Gpu`] adds the GPU's figure.
    pub device: BurnDevice,
}

/// Runs the benchmark; `progress` gets the side being measured.
pub fn pixels(spec: &BenchPixelsSpec, mut progress: impl FnMut(usize)) -> Result<BenchReport> {
    if spec.sides.is_empty() || spec.cameras == 0 || spec.batch == 0 || spec.updates == 0 {
        return Err(anyhow!(
            "bench pixels needs at least one side, camera, batch row and update"
        ));
    }
    // Opened before anything is timed, so a missing GPU fails at once, by name.
    let gpu = match spec.device {
        BurnDevice::Cpu => None,
        BurnDevice::Gpu => Some(BurnDevice::Gpu.open().map_err(|e| anyhow!(e))?),
    };
    let mut report = BenchReport::default();
    if let Some(g) = &gpu {
        report.lines.push(format!(
            "burn's GPU device: {}{}",
            g.name,
            if g.software {
                " (a CPU rasteriser, not a GPU: its figures are not a GPU's)"
            } else {
                ""
            }
        ));
    }
    let mut rows = Vec::new();
    for &side in &spec.sides {
        progress(side);
        let shape = EncoderShape::small(side, spec.cameras);
        let mut trainer =
            EncoderTrainer::new(&shape, EncoderTrainConfig::default()).map_err(|e| anyhow!(e))?;
        let mut rng = Rng::new(side as u64);
        let images: Vec<u8> = (0..spec.batch * shape.input_len())
            .map(|_| (rng.next_u64() % 256) as u8)
            .collect();

        let mut tick = ConvEncoder::new(trainer.params()).map_err(|e| anyhow!(e))?;
        let mut features = vec![0.0f32; shape.features];
        let one = &images[..shape.input_len()];
        let (p50_us, p99_us) = latency_us(spec.samples, || {
            tick.forward(one, &mut features)
                .unwrap_or_else(|_| unreachable!("sizes match by construction"));
            std::hint::black_box(&features);
        });
        let macs = encoder_macs(&shape);
        // The whole pixel policy step: the encoder, then an MLP [features + 22, 256, 256, 7].
        let mlp = super::random_mlp(&[shape.features + 22, 256, 256, 7], 5);
        let mut policy = reflex_policy::PixelNet::new(tick.clone(), mlp).map_err(|e| anyhow!(e))?;
        let proprio = [0.1f32; 22];
        let mut action = [0.0f32; 7];
        let (policy_p50_us, policy_p99_us) = latency_us(spec.samples, || {
            policy
                .forward(one, &proprio, &mut action)
                .unwrap_or_else(|_| unreachable!("sizes match by construction"));
            std::hint::black_box(&action);
        });

        let mut shifted = vec![0u8; images.len()];
        let d: Vec<f32> = (0..spec.batch * shape.features)
            .map(|i| ((i % 7) as f32 - 3.0) * 1e-3)
            .collect();
        // One warm-up update, then the timed ones.
        let mut shift_s = 0.0;
        let mut update_s = 0.0;
        for k in 0..=spec.updates {
            let t0 = Instant::now();
            random_shift(&shape, 4, &images, &mut shifted, &mut rng);
            let t1 = Instant::now();
            let enc = trainer.encode(&shifted);
            trainer.apply(enc, &d);
            if k > 0 {
                shift_s += (t1 - t0).as_secs_f64();
                update_s += t1.elapsed().as_secs_f64();
            }
        }
        // The same update in burn on the GPU.
        let gpu_ms = match &gpu {
            Some(g) => Some(time_burn_update(
                &trainer,
                g,
                &images,
                &mut shifted,
                &d,
                spec.updates,
                &mut rng,
            )?),
            None => None,
        };
        // The same update on this crate's own kernels (im2col + GEMM, images across threads).
        let mut net = ConvNet::from_params(&trainer.params()).map_err(|e| anyhow!(e))?;
        let mut adam = Adam::new(net.num_params(), 3e-4);
        let mut grads = vec![0.0f32; net.num_params()];
        let mut tape = ConvTape::default();
        let mut own_s = 0.0;
        for k in 0..=spec.updates {
            random_shift(&shape, 4, &images, &mut shifted, &mut rng);
            let t1 = Instant::now();
            net.forward(&shifted, &mut tape);
            net.backward(&tape, &d, &mut grads);
            adam.step(&mut net.params, &grads);
            if k > 0 {
                own_s += t1.elapsed().as_secs_f64();
            }
        }
        // A whole SAC update from pixels: both shifts, encoder and target encoder, the agent's
        // update on [features | proprioception] (critics [256, 256] x 2, actor), the encoder's
        // step. Proprioception: 22 values; actions: 7.
        let (proprio_dim, act_dim) = (22, 7);
        let mut agent = PixelAgent::new(
            AgentConfig::default(),
            PixelConfig::default(),
            &trainer.params(),
            proprio_dim,
            act_dim,
            1,
        )
        .map_err(|e| anyhow!(e))?;
        let batch_rows = spec.batch;
        let proprio: Vec<f32> = (0..batch_rows * proprio_dim)
            .map(|i| ((i % 11) as f32 - 5.0) * 0.1)
            .collect();
        let act: Vec<f32> = (0..batch_rows * act_dim)
            .map(|i| ((i % 5) as f32 - 2.0) * 0.3)
            .collect();
        let reward: Vec<f32> = (0..batch_rows).map(|i| (i % 3) as f32 * 0.5).collect();
        let discount = vec![0.97f32; batch_rows];
        let mut sac_s = 0.0;
        for k in 0..=spec.updates {
            let t0 = Instant::now();
            agent.update(&PixelBatch {
                size: batch_rows,
                images: &images,
                proprio: &proprio,
                act: &act,
                reward: &reward,
                discount: &discount,
                next_images: &images,
                next_proprio: &proprio,
                demo_rows: batch_rows / 2,
            });
            if k > 0 {
                sac_s += t0.elapsed().as_secs_f64();
            }
        }
        let n = spec.updates as f64;
        let (shift_ms, update_ms) = (shift_s / n * 1e3, update_s / n * 1e3);
        let own_ms = own_s / n * 1e3;
        let sac_ms = sac_s / n * 1e3;
        report.lines.push(format!(
            "{side}x{side}, {} cameras ({:.1} M multiply-adds a frame): tick encoder p50 {p50_us:.0} us, p99 {p99_us:.0} us ({} kernel), with the policy MLP after it p50 {policy_p50_us:.0} us, p99 {policy_p99_us:.0} us; training update on {} frames: random shift {shift_ms:.1} ms, forward + backward + Adam in burn {update_ms:.0} ms, on Reflex's kernels {own_ms:.0} ms; a whole SAC update from pixels (both shifts, encoder, target encoder, critics and actor [256, 256], 22 proprioception values, 7 actions) {sac_ms:.0} ms ({:.1} updates/s)",
            spec.cameras,
            macs as f64 / 1e6,
            if tick.uses_fast_kernel() { "AVX2+FMA" } else { "portable" },
            spec.batch,
            1e3 / sac_ms,
        ));
        if let Some(ms) = gpu_ms {
            report.lines.push(format!(
                "{side}x{side}: the same update in burn on the GPU device {ms:.0} ms ({:.2} times the CPU's)",
                ms / update_ms
            ));
        }
        rows.push(serde_json::json!({
            "side": side,
            "cameras": spec.cameras,
            "macs_per_frame": macs,
            "tick_p50_us": p50_us,
            "tick_p99_us": p99_us,
            "policy_p50_us": policy_p50_us,
            "policy_p99_us": policy_p99_us,
            "fast_kernel": tick.uses_fast_kernel(),
            "batch": spec.batch,
            "shift_ms": shift_ms,
            "burn_update_ms": update_ms,
            "own_update_ms": own_ms,
            "sac_update_ms": sac_ms,
            "burn_gpu_update_ms": gpu_ms,
        }));
    }
    report.json = serde_json::json!({
        "pixels": rows,
        "gpu": gpu.as_ref().map(|g| serde_json::json!({ "adapter": g.name, "software": g.software })),
    });
    Ok(report)
}

/// Multiply-adds of one forward pass.
fn encoder_macs(shape: &EncoderShape) -> u64 {
    let outs = shape
        .layer_outputs()
        .unwrap_or_else(|_| unreachable!("the default shape fits"));
    let mut in_ch = shape.channels;
    let mut macs = 0u64;
    for (c, (h, w, ch)) in shape.convs.iter().zip(&outs) {
        macs += (h * w * ch * in_ch * c.kernel * c.kernel) as u64;
        in_ch = *ch;
    }
    macs + (shape.flat_len().unwrap_or(0) * shape.features) as u64
}

/// Mean milliseconds of burn's encoder update (shift, forward, the critic's gradient carried
/// back, Adam) on `device`, from `cpu`'s weights, after one warm-up update (which compiles the
/// GPU's kernels).
fn time_burn_update(
    cpu: &EncoderTrainer,
    device: &OpenedDevice,
    images: &[u8],
    shifted: &mut [u8],
    d: &[f32],
    updates: usize,
    rng: &mut Rng,
) -> Result<f64> {
    let mut trainer =
        EncoderTrainer::from_params_on(&cpu.params(), cpu.config().clone(), device.device.clone())
            .map_err(|e| anyhow!(e))?;
    let mut total = 0.0;
    for k in 0..=updates {
        random_shift(cpu.shape(), 4, images, shifted, rng);
        let t = Instant::now();
        let enc = trainer.encode(shifted);
        trainer.apply(enc, d);
        // Reading the weights back waits for the device's queue.
        std::hint::black_box(trainer.params());
        if k > 0 {
            total += t.elapsed().as_secs_f64();
        }
    }
    Ok(total / updates as f64 * 1e3)
}

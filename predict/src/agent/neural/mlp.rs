//! The network and its trainer: one hidden layer (ReLU) feeding four
//! softmax heads (pitch, inter-onset class, duration class, velocity
//! bucket), trained with backpropagation and Adam on sparse binary inputs.
//!
//! The dense forward pass ([`Mlp::forward`]) performs exactly the operations
//! of the exported ONNX graph, in the same order (matrix product, then bias,
//! then ReLU; matrix product, bias, softmax per head); it is what the ONNX
//! runtimes' outputs are checked against.

use crate::features::{N_RHYTHM, N_VELOCITY};

/// Number of output heads.
pub(crate) const HEADS: usize = 4;
/// Classes per head: pitch, ioi class, duration class, velocity bucket.
pub(crate) const HEAD_SIZES: [usize; HEADS] = [128, N_RHYTHM, N_RHYTHM, N_VELOCITY];
/// Loss weight per head.
const HEAD_WEIGHTS: [f32; HEADS] = [1.0, 0.5, 0.5, 0.25];
/// Target meaning "no target for this head" (the first note's onset).
pub(crate) const NO_TARGET: u8 = u8::MAX;

/// Index of the tensors in [`Mlp::tensors`].
pub(crate) const W1: usize = 0;
pub(crate) const B1: usize = 1;
pub(crate) const fn w2(k: usize) -> usize {
    2 + k
}
pub(crate) const fn b2(k: usize) -> usize {
    2 + HEADS + k
}
pub(crate) const N_TENSORS: usize = 2 + 2 * HEADS;

/// SplitMix64: a small, fixed random number generator, so a seed gives the
/// same model on every machine and every version of every dependency.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The network's weights. `w1` is `d × h` row-major, each `w2(k)` is
/// `h × HEAD_SIZES[k]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mlp {
    pub(crate) d: usize,
    pub(crate) h: usize,
    pub(crate) tensors: Vec<Vec<f32>>,
}

/// One training example: the indices of the input features that are 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) active: Vec<u16>,
    pub(crate) targets: [u8; HEADS],
}

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TrainSettings {
    pub(crate) hidden: usize,
    pub(crate) epochs: usize,
    pub(crate) batch: usize,
    pub(crate) learning_rate: f32,
    pub(crate) weight_decay: f32,
    pub(crate) patience: usize,
    pub(crate) seed: u64,
}

pub(crate) fn shape(d: usize, h: usize, t: usize) -> (usize, usize) {
    match t {
        W1 => (d, h),
        B1 => (1, h),
        t if t < 2 + HEADS => (h, HEAD_SIZES[t - 2]),
        t => (1, HEAD_SIZES[t - 2 - HEADS]),
    }
}

fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

impl Mlp {
    /// Random initial weights (Glorot uniform), biases zero.
    pub(crate) fn init(d: usize, h: usize, rng: &mut SplitMix64) -> Mlp {
        let tensors = (0..N_TENSORS)
            .map(|t| {
                let (rows, cols) = shape(d, h, t);
                if t == B1 || t >= 2 + HEADS {
                    return vec![0.0; rows * cols];
                }
                let a = (6.0 / (rows + cols) as f32).sqrt();
                (0..rows * cols)
                    .map(|_| (rng.next_f32() * 2.0 - 1.0) * a)
                    .collect()
            })
            .collect();
        Mlp { d, h, tensors }
    }

    /// The dense forward pass, as the ONNX graph computes it: `x` has `d`
    /// values; returns the four probability vectors.
    pub(crate) fn forward(&self, x: &[f32]) -> [Vec<f32>; HEADS] {
        let (d, h) = (self.d, self.h);
        let w1 = &self.tensors[W1];
        let mut hid = vec![0.0f32; h];
        for (i, &xi) in x.iter().enumerate().take(d) {
            if xi != 0.0 {
                let row = &w1[i * h..(i + 1) * h];
                for (a, w) in hid.iter_mut().zip(row) {
                    *a += xi * w;
                }
            }
        }
        for (a, b) in hid.iter_mut().zip(&self.tensors[B1]) {
            *a = (*a + b).max(0.0);
        }
        std::array::from_fn(|k| self.head(&hid, k))
    }

    fn head(&self, hid: &[f32], k: usize) -> Vec<f32> {
        let n = HEAD_SIZES[k];
        let w = &self.tensors[w2(k)];
        let mut out = vec![0.0f32; n];
        for (j, &a) in hid.iter().enumerate() {
            if a != 0.0 {
                let row = &w[j * n..(j + 1) * n];
                for (o, wv) in out.iter_mut().zip(row) {
                    *o += a * wv;
                }
            }
        }
        for (o, b) in out.iter_mut().zip(&self.tensors[b2(k)]) {
            *o += b;
        }
        softmax(&mut out);
        out
    }

    /// Hidden activations for a sparse binary input.
    fn hidden_sparse(&self, active: &[u16], hid: &mut [f32]) {
        let h = self.h;
        hid.copy_from_slice(&self.tensors[B1]);
        let w1 = &self.tensors[W1];
        for &i in active {
            let i = usize::from(i);
            for (a, w) in hid.iter_mut().zip(&w1[i * h..(i + 1) * h]) {
                *a += w;
            }
        }
        hid.iter_mut().for_each(|a| *a = a.max(0.0));
    }

    /// Adds `scale` times the gradient of `sample`'s weighted loss to
    /// `grad` (one vector per tensor); `hid` and `dz` are scratch of size `h`.
    pub(crate) fn backprop(
        &self,
        sample: &Sample,
        scale: f32,
        grad: &mut [Vec<f32>],
        hid: &mut [f32],
        dz: &mut [f32],
    ) {
        let h = self.h;
        self.hidden_sparse(&sample.active, hid);
        dz.iter_mut().for_each(|x| *x = 0.0);
        for k in 0..HEADS {
            let t = sample.targets[k];
            if t == NO_TARGET || usize::from(t) >= HEAD_SIZES[k] {
                continue;
            }
            let n = HEAD_SIZES[k];
            let mut p = self.head(hid, k);
            p[usize::from(t)] -= 1.0;
            let lw = HEAD_WEIGHTS[k] * scale;
            p.iter_mut().for_each(|x| *x *= lw);
            let w = &self.tensors[w2(k)];
            for (j, &a) in hid.iter().enumerate() {
                let row = &w[j * n..(j + 1) * n];
                let mut back = 0.0;
                for (wv, g) in row.iter().zip(&p) {
                    back += wv * g;
                }
                dz[j] += back;
                if a != 0.0 {
                    let grow = &mut grad[w2(k)][j * n..(j + 1) * n];
                    for (gv, g) in grow.iter_mut().zip(&p) {
                        *gv += a * g;
                    }
                }
            }
            for (gv, g) in grad[b2(k)].iter_mut().zip(&p) {
                *gv += g;
            }
        }
        for (j, z) in dz.iter_mut().enumerate() {
            if hid[j] <= 0.0 {
                *z = 0.0;
            }
        }
        for &i in &sample.active {
            let i = usize::from(i);
            for (gv, z) in grad[W1][i * h..(i + 1) * h].iter_mut().zip(dz.iter()) {
                *gv += z;
            }
        }
        for (gv, z) in grad[B1].iter_mut().zip(dz.iter()) {
            *gv += z;
        }
    }

    /// Mean pitch cross-entropy (nats) over `samples`.
    pub(crate) fn pitch_loss(&self, samples: &[Sample]) -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let mut hid = vec![0.0f32; self.h];
        let mut total = 0.0f64;
        for s in samples {
            self.hidden_sparse(&s.active, &mut hid);
            let p = self.head(&hid, 0);
            total -= f64::from(p[usize::from(s.targets[0])].max(1e-30)).ln();
        }
        total / samples.len() as f64
    }
}

/// Trains a network on `train`, stopping early when the pitch loss on
/// `valid` has not improved for `patience` epochs (keeping the best
/// weights). Deterministic for a seed.
pub(crate) fn train(d: usize, train: &[Sample], valid: &[Sample], s: TrainSettings) -> Mlp {
    let mut rng = SplitMix64::new(s.seed);
    let h = s.hidden.max(1);
    let mut net = Mlp::init(d, h, &mut rng);
    let mut grad: Vec<Vec<f32>> = net.tensors.iter().map(|t| vec![0.0; t.len()]).collect();
    let mut m1: Vec<Vec<f32>> = grad.clone();
    let mut m2: Vec<Vec<f32>> = grad.clone();
    let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut step = 0i32;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best = (f64::INFINITY, net.clone());
    let mut since_best = 0;
    let mut hid = vec![0.0f32; h];
    let mut dz = vec![0.0f32; h];
    let batch = s.batch.max(1);
    for _epoch in 0..s.epochs {
        // Fisher-Yates with the seeded generator.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for chunk in order.chunks(batch) {
            grad.iter_mut()
                .for_each(|g| g.iter_mut().for_each(|x| *x = 0.0));
            let scale = 1.0 / chunk.len() as f32;
            for &idx in chunk {
                net.backprop(&train[idx], scale, &mut grad, &mut hid, &mut dz);
            }
            step += 1;
            let c1 = 1.0 - beta1.powi(step);
            let c2 = 1.0 - beta2.powi(step);
            for t in 0..N_TENSORS {
                let decay = if t == W1 || (2..2 + HEADS).contains(&t) {
                    s.weight_decay
                } else {
                    0.0
                };
                let (theta, g, a, b) = (&mut net.tensors[t], &grad[t], &mut m1[t], &mut m2[t]);
                for i in 0..theta.len() {
                    let gi = g[i] + decay * theta[i];
                    a[i] = beta1 * a[i] + (1.0 - beta1) * gi;
                    b[i] = beta2 * b[i] + (1.0 - beta2) * gi * gi;
                    theta[i] -= s.learning_rate * (a[i] / c1) / ((b[i] / c2).sqrt() + eps);
                }
            }
        }
        let loss = if valid.is_empty() {
            net.pitch_loss(train)
        } else {
            net.pitch_loss(valid)
        };
        if loss < best.0 {
            best = (loss, net.clone());
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= s.patience.max(1) {
                break;
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_data() -> Vec<Sample> {
        // Feature i (of 6) predicts pitch 60 + i; heads 1-3 follow too.
        (0..60)
            .map(|n| {
                let i = (n % 6) as u8;
                Sample {
                    active: vec![u16::from(i)],
                    targets: [60 + i, i, i, i % 8],
                }
            })
            .collect()
    }

    fn settings(seed: u64) -> TrainSettings {
        TrainSettings {
            hidden: 16,
            epochs: 60,
            batch: 8,
            learning_rate: 0.02,
            weight_decay: 0.0,
            patience: 100,
            seed,
        }
    }

    #[test]
    fn learns_a_deterministic_mapping() {
        let data = tiny_data();
        let net = train(6, &data, &[], settings(7));
        assert!(net.pitch_loss(&data) < 0.1, "{}", net.pitch_loss(&data));
        let mut x = vec![0.0; 6];
        x[3] = 1.0;
        let out = net.forward(&x);
        let best = out[0]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(best, 63);
    }

    #[test]
    fn the_same_seed_gives_the_same_weights_and_another_does_not() {
        let data = tiny_data();
        let a = train(6, &data, &data[..12], settings(1));
        let b = train(6, &data, &data[..12], settings(1));
        let c = train(6, &data, &data[..12], settings(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn gradients_match_finite_differences() {
        // One sample, compare the analytic gradient of one weight in each
        // tensor with a central difference of the loss.
        let mut rng = SplitMix64::new(3);
        let net = Mlp::init(5, 4, &mut rng);
        let sample = Sample {
            active: vec![1, 3],
            targets: [70, 2, NO_TARGET, 5],
        };
        let loss = |n: &Mlp| -> f64 {
            let mut hid = vec![0.0; n.h];
            n.hidden_sparse(&sample.active, &mut hid);
            let mut l = 0.0;
            for (k, (&t, &w)) in sample.targets.iter().zip(&HEAD_WEIGHTS).enumerate() {
                if t == NO_TARGET {
                    continue;
                }
                let p = n.head(&hid, k);
                l -= f64::from(w) * f64::from(p[usize::from(t)]).ln();
            }
            l
        };
        let mut net2 = net.clone();
        for (t, idx) in [(W1, 3 * 4 + 2), (B1, 1), (w2(0), 2 * 128 + 70), (b2(3), 5)] {
            let e = 1e-3f32;
            net2.tensors[t][idx] += e;
            let up = loss(&net2);
            net2.tensors[t][idx] -= 2.0 * e;
            let down = loss(&net2);
            net2.tensors[t][idx] += e;
            let numeric = (up - down) / (2.0 * f64::from(e));
            let analytic = analytic_grad(&net, &sample, t, idx);
            assert!(
                (numeric - f64::from(analytic)).abs() < 1e-2 * (1.0 + numeric.abs()),
                "tensor {t} index {idx}: numeric {numeric} analytic {analytic}"
            );
        }
    }

    /// The gradient train() accumulates for one sample and batch size 1.
    fn analytic_grad(net: &Mlp, sample: &Sample, t: usize, idx: usize) -> f32 {
        let mut grad: Vec<Vec<f32>> = net.tensors.iter().map(|t| vec![0.0; t.len()]).collect();
        let (mut hid, mut dz) = (vec![0.0; net.h], vec![0.0; net.h]);
        net.backprop(sample, 1.0, &mut grad, &mut hid, &mut dz);
        grad[t][idx]
    }
}

//! Intent classifier: multinomial logistic regression over sentence
//! embeddings, trained at start-up with candle's autograd and AdamW. Small
//! (384 × classes weights), so training on a demo agent takes milliseconds
//! and on all of Banking77 a few seconds.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::NluError;

#[derive(Debug, Clone)]
pub struct TrainParams {
    pub epochs: usize,
    pub learning_rate: f64,
    /// L2 penalty on the weights; keeps few-shot agents from over-confident
    /// decisions on unseen phrasings.
    pub l2: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            epochs: 400,
            learning_rate: 0.05,
            l2: 1e-4,
        }
    }
}

pub struct Classifier {
    /// dims × classes, row-major.
    weights: Vec<f32>,
    bias: Vec<f32>,
    dims: usize,
    classes: usize,
}

impl Classifier {
    /// `labels[i]` is the class index of `features[i]`.
    pub fn train(
        features: &[Vec<f32>],
        labels: &[usize],
        classes: usize,
        params: &TrainParams,
    ) -> Result<Self, NluError> {
        let err = |e: candle_core::Error| NluError::Train(e.to_string());
        let n = features.len();
        if n == 0 || classes == 0 {
            return Err(NluError::Train("no training examples".into()));
        }
        let dims = features[0].len();
        let dev = Device::Cpu;
        let flat: Vec<f32> = features.iter().flat_map(|f| f.iter().copied()).collect();
        let x = Tensor::from_vec(flat, (n, dims), &dev).map_err(err)?;
        let y = Tensor::from_vec(
            labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
            n,
            &dev,
        )
        .map_err(err)?;
        // Classes are balanced by weighting each example by 1/count(class), so
        // an intent with many examples does not swallow a rare one.
        let mut counts = vec![0f32; classes];
        for &l in labels {
            counts[l] += 1.0;
        }
        let w_ex: Vec<f32> = labels
            .iter()
            .map(|&l| n as f32 / (classes as f32 * counts[l]))
            .collect();
        let w_ex = Tensor::from_vec(w_ex, n, &dev).map_err(err)?;
        let w = Var::zeros((dims, classes), DType::F32, &dev).map_err(err)?;
        let b = Var::zeros(classes, DType::F32, &dev).map_err(err)?;
        let mut opt = AdamW::new(
            vec![w.clone(), b.clone()],
            ParamsAdamW {
                lr: params.learning_rate,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .map_err(err)?;
        for _ in 0..params.epochs {
            let logits = x
                .matmul(w.as_tensor())
                .map_err(err)?
                .broadcast_add(b.as_tensor())
                .map_err(err)?;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).map_err(err)?;
            let picked = logp
                .gather(&y.unsqueeze(1).map_err(err)?, 1)
                .map_err(err)?
                .squeeze(1)
                .map_err(err)?;
            let nll = (picked.mul(&w_ex).map_err(err)?.sum_all().map_err(err)? / (-(n as f64)))
                .map_err(err)?;
            let reg = (w.as_tensor().sqr().map_err(err)?.sum_all().map_err(err)? * params.l2)
                .map_err(err)?;
            let loss = (nll + reg).map_err(err)?;
            opt.backward_step(&loss).map_err(err)?;
        }
        let weights = w
            .as_tensor()
            .flatten_all()
            .map_err(err)?
            .to_vec1::<f32>()
            .map_err(err)?;
        let bias = b.as_tensor().to_vec1::<f32>().map_err(err)?;
        Ok(Self {
            weights,
            bias,
            dims,
            classes,
        })
    }

    /// Class probabilities for one feature vector.
    pub fn predict(&self, x: &[f32]) -> Vec<f32> {
        let mut logits = self.bias.clone();
        for (d, &xv) in x.iter().enumerate().take(self.dims) {
            if xv == 0.0 {
                continue;
            }
            let row = &self.weights[d * self.classes..(d + 1) * self.classes];
            for (l, &w) in logits.iter_mut().zip(row) {
                *l += xv * w;
            }
        }
        softmax(&mut logits);
        logits
    }

    pub fn classes(&self) -> usize {
        self.classes
    }
}

fn softmax(v: &mut [f32]) {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        s += *x;
    }
    for x in v.iter_mut() {
        *x /= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_classes_are_learned() {
        // Three clusters on the axes of a 3-d space.
        let mut feats = Vec::new();
        let mut labels = Vec::new();
        for c in 0..3 {
            for k in 0..5 {
                let mut v = vec![0.05 * k as f32; 3];
                v[c] = 1.0;
                feats.push(v);
                labels.push(c);
            }
        }
        let clf = Classifier::train(&feats, &labels, 3, &TrainParams::default()).unwrap();
        for c in 0..3 {
            let mut v = vec![0.1; 3];
            v[c] = 0.9;
            let p = clf.predict(&v);
            let best = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            assert_eq!(best, c, "{p:?}");
            assert!(p[c] > 0.6);
        }
    }
}

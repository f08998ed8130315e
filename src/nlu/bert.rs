//! The transformer layers the serving path runs (BERT and MPNet share them;
//! `embed` adds the embeddings and position bias): candle-transformers'
//! BERT layer, with query, key and value read in one product and the
//! weight matrices held as 8-bit blocks (Q8_0) where candle's int8 kernel
//! runs at full speed. A caller's turn is a dozen tokens, so each product
//! is a thin strip against a large weight matrix; measured on the 2-core
//! VM, 12 × 768 by 768 × 768 takes 75 µs as Q8_0 against 320 µs as f32,
//! but an input width that is not a multiple of 256 (MiniLM's 384) falls
//! off the fast path and is slower than f32, so those stay f32. The
//! vectors move by well under a percent (see the tests).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

/// Input widths that are a multiple of this run candle's int8 kernel at
/// full speed (measured: 512, 768, 1536, 3072 fast; 384, 640 not).
const INT8_WIDTH: usize = 256;

/// How the weight matrices are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 throughout, as the file stores them.
    Full,
    /// Q8_0 where the kernel is fast (see the module's comment), else f32.
    Int8,
}

enum Linear {
    Full(candle_nn::Linear),
    Int8 { w: QMatMul, b: Tensor },
}

impl Linear {
    fn new(w: Tensor, b: Tensor, precision: Precision) -> Result<Self> {
        let width = w.dim(1)?;
        if precision == Precision::Int8 && width.is_multiple_of(INT8_WIDTH) {
            let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
            return Ok(Self::Int8 {
                w: QMatMul::from_qtensor(q)?,
                b,
            });
        }
        Ok(Self::Full(candle_nn::Linear::new(w, Some(b))))
    }

    fn load(vb: VarBuilder, from: usize, to: usize, precision: Precision) -> Result<Self> {
        Self::new(
            vb.get((to, from), "weight")?,
            vb.get(to, "bias")?,
            precision,
        )
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Full(l) => l.forward(x),
            Self::Int8 { w, b } => w.forward(&x.contiguous()?)?.broadcast_add(b),
        }
    }
}

struct Layer {
    /// Query, key and value in one matrix (3 × hidden rows).
    qkv: Linear,
    out: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    norm: LayerNorm,
}

pub struct Encoder {
    /// Layers `first` up (a tuned network holds only its own top).
    layers: Vec<Layer>,
    first: usize,
    heads: usize,
    hidden: usize,
    act: HiddenAct,
}

impl Encoder {
    /// Layers `first` up, from under `vb` (the `encoder` prefix), named as
    /// BERT names them (MPNet's names are mapped by the caller's VarBuilder).
    pub fn load(
        vb: VarBuilder,
        config: &Config,
        precision: Precision,
        first: usize,
    ) -> Result<Self> {
        let h = config.hidden_size;
        let inner = config.intermediate_size;
        let eps = config.layer_norm_eps;
        if config.num_attention_heads == 0 || !h.is_multiple_of(config.num_attention_heads) {
            candle_core::bail!("hidden size {h} is not a whole number of attention heads");
        }
        let layers = (first..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("layer.{i}"));
                let a = l.pp("attention");
                let s = a.pp("self");
                let part = |name: &str| -> Result<(Tensor, Tensor)> {
                    Ok((
                        s.get((h, h), &format!("{name}.weight"))?,
                        s.get(h, &format!("{name}.bias"))?,
                    ))
                };
                let (q, k, v) = (part("query")?, part("key")?, part("value")?);
                Ok(Layer {
                    qkv: Linear::new(
                        Tensor::cat(&[&q.0, &k.0, &v.0], 0)?,
                        Tensor::cat(&[&q.1, &k.1, &v.1], 0)?,
                        precision,
                    )?,
                    out: Linear::load(a.pp("output").pp("dense"), h, h, precision)?,
                    attention_norm: candle_nn::layer_norm(h, eps, a.pp("output").pp("LayerNorm"))?,
                    up: Linear::load(l.pp("intermediate").pp("dense"), h, inner, precision)?,
                    down: Linear::load(l.pp("output").pp("dense"), inner, h, precision)?,
                    norm: candle_nn::layer_norm(h, eps, l.pp("output").pp("LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            first,
            heads: config.num_attention_heads,
            hidden: h,
            act: config.hidden_act,
        })
    }

    /// The network's layer count (held or not).
    pub fn layers(&self) -> usize {
        self.first + self.layers.len()
    }

    /// Hidden states (n × len × hidden) after every layer held; `bias` is
    /// added to the attention scores (n or 1 × heads or 1 × len × len or 1).
    pub fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        self.forward_layers(x, bias, self.first..self.layers())
    }

    /// The same through the layers numbered `range` only.
    pub fn forward_layers(
        &self,
        x: &Tensor,
        bias: &Tensor,
        range: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        if range.start < self.first || range.end > self.layers() {
            candle_core::bail!("layers {range:?} are not all held");
        }
        let mut x = x.clone();
        for l in &self.layers[range.start - self.first..range.end - self.first] {
            x = self.layer(l, &x, bias)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (n, len, h) = x.dims3()?;
        let d = self.hidden / self.heads;
        let heads = |t: Tensor| -> Result<Tensor> {
            t.reshape((n, len, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let qkv = l.qkv.forward(x)?;
        let q = heads(qkv.narrow(D::Minus1, 0, h)?)?;
        let k = heads(qkv.narrow(D::Minus1, h, h)?)?;
        let v = heads(qkv.narrow(D::Minus1, 2 * h, h)?)?;
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(bias)?;
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = p
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, len, h))?;
        let a = l.attention_norm.forward(&(l.out.forward(&ctx)? + x)?)?;
        let up = l.up.forward(&a)?;
        let up = match self.act {
            HiddenAct::Gelu => gelu(&up)?,
            HiddenAct::GeluApproximate => up.gelu()?,
            HiddenAct::Relu => up.relu()?,
        };
        l.norm.forward(&(l.down.forward(&up)? + a)?)
    }
}

/// GELU with erf (BERT's), erf by Abramowitz and Stegun 7.1.26 (absolute
/// error under 1.5e-7, far below the vectors' other rounding): candle's
/// per-element `erf` took a quarter of an MPNet turn's time on one core.
fn gelu(x: &Tensor) -> Result<Tensor> {
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let out: Vec<f32> = v
        .into_iter()
        .map(|x| 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)))
        .collect();
    Tensor::from_vec(out, x.shape(), x.device())
}

fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * (-a * a).exp();
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short erf is the exact one to well within the vectors' rounding,
    /// and so is the GELU built on it (against candle's, exact erf).
    #[test]
    fn the_short_erf_is_erf() {
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        for &x in &xs {
            let want = libm_erf(f64::from(x));
            assert!((f64::from(erf(x)) - want).abs() < 5e-7, "erf({x})");
        }
        let t = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let ours = gelu(&t).unwrap().to_vec1::<f32>().unwrap();
        let exact = t.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        for ((x, a), b) in xs.iter().zip(ours).zip(exact) {
            assert!((a - b).abs() < 5e-6, "gelu({x}): {a} vs {b}");
        }
    }

    /// erf by its series (small |x|) or continued fraction (large), in f64.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            // Maclaurin series: 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)).
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Beyond 3, erfc(x) < 2.3e-5: its continued fraction.
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = f64::from(k) / 2.0 / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        v.copysign(x)
    }
}

//! Fine-tuning the sentence encoder on an agent's own examples.
//!
//! The base MiniLM was trained to place paraphrases near each other in
//! general; an agent needs "my card is gone" and "someone stole my card" in
//! one place and "my card is late" in another. Training the encoder's top
//! layers end to end on the agent's intents (a cosine-softmax head: each
//! intent a unit vector, logits = scale × cosine) pulls each intent's
//! examples together and pushes intents apart, which helps the classifier
//! and the out-of-scope rules alike (both read the same embeddings).
//!
//! The forward pass here is the same BERT as candle-transformers' (which
//! serves the tuned weights afterwards), written with differentiable ops
//! only: candle's fused layer-norm and softmax kernels have no backward.
//! The embeddings and lower layers stay frozen, so their output needs no
//! gradient. Only the trained layers are saved, under the names the base
//! file uses, so the tuned file is laid over the base one when loaded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::embed::Embedder;
use super::mpnet::{self, Arch};
use super::NluError;

/// How the encoder is fine-tuned.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneParams {
    /// Passes over the examples.
    pub epochs: usize,
    /// Peak learning rate (linear warm-up over the first tenth, then linear
    /// decay to zero).
    pub learning_rate: f64,
    pub batch: usize,
    /// How many of the top transformer layers are trained (1..=6).
    pub layers: usize,
    /// Cosine-softmax temperature: logits are `scale × cos`.
    pub scale: f64,
    /// Additive cosine margin (CosFace): the true intent's cosine counts
    /// `margin` less in training, so examples must sit that much closer to
    /// their own intent than to any other before the loss lets go.
    pub margin: f64,
    /// Word pieces kept per example (caller turns are short).
    pub max_tokens: usize,
    /// Dropout in the trained layers (attention and outputs), as BERT was
    /// trained with: with ten examples an intent, the layers memorise the
    /// examples within a few steps without it.
    pub dropout: f32,
    pub seed: u64,
}

impl Default for TuneParams {
    fn default() -> Self {
        Self {
            epochs: 3,
            learning_rate: 1e-4,
            batch: 32,
            layers: 4,
            scale: 20.0,
            margin: 0.0,
            max_tokens: 48,
            dropout: 0.1,
            seed: 7,
        }
    }
}

/// What one fine-tuning run did.
#[derive(Debug, Clone)]
pub struct TuneReport {
    pub examples: usize,
    pub steps: usize,
    /// Mean loss of the first and the last epoch.
    pub first_loss: f32,
    pub last_loss: f32,
    pub ms: u64,
}

fn terr(e: candle_core::Error) -> NluError {
    NluError::Train(e.to_string())
}

/// Where the tuned layers for these examples are cached under `cache`: a
/// hash of the base model, the examples (in order) and the parameters, so a
/// restart with the same agent reuses them and any change retrains.
pub fn cache_path(
    cache: &Path,
    model_dir: &Path,
    examples: &[(String, String)],
    p: &TuneParams,
) -> PathBuf {
    let mut h = Sha256::new();
    // The fetch stamp names the pinned wheel's hash; the size guards a
    // hand-replaced file.
    h.update(std::fs::read(model_dir.join("model.safetensors.stamp")).unwrap_or_default());
    h.update(
        std::fs::metadata(model_dir.join("model.safetensors"))
            .map(|m| m.len())
            .unwrap_or(0)
            .to_le_bytes(),
    );
    h.update(format!("{p:?}").as_bytes());
    for (t, l) in examples {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
        h.update((l.len() as u64).to_le_bytes());
        h.update(l.as_bytes());
    }
    let hex: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let model = model_dir
        .file_name()
        .map_or_else(|| "encoder".into(), |n| n.to_string_lossy().to_lowercase());
    cache.join(format!("{model}-{hex}.safetensors"))
}

/// The encoder tuned on `examples`: read from `cache` when these exact
/// examples were tuned before, else tuned now and stored there.
pub fn tuned_embedder(
    model_dir: &Path,
    cache: &Path,
    examples: &[(String, String)],
    p: &TuneParams,
) -> Result<(Embedder, Option<TuneReport>), NluError> {
    let path = cache_path(cache, model_dir, examples, p);
    if path.exists() {
        if let Ok(e) = Embedder::load_tuned(model_dir, &path) {
            return Ok((e, None));
        }
        tracing::warn!(file = %path.display(), "unreadable tuned encoder; tuning again");
    }
    let (layers, report) = fine_tune(model_dir, examples, p)?;
    std::fs::create_dir_all(cache).map_err(|e| NluError::Train(e.to_string()))?;
    // Written aside and renamed: a node starting meanwhile never maps half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    candle_core::safetensors::save(&layers, &tmp).map_err(terr)?;
    std::fs::rename(&tmp, &path).map_err(|e| NluError::Train(e.to_string()))?;
    prune(cache, KEEP);
    Ok((Embedder::load_tuned(model_dir, &path)?, Some(report)))
}

/// The examples to tune on when the out-of-scope rule is calibrated
/// afterwards: all but those calibration holds out
/// ([`super::scope::holdout_mask`]). Tuned on those too, the encoder would
/// score them as it scores its training examples, far above how it scores
/// a caller's new words, and the threshold chosen on them would reject
/// more real requests than calibration measured.
pub fn for_calibration(examples: &[(String, String)]) -> Vec<(String, String)> {
    let labels: Vec<&str> = examples.iter().map(|(_, c)| c.as_str()).collect();
    let held = super::scope::holdout_mask(&labels);
    examples
        .iter()
        .zip(held)
        .filter(|(_, h)| !h)
        .map(|(e, _)| e.clone())
        .collect()
}

/// Tuned encoders kept in a cache directory: every agent version and every
/// change of examples makes one (MiniLM's top 4 layers: 14 MB; MPNet's:
/// 113 MB).
const KEEP: usize = 16;

/// Deletes all but the `keep` newest tuned files in `cache`. A running node
/// keeps the mapping of one deleted under it.
fn prune(cache: &Path, keep: usize) {
    let Ok(dir) = std::fs::read_dir(cache) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, p) in files.into_iter().skip(keep) {
        let _ = std::fs::remove_file(p);
    }
}

struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, l, h) = x.dims3()?;
        let y = x.reshape((n * l, h))?.matmul(&self.w.t()?)?;
        y.broadcast_add(&self.b)?.reshape((n, l, ()))
    }
}

struct LayerNorm {
    g: Tensor,
    b: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let c = x.broadcast_sub(&mean)?;
        let var = c.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = c.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.g)?.broadcast_add(&self.b)
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln1: LayerNorm,
    up: Linear,
    down: Linear,
    ln2: LayerNorm,
}

/// MiniLM with its top layers trainable.
struct Encoder {
    word: Tensor,
    /// From the network's first position on (see `mpnet`).
    pos: Tensor,
    /// Token type 0's row; MPNet has none.
    kind: Option<Tensor>,
    /// MPNet's relative-position table.
    relative: Option<Tensor>,
    ln: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    /// Layers from this index on are trained.
    first_trained: usize,
    /// The trained tensors by their name in the base file.
    vars: Vec<(String, Var)>,
}

impl Encoder {
    fn load(model_dir: &Path, trained: usize) -> Result<Self, NluError> {
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(model_dir.join("config.json"))
                .map_err(|e| NluError::Model(e.to_string()))?,
        )
        .map_err(|e| NluError::Model(e.to_string()))?;
        let arch = Arch::of(&cfg);
        let first_position = arch.first_position(&cfg);
        let n_layers = cfg["num_hidden_layers"].as_u64().unwrap_or(0) as usize;
        let heads = cfg["num_attention_heads"].as_u64().unwrap_or(0) as usize;
        let eps = cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12);
        if n_layers == 0 || heads == 0 {
            return Err(NluError::Model("config.json lacks the layer counts".into()));
        }
        let mut all: HashMap<String, Tensor> =
            candle_core::safetensors::load(model_dir.join("model.safetensors"), &Device::Cpu)
                .map_err(|e| NluError::Model(e.to_string()))?;
        let first_trained = n_layers - trained.clamp(1, n_layers);
        let mut vars = Vec::new();
        let mut take = |name: String, train: bool| -> Result<Tensor, NluError> {
            // Saved under the base file's own name, so the tuned file lays
            // over it whatever the network.
            let name = arch.stored(&name);
            let t = all
                .remove(&name)
                .ok_or_else(|| NluError::Model(format!("{name} missing from the weights")))?
                .to_dtype(DType::F32)
                .map_err(terr)?;
            if !train {
                return Ok(t);
            }
            let v = Var::from_tensor(&t).map_err(terr)?;
            let t = v.as_tensor().clone();
            vars.push((name, v));
            Ok(t)
        };
        let mut lin = |p: &str, train: bool| -> Result<Linear, NluError> {
            Ok(Linear {
                w: take(format!("{p}.weight"), train)?,
                b: take(format!("{p}.bias"), train)?,
            })
        };
        let mut layers = Vec::new();
        for i in 0..n_layers {
            let t = i >= first_trained;
            let p = format!("encoder.layer.{i}");
            let q = lin(&format!("{p}.attention.self.query"), t)?;
            let k = lin(&format!("{p}.attention.self.key"), t)?;
            let v = lin(&format!("{p}.attention.self.value"), t)?;
            let o = lin(&format!("{p}.attention.output.dense"), t)?;
            let ln1 = lin(&format!("{p}.attention.output.LayerNorm"), t)?;
            let up = lin(&format!("{p}.intermediate.dense"), t)?;
            let down = lin(&format!("{p}.output.dense"), t)?;
            let ln2 = lin(&format!("{p}.output.LayerNorm"), t)?;
            layers.push(Layer {
                q,
                k,
                v,
                o,
                ln1: LayerNorm {
                    g: ln1.w,
                    b: ln1.b,
                    eps,
                },
                up,
                down,
                ln2: LayerNorm {
                    g: ln2.w,
                    b: ln2.b,
                    eps,
                },
            });
        }
        let ln = lin("embeddings.LayerNorm", false)?;
        let word = take("embeddings.word_embeddings.weight".into(), false)?;
        let pos = take("embeddings.position_embeddings.weight".into(), false)?;
        // A config whose position offset passes the table is refused, not
        // wrapped around.
        let rows = pos
            .dim(0)
            .map_err(terr)?
            .checked_sub(first_position)
            .filter(|&r| r > 0)
            .ok_or_else(|| {
                NluError::Model("the position table is shorter than its offset".into())
            })?;
        let pos = pos.narrow(0, first_position, rows).map_err(terr)?;
        let (kind, relative) = match arch {
            Arch::Bert => (
                Some(
                    take("embeddings.token_type_embeddings.weight".into(), false)?
                        .get(0)
                        .map_err(terr)?,
                ),
                None,
            ),
            Arch::Mpnet => (None, Some(take(mpnet::RELATIVE_TABLE.into(), false)?)),
        };
        Ok(Self {
            word,
            pos,
            kind,
            relative,
            ln: LayerNorm {
                g: ln.w,
                b: ln.b,
                eps,
            },
            layers,
            heads,
            first_trained,
            vars,
        })
    }

    /// The padding bias with MPNet's relative-position bias added.
    fn attention_bias(&self, padding: &Tensor) -> candle_core::Result<Tensor> {
        match &self.relative {
            Some(t) => padding.broadcast_add(&mpnet::relative_bias(t, padding.dim(3)?)?),
            None => Ok(padding.clone()),
        }
    }

    /// The frozen part: embeddings and the untrained layers (no gradient).
    fn frozen(&self, ids: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (n, l) = ids.dims2()?;
        let words = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((n, l, ()))?;
        let pos = self.pos.narrow(0, 0, l)?.unsqueeze(0)?;
        let mut x = words.broadcast_add(&pos)?;
        if let Some(kind) = &self.kind {
            x = x.broadcast_add(kind)?;
        }
        let mut x = self.ln.forward(&x)?;
        for layer in &self.layers[..self.first_trained] {
            x = self.layer(layer, &x, bias, 0.0)?;
        }
        Ok(x.detach())
    }

    fn layer(
        &self,
        m: &Layer,
        x: &Tensor,
        bias: &Tensor,
        drop: f32,
    ) -> candle_core::Result<Tensor> {
        let dropout = |t: Tensor| {
            if drop > 0.0 {
                candle_nn::ops::dropout(&t, drop)
            } else {
                Ok(t)
            }
        };
        let (n, l, h) = x.dims3()?;
        let dh = h / self.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((n, l, self.heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(m.q.forward(x)?)?;
        let k = split(m.k.forward(x)?)?;
        let v = split(m.v.forward(x)?)?;
        let scores =
            (q.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?.broadcast_add(bias)?;
        // Softmax from differentiable ops; the max only shifts (no gradient).
        let max = scores.max_keepdim(D::Minus1)?.detach();
        let e = scores.broadcast_sub(&max)?.exp()?;
        let probs = dropout(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, l, h))?;
        let a = m.ln1.forward(&(dropout(m.o.forward(&ctx)?)? + x)?)?;
        let f = dropout(m.down.forward(&m.up.forward(&a)?.gelu_erf()?)?)?;
        m.ln2.forward(&(f + a)?)
    }

    /// Unit sentence embeddings (mean over real tokens), as the embedder makes.
    fn trained(
        &self,
        x: &Tensor,
        bias: &Tensor,
        mask: &Tensor,
        drop: f32,
    ) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers[self.first_trained..] {
            x = self.layer(layer, &x, bias, drop)?;
        }
        let m = mask.unsqueeze(2)?;
        let mean = x
            .broadcast_mul(&m)?
            .sum(1)?
            .broadcast_div(&m.sum(1)?.clamp(1e-9, f64::MAX)?)?;
        unit_rows(&mean)
    }
}

fn unit_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// One padded batch: ids, the mask as f32 and the attention bias.
struct Batch {
    ids: Tensor,
    mask: Tensor,
    bias: Tensor,
    labels: Tensor,
}

fn batch(tok: &Tokenizer, texts: &[&str], labels: &[u32]) -> Result<Batch, NluError> {
    let enc = tok
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| NluError::Train(e.to_string()))?;
    let n = texts.len();
    let l = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(n * l);
    let mut mask = Vec::with_capacity(n * l);
    for e in &enc {
        ids.extend(e.get_ids().iter().copied());
        mask.extend(e.get_attention_mask().iter().map(|&m| m as f32));
    }
    let dev = Device::Cpu;
    let ids = Tensor::from_vec(ids, (n, l), &dev).map_err(terr)?;
    let mask = Tensor::from_vec(mask, (n, l), &dev).map_err(terr)?;
    // Padding gets -10,000 before the softmax, as BERT does.
    let bias = ((mask.ones_like().map_err(terr)? - &mask).map_err(terr)? * -10_000.0)
        .map_err(terr)?
        .reshape((n, 1, 1, l))
        .map_err(terr)?;
    let labels = Tensor::from_vec(labels.to_vec(), n, &dev).map_err(terr)?;
    Ok(Batch {
        ids,
        mask,
        bias,
        labels,
    })
}

/// Tunes the top layers on `(text, intent)` pairs; returns the trained
/// tensors by name.
pub fn fine_tune(
    model_dir: &Path,
    examples: &[(String, String)],
    p: &TuneParams,
) -> Result<(HashMap<String, Tensor>, TuneReport), NluError> {
    let t0 = Instant::now();
    if examples.is_empty() {
        return Err(NluError::Train("no training examples".into()));
    }
    // A batch of 0 (a typo on the command line) would make empty chunks.
    let p = &TuneParams {
        batch: p.batch.max(1),
        epochs: p.epochs.max(1),
        ..p.clone()
    };
    let enc = Encoder::load(model_dir, p.layers)?;
    let mut tok = Tokenizer::from_file(model_dir.join("tokenizer.json"))
        .map_err(|e| NluError::Model(e.to_string()))?;
    tok.with_truncation(Some(TruncationParams {
        max_length: p.max_tokens,
        ..Default::default()
    }))
    .map_err(|e| NluError::Model(e.to_string()))?;
    tok.with_padding(Some(PaddingParams::default()));

    let mut index: BTreeMap<&str, u32> = BTreeMap::new();
    for (_, l) in examples {
        let next = index.len() as u32;
        index.entry(l.as_str()).or_insert(next);
    }
    let classes = index.len();
    let texts: Vec<String> = examples
        .iter()
        .map(|(t, _)| t.trim().to_lowercase())
        .collect();
    let labels: Vec<u32> = examples.iter().map(|(_, l)| index[l.as_str()]).collect();

    // The head starts at each intent's mean base embedding: the first steps
    // then refine a sensible classifier instead of fighting a random one.
    let base = Embedder::load(model_dir)?;
    let feats = base.embed_many(&texts)?;
    let dims = feats[0].len();
    let mut centroids = vec![0f32; classes * dims];
    for (f, &l) in feats.iter().zip(&labels) {
        for (c, x) in centroids[l as usize * dims..(l as usize + 1) * dims]
            .iter_mut()
            .zip(f)
        {
            *c += x;
        }
    }
    let head = Var::from_tensor(
        &Tensor::from_vec(centroids, (classes, dims), &Device::Cpu).map_err(terr)?,
    )
    .map_err(terr)?;
    let mut params: Vec<Var> = enc.vars.iter().map(|(_, v)| v.clone()).collect();
    params.push(head.clone());
    let mut opt = AdamW::new(
        params,
        ParamsAdamW {
            lr: p.learning_rate,
            weight_decay: 0.01,
            ..Default::default()
        },
    )
    .map_err(terr)?;

    // Batches of similar lengths (little padding), in a new order each epoch.
    let mut rng = fastrand::Rng::with_seed(p.seed);
    let per_epoch = texts.len().div_ceil(p.batch.max(1));
    let total = per_epoch * p.epochs.max(1);
    let warm = (total / 10).max(1);
    let mut step = 0usize;
    let (mut first_loss, mut last_loss) = (0f32, 0f32);
    for epoch in 0..p.epochs.max(1) {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        rng.shuffle(&mut order);
        for pool in order.chunks_mut(p.batch * 16) {
            pool.sort_by_key(|&i| texts[i].len());
        }
        let mut batches: Vec<&[usize]> = order.chunks(p.batch.max(1)).collect();
        rng.shuffle(&mut batches);
        let mut sum = 0f32;
        for idx in &batches {
            let bt: Vec<&str> = idx.iter().map(|&i| texts[i].as_str()).collect();
            let bl: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
            let b = batch(&tok, &bt, &bl)?;
            let lr = if step < warm {
                p.learning_rate * (step + 1) as f64 / warm as f64
            } else {
                p.learning_rate * (total - step) as f64 / (total - warm).max(1) as f64
            };
            opt.set_learning_rate(lr);
            let loss = (|| -> candle_core::Result<Tensor> {
                let bias = enc.attention_bias(&b.bias)?;
                let x = enc.frozen(&b.ids, &bias)?;
                let emb = enc.trained(&x, &bias, &b.mask, p.dropout)?;
                let w = unit_rows(head.as_tensor())?;
                let cos = emb.matmul(&w.t()?)?;
                let cos = if p.margin > 0.0 {
                    let hot = candle_nn::encoding::one_hot(b.labels.clone(), classes, 1f32, 0f32)?;
                    (cos - (hot * p.margin)?)?
                } else {
                    cos
                };
                let logits = (cos * p.scale)?;
                let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                let picked = logp.gather(&b.labels.unsqueeze(1)?, 1)?;
                picked.mean_all()?.neg()
            })()
            .map_err(terr)?;
            opt.backward_step(&loss).map_err(terr)?;
            sum += loss.to_scalar::<f32>().map_err(terr)?;
            step += 1;
        }
        let mean = sum / batches.len().max(1) as f32;
        if epoch == 0 {
            first_loss = mean;
        }
        last_loss = mean;
        tracing::debug!(epoch, loss = mean, "encoder fine-tuning");
    }
    let layers = enc
        .vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    Ok((
        layers,
        TuneReport {
            examples: texts.len(),
            steps: step,
            first_loss,
            last_loss,
            ms: t0.elapsed().as_millis() as u64,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(super::super::embed::DEFAULT_DIR)
    }

    /// The trainable forward pass is the serving one: before any step it
    /// gives the embeddings the serving path gives at full precision.
    #[test]
    fn the_trainable_encoder_matches_the_serving_one() {
        trainable_matches_serving(&model_dir());
    }

    /// The same for MPNet, whose relative-position bias, position offset
    /// and names both paths take from `mpnet`.
    #[test]
    fn the_trainable_mpnet_matches_the_serving_one() {
        trainable_matches_serving(&model_dir().with_file_name("all-mpnet-base-v2"));
    }

    fn trainable_matches_serving(dir: &Path) {
        let served = Embedder::load_as(dir, super::super::embed::Precision::Full)
            .expect("scripts/setup.sh fetches the model");
        let enc = Encoder::load(dir, 2).unwrap();
        let mut tok = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tok.with_padding(Some(PaddingParams::default()));
        let texts = [
            "i lost my card",
            "what are your opening hours on a sunday morning",
        ];
        let b = batch(&tok, &texts, &[0, 0]).unwrap();
        let bias = enc.attention_bias(&b.bias).unwrap();
        let x = enc.frozen(&b.ids, &bias).unwrap();
        let ours = enc
            .trained(&x, &bias, &b.mask, 0.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (t, v) in texts.iter().zip(&ours) {
            let want = served.embed(t).unwrap();
            let cos = super::super::embed::dot(v, &want);
            assert!(cos > 0.9999, "{t}: cosine {cos}");
        }
    }

    /// A few steps on two intents pull their examples apart, and the tuned
    /// file is laid over the base model when read back from the cache.
    #[test]
    fn tuning_separates_intents_and_is_cached() {
        let dir = model_dir();
        let ex: Vec<(String, String)> = [
            ("my card was stolen", "lost"),
            ("i lost my card", "lost"),
            ("someone took my card", "lost"),
            ("where is my new card", "arrival"),
            ("my card has not arrived", "arrival"),
            ("when will my card come", "arrival"),
        ]
        .iter()
        .map(|(t, l)| (t.to_string(), l.to_string()))
        .collect();
        let p = TuneParams {
            epochs: 6,
            batch: 6,
            layers: 1,
            dropout: 0.0,
            ..Default::default()
        };
        let cache = tempfile::tempdir().unwrap();
        // Loaded first, as a server holds it before its agents are built.
        let base = Embedder::load(&dir).unwrap();
        let (tuned, report) = tuned_embedder(&dir, cache.path(), &ex, &p).unwrap();
        let report = report.expect("tuned now");
        assert_eq!(report.steps, 6);
        assert!(report.last_loss < report.first_loss, "{report:?}");
        // The base half is computed by the network already loaded, not a
        // second copy of its weights.
        assert!(tuned.shares_base_with(&base));
        let gap = |e: &Embedder| {
            let v = e
                .embed_many(&["my card is gone", "my card is late"])
                .unwrap();
            super::super::embed::dot(&v[0], &v[1])
        };
        assert!(
            gap(&tuned) < gap(&base),
            "{} vs {}",
            gap(&tuned),
            gap(&base)
        );
        // The tuned vector keeps the base network's beside its own, each
        // half unit length, the whole unit length.
        let v = tuned.embed("my card is gone").unwrap();
        let plain = base.embed("my card is gone").unwrap();
        assert_eq!(v.len(), 2 * plain.len());
        let (own, kept) = v.split_at(plain.len());
        let half = std::f32::consts::FRAC_1_SQRT_2;
        assert!((super::super::embed::dot(&v, &v) - 1.0).abs() < 1e-4);
        let cos_kept = super::super::embed::dot(kept, &plain) / half;
        assert!(cos_kept > 0.9999, "base half: cosine {cos_kept}");
        let cos_own = super::super::embed::dot(own, &plain) / half;
        assert!(cos_own < 0.9999, "tuned half: cosine {cos_own}");
        // Same examples again: read from the cache, not tuned.
        let (again, report) = tuned_embedder(&dir, cache.path(), &ex, &p).unwrap();
        assert!(report.is_none());
        assert_eq!(gap(&again), gap(&tuned));
    }

    /// Tuning for a calibrated agent leaves out exactly what calibration
    /// holds out, so those examples stay unseen by the encoder.
    #[test]
    fn tuning_for_calibration_leaves_out_the_calibration_holdout() {
        let ex: Vec<(String, String)> = (0..10)
            .flat_map(|i| {
                [
                    (format!("card {i}"), "card".to_string()),
                    (format!("loan {i}"), "loan".to_string()),
                ]
            })
            .chain([("hi".to_string(), "greet".to_string())])
            .collect();
        let kept = for_calibration(&ex);
        assert_eq!(kept.len(), ex.len() - 4);
        for gone in ["card 4", "card 9", "loan 4", "loan 9"] {
            assert!(!kept.iter().any(|(t, _)| t == gone), "{gone}");
        }
        assert!(
            kept.iter().any(|(t, _)| t == "hi"),
            "small classes stay whole"
        );
    }

    #[test]
    fn the_cache_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            let f = dir.path().join(format!("minilm-{i}.safetensors"));
            std::fs::write(&f, b"x").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"kept").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["minilm-3.safetensors", "minilm-4.safetensors", "notes.txt"]
        );
    }

    #[test]
    fn cache_names_follow_examples_and_parameters() {
        let dir = Path::new("/nonexistent");
        let ex = vec![("my card is gone".to_string(), "lost_card".to_string())];
        let p = TuneParams::default();
        let a = cache_path(dir, dir, &ex, &p);
        assert_eq!(a, cache_path(dir, dir, &ex, &p));
        let mut ex2 = ex.clone();
        ex2[0].1 = "card_arrival".into();
        assert_ne!(a, cache_path(dir, dir, &ex2, &p));
        let p2 = TuneParams {
            epochs: 5,
            ..p.clone()
        };
        assert_ne!(a, cache_path(dir, dir, &ex, &p2));
    }
}

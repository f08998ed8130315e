//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims) run by
//! candle: mean pooling over real tokens, then L2 normalisation, exactly as
//! sentence-transformers' pooling config for this model says.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::NluError;
use crate::derived::{self, DiskCache};

/// Where `models/fetch.py` puts the model.
pub const DEFAULT_DIR: &str = "models/nlu/all-MiniLM-L6-v2";
/// The model's output size.
pub const DIM: usize = 384;
/// Caller turns are short; longer text is truncated (the model was trained on
/// up to 128 word pieces anyway).
const MAX_TOKENS: usize = 128;
/// Sentences per forward pass when embedding a batch (training examples).
const BATCH: usize = 64;

/// (input index, embedding) pairs from one worker.
type Embedded = Vec<(usize, Vec<f32>)>;

pub struct Embedder {
    /// Where the base model lives (fine-tuning starts from it).
    dir: PathBuf,
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    /// The weights (base and tuned) the vectors depend on.
    identity: Vec<u8>,
    /// Embeddings of fixed texts, kept beside the model.
    fixed: DiskCache,
}

/// Files of embedded example sets kept (one per agent version and language).
const FIXED_SETS_KEPT: usize = 256;

impl Embedder {
    pub fn load(dir: &Path) -> Result<Self, NluError> {
        Self::load_with(dir, None)
    }

    /// The model in `dir` with the layers in `tuned` (see [`super::tune`])
    /// laid over its own.
    pub fn load_tuned(dir: &Path, tuned: &Path) -> Result<Self, NluError> {
        Self::load_with(dir, Some(tuned))
    }

    fn load_with(dir: &Path, tuned: Option<&Path>) -> Result<Self, NluError> {
        let missing = |p: PathBuf| {
            NluError::Model(format!("{} is missing (run scripts/setup.sh)", p.display()))
        };
        let cfg_path = dir.join("config.json");
        let weights = dir.join("model.safetensors");
        let tok_path = dir.join("tokenizer.json");
        for p in [&cfg_path, &weights, &tok_path] {
            if !p.exists() {
                return Err(missing(p.clone()));
            }
        }
        let cfg_text =
            std::fs::read_to_string(&cfg_path).map_err(|e| NluError::Model(e.to_string()))?;
        let config: Config = serde_json::from_str(&cfg_text)
            .map_err(|e| NluError::Model(format!("{}: {e}", cfg_path.display())))?;
        let device = Device::Cpu;
        // SAFETY: the weights file is not modified while mapped; fetch.py
        // replaces files by rename, so a running server keeps its old mapping.
        // Later files win: the tuned layers replace the base ones.
        let files: Vec<PathBuf> = std::iter::once(weights)
            .chain(tuned.map(Path::to_path_buf))
            .collect();
        let mut identity = format!("mean-l2-{MAX_TOKENS}-v1").into_bytes();
        for f in &files {
            identity.extend(derived::model_identity(f));
            identity.extend(
                f.file_name()
                    .map(|n| n.as_encoded_bytes().to_vec())
                    .unwrap_or_default(),
            );
        }
        let fixed = DiskCache::new(
            dir.parent().unwrap_or(dir).join("cache"),
            "emb",
            FIXED_SETS_KEPT,
        );
        // SAFETY: mapped read-only; nothing of ours writes these files in
        // place (fetch and nlu::tune write aside and rename, prunes delete),
        // so a mapping keeps its pages.
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &device) }
            .map_err(|e| NluError::Model(e.to_string()))?;
        let model = BertModel::load(vb, &config).map_err(|e| NluError::Model(e.to_string()))?;
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| NluError::Model(format!("{}: {e}", tok_path.display())))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| NluError::Model(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
            device,
            identity,
            fixed,
        })
    }

    /// The base model's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Embeds one sentence.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, NluError> {
        Ok(self.embed_batch(&[text])?.pop().unwrap_or_default())
    }

    /// Embeds many sentences, batching similar lengths together so padding
    /// stays small. Output order follows input order.
    pub fn embed_many<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, NluError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].as_ref().len());
        let chunks: Vec<&[usize]> = order.chunks(BATCH).collect();
        // candle runs most of a small BERT on one core; batches are
        // independent, so spread them over the machine's cores.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(chunks.len().max(1));
        let results: Vec<Result<Embedded, NluError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let chunks = &chunks;
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for chunk in chunks.iter().skip(w).step_by(workers) {
                            let batch: Vec<&str> =
                                chunk.iter().map(|&i| texts[i].as_ref()).collect();
                            out.extend(chunk.iter().copied().zip(self.embed_batch(&batch)?));
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(NluError::Model("embedding worker panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = vec![Vec::new(); texts.len()];
        for r in results {
            for (i, v) in r? {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Embeds an agent's fixed texts (its examples, its articles'
    /// questions) as `embed_many` does, reading them back from beside the
    /// model when this model embedded exactly these texts before: a restart
    /// or another node with the same agent then skips the work. Never for
    /// what callers said.
    pub fn embed_fixed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, NluError> {
        let key = derived::key(
            std::iter::once(self.identity.as_slice()).chain(texts.iter().map(|t| t.as_bytes())),
        );
        if let Some(v) = self.fixed.get(&key).and_then(|b| unpack(&b, texts.len())) {
            return Ok(v);
        }
        let v = self.embed_many(texts)?;
        self.fixed.put(&key, &pack(&v));
        Ok(v)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, NluError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e: candle_core::Error| NluError::Model(e.to_string());
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| NluError::Model(e.to_string()))?;
        let len = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let n = texts.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &enc {
            ids.extend(e.get_ids().iter().map(|&x| x as i64));
            mask.extend(e.get_attention_mask().iter().map(|&x| x as i64));
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device).map_err(err)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device).map_err(err)?;
        let types = ids.zeros_like().map_err(err)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(err)?;
        // Mean over real tokens only.
        let m = mask
            .to_dtype(DType::F32)
            .map_err(err)?
            .unsqueeze(2)
            .map_err(err)?;
        let summed = hidden.broadcast_mul(&m).map_err(err)?.sum(1).map_err(err)?;
        let counts = m.sum(1).map_err(err)?.clamp(1e-9, f32::MAX).map_err(err)?;
        let mean = summed.broadcast_div(&counts).map_err(err)?;
        let norm = mean
            .sqr()
            .map_err(err)?
            .sum_keepdim(1)
            .map_err(err)?
            .sqrt()
            .map_err(err)?;
        let unit = mean
            .broadcast_div(&norm.clamp(1e-12, f32::MAX).map_err(err)?)
            .map_err(err)?;
        unit.to_vec2::<f32>().map_err(err)
    }
}

/// Vectors as bytes: their count and size, then the values (little-endian).
fn pack(v: &[Vec<f32>]) -> Vec<u8> {
    let dims = v.first().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(8 + v.len() * dims * 4);
    out.extend((v.len() as u32).to_le_bytes());
    out.extend((dims as u32).to_le_bytes());
    for x in v.iter().flatten() {
        out.extend(x.to_le_bytes());
    }
    out
}

/// `pack`'s bytes back, if they hold `n` vectors of one size.
fn unpack(b: &[u8], n: usize) -> Option<Vec<Vec<f32>>> {
    let word = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let (count, dims) = (word(0)?, word(4)?);
    let body = b.get(8..)?;
    if count != n || body.len() != count.checked_mul(dims)?.checked_mul(4)? {
        return None;
    }
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(
        values
            .chunks(dims.max(1))
            .take(n)
            .map(<[f32]>::to_vec)
            .collect(),
    )
}

/// Cosine similarity of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_vectors_come_back_only_whole() {
        let v = vec![vec![0.5f32, -1.0], vec![2.0, 3.25]];
        let b = pack(&v);
        assert_eq!(unpack(&b, 2), Some(v));
        assert_eq!(unpack(&b, 3), None, "another count");
        assert_eq!(unpack(&b[..b.len() - 1], 2), None, "cut short");
        assert_eq!(unpack(&[], 0), None);
    }
}

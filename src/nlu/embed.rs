//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims) run by
//! candle: mean pooling over real tokens, then L2 normalisation, exactly as
//! sentence-transformers' pooling config for this model says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{Tokenizer, TruncationParams};

use super::bert::Encoder;
pub use super::bert::Precision;
use super::mpnet::{self, Arch};
use super::unigram::Unigram;

use super::NluError;
use crate::derived::{self, DiskCache};

/// Where `models/fetch.py` puts the model.
pub const DEFAULT_DIR: &str = "models/nlu/all-MiniLM-L6-v2";
/// The encoder for languages other than English, beside the default one
/// (`models/fetch.py --with-base`): multilingual-e5-small.
pub const MULTILINGUAL: &str = "multilingual-e5-small";

/// Sentences of every kind, in the languages the multilingual encoder
/// serves, whose mean is taken out of its vectors. e5 puts any two
/// sentences at a cosine of 0.75 or more (one direction is common to all);
/// without it, the similarities MiniLM's thresholds were set on (articles
/// at 0.62, "understood" at 0.7) would pass nearly anything.
const CENTRE_ON: &[&str] = &[
    "what's the weather like tomorrow",
    "i would like to book a table for two",
    "can you help me with my account",
    "the train leaves at seven in the morning",
    "my daughter plays the piano",
    "how do i reset my password",
    "thank you very much goodbye",
    "where is the nearest pharmacy",
    "i lost my keys yesterday",
    "please send me the invoice",
    "who won the football match",
    "yes",
    "no thanks",
    "hello",
    "i want to talk to someone",
    "the package never arrived",
    "qué tiempo hará mañana",
    "quisiera reservar una mesa para dos",
    "me puede ayudar con mi cuenta",
    "el tren sale a las siete de la mañana",
    "mi hija toca el piano",
    "cómo cambio mi contraseña",
    "muchas gracias adiós",
    "dónde está la farmacia más cercana",
    "ayer perdí las llaves",
    "por favor envíeme la factura",
    "quién ganó el partido de fútbol",
    "sí",
    "no gracias",
    "hola",
    "quiero hablar con alguien",
    "el paquete nunca llegó",
];
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
    /// The base network: the one the server already holds for this folder,
    /// when it does.
    model: Arc<Model>,
    /// A tuned encoder's own top layers. Its vector is kept beside the base
    /// network's (each half unit length, the whole scaled back to unit
    /// length): tuning pulls a new request towards the intent it resembles
    /// most, the base network still tells it apart, so together they catch
    /// more out-of-scope requests than either (docs/agents.md).
    tuned: Option<Tuned>,
    tokenizer: Tokens,
    device: Device,
    /// The weights (base and tuned) the vectors depend on.
    identity: Vec<u8>,
    /// Embeddings of fixed texts, kept beside the model.
    fixed: DiskCache,
    /// What the model was trained to see before every sentence (e5's
    /// "query: "), from sentence-transformers' `default_prompt_name`.
    prefix: String,
    /// Taken out of every vector before it is normalised (see `CENTRE_ON`).
    centre: Option<Vec<f32>>,
    /// The encoder for other languages, loaded when an agent first needs it.
    multilingual: std::sync::OnceLock<Option<Arc<Embedder>>>,
    /// Other encoders beside this one that agents asked for by name
    /// (`nlu.encoder`), loaded once however many agents and versions use them.
    named: parking_lot::Mutex<std::collections::HashMap<String, Arc<Embedder>>>,
}

/// The prompt a sentence-transformers folder asks every sentence to start
/// with (`config_sentence_transformers.json`), or none.
fn default_prompt(dir: &Path) -> Result<String, NluError> {
    let path = dir.join("config_sentence_transformers.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(String::new());
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| NluError::Model(format!("{}: {e}", path.display())))?;
    Ok(v.get("default_prompt_name")
        .and_then(|n| v.get("prompts")?.get(n.as_str()?)?.as_str())
        .unwrap_or_default()
        .to_string())
}

/// How sentences become token ids.
enum Tokens {
    /// WordPiece and the like, through `tokenizers` (truncating).
    Crate(Box<Tokenizer>),
    /// SentencePiece unigram, ours (see `unigram`).
    Unigram(Unigram),
}

impl Tokens {
    fn load(path: &Path) -> Result<Self, NluError> {
        if let Some(u) = Unigram::from_file(path)? {
            return Ok(Self::Unigram(u));
        }
        let mut t = Tokenizer::from_file(path)
            .map_err(|e| NluError::Model(format!("{}: {e}", path.display())))?;
        t.with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..Default::default()
        }))
        .map_err(|e| NluError::Model(e.to_string()))?;
        t.with_padding(None);
        Ok(Self::Crate(Box::new(t)))
    }

    /// Each text's ids, special tokens included, at most MAX_TOKENS.
    fn encode(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>, NluError> {
        match self {
            Self::Crate(t) => Ok(t
                .encode_batch(texts, true)
                .map_err(|e| NluError::Model(e.to_string()))?
                .iter()
                .map(|e| e.get_ids().to_vec())
                .collect()),
            Self::Unigram(u) => Ok(texts.iter().map(|t| u.encode(t, MAX_TOKENS)).collect()),
        }
    }
}

/// Files of embedded example sets kept (one per agent version and language).
const FIXED_SETS_KEPT: usize = 256;

impl Embedder {
    pub fn load(dir: &Path) -> Result<Self, NluError> {
        Self::load_with(dir, None, Precision::Int8)
    }

    /// The model in `dir` with its weights held as `precision` says (the
    /// server holds them as [`Precision::Int8`]; `Full` is for measuring
    /// what that costs).
    pub fn load_as(dir: &Path, precision: Precision) -> Result<Self, NluError> {
        Self::load_with(dir, None, precision)
    }

    /// The model in `dir` with the layers in `tuned` (see [`super::tune`])
    /// laid over its own.
    pub fn load_tuned(dir: &Path, tuned: &Path) -> Result<Self, NluError> {
        Self::load_with(dir, Some(tuned), Precision::Int8)
    }

    fn load_with(dir: &Path, tuned: Option<&Path>, precision: Precision) -> Result<Self, NluError> {
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
        let bad = |e: serde_json::Error| NluError::Model(format!("{}: {e}", cfg_path.display()));
        let raw: serde_json::Value = serde_json::from_str(&cfg_text).map_err(bad)?;
        let arch = Arch::of(&raw);
        let first_position = arch.first_position(&raw);
        let config: Config = serde_json::from_value(arch.bert_config(raw)?).map_err(bad)?;
        let device = Device::Cpu;
        // SAFETY: the weights file is not modified while mapped; fetch.py
        // replaces files by rename, so a running server keeps its old mapping.
        // Later files win: the tuned layers replace the base ones.
        let files: Vec<PathBuf> = std::iter::once(weights)
            .chain(tuned.map(Path::to_path_buf))
            .collect();
        let prefix = default_prompt(dir)?;
        let mut identity = format!("mean-l2-{MAX_TOKENS}-v1{prefix}-{precision:?}").into_bytes();
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
        let err = |e: candle_core::Error| NluError::Model(e.to_string());
        let model = match loaded(&files[0], precision) {
            Some(m) => m,
            None => {
                // SAFETY: mapped read-only; nothing of ours writes these files
                // in place (fetch and nlu::tune write aside and rename, prunes
                // delete), so a mapping keeps its pages.
                #[allow(unsafe_code)]
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(&files[..1], DType::F32, &device)
                }
                .map_err(err)?
                .rename_f(move |name| arch.stored(name));
                let m = Arc::new(
                    Model::load(
                        &files[0],
                        vb,
                        &config,
                        arch,
                        first_position,
                        precision,
                        &device,
                    )
                    .map_err(err)?,
                );
                remember(&files[0], precision, &m);
                m
            }
        };
        let tuned = match files.get(1) {
            None => None,
            Some(file) => {
                identity.extend(b"+base");
                let from = first_tuned_layer(file, config.num_hidden_layers)?;
                // SAFETY: as above.
                #[allow(unsafe_code)]
                let vb =
                    unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &device) }
                        .map_err(err)?
                        .rename_f(move |name| arch.stored(name));
                Some(Tuned {
                    from,
                    layers: Encoder::load(vb.pp("encoder"), &config, precision, from)
                        .map_err(err)?,
                })
            }
        };
        let tokenizer = Tokens::load(&tok_path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            tuned,
            tokenizer,
            device,
            identity,
            fixed,
            prefix,
            centre: None,
            multilingual: std::sync::OnceLock::new(),
            named: Default::default(),
        })
    }

    /// The multilingual encoder in `dir`, centred on `CENTRE_ON`.
    pub fn load_multilingual(dir: &Path) -> Result<Self, NluError> {
        let mut e = Self::load(dir)?;
        let v = e.embed_fixed(&CENTRE_ON.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        let mut centre = vec![0f32; v.first().map_or(0, Vec::len)];
        for x in &v {
            for (c, y) in centre.iter_mut().zip(x) {
                *c += y / v.len() as f32;
            }
        }
        e.identity.extend(b"-centred");
        e.centre = Some(centre);
        Ok(e)
    }

    /// The encoder that understands `language` (ISO 639-1): this one for
    /// English, else the multilingual one beside it when it is installed
    /// (else this one, which then reads the language's words as best it can).
    pub fn for_language(self: &Arc<Self>, language: &str) -> Arc<Self> {
        if language == "en" || self.centre.is_some() {
            return self.clone();
        }
        let other = self.multilingual.get_or_init(|| {
            let dir = self.dir.parent()?.join(MULTILINGUAL);
            if !dir.join("model.safetensors").exists() {
                tracing::warn!(
                    language,
                    "no multilingual encoder installed (scripts/setup.sh --with-base); \
                     this language is understood with the English one"
                );
                return None;
            }
            match Self::load_multilingual(&dir) {
                Ok(e) => Some(Arc::new(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "multilingual encoder failed to load");
                    None
                }
            }
        });
        other.clone().unwrap_or_else(|| self.clone())
    }

    /// The encoder in the folder `name` beside this one (this one when it
    /// is that folder), loaded on first use and shared after.
    pub fn named(self: &Arc<Self>, name: &str) -> Result<Arc<Self>, NluError> {
        // A folder name from an agent's file: nothing that leaves models/nlu/.
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(NluError::Model(format!(
                "encoder {name:?} is not a folder name under models/nlu/"
            )));
        }
        if self.dir.file_name().is_some_and(|n| n == name) {
            return Ok(self.clone());
        }
        let mut named = self.named.lock();
        if let Some(e) = named.get(name) {
            return Ok(e.clone());
        }
        let dir = self.dir.parent().unwrap_or(&self.dir).join(name);
        let e = Arc::new(Self::load(&dir)?);
        named.insert(name.to_string(), e.clone());
        Ok(e)
    }

    /// Whether this tuned encoder runs `other`'s network as its base half.
    #[cfg(test)]
    pub(crate) fn shares_base_with(&self, other: &Embedder) -> bool {
        self.tuned.is_some() && Arc::ptr_eq(&self.model, &other.model)
    }

    /// Whether this encoder was fine-tuned on an agent's examples.
    pub fn is_tuned(&self) -> bool {
        self.tuned.is_some()
    }

    /// Whether this is the multilingual encoder (which is not fine-tuned).
    pub fn is_multilingual(&self) -> bool {
        self.centre.is_some()
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
        let texts: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{t}", self.prefix))
            .collect();
        let enc = self.tokenizer.encode(texts)?;
        let len = enc.iter().map(Vec::len).max().unwrap_or(0);
        let n = enc.len();
        // Padded to the longest; the mask keeps padding out of attention
        // and out of the mean.
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &enc {
            ids.extend(e.iter().map(|&x| i64::from(x)));
            ids.resize(ids.len() + len - e.len(), 0);
            mask.extend((0..len).map(|i| i64::from(i < e.len())));
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device).map_err(err)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device).map_err(err)?;
        let (x, bias) = self.model.inputs(&ids, &mask).map_err(err)?;
        let unit = match &self.tuned {
            None => pooled(&self.model.encoder.forward(&x, &bias).map_err(err)?, &mask),
            Some(t) => {
                // The tuned network shares the base one's lower layers: run
                // them once, then each network's own top.
                let shared = self
                    .model
                    .encoder
                    .forward_layers(&x, &bias, 0..t.from)
                    .map_err(err)?;
                let top = self.model.encoder.layers() - t.from;
                let own = pooled(&t.layers.forward(&shared, &bias).map_err(err)?, &mask);
                let plain = self
                    .model
                    .encoder
                    .forward_layers(&shared, &bias, t.from..t.from + top)
                    .map_err(err)?;
                let plain = pooled(&plain, &mask);
                let (own, plain) = (own.map_err(err)?, plain.map_err(err)?);
                Tensor::cat(&[&own, &plain], 1).map_err(err)? * std::f64::consts::FRAC_1_SQRT_2
            }
        }
        .map_err(err)?;
        let mut out = unit.to_vec2::<f32>().map_err(err)?;
        if let Some(c) = &self.centre {
            for v in &mut out {
                for (x, m) in v.iter_mut().zip(c) {
                    *x -= m;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= n);
            }
        }
        Ok(out)
    }
}

/// BERT as candle-transformers runs it, but with the word table kept in
/// the type its file stores it in: multilingual-e5's 250,037 × 384 table
/// is 192 MB as f16 and would be 384 MB as f32, for the few rows a
/// sentence reads.
struct Model {
    words: Tensor,
    positions: Tensor,
    /// Token type 0's row (sentences are single segments); MPNet has none.
    segment: Option<Tensor>,
    /// MPNet's relative-position table (see `mpnet`).
    relative: Option<Tensor>,
    norm: candle_nn::LayerNorm,
    encoder: Encoder,
}

impl Model {
    fn load(
        base: &Path,
        vb: VarBuilder,
        config: &Config,
        arch: Arch,
        first_position: usize,
        precision: Precision,
        device: &Device,
    ) -> candle_core::Result<Self> {
        // SAFETY: as for the VarBuilder above (read-only, replaced by rename).
        #[allow(unsafe_code)]
        let words = unsafe { candle_core::safetensors::MmapedSafetensors::new(base)? }
            .load("embeddings.word_embeddings.weight", device)?;
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        let rows = config.max_position_embeddings + first_position;
        let (segment, relative) = match arch {
            Arch::Bert => (
                Some(
                    e.get((config.type_vocab_size, h), "token_type_embeddings.weight")?
                        .get(0)?,
                ),
                None,
            ),
            Arch::Mpnet => {
                let heads = config.num_attention_heads;
                let table = vb.get_unchecked(mpnet::RELATIVE_TABLE)?;
                if table.dim(1)? != heads {
                    candle_core::bail!("the relative-position table has no column per head");
                }
                (None, Some(table))
            }
        };
        Ok(Self {
            words,
            positions: e.get((rows, h), "position_embeddings.weight")?.narrow(
                0,
                first_position,
                config.max_position_embeddings,
            )?,
            segment,
            relative,
            norm: candle_nn::layer_norm(h, config.layer_norm_eps, e.pp("LayerNorm"))?,
            encoder: Encoder::load(vb.pp("encoder"), config, precision, 0)?,
        })
    }

    /// The first layer's input for `ids` (n × len), and the bias every
    /// layer adds to its attention scores: padding (0 in `mask`) gets the
    /// most negative, and MPNet its relative positions.
    fn inputs(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        use candle_core::Module;
        let (n, len) = ids.dims2()?;
        let x = self
            .words
            .index_select(&ids.flatten_all()?, 0)?
            .to_dtype(DType::F32)?
            .reshape((n, len, ()))?
            .broadcast_add(&self.positions.narrow(0, 0, len)?)?;
        let x = match &self.segment {
            Some(s) => x.broadcast_add(s)?,
            None => x,
        };
        let x = self.norm.forward(&x)?;
        // Padding gets the most negative score before the softmax.
        let bias =
            ((mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?.reshape((n, 1, 1, len))?;
        let bias = match &self.relative {
            Some(t) => bias.broadcast_add(&mpnet::relative_bias(t, len)?)?,
            None => bias,
        };
        Ok((x, bias))
    }
}

/// A tuned encoder's own layers: `from` up, laid over the base network's.
struct Tuned {
    from: usize,
    layers: Encoder,
}

/// The first encoder layer a tuned file holds; it must hold only whole
/// layers, from there to the top.
fn first_tuned_layer(file: &Path, layers: usize) -> Result<usize, NluError> {
    let bad = |why: String| NluError::Model(format!("{}: {why}", file.display()));
    // SAFETY: as for the weights (read-only; replaced by rename).
    #[allow(unsafe_code)]
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
        .map_err(|e| bad(e.to_string()))?;
    let mut first = layers;
    for (name, _) in st.tensors() {
        let i = name
            .strip_prefix("encoder.layer.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|&i| i < layers)
            .ok_or_else(|| bad(format!("{name} is not an encoder layer's")))?;
        first = first.min(i);
    }
    if first == layers {
        return Err(bad("no tuned layers".into()));
    }
    Ok(first)
}

/// Base networks loaded in this process, by weights file and precision: a tuned encoder
/// runs the one the server already holds rather than a second copy of its
/// weights (MiniLM ≈ 90 MB, MPNet ≈ 440 MB).
static LOADED: std::sync::LazyLock<parking_lot::Mutex<Loaded>> =
    std::sync::LazyLock::new(Default::default);
type Loaded = std::collections::HashMap<(PathBuf, Precision), std::sync::Weak<Model>>;

/// Keeps the first live network per file: a short-lived load (tuning's
/// own) does not push out the one a server holds.
fn remember(weights: &Path, precision: Precision, model: &Arc<Model>) {
    let mut map = LOADED.lock();
    map.retain(|_, m| m.strong_count() > 0);
    map.entry((weights.to_path_buf(), precision))
        .or_insert_with(|| Arc::downgrade(model));
}

fn loaded(weights: &Path, precision: Precision) -> Option<Arc<Model>> {
    LOADED
        .lock()
        .get(&(weights.to_path_buf(), precision))?
        .upgrade()
}

/// Sentence vectors (n × hidden), unit length: the mean of the last
/// layer's `hidden` states over real tokens only.
fn pooled(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f32::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
    mean.broadcast_div(&norm.clamp(1e-12, f32::MAX)?)
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

    /// An agent's `nlu.encoder` names a folder beside the served encoder,
    /// nothing else; naming the served one gives it back, not a copy.
    #[test]
    fn a_named_encoder_stays_under_models_nlu() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DIR);
        let base = Arc::new(Embedder::load(&dir).expect("scripts/setup.sh fetches the model"));
        for bad in ["", "../nlu", ".hidden", "a/b", "/etc", "x y"] {
            assert!(base.named(bad).is_err(), "{bad:?} accepted");
        }
        let same = base.named("all-MiniLM-L6-v2").unwrap();
        assert!(Arc::ptr_eq(&same, &base));
        let err = base.named("no-such-encoder").err().expect("missing folder");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    fn minilm() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DIR)
    }

    const SENTENCES: [&str; 4] = [
        "i lost my card",
        "what are your opening hours on a sunday morning",
        "yes",
        "I was charged twice for the same coffee, can you refund one of them?",
    ];

    /// 8-bit weights (MPNet's every matrix, MiniLM's widest) move a
    /// sentence's vector by under half a percent.
    #[test]
    fn int8_weights_keep_the_vectors() {
        for dir in [minilm(), minilm().with_file_name("all-mpnet-base-v2")] {
            let full = Embedder::load_as(&dir, Precision::Full).unwrap();
            let int8 = Embedder::load_as(&dir, Precision::Int8).unwrap();
            for t in SENTENCES {
                let cos = dot(&full.embed(t).unwrap(), &int8.embed(t).unwrap());
                assert!(cos > 0.995, "{}: {t}: cosine {cos}", dir.display());
            }
        }
    }

    /// A tuned file's layers are laid over the base network's: run through
    /// the shared lower layers once, the vector is the one the whole tuned
    /// network (written out as a model of its own) gives, beside the base
    /// network's.
    #[test]
    fn a_tuned_network_runs_the_shared_lower_layers_once() {
        let dir = minilm();
        let mut all =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let mut tuned = std::collections::HashMap::new();
        for (name, t) in all.iter_mut() {
            if name.starts_with("encoder.layer.4.") || name.starts_with("encoder.layer.5.") {
                if name.ends_with("dense.weight") {
                    *t = (&*t * 1.1).unwrap();
                }
                tuned.insert(name.clone(), t.clone());
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let whole = tmp.path().join("whole");
        std::fs::create_dir(&whole).unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(dir.join(f), whole.join(f)).unwrap();
        }
        candle_core::safetensors::save(&all, whole.join("model.safetensors")).unwrap();
        let top = tmp.path().join("top.safetensors");
        candle_core::safetensors::save(&tuned, &top).unwrap();

        let served = Embedder::load_with(&dir, Some(&top), Precision::Full).unwrap();
        let own = Embedder::load_as(&whole, Precision::Full).unwrap();
        let plain = Embedder::load_as(&dir, Precision::Full).unwrap();
        for t in SENTENCES {
            let got = served.embed(t).unwrap();
            let want: Vec<f32> = own
                .embed(t)
                .unwrap()
                .into_iter()
                .chain(plain.embed(t).unwrap())
                .map(|x| x * std::f32::consts::FRAC_1_SQRT_2)
                .collect();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{t}: off by {worst}");
            assert!(
                dot(&got[..384], &got[384..]) < 0.4995,
                "{t}: the tuned half is the base's"
            );
        }

        // A file holding more than encoder layers is refused.
        let mut bad = tuned.clone();
        bad.insert(
            "embeddings.LayerNorm.weight".into(),
            all["embeddings.LayerNorm.weight"].clone(),
        );
        let bad_file = tmp.path().join("bad.safetensors");
        candle_core::safetensors::save(&bad, &bad_file).unwrap();
        let err = Embedder::load_with(&dir, Some(&bad_file), Precision::Full)
            .err()
            .unwrap();
        assert!(err.to_string().contains("not an encoder layer"), "{err}");
    }

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

//! MPNet (all-mpnet-base-v2) run as the BERT both our encoders already are.
//!
//! An MPNet layer is a BERT layer under other tensor names, with one
//! addition: a learned bias per attention head for each bucket of relative
//! distance between two tokens (T5's buckets), shared by all layers and
//! added to the attention scores. Positions count from `pad_token_id + 1`
//! as in RoBERTa, and there are no token types. So the serving model
//! (`bert`) and the trainable one (`tune`) read MPNet
//! through a renaming, the position table's rows from there on, and the
//! relative bias folded into the attention bias they already take.

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::NluError;

/// Which network a model folder holds (its `config.json` `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Bert,
    Mpnet,
}

impl Arch {
    pub fn of(config: &Value) -> Self {
        match config["model_type"].as_str() {
            Some("mpnet") => Self::Mpnet,
            _ => Self::Bert,
        }
    }

    /// The name a BERT tensor has in this model's weights file.
    pub fn stored(self, bert: &str) -> String {
        if self == Self::Bert {
            return bert.to_string();
        }
        const MAP: [(&str, &str); 5] = [
            (".attention.self.query.", ".attention.attn.q."),
            (".attention.self.key.", ".attention.attn.k."),
            (".attention.self.value.", ".attention.attn.v."),
            (".attention.output.dense.", ".attention.attn.o."),
            (".attention.output.LayerNorm.", ".attention.LayerNorm."),
        ];
        for (from, to) in MAP {
            if bert.contains(from) {
                return bert.replacen(from, to, 1);
            }
        }
        bert.to_string()
    }

    /// The first row of the position table a sentence's first token reads:
    /// MPNet numbers positions from the padding id + 1.
    pub fn first_position(self, config: &Value) -> usize {
        match self {
            Self::Bert => 0,
            Self::Mpnet => config["pad_token_id"].as_u64().unwrap_or(1) as usize + 1,
        }
    }

    /// `config.json` as candle's BERT config reads it: MPNet's lacks token
    /// types, and its usable positions are those after the offset.
    pub fn bert_config(self, mut config: Value) -> Result<Value, NluError> {
        if self == Self::Mpnet {
            let first = self.first_position(&config) as u64;
            let obj = config
                .as_object_mut()
                .ok_or_else(|| NluError::Model("config.json is not an object".into()))?;
            let max = obj
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            obj.insert("type_vocab_size".into(), 1.into());
            obj.insert(
                "max_position_embeddings".into(),
                max.saturating_sub(first).into(),
            );
        }
        Ok(config)
    }
}

/// The shared relative-position table (buckets × heads) of an MPNet.
pub const RELATIVE_TABLE: &str = "encoder.relative_attention_bias.weight";

/// Distances up to this are told apart at all (farther share the last
/// bucket); MPNet's fixed value.
const MAX_DISTANCE: f32 = 128.0;

/// T5's bidirectional bucket of `relative` = key position − query
/// position: the nearest distances each get a bucket, farther ones share
/// logarithmically wider ones, and the two directions have halves each.
fn bucket(relative: i64, buckets: usize) -> usize {
    let half = (buckets / 2) as i64;
    let n = -relative;
    let side = if n < 0 { half } else { 0 };
    let n = n.abs();
    let exact = half / 2;
    let within = if n < exact {
        n
    } else {
        // In f32 as the reference does, so edge distances land alike.
        let far = ((n as f32 / exact as f32).ln() / (MAX_DISTANCE / exact as f32).ln()
            * (half - exact) as f32) as i64;
        (exact + far).min(half - 1)
    };
    (side + within) as usize
}

/// The bias every attention score of a `len`-token sentence gets:
/// 1 × heads × len × len, from the table (buckets × heads).
pub fn relative_bias(table: &Tensor, len: usize) -> candle_core::Result<Tensor> {
    let (buckets, heads) = table.dims2()?;
    let mut idx = Vec::with_capacity(len * len);
    for q in 0..len as i64 {
        for k in 0..len as i64 {
            idx.push(bucket(k - q, buckets) as u32);
        }
    }
    let idx = Tensor::from_vec(idx, len * len, &Device::Cpu)?.to_device(table.device())?;
    table
        .index_select(&idx, 0)?
        .reshape((len, len, heads))?
        .permute((2, 0, 1))?
        .contiguous()?
        .unsqueeze(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked out by hand from the bucketing rule (16 buckets a
    /// direction, 8 exact): a key before the query lands in the upper half.
    #[test]
    fn relative_buckets_follow_t5s_rule() {
        assert_eq!(bucket(0, 32), 0);
        assert_eq!(bucket(-1, 32), 1);
        assert_eq!(bucket(-7, 32), 7);
        assert_eq!(bucket(1, 32), 17);
        assert_eq!(bucket(7, 32), 23);
        // 8 + ln(16/8)/ln(128/8)·8 = 8 + 2 = 10.
        assert_eq!(bucket(-16, 32), 10);
        assert_eq!(bucket(16, 32), 26);
        // Far distances share the last bucket of their side.
        assert_eq!(bucket(-500, 32), 15);
        assert_eq!(bucket(500, 32), 31);
    }

    #[test]
    fn the_bias_reads_each_heads_column_by_bucket() {
        // 32 buckets × 2 heads: head 0 holds the bucket, head 1 its negative.
        let rows: Vec<f32> = (0..32).flat_map(|b| [b as f32, -(b as f32)]).collect();
        let table = Tensor::from_vec(rows, (32, 2), &Device::Cpu).unwrap();
        let b = relative_bias(&table, 3).unwrap();
        assert_eq!(b.dims(), [1, 2, 3, 3]);
        let h0 = b.get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(h0[0], [0.0, 17.0, 18.0]);
        assert_eq!(h0[2], [2.0, 1.0, 0.0]);
        let h1 = b.get(0).unwrap().get(1).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(h1[1][0], -1.0);
    }

    #[test]
    fn mpnet_names_and_config_map_onto_berts() {
        let m = Arch::Mpnet;
        assert_eq!(
            m.stored("encoder.layer.3.attention.self.query.weight"),
            "encoder.layer.3.attention.attn.q.weight"
        );
        assert_eq!(
            m.stored("encoder.layer.3.attention.output.LayerNorm.bias"),
            "encoder.layer.3.attention.LayerNorm.bias"
        );
        assert_eq!(
            m.stored("encoder.layer.3.output.dense.weight"),
            "encoder.layer.3.output.dense.weight"
        );
        assert_eq!(
            Arch::Bert.stored("encoder.layer.3.attention.self.query.weight"),
            "encoder.layer.3.attention.self.query.weight"
        );
        let cfg: Value = serde_json::json!({
            "model_type": "mpnet", "pad_token_id": 1, "max_position_embeddings": 514
        });
        assert_eq!(Arch::of(&cfg), Arch::Mpnet);
        assert_eq!(m.first_position(&cfg), 2);
        let b = m.bert_config(cfg).unwrap();
        assert_eq!(b["max_position_embeddings"], 512);
        assert_eq!(b["type_vocab_size"], 1);
    }
}

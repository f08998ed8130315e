//! SentencePiece unigram tokenisation (XLM-R's, for multilingual-e5) read
//! from a `tokenizer.json`.
//!
//! The `tokenizers` crate builds a byte trie of hash maps over the 250,002
//! pieces, which costs about 290 MB of memory; a map from piece to id and
//! score costs about 15 MB and finds the same best segmentation (Viterbi
//! over pieces of up to the longest piece's length).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use super::NluError;

/// SentencePiece's word-start mark.
const META: char = '\u{2581}';

pub struct Unigram {
    pieces: HashMap<Box<str>, (u32, f32)>,
    /// The longest piece, in characters.
    longest: usize,
    /// Score of an unknown character: below any piece's, as SentencePiece does.
    unk_score: f32,
    unk: u32,
    bos: u32,
    eos: u32,
}

#[derive(Deserialize)]
struct File {
    model: Model,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Model {
    Unigram {
        vocab: Vec<(String, f64)>,
        unk_id: Option<u32>,
    },
    #[serde(other)]
    Other,
}

impl Unigram {
    /// The unigram model in `path`, or `None` when the file holds another
    /// kind (WordPiece, BPE), which `tokenizers` then reads.
    pub fn from_file(path: &Path) -> Result<Option<Self>, NluError> {
        let bad = |e: String| NluError::Model(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: File = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let Model::Unigram { vocab, unk_id } = file.model else {
            return Ok(None);
        };
        let id = |name: &str| vocab.iter().position(|(p, _)| p == name).map(|i| i as u32);
        let (Some(bos), Some(eos)) = (id("<s>"), id("</s>")) else {
            return Err(bad("no <s> and </s> pieces".into()));
        };
        let unk = unk_id.or_else(|| id("<unk>")).unwrap_or(0);
        let mut pieces = HashMap::with_capacity(vocab.len());
        let (mut longest, mut lowest) = (1, 0f32);
        for (i, (p, score)) in vocab.into_iter().enumerate() {
            let score = score as f32;
            lowest = lowest.min(score);
            // Special pieces are never matched inside text.
            if p.starts_with('<') && p.ends_with('>') {
                continue;
            }
            longest = longest.max(p.chars().count());
            pieces.insert(p.into_boxed_str(), (i as u32, score));
        }
        Ok(Some(Self {
            pieces,
            longest,
            unk_score: lowest - 10.0,
            unk,
            bos,
            eos,
        }))
    }

    /// `<s>`, the pieces of `text` (at most `max - 2`), `</s>`.
    pub fn encode(&self, text: &str, max: usize) -> Vec<u32> {
        let norm = normalise(text);
        let mut ids = vec![self.bos];
        ids.extend(self.segment(&norm).into_iter().take(max.saturating_sub(2)));
        ids.push(self.eos);
        ids
    }

    /// The best-scoring split of `s` into pieces (unknown characters alone).
    fn segment(&self, s: &str) -> Vec<u32> {
        let starts: Vec<usize> = s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .collect();
        let n = starts.len() - 1;
        // best[e]: score of the best split of the first e characters, and
        // where its last piece starts and which it is.
        let mut best: Vec<(f32, usize, u32)> = vec![(f32::NEG_INFINITY, 0, self.unk); n + 1];
        best[0].0 = 0.0;
        for i in 0..n {
            let here = best[i].0;
            if here == f32::NEG_INFINITY {
                continue;
            }
            for e in i + 1..=n.min(i + self.longest) {
                if let Some(&(id, score)) = self.pieces.get(&s[starts[i]..starts[e]]) {
                    if here + score > best[e].0 {
                        best[e] = (here + score, i, id);
                    }
                }
            }
            if here + self.unk_score > best[i + 1].0 {
                best[i + 1] = (here + self.unk_score, i, self.unk);
            }
        }
        let mut out = Vec::new();
        let mut e = n;
        while e > 0 {
            out.push(best[e].2);
            e = best[e].1;
        }
        out.reverse();
        out
    }
}

/// NFKC, control characters dropped, runs of any space one word mark
/// (SentencePiece's view of text: a mark before every word, none at the
/// ends).
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    out.push(META);
    let mut space = true;
    for c in text.nfkc() {
        if c.is_whitespace() {
            if !space {
                out.push(META);
                space = true;
            }
        } else if !c.is_control() {
            out.push(c);
            space = false;
        }
    }
    // Trailing space is dropped, as SentencePiece's normaliser does.
    if space && out.len() > META.len_utf8() {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Unigram {
        let mut pieces = HashMap::new();
        for (i, (p, s)) in [
            ("▁hola", -2.0),
            ("▁ho", -3.0),
            ("la", -3.0),
            ("▁", -4.0),
            ("s", -5.0),
        ]
        .into_iter()
        .enumerate()
        {
            pieces.insert(p.into(), (i as u32 + 4, s));
        }
        Unigram {
            pieces,
            longest: 5,
            unk_score: -15.0,
            unk: 3,
            bos: 0,
            eos: 2,
        }
    }

    #[test]
    fn the_best_split_wins_and_unknown_characters_stand_alone() {
        let m = model();
        // "▁hola" whole (-2) beats "▁ho" + "la" (-6).
        assert_eq!(m.encode("hola", 16), vec![0, 4, 2]);
        assert_eq!(m.encode("  hola\u{a0}\u{7} s ", 16), vec![0, 4, 7, 8, 2]);
        assert_eq!(m.encode("hola¿", 16), vec![0, 4, 3, 2]);
        assert_eq!(
            m.encode("hola hola hola", 4),
            vec![0, 4, 4, 2],
            "cut to fit"
        );
        // Full-width letters are NFKC's plain ones.
        assert_eq!(normalise("ｈｏｌａ"), "▁hola");
    }
}

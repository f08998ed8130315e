//! Kokoro-82M: a neural voice for the languages no packaged Piper voice
//! covers. espeak-ng turns the text into that language's phonemes (IPA); the
//! network reads them with one speaker's style vector and returns 24 kHz
//! audio. The language is in the phonemes, not the speaker, so one model
//! speaks every language espeak-ng can phonemise.
//!
//! Files (`attendant models --with-base`): `tts/kokoro/model.onnx`,
//! `vocab.json` (phoneme → id) and `voices/<speaker>.bin` (510 × 256 f32,
//! one style per utterance length).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ort::value::Tensor;
use parking_lot::Mutex;

use super::tts::{espeak, to_phone, TtsError};
use crate::turn::onnx;

/// `voice` prefix of a Kokoro voice: `kokoro:<espeak-ng language>:<speaker>`,
/// e.g. `kokoro:es-419:jm_kumo`.
pub const KOKORO: &str = "kokoro:";

/// The model's folder under the models directory.
pub const DIR: &str = "tts/kokoro";

const RATE: u32 = 24_000;
const STYLE_DIM: usize = 256;
/// Phoneme tokens one run takes (the model's context is 512 with the two
/// boundary tokens); a style row exists for each length up to it.
const MAX_TOKENS: usize = 510;
/// Punctuation the model reads as pauses and intonation.
const PUNCT: &[char] = &[',', '.', ';', ':', '!', '?', '—', '…'];

/// What a `kokoro:` voice names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceName {
    /// espeak-ng's language for the phonemes ("es-419").
    pub language: String,
    /// The style vector's file under `voices/`.
    pub speaker: String,
}

impl VoiceName {
    /// Parses `<language>:<speaker>` (the part after [`KOKORO`]). Both are
    /// plain names: nothing espeak-ng could take as an option, nothing that
    /// leaves `voices/`.
    pub fn parse(spec: &str) -> Option<Self> {
        let (language, speaker) = spec.split_once(':')?;
        let plain = |s: &str, extra: char| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == extra)
        };
        (plain(language, '-') && plain(speaker, '_')).then(|| Self {
            language: language.to_string(),
            speaker: speaker.to_string(),
        })
    }
}

pub struct Kokoro {
    session: Mutex<ort::session::Session>,
    vocab: HashMap<char, i64>,
    /// MAX_TOKENS rows of STYLE_DIM.
    styles: Vec<f32>,
    language: String,
    speed: f32,
}

impl Kokoro {
    pub fn load(models: &Path, spec: &str, threads: usize, speed: f32) -> Result<Self, TtsError> {
        let fail = |why: String| TtsError::Load(format!("{KOKORO}{spec}: {why}"));
        let name = VoiceName::parse(spec).ok_or_else(|| fail("want LANGUAGE:SPEAKER".into()))?;
        let dir = models.join(DIR);
        let vocab = std::fs::read_to_string(dir.join("vocab.json"))
            .map_err(|e| fail(format!("{}: {e}", dir.join("vocab.json").display())))?;
        let vocab = parse_vocab(&vocab).ok_or_else(|| fail("vocab.json is not a map".into()))?;
        let style_file = dir.join("voices").join(format!("{}.bin", name.speaker));
        let raw = std::fs::read(&style_file)
            .map_err(|e| fail(format!("{}: {e}", style_file.display())))?;
        if raw.len() != MAX_TOKENS * STYLE_DIM * 4 {
            return Err(fail(format!(
                "{} is not 510 × 256 f32",
                style_file.display()
            )));
        }
        let styles = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // The runtime sherpa-onnx loads too; a no-op when already loaded.
        onnx::init(&models.join("lib/libonnxruntime.so")).map_err(|e| fail(e.to_string()))?;
        let session = onnx::session_threads(&dir.join("model.onnx"), threads.max(1))
            .map_err(|e| fail(e.to_string()))?;
        // Another network in model.onnx fails here, not on the first reply.
        for want in ["tokens", "style", "speed"] {
            if !session.inputs().iter().any(|i| i.name() == want) {
                return Err(fail(format!("model.onnx has no input `{want}`")));
            }
        }
        let k = Self {
            session: Mutex::new(session),
            vocab,
            styles,
            language: name.language,
            speed,
        };
        // Fail at start, not on the first call, when espeak-ng does not know
        // the language.
        if k.phonemes("a")?.is_empty() {
            return Err(fail("espeak-ng gives no phonemes".into()));
        }
        Ok(k)
    }

    /// The sentence as the model's phoneme string.
    fn phonemes(&self, text: &str) -> Result<String, TtsError> {
        let mut out = String::new();
        for piece in clauses(text) {
            match piece {
                Piece::Punct(c) => out.push(c),
                Piece::Words(w) => {
                    let ipa = espeak_ipa(&self.language, &w)?;
                    if ipa.is_empty() {
                        continue;
                    }
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(&ipa);
                }
            }
        }
        Ok(out)
    }

    pub fn speak(&self, text: &str, cancel: &Arc<AtomicBool>) -> Result<Option<Vec<u8>>, TtsError> {
        let ids = tokens(&self.phonemes(text)?, &self.vocab);
        let mut pcm = Vec::new();
        for run in runs(&ids, &self.vocab) {
            if cancel.load(Ordering::Relaxed) || onnx::shutting_down() {
                return Ok(None);
            }
            pcm.extend(self.infer(run)?);
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        to_phone(&pcm, RATE).map(Some)
    }

    fn infer(&self, ids: &[i64]) -> Result<Vec<f32>, TtsError> {
        let err = |e: ort::Error| TtsError::Synth(format!("kokoro: {e}"));
        let mut input = Vec::with_capacity(ids.len() + 2);
        input.push(0);
        input.extend_from_slice(ids);
        input.push(0);
        let row = style_row(ids.len());
        let style = self.styles[row * STYLE_DIM..(row + 1) * STYLE_DIM].to_vec();
        let tokens = Tensor::from_array(([1usize, input.len()], input)).map_err(err)?;
        let style = Tensor::from_array(([1usize, STYLE_DIM], style)).map_err(err)?;
        let speed = Tensor::from_array(([1usize], vec![self.speed])).map_err(err)?;
        static SITE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        let _g = onnx::InferenceGuard::enter(&SITE).map_err(|e| TtsError::Synth(e.to_string()))?;
        let mut session = self.session.lock();
        let out = session
            .run(ort::inputs!["tokens" => tokens, "style" => style, "speed" => speed])
            .map_err(err)?;
        let audio = out
            .values()
            .next()
            .ok_or_else(|| TtsError::Synth("kokoro: the model gave no output".into()))?;
        let (_, audio) = audio.try_extract_tensor::<f32>().map_err(err)?;
        Ok(audio.to_vec())
    }
}

fn parse_vocab(json: &str) -> Option<HashMap<char, i64>> {
    let map: HashMap<String, i64> = serde_json::from_str(json).ok()?;
    let mut out = HashMap::with_capacity(map.len());
    for (k, v) in map {
        let mut cs = k.chars();
        if let (Some(c), None) = (cs.next(), cs.next()) {
            out.insert(c, v);
        }
    }
    Some(out)
}

/// The style row for an utterance of `n` tokens (the voices hold one per
/// length).
fn style_row(n: usize) -> usize {
    n.clamp(1, MAX_TOKENS) - 1
}

#[derive(Debug, PartialEq)]
enum Piece {
    Words(String),
    Punct(char),
}

/// Words between punctuation, and the punctuation the model reads; other
/// symbols (¿ ¡ quotes) are dropped.
fn clauses(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<Piece>| {
        let w = cur.split_whitespace().collect::<Vec<_>>().join(" ");
        if !w.is_empty() {
            out.push(Piece::Words(w));
        }
        cur.clear();
    };
    for c in text.chars() {
        if PUNCT.contains(&c) {
            flush(&mut cur, &mut out);
            out.push(Piece::Punct(c));
        } else if c.is_alphanumeric() || c.is_whitespace() || c == '\'' || c == '-' {
            cur.push(c);
        } else {
            cur.push(' ');
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// espeak-ng's IPA for some words, with its multi-letter phonemes tied and
/// then written as the single symbols Kokoro was trained on.
fn espeak_ipa(language: &str, words: &str) -> Result<String, TtsError> {
    let out = espeak(&["-q", "--ipa", "--tie=^", "-v", language, "--", words])?;
    Ok(to_kokoro(&String::from_utf8_lossy(&out)))
}

/// espeak-ng's tied phonemes → Kokoro's symbols (its training used the same
/// table); lines (espeak-ng's own clause breaks) become spaces.
fn to_kokoro(ipa: &str) -> String {
    const TIED: [(&str, &str); 11] = [
        ("a^ɪ", "I"),
        ("a^ʊ", "W"),
        ("d^z", "ʣ"),
        ("d^ʒ", "ʤ"),
        ("e^ɪ", "A"),
        ("o^ʊ", "O"),
        ("ə^ʊ", "Q"),
        ("s^s", "S"),
        ("t^s", "ʦ"),
        ("t^ʃ", "ʧ"),
        ("ɔ^ɪ", "Y"),
    ];
    let mut s = ipa.split_whitespace().collect::<Vec<_>>().join(" ");
    for (tied, one) in TIED {
        s = s.replace(tied, one);
    }
    s.replace('^', "")
}

/// The phoneme string as model ids; symbols the model does not know are
/// dropped.
fn tokens(phonemes: &str, vocab: &HashMap<char, i64>) -> Vec<i64> {
    phonemes
        .chars()
        .filter_map(|c| vocab.get(&c).copied())
        .collect()
}

/// Splits ids into runs the model takes (≤ MAX_TOKENS), at the last space
/// or punctuation before the limit where there is one.
fn runs<'a>(ids: &'a [i64], vocab: &HashMap<char, i64>) -> Vec<&'a [i64]> {
    let breaks: Vec<i64> = std::iter::once(' ')
        .chain(PUNCT.iter().copied())
        .filter_map(|c| vocab.get(&c).copied())
        .collect();
    let mut out = Vec::new();
    let mut rest = ids;
    while rest.len() > MAX_TOKENS {
        let cut = rest[..MAX_TOKENS]
            .iter()
            .rposition(|t| breaks.contains(t))
            .map_or(MAX_TOKENS, |i| i + 1);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voice_name_is_a_language_and_a_speaker() {
        assert_eq!(
            VoiceName::parse("es-419:jm_kumo"),
            Some(VoiceName {
                language: "es-419".into(),
                speaker: "jm_kumo".into()
            })
        );
        for bad in [
            "es-419", ":jm_kumo", "es:", "-w:x", "es:../x", "es:a/b", "es:x y",
        ] {
            assert_eq!(VoiceName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn clauses_keep_the_punctuation_the_model_reads() {
        assert_eq!(
            clauses("¿Sigo adelante? Sí, gracias."),
            vec![
                Piece::Words("Sigo adelante".into()),
                Piece::Punct('?'),
                Piece::Words("Sí".into()),
                Piece::Punct(','),
                Piece::Words("gracias".into()),
                Piece::Punct('.'),
            ]
        );
        assert_eq!(clauses("«hola»"), vec![Piece::Words("hola".into())]);
    }

    #[test]
    fn tied_phonemes_become_single_symbols() {
        assert_eq!(to_kokoro("bˈo^ɪ a\nˈot^ʃo\n"), "bˈoɪ a ˈoʧo");
        assert_eq!(to_kokoro("sˈe^ɪs"), "sˈAs");
    }

    #[test]
    fn long_phoneme_strings_are_cut_at_a_break() {
        let vocab: HashMap<char, i64> = [(' ', 16), ('a', 43), (',', 3)].into();
        let mut ids = vec![43; 300];
        ids.push(3);
        ids.extend(vec![43; 300]);
        let r = runs(&ids, &vocab);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].len(), 301);
        assert_eq!(r[0].last(), Some(&3));
        assert_eq!(r[1].len(), 300);
        // No break at all: cut at the limit.
        let solid = vec![43; 1200];
        let r = runs(&solid, &vocab);
        assert_eq!(
            r.iter().map(|x| x.len()).collect::<Vec<_>>(),
            [510, 510, 180]
        );
        assert!(runs(&[], &vocab).is_empty());
    }

    #[test]
    fn the_style_row_follows_the_length() {
        assert_eq!(style_row(0), 0);
        assert_eq!(style_row(1), 0);
        assert_eq!(style_row(37), 36);
        assert_eq!(style_row(5000), 509);
    }

    /// The real model (`scripts/setup.sh --with-base`) says a Spanish
    /// sentence as phone audio of a speaking length, not silence; a
    /// cancelled reply gives nothing; a speaker it lacks fails at load.
    #[test]
    fn the_model_speaks_a_spanish_sentence() {
        let models = Path::new("models");
        let k = Kokoro::load(models, "es-419:jm_kumo", 1, 1.0)
            .expect("models/tts/kokoro (scripts/setup.sh --with-base)");
        let never = Arc::new(AtomicBool::new(false));
        let u = k
            .speak("Hola, ¿en qué puedo ayudarle?", &never)
            .unwrap()
            .unwrap();
        let secs = u.len() as f32 / 8000.0;
        assert!((0.8..4.0).contains(&secs), "{secs} s");
        let pcm: Vec<f32> = u
            .iter()
            .map(|&b| crate::media::mulaw::decode(b) as f32 / 32768.0)
            .collect();
        let rms = (pcm.iter().map(|x| x * x).sum::<f32>() / pcm.len() as f32).sqrt();
        assert!(rms > 0.02, "rms {rms}");
        let stop = Arc::new(AtomicBool::new(true));
        assert!(k.speak("Hola.", &stop).unwrap().is_none());
        assert!(Kokoro::load(models, "es-419:nobody", 1, 1.0).is_err());
    }

    #[test]
    fn unknown_symbols_are_dropped() {
        let vocab: HashMap<char, i64> = [('a', 43), ('b', 44)].into();
        assert_eq!(tokens("a✓b", &vocab), vec![43, 44]);
        assert_eq!(
            parse_vocab(r#"{"a": 43, "ab": 1}"#),
            Some([('a', 43)].into())
        );
    }
}

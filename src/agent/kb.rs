//! Knowledge articles: Markdown files with TOML front matter, indexed at load
//! with tantivy (BM25 over title, questions and answer) and MiniLM embeddings
//! of the title and questions. Confidence is the embedding similarity of the
//! caller's words to the best article among BM25's and the embeddings' top
//! candidates, lifted a little when BM25 agrees.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, TEXT,
};
use tantivy::{doc, Index, IndexReader, TantivyDocument};

use super::{line_at, parse_toml, AgentError};
use crate::nlu::embed::{dot, Embedder};
use crate::nlu::lang::Lang;
use crate::nlu::NluError;

#[derive(Debug, Clone, Serialize)]
pub struct Article {
    pub id: String,
    pub title: String,
    pub questions: Vec<String>,
    /// The answer as it will be spoken.
    pub answer: String,
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Front {
    title: String,
    questions: Vec<String>,
}

/// Longest sentence we accept in a spoken answer, in words.
const MAX_SENTENCE_WORDS: usize = 35;

pub fn load_dir(dir: &Path) -> Result<Vec<Article>, AgentError> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    paths.sort();
    for p in paths {
        out.push(parse_article(
            &p,
            &std::fs::read_to_string(&p).map_err(|e| AgentError::File {
                file: p.clone(),
                msg: e.to_string(),
            })?,
        )?);
    }
    Ok(out)
}

pub fn parse_article(path: &Path, text: &str) -> Result<Article, AgentError> {
    let err = |line: usize, msg: &str| AgentError::At {
        file: path.to_path_buf(),
        line,
        msg: msg.to_string(),
    };
    let rest = text.strip_prefix("+++\n").ok_or_else(|| {
        err(
            1,
            "an article starts with +++ front matter (title, questions)",
        )
    })?;
    let end = rest
        .find("\n+++")
        .ok_or_else(|| err(1, "front matter is not closed with +++"))?;
    let front_text = &rest[..end];
    let front: Front = parse_toml(path, front_text).map_err(|e| match e {
        AgentError::At { file, line, msg } => AgentError::At {
            file,
            line: line + 1,
            msg,
        },
        other => other,
    })?;
    // Past "\n+++" and the newline that ends that line.
    let mut body_start = 4 + end + 4;
    if text.get(body_start..body_start + 1) == Some("\n") {
        body_start += 1;
    }
    let body = text.get(body_start..).unwrap_or("").trim();
    let body_line = line_at(text, body_start);
    if body.is_empty() {
        return Err(err(body_line, "the article has no answer"));
    }
    if front.questions.is_empty() {
        return Err(err(2, "list at least one question the article answers"));
    }
    // Written for the ear: no links, no markup, short sentences.
    for (i, line) in body.lines().enumerate() {
        let l = line.to_lowercase();
        if l.contains("http://") || l.contains("https://") || l.contains("www.") {
            return Err(err(
                body_line + i,
                "answers are spoken: say where to go instead of reading out a URL",
            ));
        }
        if line.trim_start().starts_with('#') || line.contains("**") || line.contains("](") {
            return Err(err(
                body_line + i,
                "answers are spoken: no Markdown headings, bold or links",
            ));
        }
    }
    let answer = body.split_whitespace().collect::<Vec<_>>().join(" ");
    for s in crate::speech::sentences::split(&answer) {
        if s.split_whitespace().count() > MAX_SENTENCE_WORDS {
            return Err(err(
                body_line,
                &format!(
                    "sentence too long to follow by ear ({} words > {MAX_SENTENCE_WORDS}): \"{s}\"",
                    s.split_whitespace().count()
                ),
            ));
        }
    }
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("article")
        .to_string();
    Ok(Article {
        id,
        title: front.title,
        questions: front.questions,
        answer,
        path: path.to_path_buf(),
    })
}

pub struct KnowledgeBase {
    articles: Vec<Article>,
    /// Per article, unit embeddings of title and questions.
    vectors: Vec<Vec<Vec<f32>>>,
    reader: IndexReader,
    parser: QueryParser,
    id_field: tantivy::schema::Field,
    /// Only articles sharing a word with the question are candidates
    /// (articles in a language the encoder was not trained on).
    shared_words: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KbHit {
    pub id: String,
    pub title: String,
    pub confidence: f32,
    pub bm25: f32,
}

impl KnowledgeBase {
    /// Indexes `articles` written in `lang`. The sentence encoder is
    /// English: in another language its similarities run high between
    /// unrelated sentences (0.6–0.75 for Spanish ones, measured), so there
    /// the words are stemmed without stop words, and an article must share
    /// one with the question to be a candidate.
    pub fn build(
        articles: Vec<Article>,
        embedder: &Embedder,
        lang: Lang,
    ) -> Result<Self, NluError> {
        use tantivy::tokenizer::{
            Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter,
            TextAnalyzer,
        };
        let terr = |e: tantivy::TantivyError| NluError::Data(format!("knowledge index: {e}"));
        let foreign = match lang {
            Lang::En => None,
            Lang::Es => Some(("es", Language::Spanish)),
        };
        let text = match foreign {
            None => TEXT,
            Some((name, _)) => TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(name)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        };
        let mut sb = Schema::builder();
        let id_field = sb.add_text_field("id", STORED);
        let title = sb.add_text_field("title", text.clone());
        let questions = sb.add_text_field("questions", text.clone());
        let answer = sb.add_text_field("answer", text);
        let index = Index::create_in_ram(sb.build());
        if let Some((name, language)) = foreign {
            let mut b = TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(40))
                .filter(LowerCaser)
                .dynamic();
            if let Some(stop) = StopWordFilter::new(language) {
                b = b.filter_dynamic(stop);
            }
            // Greetings ("buenas tardes") would match articles by stem alone.
            b = b.filter_dynamic(StopWordFilter::remove(
                lang.greeting_words().iter().map(|w| w.to_string()),
            ));
            index
                .tokenizers()
                .register(name, b.filter_dynamic(Stemmer::new(language)).build());
        }
        let mut w = index.writer(15_000_000).map_err(terr)?;
        for a in &articles {
            w.add_document(doc!(
                id_field => a.id.clone(),
                title => a.title.clone(),
                questions => a.questions.join("\n"),
                answer => a.answer.clone(),
            ))
            .map_err(terr)?;
        }
        w.commit().map_err(terr)?;
        let reader = index.reader().map_err(terr)?;
        let mut parser = QueryParser::for_index(&index, vec![title, questions, answer]);
        parser.set_field_boost(title, 2.0);
        parser.set_field_boost(questions, 1.5);
        // Every article's title and questions in one set, split after.
        let texts: Vec<String> = articles
            .iter()
            .flat_map(|a| {
                std::iter::once(a.title.to_lowercase())
                    .chain(a.questions.iter().map(|q| q.to_lowercase()))
            })
            .collect();
        let mut all = embedder.embed_fixed(&texts)?.into_iter();
        let vectors: Vec<Vec<Vec<f32>>> = articles
            .iter()
            .map(|a| all.by_ref().take(1 + a.questions.len()).collect())
            .collect();
        Ok(Self {
            articles,
            vectors,
            reader,
            parser,
            id_field,
            shared_words: foreign.is_some(),
        })
    }

    pub fn article(&self, id: &str) -> Option<&Article> {
        self.articles.iter().find(|a| a.id == id)
    }

    pub fn articles(&self) -> &[Article] {
        &self.articles
    }

    /// BM25 scores by article id (best first).
    fn bm25(&self, text: &str) -> Vec<(String, f32)> {
        // Free text from ASR: strip query syntax, OR the words together.
        let clean: String = text
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '\'' {
                    c
                } else {
                    ' '
                }
            })
            .collect();
        let clean = clean.replace('\'', " ");
        if clean.trim().is_empty() {
            return Vec::new();
        }
        let (q, _errs) = self.parser.parse_query_lenient(&clean);
        let searcher = self.reader.searcher();
        let Ok(top) = searcher.search(&q, &TopDocs::with_limit(5).order_by_score()) else {
            return Vec::new();
        };
        top.into_iter()
            .filter_map(|(score, addr)| {
                let d: TantivyDocument = searcher.doc(addr).ok()?;
                let id = d.get_first(self.id_field)?.as_str()?.to_string();
                Some((id, score))
            })
            .collect()
    }

    /// The best article for an utterance whose embedding is `v`.
    pub fn search(&self, text: &str, v: &[f32]) -> Option<KbHit> {
        let bm = self.bm25(text);
        let top_bm = bm.first().map_or(0.0, |x| x.1).max(1e-6);
        let mut best: Option<KbHit> = None;
        for (a, vecs) in self.articles.iter().zip(&self.vectors) {
            let sim = vecs.iter().map(|q| dot(q, v)).fold(f32::MIN, f32::max);
            let b = bm.iter().find(|(id, _)| *id == a.id).map_or(0.0, |x| x.1);
            if self.shared_words && b <= 0.0 {
                continue;
            }
            // BM25 agreement lifts confidence by up to 0.08; it never creates
            // an answer on keyword overlap alone.
            let conf = (sim + 0.08 * (b / top_bm)).min(1.0);
            if best.as_ref().is_none_or(|h| conf > h.confidence) {
                best = Some(KbHit {
                    id: a.id.clone(),
                    title: a.title.clone(),
                    confidence: conf,
                    bm25: b,
                });
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles_are_checked_for_the_ear() {
        let p = Path::new("kb/x.md");
        let ok = parse_article(p, "+++\ntitle = \"Hours\"\nquestions = [\"when are you open\"]\n+++\nWe are open nine to five.\n").unwrap();
        assert_eq!(ok.id, "x");
        assert_eq!(ok.answer, "We are open nine to five.");
        let e = parse_article(
            p,
            "+++\ntitle = \"Hours\"\nquestions = [\"q\"]\n+++\nSee https://example.com.\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("x.md:5"), "{e}");
        let e = parse_article(p, "+++\ntitle = 3\nquestions = [\"q\"]\n+++\nA.\n").unwrap_err();
        assert!(e.to_string().contains("x.md:2"), "{e}");
    }
}

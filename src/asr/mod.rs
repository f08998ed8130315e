//! Speech recognition: Whisper (whisper.cpp via whisper-rs) on a pool of
//! worker threads sized to the machine, shared by every call.

pub mod whisper;

pub use whisper::{AsrConfig, AsrError, AsrPool, Priority, Transcript};

/// ggml's OpenMP pool spin-waits by default, which starves the other calls'
/// work on a small machine; make it sleep unless the operator chose otherwise.
/// Call before any thread is started.
pub fn configure_threads() {
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        // SAFETY: called at start-up, before other threads exist.
        unsafe { std::env::set_var("OMP_WAIT_POLICY", "passive") };
    }
}

/// Strips Whisper's non-speech annotations ("[BLANK_AUDIO]", "(coughs)",
/// "♪") and surrounding whitespace.
pub fn clean_transcript(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '[' | '(' | '*' if depth == 0 || c != '*' => depth += 1,
            ']' | ')' => depth = (depth - 1).max(0),
            '♪' => {}
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::clean_transcript;

    #[test]
    fn strips_annotations() {
        assert_eq!(clean_transcript(" [BLANK_AUDIO]"), "");
        assert_eq!(clean_transcript(" (coughs) Hello there."), "Hello there.");
        assert_eq!(clean_transcript("♪ la la ♪"), "la la");
        assert_eq!(
            clean_transcript("What are your hours?"),
            "What are your hours?"
        );
    }
}

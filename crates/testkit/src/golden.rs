//! Golden files: a rendering of what a service sent, compared exactly with a committed file.
//!
//! Binary payloads are rendered as lowercase hex, 32 bytes a line, so a changed byte shows as a
//! changed line; text bodies are kept verbatim. A mismatch fails with a line diff of the file
//! against what was sent. `RECEIPTS_BLESS=1` rewrites the files instead, for a change of contract
//! that is meant.

use std::fmt::Write as _;
use std::path::Path;

/// `bytes` as lowercase hex, 32 bytes a line, each line ended by a newline.
pub fn hex_lines(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2 + bytes.len() / 32 + 1);
    for chunk in bytes.chunks(32) {
        for byte in chunk {
            let _ = write!(out, "{byte:02x}");
        }
        out.push('\n');
    }
    out
}

/// Compares `actual` with the golden file `name` under `dir`, or rewrites the file when
/// `RECEIPTS_BLESS=1`. `context` is printed with a mismatch to help read it (a decoded message).
///
/// # Panics
/// When the file is missing or differs from `actual`.
pub fn assert_pinned(dir: &Path, name: &str, actual: &str, context: &str) {
    let path = dir.join(name);
    if std::env::var("RECEIPTS_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} cannot be read ({e}); run with RECEIPTS_BLESS=1 to write it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{name} is not what the services sent (- golden, + sent; RECEIPTS_BLESS=1 rewrites \
             the file if the change is meant):\n{}\n{context}",
            diff(&expected, actual)
        );
    }
}

/// A line diff of `old` and `new`: the lines of a longest common subsequence kept as context
/// (`  `), the others marked `- ` and `+ `. Files here are a few hundred lines at most.
pub fn diff(old: &str, new: &str) -> String {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    // common[i][j]: the length of a longest common subsequence of old[i..] and new[j..].
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            let _ = writeln!(out, "  {}", old[i]);
            (i, j) = (i + 1, j + 1);
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            let _ = writeln!(out, "- {}", old[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", new[j]);
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_lines_hold_32_bytes() {
        let bytes: Vec<u8> = (0..40).collect();
        let text = hex_lines(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 64);
        assert_eq!(lines[1], "2021222324252627");
        assert_eq!(hex_lines(&[]), "");
    }

    #[test]
    fn a_diff_marks_only_the_changed_lines() {
        let diff = diff("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(diff, "  a\n- b\n+ B\n  c\n+ d\n");
    }
}

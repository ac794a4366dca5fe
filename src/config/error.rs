//! Config errors with a position: rendered as `FILE:LINE:COL: message`, line and column
//! 1-based, so editors and CI annotations jump straight to the offending byte.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a config file, located by byte offset into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub offset: usize,
    pub message: String,
    /// Set when the problem is in another file the config names (an env file): that file
    /// and the 1-based line and column there. `offset` then only orders it, at the place
    /// the config names the file.
    pub elsewhere: Option<(PathBuf, usize, usize)>,
}

impl Problem {
    pub fn at(span: &Range<usize>, message: impl Into<String>) -> Self {
        Problem {
            offset: span.start,
            message: message.into(),
            elsewhere: None,
        }
    }
}

/// Every problem of one file, in file order, ready to print one per line.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub lines: Vec<String>,
}

impl ConfigErrors {
    pub fn render(path: &Path, text: &str, mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| p.offset);
        let mut lines: Vec<String> = Vec::with_capacity(problems.len());
        for p in &problems {
            let line = match &p.elsewhere {
                Some((file, line, col)) => {
                    format!(
                        "{}:{line}:{col}: {}",
                        file.display(),
                        escape_controls(&p.message)
                    )
                }
                None => {
                    let (line, col) = line_col(text, p.offset);
                    format!(
                        "{}:{line}:{col}: {}",
                        path.display(),
                        escape_controls(&p.message)
                    )
                }
            };
            // Two programs naming the same bad env file would repeat its lines.
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        ConfigErrors { lines }
    }

    /// An error that concerns the file as a whole (it cannot be read, say).
    pub fn whole_file(path: &Path, message: impl fmt::Display) -> Self {
        ConfigErrors {
            lines: vec![format!("{}: {message}", path.display())],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Messages quote what the user wrote; a newline in a quoted value would break the
/// one-problem-per-line format (a fuzz finding), so control characters are shown escaped.
fn escape_controls(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Error for a config file that could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(ConfigErrors),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes: the '=' after it is the 4th character of line 2.
        assert_eq!(line_col(text, 10), (2, 4));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn problems_render_in_file_order() {
        let text = "x\ny\nz\n";
        let errs = ConfigErrors::render(
            Path::new("f.toml"),
            text,
            vec![Problem::at(&(4..5), "third"), Problem::at(&(0..1), "first")],
        );
        assert_eq!(errs.lines, ["f.toml:1:1: first", "f.toml:3:1: third"]);
    }

    #[test]
    fn control_characters_in_messages_are_escaped() {
        // fuzz finding: `kind = "daemon\nfoo"` printed a message over two lines
        let errs = ConfigErrors::render(
            Path::new("f.toml"),
            "x",
            vec![Problem::at(&(0..1), "found \"a\nb\tc\u{7f}\"")],
        );
        assert_eq!(errs.lines, [r#"f.toml:1:1: found "a\nb\tc\u{7f}""#]);
    }
}

//! Program environments: `environment_files` (KEY=VALUE files read at load) and secrets
//! (`{ file = "..." }` values read at each start of the program).
//!
//! A secret's value must never reach a log line, /status, an error message or `Debug`
//! output: it lives in a [`Secret`] only between the read and the spawn.

use std::fmt;
use std::path::{Path, PathBuf};

/// One value of a program's `environment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// A value known at load (from the config, after `${VAR}` expansion, or an env file).
    Plain(String),
    /// `{ file = "PATH" }`: the file's content, read at each start, trailing newlines removed.
    File(PathBuf),
}

/// A value read from a secret file. `Debug` and `Display` print `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A secret file that cannot be used. The messages name the key and the path, never the
/// content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{key}: failed to read secret file {}", path.display())]
    Read {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: secret file {} is empty", path.display())]
    Empty { key: String, path: PathBuf },
    #[error("{key}: secret file {} is not valid UTF-8", path.display())]
    NotUtf8 { key: String, path: PathBuf },
    #[error("{key}: secret file {} contains a NUL byte, which an environment value cannot hold", path.display())]
    Nul { key: String, path: PathBuf },
}

/// Reads a secret for `key` (the dotted config key, for messages): the whole file, without
/// its trailing newlines (`echo pw > file` writes one).
pub fn read_secret(key: &str, path: &Path) -> Result<Secret, SecretError> {
    let bytes = super::read_capped(path).map_err(|source| SecretError::Read {
        key: key.into(),
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 {
        key: key.into(),
        path: path.into(),
    })?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::Empty {
            key: key.into(),
            path: path.into(),
        });
    }
    if value.contains('\0') {
        return Err(SecretError::Nul {
            key: key.into(),
            path: path.into(),
        });
    }
    Ok(Secret(value.to_string()))
}

/// A problem in an env file: 1-based line and column, and the message. The message never
/// shows a value (env files often hold passwords), only keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses an env file: `KEY=VALUE` lines, `#` comment lines, blank lines, an optional
/// `export ` prefix, and optionally single quotes (literal) or double quotes (`\"`, `\\`,
/// `\n` escapes) around the value. Values are taken literally otherwise: no `${VAR}`
/// expansion, and `#` starts a comment only at the start of a line or after a closing
/// quote. Collects every bad line.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, Vec<LineError>> {
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        match parse_line(body) {
            Ok(kv) => vars.push(kv),
            Err((offset, message)) => errors.push(LineError {
                line: n + 1,
                col: line[..indent + offset].chars().count() + 1,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(vars)
    } else {
        Err(errors)
    }
}

/// One non-empty, non-comment line (leading blanks removed); an error carries the byte
/// offset in `body` it concerns.
fn parse_line(body: &str) -> Result<(String, String), (usize, String)> {
    let start = match body.strip_prefix("export") {
        Some(r) if r.starts_with([' ', '\t']) => body.len() - r.trim_start().len(),
        _ => 0,
    };
    let rest = &body[start..];
    let Some(eq) = rest.find('=') else {
        return Err((
            start,
            "expected KEY=VALUE, found a line without \"=\"".to_string(),
        ));
    };
    let key = rest[..eq].trim_end();
    if key.is_empty() {
        return Err((
            start,
            "expected KEY=VALUE, found no key before \"=\"".into(),
        ));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err((
            start,
            format!(
                "expected KEY=VALUE, found the key \"{key}\" (a key may contain letters, digits, '_', '.' and '-', not {bad:?})"
            ),
        ));
    }
    let value_at = start + eq + 1;
    let raw = &body[value_at..];
    let lead = raw.len() - raw.trim_start().len();
    let value = raw.trim_start();
    let value_at = value_at + lead;
    let parsed = match value.chars().next() {
        Some(q @ ('"' | '\'')) => quoted(value, q).map_err(|(o, m)| (value_at + o, m))?,
        _ => value.trim_end().to_string(),
    };
    if parsed.contains('\0') {
        return Err((
            value_at,
            format!("{key}: a value cannot contain a NUL byte"),
        ));
    }
    Ok((key.to_string(), parsed))
}

/// The inside of a quoted value (`s` starts with the quote `q`) up to its closing quote;
/// only blanks or a `#` comment may follow it. Errors carry a byte offset in `s`.
fn quoted(s: &str, q: char) -> Result<String, (usize, String)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == q => {
                let after = s[i + 1..].trim_start();
                if after.is_empty() || after.starts_with('#') {
                    return Ok(out);
                }
                return Err((
                    s.len() - after.len(),
                    format!("expected the end of the line after the closing {q}"),
                ));
            }
            '\\' if q == '"' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, e @ ('"' | '\\' | '$'))) => out.push(e),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err((0, format!("unterminated {q}: a value ends on its own line")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse_env_file(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    #[test]
    fn env_file_lines() {
        let text = "# comment\n\n  \nA=1\nexport B = two words \nC='single $x \"q\"' # note\nD=\"dq \\\"x\\\" \\\\ \\n\"\nE=\nF=a=b\r\n  G=x # not a comment\nexport_H=1\n";
        assert_eq!(
            ok(text),
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "single $x \"q\""),
                ("D", "dq \"x\" \\ \n"),
                ("E", ""),
                ("F", "a=b"),
                ("G", "x # not a comment"),
                ("export_H", "1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn every_bad_line_is_reported_without_its_value() {
        let text = "GOOD=1\nhunter2\n  BAD KEY=secret\n=x\nQ=\"open\nR='x' y\nexport  S\n";
        let errs = parse_env_file(text).unwrap_err();
        let got: Vec<(usize, usize, &str)> = errs
            .iter()
            .map(|e| (e.line, e.col, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (2, 1, "expected KEY=VALUE, found a line without \"=\""),
                (
                    3,
                    3,
                    "expected KEY=VALUE, found the key \"BAD KEY\" (a key may contain letters, digits, '_', '.' and '-', not ' ')"
                ),
                (4, 1, "expected KEY=VALUE, found no key before \"=\""),
                (5, 3, "unterminated \": a value ends on its own line"),
                (6, 7, "expected the end of the line after the closing '"),
                (7, 9, "expected KEY=VALUE, found a line without \"=\""),
            ]
        );
        for e in &errs {
            assert!(!e.message.contains("hunter2") && !e.message.contains("secret"));
        }
    }

    #[test]
    fn secrets_lose_trailing_newlines_and_never_show() {
        let dir = std::env::temp_dir().join(format!("hivesup-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cr3t\r\n\n").unwrap();
        let s = read_secret("programs.a.environment.PW", &f).unwrap();
        assert_eq!(s.expose(), "s3cr3t");
        assert_eq!(format!("{s:?} {s}"), "<secret> <secret>");
        std::fs::write(&f, "\n").unwrap();
        let e = read_secret("programs.a.environment.PW", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "programs.a.environment.PW: secret file {} is empty",
                f.display()
            )
        );
        std::fs::write(&f, b"a\0b").unwrap();
        assert!(matches!(
            read_secret("k", &f).unwrap_err(),
            SecretError::Nul { .. }
        ));
        std::fs::write(&f, b"\xff").unwrap();
        assert!(matches!(
            read_secret("k", &f).unwrap_err(),
            SecretError::NotUtf8 { .. }
        ));
        let missing = dir.join("missing");
        let e = read_secret("programs.a.environment.PW", &missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "programs.a.environment.PW: failed to read secret file {}",
                missing.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

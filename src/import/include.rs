//! Reads the main file and its `[include] files = ...`, as supervisord resolves them: the
//! patterns (after `%(here)s` / `%(ENV_X)s` expansion) are split on whitespace, joined to
//! the including file's directory, globbed, and each pattern's matches read in sorted
//! order after the main file. Included files cannot include further files (supervisord
//! ignores their `[include]`; so does this, with a warning).
//!
//! Unlike supervisord, a pattern without wildcards that names no file is an error: a
//! conversion that silently lost the programs of a mistyped include would be worse than
//! none. A wildcard that matches nothing stays a warning, as in supervisord.

use std::path::{Path, PathBuf};

use super::Diag;
use super::expand::{self, Ch, EnvMode, Expansions, Known};
use super::ini::{self, Section};

/// One file that was read.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as shown in messages: the main file as given, includes joined to its
    /// directory as given (so the output does not depend on where it runs).
    pub display: String,
    /// Absolute directory, for `%(here)s`.
    pub dir: PathBuf,
}

/// A section and the file it came from (an index into [`Document::files`]).
#[derive(Debug, Clone)]
pub struct Located {
    pub file: usize,
    pub section: Section,
}

#[derive(Debug, Default)]
pub struct Document {
    pub files: Vec<Source>,
    /// In the order supervisord's parser lists them: the main file's, then each include's.
    pub sections: Vec<Located>,
}

impl Document {
    pub fn at(&self, file: usize, line: usize, message: impl Into<String>) -> Diag {
        Diag {
            file: self.files[file].display.clone(),
            line: Some(line),
            message: message.into(),
        }
    }
}

/// Reads `path` and everything it includes. Errors: every problem of every file.
pub fn load(path: &Path) -> Result<(Document, Vec<Diag>), Vec<Diag>> {
    let mut doc = Document::default();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let display = path.display().to_string();
    read_into(&mut doc, path, display, &mut errors, &mut warnings);
    if doc.files.is_empty() {
        return Err(errors);
    }

    let include = doc
        .sections
        .iter()
        .find(|l| l.section.name == "include")
        .cloned();
    if let Some(inc) = include {
        let files = include_files(&doc, &inc, &mut errors, &mut warnings);
        for f in files {
            let before = doc.sections.len();
            let idx = doc.files.len();
            read_into(&mut doc, &f.fs_path, f.display, &mut errors, &mut warnings);
            if doc.files.len() == idx {
                continue;
            }
            // supervisord reads one level of includes only.
            doc.sections = std::mem::take(&mut doc.sections)
                .into_iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    if i >= before && l.section.name == "include" {
                        warnings.push(doc.at(
                            l.file,
                            l.section.line,
                            "[include] in an included file is ignored: supervisord does not follow includes of included files; list the files in the main file's [include]",
                        ));
                        None
                    } else {
                        Some(l)
                    }
                })
                .collect();
        }
    }

    // supervisord (configparser with strict = False) would merge two sections of the same
    // name key by key, later files winning; that is rarely what was meant.
    for (i, l) in doc.sections.iter().enumerate() {
        if let Some(first) = doc.sections[..i]
            .iter()
            .find(|f| f.section.name == l.section.name)
        {
            errors.push(doc.at(
                l.file,
                l.section.line,
                format!(
                    "duplicate section [{}], first at {}:{} (supervisord would merge them silently, key by key): merge them into one",
                    l.section.name, doc.files[first.file].display, first.section.line
                ),
            ));
        }
    }

    sort(&doc.files, &mut warnings);
    if errors.is_empty() {
        Ok((doc, warnings))
    } else {
        sort(&doc.files, &mut errors);
        Err(errors)
    }
}

/// Puts messages in file order: files as read, then lines (whole-file messages first).
pub fn sort(files: &[Source], diags: &mut [Diag]) {
    let rank = |d: &Diag| {
        let file = files
            .iter()
            .position(|f| f.display == d.file)
            .unwrap_or(usize::MAX);
        (file, d.line.unwrap_or(0))
    };
    diags.sort_by_key(rank);
}

fn read_into(
    doc: &mut Document,
    fs_path: &Path,
    display: String,
    errors: &mut Vec<Diag>,
    warnings: &mut Vec<Diag>,
) {
    let whole = |message: String| Diag {
        file: display.clone(),
        line: None,
        message,
    };
    let bytes = match std::fs::read(fs_path) {
        Ok(b) => b,
        Err(e) => {
            errors.push(whole(format!("failed to read: {e}")));
            return;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            errors.push(Diag {
                file: display.clone(),
                line: Some(line),
                message: "not valid UTF-8: is this a supervisord config?".into(),
            });
            return;
        }
    };
    if text.contains('\0') {
        let line = text[..text.find('\0').unwrap_or(0)].matches('\n').count() + 1;
        errors.push(Diag {
            file: display.clone(),
            line: Some(line),
            message: "contains a NUL byte: is this a supervisord config?".into(),
        });
        return;
    }
    let dir = std::path::absolute(fs_path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let parsed = ini::parse(&text);
    let file = doc.files.len();
    doc.files.push(Source { display, dir });
    for e in parsed.errors {
        errors.push(doc.at(file, e.line, e.message));
    }
    for w in parsed.warnings {
        warnings.push(doc.at(file, w.line, w.message));
    }
    doc.sections.extend(
        parsed
            .sections
            .into_iter()
            .map(|section| Located { file, section }),
    );
}

struct Included {
    fs_path: PathBuf,
    display: String,
}

fn include_files(
    doc: &Document,
    inc: &Located,
    errors: &mut Vec<Diag>,
    warnings: &mut Vec<Diag>,
) -> Vec<Included> {
    let main = &doc.files[inc.file];
    let Some(entry) = inc.section.get("files") else {
        errors.push(doc.at(
            inc.file,
            inc.section.line,
            "[include] has no files = ... (supervisord refuses that too)",
        ));
        return Vec::new();
    };
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ex = Expansions::new(EnvMode::Now)
        .with("here", Known::Str(main.dir.display().to_string()))
        .with("host_node_name", Known::Str(host));
    let main_display_dir = Path::new(&main.display)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // Line by line, so that a problem names the line its pattern is on.
    let mut patterns: Vec<(String, usize)> = Vec::new();
    for (raw, line) in entry.value.split('\n').zip(entry.lines.iter().copied()) {
        match expand::expand(raw, &ex, &mut Vec::new()) {
            Ok(t) => {
                let s: String = t
                    .into_iter()
                    .map(|c| match c {
                        Ch::C(c) => c,
                        Ch::Env(_) => unreachable!("EnvMode::Now expands every variable"),
                    })
                    .collect();
                patterns.extend(s.split_whitespace().map(|p| (p.to_string(), line)));
            }
            Err(e) => errors.push(doc.at(inc.file, line, format!("[include] files: {e}"))),
        }
    }
    let mut out = Vec::new();
    for (pattern, line) in patterns {
        let pattern = pattern.as_str();
        let shown = main_display_dir.join(pattern);
        if !has_magic(pattern) {
            if shown.is_file() {
                out.push(Included {
                    fs_path: shown.clone(),
                    display: shown.display().to_string(),
                });
            } else {
                let what = if shown.exists() {
                    "is not a file"
                } else {
                    "does not exist"
                };
                errors.push(doc.at(
                    inc.file,
                    line,
                    format!(
                        "[include] files: \"{pattern}\" {what} (looked for {})",
                        shown.display()
                    ),
                ));
            }
            continue;
        }
        let matches = glob(&shown);
        if matches.is_empty() {
            // A warning, as in supervisord ("No file matches via include").
            warnings.push(doc.at(
                inc.file,
                line,
                format!(
                    "[include] files: no file matches \"{pattern}\" (looked for {})",
                    shown.display()
                ),
            ));
        }
        for m in matches {
            out.push(Included {
                display: m.display().to_string(),
                fs_path: m,
            });
        }
    }
    out
}

pub fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Python's `glob.glob` for one pattern: `*`, `?` and `[...]` in any component, hidden
/// names only when the pattern's component starts with `.`, regular files only, sorted.
pub fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    let comps: Vec<String> = pattern
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for comp in &comps {
        let mut next = Vec::new();
        for base in &current {
            if !has_magic(comp) {
                next.push(base.join(comp));
                continue;
            }
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| (comp.starts_with('.') || !n.starts_with('.')) && fnmatch(comp, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| base.join(n)));
        }
        current = next;
    }
    let mut files: Vec<PathBuf> = current.into_iter().filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// `fnmatch.fnmatchcase`: `*`, `?`, `[seq]`, `[!seq]` (an unclosed `[` is literal).
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n)
}

fn matches(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| matches(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && matches(&p[1..], &n[1..]),
        Some('[') => match class(&p[1..]) {
            Some(cl) => {
                let Some(c) = n.first() else { return false };
                let hit = cl.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(c));
                hit != cl.negate && matches(&p[1 + cl.len..], &n[1..])
            }
            None => n.first() == Some(&'[') && matches(&p[1..], &n[1..]),
        },
        Some(c) => n.first() == Some(c) && matches(&p[1..], &n[1..]),
    }
}

/// A `[...]` character class.
struct Class {
    ranges: Vec<(char, char)>,
    negate: bool,
    /// Characters after the `[`, up to and including the `]`.
    len: usize,
}

/// Parses a `[...]` class after its `[`; `None` when it is not closed.
fn class(p: &[char]) -> Option<Class> {
    let mut i = 0;
    let negate = p.first() == Some(&'!');
    if negate {
        i += 1;
    }
    let start = i;
    let mut set = Vec::new();
    while i < p.len() {
        if p[i] == ']' && i > start {
            return Some(Class {
                ranges: set,
                negate,
                len: i + 1,
            });
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            set.push((p[i], p[i + 2]));
            i += 3;
        } else {
            set.push((p[i], p[i]));
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_table() {
        let table = [
            ("*.conf", "a.conf", true),
            ("*.conf", "a.conf.bak", false),
            ("?.ini", "a.ini", true),
            ("?.ini", "ab.ini", false),
            ("[ab]*", "b1", true),
            ("[!ab]*", "b1", false),
            ("[a-c]x", "bx", true),
            ("[]]", "]", true),
            ("[x", "[x", true),
            ("*", "", true),
        ];
        for (p, n, want) in table {
            assert_eq!(fnmatch(p, n), want, "{p} {n}");
        }
    }
}

//! supervisord's INI dialect, line by line, as the `RawConfigParser` it subclasses reads it
//! (Python 3, `inline_comment_prefixes = (';', '#')`, `strict = False`):
//!
//! - a line whose first non-blank character is `;` or `#` is a comment; inline, `;` and `#`
//!   start a comment only at the start of the line or after whitespace (`a=b;c` keeps `;c`);
//! - `KEY = VALUE` or `KEY: VALUE`, split at the first `=` or `:`; keys are lowercased;
//! - a line indented deeper than its key continues the value (joined with `\n`), blank lines
//!   inside a value are kept, trailing ones dropped;
//! - `[NAME]` starts a section; anything before the first section is an error.
//!
//! Every entry keeps its line number, so later errors can say `FILE:LINE`.

/// One `KEY = VALUE` (value possibly continued over several lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lowercased, as configparser's `optionxform` does.
    pub key: String,
    pub value: String,
    pub line: usize,
    /// The line of each `\n`-separated line of `value` (comment lines inside a continued
    /// value are skipped, so they need not be consecutive).
    pub lines: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub line: usize,
    /// In file order; a key set twice keeps its later value at the first position.
    pub entries: Vec<Entry>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// A problem at a line of the file being parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMessage {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub sections: Vec<Section>,
    pub errors: Vec<LineMessage>,
    pub warnings: Vec<LineMessage>,
}

/// Parses one file's text. Sections keep file order; a section name seen twice gives two
/// sections (the caller reports duplicates across all files at once).
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    // The option that continuation lines extend: (section index, entry index).
    let mut current: Option<(usize, usize)> = None;
    // Pending value lines of `current` and their line numbers, joined when the value ends.
    let mut value_lines: Vec<(String, usize)> = Vec::new();
    let mut indent_level = 0usize;

    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let comment_start = comment_start(line);
        let value = match comment_start {
            Some(c) => line[..c].trim(),
            None => line.trim(),
        };
        if value.is_empty() {
            // configparser keeps a blank line inside a value (not a comment line); the
            // trailing ones are stripped when the value is joined.
            if comment_start.is_none() && current.is_some() {
                value_lines.push((String::new(), lineno));
            }
            continue;
        }
        let cur_indent = line.chars().take_while(|c| c.is_whitespace()).count();
        if current.is_some() && cur_indent > indent_level {
            value_lines.push((value.to_string(), lineno));
            continue;
        }
        finish(&mut out, &mut current, &mut value_lines);
        indent_level = cur_indent;

        if let Some(rest) = value.strip_prefix('[') {
            // configparser's `\[(?P<header>.+)\]`: up to the last `]`, which must not be
            // the first character after `[`.
            if let Some(end) = rest.rfind(']').filter(|&e| e > 0) {
                let name = &rest[..end];
                let trailer = rest[end + 1..].trim();
                if !trailer.is_empty() {
                    out.warnings.push(LineMessage {
                        line: lineno,
                        message: format!(
                            "text after the section header [{name}] is ignored: \"{trailer}\""
                        ),
                    });
                }
                out.sections.push(Section {
                    name: name.to_string(),
                    line: lineno,
                    entries: Vec::new(),
                });
                continue;
            }
        }
        let Some(section) = out.sections.len().checked_sub(1) else {
            // configparser gives up on the whole file here (MissingSectionHeaderError).
            out.errors.push(LineMessage {
                line: lineno,
                message: format!(
                    "expected a [section] header before any option, found \"{}\"",
                    shorten(value)
                ),
            });
            return out;
        };
        match value.find(['=', ':']) {
            Some(at) if !value[..at].trim().is_empty() => {
                let key = value[..at].trim().to_lowercase();
                let val = value[at + 1..].trim().to_string();
                let sect = &mut out.sections[section];
                let entries = &mut sect.entries;
                let idx = match entries.iter().position(|e| e.key == key) {
                    Some(idx) => {
                        out.warnings.push(LineMessage {
                            line: lineno,
                            message: format!(
                                "[{}] {key} is set twice (first at line {}): the later value wins, as in supervisord",
                                sect.name, entries[idx].line
                            ),
                        });
                        entries[idx].line = lineno;
                        idx
                    }
                    None => {
                        entries.push(Entry {
                            key,
                            value: String::new(),
                            line: lineno,
                            lines: Vec::new(),
                        });
                        entries.len() - 1
                    }
                };
                current = Some((section, idx));
                value_lines.push((val, lineno));
            }
            Some(_) => out.errors.push(LineMessage {
                line: lineno,
                message: format!(
                    "expected KEY = VALUE, found no key in \"{}\"",
                    shorten(value)
                ),
            }),
            None => out.errors.push(LineMessage {
                line: lineno,
                message: format!(
                    "expected KEY = VALUE or a [section] header, found \"{}\"",
                    shorten(value)
                ),
            }),
        }
    }
    finish(&mut out, &mut current, &mut value_lines);
    out
}

/// Stores the joined value of the option being read, if any.
fn finish(
    out: &mut Parsed,
    current: &mut Option<(usize, usize)>,
    lines: &mut Vec<(String, usize)>,
) {
    if let Some((s, e)) = current.take() {
        // configparser strips the joined value: trailing blank lines go.
        while lines.len() > 1 && lines.last().is_some_and(|(l, _)| l.is_empty()) {
            lines.pop();
        }
        let entry = &mut out.sections[s].entries[e];
        let text: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
        entry.value = text.join("\n").trim_end().to_string();
        entry.lines = lines.iter().map(|(_, n)| *n).collect();
    }
    lines.clear();
}

/// Byte offset where a comment starts, as configparser finds it: a whole-line comment, or
/// an inline prefix at the start or after whitespace. configparser looks for the prefixes
/// in rounds (each round moves every prefix to its next occurrence and stops at the first
/// round with a valid one), so in `x;y ;z #w` the `#` wins over the later-found `;`.
fn comment_start(line: &str) -> Option<usize> {
    let trimmed = line.trim_start();
    if trimmed.starts_with(';') || trimmed.starts_with('#') {
        return Some(0);
    }
    // (prefix, where its next search starts)
    let mut prefixes: Vec<(char, usize)> = vec![(';', 0), ('#', 0)];
    while !prefixes.is_empty() {
        let mut found: Option<usize> = None;
        let mut next = Vec::with_capacity(prefixes.len());
        for (prefix, from) in prefixes {
            let Some(rel) = line[from..].find(prefix) else {
                continue;
            };
            let at = from + rel;
            next.push((prefix, at + 1));
            let after_space = at == 0
                || line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_whitespace);
            if after_space {
                found = Some(found.map_or(at, |f| f.min(at)));
            }
        }
        if found.is_some() {
            return found;
        }
        prefixes = next;
    }
    None
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Section {
        let p = parse(text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.sections.len(), 1, "{:?}", p.sections);
        p.sections.into_iter().next().unwrap()
    }

    fn value(text: &str, key: &str) -> String {
        one(text).get(key).expect(key).value.clone()
    }

    #[test]
    fn comments_follow_configparser() {
        let table = [
            ("[s]\na=b;c\n", "b;c"),
            ("[s]\na=b ;c\n", "b"),
            ("[s]\na=b\t#c\n", "b"),
            ("[s]\na=b#c\n", "b#c"),
            ("[s]\na=x;y ;z #w\n", "x;y ;z"),
            ("[s]\na=bash -c 'foo ; bar'\n", "bash -c 'foo"),
            ("[s]\na=\n", ""),
            ("[s]\na = spaced value  \n", "spaced value"),
        ];
        for (text, want) in table {
            assert_eq!(value(text, "a"), want, "{text:?}");
        }
        let p = parse("; top\n# also\n[s] ; named\n  ; indented comment\na=1\n");
        assert!(p.errors.is_empty());
        assert_eq!(p.sections[0].name, "s");
        assert_eq!(p.sections[0].entries.len(), 1);
    }

    #[test]
    fn keys_are_lowercased_and_split_at_the_first_delimiter() {
        let s = one("[program:x]\nCommand: /bin/a --x=1\nuser=a:b\n");
        assert_eq!(s.get("command").unwrap().value, "/bin/a --x=1");
        assert_eq!(s.get("user").unwrap().value, "a:b");
        assert_eq!(s.get("command").unwrap().line, 2);
    }

    #[test]
    fn continuation_lines_join_with_newlines() {
        let s = one("[include]\nfiles = a.conf\n  b.conf\n\n  c.conf\n\n\nx=1\n");
        assert_eq!(s.get("files").unwrap().value, "a.conf\nb.conf\n\nc.conf");
        assert_eq!(s.get("files").unwrap().lines, [2, 3, 4, 5]);
        assert_eq!(s.get("x").unwrap().value, "1");
        // A comment line does not end a value; a deeper-indented line after it continues it.
        let s = one("[s]\na = 1\n; c\n  2\n");
        assert_eq!(s.get("a").unwrap().value, "1\n2");
        assert_eq!(s.get("a").unwrap().lines, [2, 4]);
    }

    #[test]
    fn sections_keep_order_and_duplicate_keys_warn() {
        let p = parse("[a]\nk=1\n[b]\nk=2\nk=3\n[a]\n");
        let names: Vec<_> = p.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "a"]);
        assert_eq!(p.sections[1].get("k").unwrap().value, "3");
        assert_eq!(p.sections[1].get("k").unwrap().line, 5);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].line, 5);
        assert!(
            p.warnings[0].message.contains("first at line 4"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn errors_have_lines() {
        let p = parse("garbage here\n[s]\n");
        assert_eq!(
            p.errors,
            [LineMessage {
                line: 1,
                message: "expected a [section] header before any option, found \"garbage here\""
                    .into()
            }]
        );
        let p = parse("[s]\na=1\nno delimiter\n=value\n[]\n");
        let lines: Vec<_> = p
            .errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (
                    3,
                    "expected KEY = VALUE or a [section] header, found \"no delimiter\""
                ),
                (4, "expected KEY = VALUE, found no key in \"=value\""),
                (
                    5,
                    "expected KEY = VALUE or a [section] header, found \"[]\""
                ),
            ]
        );
    }

    #[test]
    fn header_trailer_warns() {
        let p = parse("[s] junk\n");
        assert_eq!(p.sections[0].name, "s");
        assert_eq!(p.warnings[0].line, 1);
    }
}

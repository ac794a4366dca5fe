//! The spanned TOML document and typed accessors that record every problem they meet.
//!
//! serde's `deny_unknown_fields` stops at the first error, and `hivesup check` must report
//! every error at once (as ripgrep's config loader keeps going after a bad line). So the
//! document is parsed into toml's spanned `DeTable` and walked by hand: each accessor
//! returns `None` after recording a [`Problem`] at the offending byte, and the caller
//! carries on with the next key.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::duration;
use super::error::Problem;
use super::expand::{self, Lookup};

pub type Value<'i> = Spanned<DeValue<'i>>;

/// Parses TOML text, recovering from syntax errors so that all of them are reported.
pub fn parse(text: &str) -> Result<Spanned<DeTable<'_>>, Vec<Problem>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Ok(doc);
    }
    Err(errors
        .iter()
        .map(|e| Problem {
            offset: e.span().map_or(0, |s| s.start),
            message: format!("invalid TOML: {}", first_line(e.message())),
            elsewhere: None,
        })
        .collect())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim_end()
}

/// Collects problems while the validator walks the document, and expands `${VAR}` in
/// every string it hands out (keys are never expanded).
pub struct Walker<'e> {
    pub problems: Vec<Problem>,
    env: Lookup<'e>,
}

impl<'e> Walker<'e> {
    pub fn new(env: Lookup<'e>) -> Self {
        Walker {
            problems: Vec::new(),
            env,
        }
    }

    pub fn problem(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.problems.push(Problem::at(span, message));
    }

    /// `s` (the string value at `span`) with `${VAR}` expanded; reports why not at `span`.
    pub fn expand(&mut self, path: &str, span: &Range<usize>, s: &str) -> Option<String> {
        if !s.contains('$') {
            return Some(s.to_string());
        }
        match expand::expand(s, self.env) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(span, format!("{path}: {e}"));
                None
            }
        }
    }

    /// Reports every key of `table` that is not in `allowed`, with a suggestion.
    pub fn check_keys(&mut self, path: &str, table: &DeTable<'_>, allowed: &[&str]) {
        for (key, _) in table.iter() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let hint = suggest(name, allowed)
                .map(|s| format!(" (did you mean \"{s}\"?)"))
                .unwrap_or_else(|| format!(" (expected one of: {})", allowed.join(", ")));
            self.problem(&key.span(), format!("{path}: unknown key \"{name}\"{hint}"));
        }
    }

    pub fn table<'a, 'i>(&mut self, path: &str, v: &'a Value<'i>) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.problem(
                    &v.span(),
                    format!("{path}: expected a table, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// A string, `${VAR}` expanded.
    pub fn string(&mut self, path: &str, v: &Value<'_>) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => self.expand(path, &v.span(), s),
            other => {
                self.problem(
                    &v.span(),
                    format!("{path}: expected a string, found {}", describe(other)),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, path: &str, v: &Value<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.problem(
                    &v.span(),
                    format!("{path}: expected true or false, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// An integer within `range` (inclusive).
    pub fn integer(&mut self, path: &str, v: &Value<'_>, min: i64, max: i64) -> Option<i64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                self.problem(
                    &v.span(),
                    format!("{path}: expected an integer, found {}", describe(other)),
                );
                return None;
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let shown = match v.get_ref() {
                    DeValue::Integer(i) => i.to_string(),
                    _ => String::new(),
                };
                self.problem(
                    &v.span(),
                    format!("{path}: expected an integer from {min} to {max}, found {shown}"),
                );
                None
            }
        }
    }

    pub fn duration(&mut self, path: &str, v: &Value<'_>) -> Option<std::time::Duration> {
        match v.get_ref() {
            DeValue::String(s) => match duration::parse(&self.expand(path, &v.span(), s)?) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problem(&v.span(), format!("{path}: {e}"));
                    None
                }
            },
            DeValue::Integer(i) => {
                self.problem(
                    &v.span(),
                    format!("{path}: {i} has no unit, write \"{i}s\""),
                );
                None
            }
            other => {
                self.problem(
                    &v.span(),
                    format!(
                        "{path}: expected a duration like \"10s\", found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// An array of strings, `${VAR}` expanded; each bad element is reported at its own
    /// position.
    pub fn string_list(&mut self, path: &str, v: &Value<'_>) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.problem(
                &v.span(),
                format!(
                    "{path}: expected an array of strings, found {}",
                    describe(v.get_ref())
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => match self.expand(&format!("{path}[{i}]"), &item.span(), s) {
                    Some(s) => out.push(Spanned::new(item.span(), s)),
                    None => ok = false,
                },
                other => {
                    ok = false;
                    self.problem(
                        &item.span(),
                        format!("{path}[{i}]: expected a string, found {}", describe(other)),
                    );
                }
            }
        }
        ok.then_some(out)
    }
}

/// "a string \"x\"", "an integer 3", "a table": what the user wrote, for messages.
pub fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string \"{s}\""),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the number {f}"),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "an array".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

/// The allowed name closest to `name`, if it is close enough to be a typo.
pub fn suggest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (levenshtein(name, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["command", "priority", "restart"];
        assert_eq!(suggest("comand", &keys), Some("command"));
        assert_eq!(suggest("priorty", &keys), Some("priority"));
        assert_eq!(suggest("zzz", &keys), None);
    }

    #[test]
    fn syntax_errors_are_all_reported() {
        let problems = parse("a = \nb = [1,\n").unwrap_err();
        assert!(!problems.is_empty());
    }
}

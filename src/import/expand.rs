//! supervisord's `%(name)s` expansions, and the two ways it splits a value into words:
//! `shlex.split` (POSIX rules) for `command`, and the non-POSIX `shlex.shlex` of
//! `dict_of_key_value_pairs` for `environment`.
//!
//! An expanded value is a [`Text`]: characters, plus `%(ENV_X)s` references that stay
//! references, because supervisord reads them from its environment when it starts and
//! hivesup reads `${X}` from its own when it loads the config. [`render`] writes a Text for
//! hivesup, escaping a `$` that hivesup would otherwise read as the start of `${...}` or `$$`.

use std::collections::BTreeMap;

/// One character of an expanded value, or a reference to an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ch {
    C(char),
    Env(String),
}

pub type Text = Vec<Ch>;

pub fn text(s: &str) -> Text {
    s.chars().map(Ch::C).collect()
}

/// The value of a `%(name)s` that supervisord knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    Str(String),
    Int(i64),
    /// Only known when supervisord runs (`host_node_name`): kept as written, with a note.
    Later,
}

/// How `%(ENV_X)s` is expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvMode {
    /// As a `${X}` reference (program options: hivesup reads its own environment).
    Defer,
    /// From this process's environment now (`[include] files`, which import itself reads).
    Now,
}

#[derive(Debug, Clone)]
pub struct Expansions {
    pub names: BTreeMap<String, Known>,
    /// `ENV_X` whose value supervisord takes from a config `environment=` line rather than
    /// from its process environment: spliced in as written there.
    pub env_local: BTreeMap<String, Text>,
    pub env_mode: EnvMode,
}

impl Expansions {
    pub fn new(env_mode: EnvMode) -> Self {
        Expansions {
            names: BTreeMap::new(),
            env_local: BTreeMap::new(),
            env_mode,
        }
    }

    pub fn with(mut self, name: &str, value: Known) -> Self {
        self.names.insert(name.to_string(), value);
        self
    }

    fn available(&self) -> String {
        let mut names: Vec<String> = self.names.keys().map(|k| format!("%({k})s")).collect();
        names.push("%(ENV_NAME)s".into());
        names.join(", ")
    }
}

/// Expands `%(name)s`, `%(name)d` (with flags and width) and `%%`, as Python's `%` operator
/// does for supervisord. Notes (values only known at run time) go to `notes`.
pub fn expand(raw: &str, ex: &Expansions, notes: &mut Vec<String>) -> Result<Text, String> {
    let mut out = Text::new();
    let mut chars = raw.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '%' {
            out.push(Ch::C(c));
            continue;
        }
        match chars.next() {
            Some((_, '%')) => out.push(Ch::C('%')),
            Some((_, '(')) => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some((_, ')')) => break,
                        Some((_, ch)) => name.push(ch),
                        None => {
                            return Err(format!(
                                "\"%({name}\" has no closing parenthesis (write %% for a literal %)"
                            ));
                        }
                    }
                }
                let mut spec = String::new();
                let conv = loop {
                    match chars.next() {
                        Some((_, ch)) if "#0- +.123456789".contains(ch) => spec.push(ch),
                        Some((_, ch)) => break ch,
                        None => {
                            return Err(format!(
                                "\"%({name}){spec}\" has no conversion (like %({name})s)"
                            ));
                        }
                    }
                };
                let end = chars.peek().map_or(raw.len(), |(i, _)| *i);
                let written = &raw[at..end];
                out.extend(one(&name, &spec, conv, written, ex, notes)?);
            }
            _ => {
                return Err(format!(
                    "a lone % at \"{}\" (write %% for a literal %)",
                    &raw[at..]
                ));
            }
        }
    }
    Ok(out)
}

fn one(
    name: &str,
    spec: &str,
    conv: char,
    written: &str,
    ex: &Expansions,
    notes: &mut Vec<String>,
) -> Result<Text, String> {
    if !matches!(conv, 's' | 'd' | 'i') {
        return Err(format!(
            "{written}: only the conversions %(NAME)s and %(NAME)d are supported, found %{conv}"
        ));
    }
    if let Some(var) = name.strip_prefix("ENV_") {
        if let Some(local) = ex.env_local.get(var) {
            return Ok(local.clone());
        }
        return match ex.env_mode {
            EnvMode::Defer => {
                if !valid_var(var) {
                    return Err(format!(
                        "{written}: \"{var}\" is not a variable name hivesup can expand as ${{{var}}}"
                    ));
                }
                Ok(vec![Ch::Env(var.to_string())])
            }
            EnvMode::Now => match std::env::var(var) {
                Ok(v) => Ok(text(&pad(&v, spec, false))),
                Err(_) => Err(format!("{written}: {var} is not set in the environment")),
            },
        };
    }
    match ex.names.get(name) {
        None => Err(format!(
            "{written} cannot be expanded: supervisord knows {}",
            ex.available()
        )),
        Some(Known::Str(s)) if conv == 's' => Ok(text(&pad(s, spec, false))),
        Some(Known::Str(_)) => Err(format!("{written}: %({name}) is text, write %({name})s")),
        Some(Known::Int(n)) => Ok(text(&pad(&n.to_string(), spec, conv != 's'))),
        Some(Known::Later) => {
            notes.push(format!(
                "{written} is only known when supervisord runs: kept as written, replace it"
            ));
            Ok(text(written))
        }
    }
}

/// Python's width, `-` and `0` flags (precision truncates strings).
fn pad(s: &str, spec: &str, numeric: bool) -> String {
    let left = spec.contains('-');
    let (flags_width, precision) = match spec.split_once('.') {
        Some((a, p)) => (a, p.parse::<usize>().ok()),
        None => (spec, None),
    };
    let digits: String = flags_width
        .trim_start_matches(['#', '0', '-', ' ', '+'])
        .to_string();
    let zero = numeric
        && !left
        && flags_width
            .trim_start_matches(['#', '-', ' ', '+'])
            .starts_with('0');
    let width: usize = digits.parse().unwrap_or(0);
    let mut s: String = match precision {
        Some(p) if !numeric => s.chars().take(p).collect(),
        _ => s.to_string(),
    };
    let len = s.chars().count();
    if len < width {
        let fill = width - len;
        if left {
            s.push_str(&" ".repeat(fill));
        } else if zero {
            let (sign, body) = match s.strip_prefix('-') {
                Some(b) => ("-", b.to_string()),
                None => ("", s.clone()),
            };
            s = format!("{sign}{}{body}", "0".repeat(fill));
        } else {
            s = format!("{}{s}", " ".repeat(fill));
        }
    }
    s
}

/// What `${NAME}` can name in hivesup.
pub fn valid_var(v: &str) -> bool {
    let mut chars = v.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `shlex.split(command)`: POSIX quoting, backslash escapes, no comments. A `%(ENV_X)s`
/// reference is one word character (its value is not split, which supervisord would do on
/// whitespace inside it).
pub fn split_posix(t: &[Ch]) -> Result<Vec<Text>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Space,
        Word,
        Quote(char),
        Escape { back_to_quote: Option<char> },
    }
    let mut words = Vec::new();
    let mut token = Text::new();
    let mut quoted = false;
    let mut st = St::Space;
    for ch in t {
        let c = match ch {
            Ch::C(c) => Some(*c),
            Ch::Env(_) => None,
        };
        match st {
            St::Space | St::Word => match c {
                Some(' ' | '\t' | '\r' | '\n') => {
                    if st == St::Word && (!token.is_empty() || quoted) {
                        words.push(std::mem::take(&mut token));
                        quoted = false;
                    }
                    st = St::Space;
                }
                Some('\\') => {
                    st = St::Escape {
                        back_to_quote: None,
                    }
                }
                Some(q @ ('\'' | '"')) => {
                    st = St::Quote(q);
                    quoted = true;
                }
                _ => {
                    token.push(ch.clone());
                    st = St::Word;
                }
            },
            St::Quote(q) => match c {
                Some(x) if x == q => st = St::Word,
                Some('\\') if q == '"' => {
                    st = St::Escape {
                        back_to_quote: Some(q),
                    }
                }
                _ => token.push(ch.clone()),
            },
            St::Escape { back_to_quote } => {
                // Inside double quotes a backslash escapes only `"` and `\`.
                if back_to_quote.is_some() && !matches!(c, Some('"' | '\\')) {
                    token.push(Ch::C('\\'));
                }
                token.push(ch.clone());
                st = match back_to_quote {
                    Some(q) => St::Quote(q),
                    None => St::Word,
                };
            }
        }
    }
    match st {
        St::Quote(q) => Err(format!("no closing quotation ({q})")),
        St::Escape { .. } => Err("ends with a lone backslash".into()),
        St::Word | St::Space => {
            if !token.is_empty() || quoted {
                words.push(token);
            }
            Ok(words)
        }
    }
}

/// `dict_of_key_value_pairs`: `KEY=val,KEY2="v, 2"` through the non-POSIX `shlex.shlex`
/// (quotes stay in tokens and are stripped from the ends of values, `#` drops the rest of
/// the line, any other punctuation is a token of its own), then `KEY`, `=`, `VALUE` and one
/// separator token at a time, exactly as supervisord walks them.
pub fn key_value_pairs(t: &[Ch]) -> Result<Vec<(String, Text)>, String> {
    let tokens = shlex_nonposix(t)?;
    let mut out: Vec<(String, Text)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let triple = &tokens[i..tokens.len().min(i + 3)];
        if triple.len() != 3 || triple[1] != [Ch::C('=')] {
            return Err(
                "expected KEY=\"value\",KEY2=\"value2\" (quote a value with characters other than letters, digits and _/.+-():)"
                    .into(),
            );
        }
        let key: String = triple[0]
            .iter()
            .map(|c| match c {
                Ch::C(c) => Ok(*c),
                Ch::Env(v) => Err(format!("a variable name cannot come from %(ENV_{v})s")),
            })
            .collect::<Result<_, _>>()?;
        let mut value: &[Ch] = &triple[2];
        while let [Ch::C('\'' | '"'), rest @ ..] = value {
            value = rest;
        }
        while let [rest @ .., Ch::C('\'' | '"')] = value {
            value = rest;
        }
        let value = value.to_vec();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key, value)),
        }
        i += 4;
    }
    Ok(out)
}

fn shlex_nonposix(t: &[Ch]) -> Result<Vec<Text>, String> {
    fn word(c: char) -> bool {
        c.is_ascii_alphanumeric() || "_/.+-():".contains(c)
    }
    let mut tokens = Vec::new();
    let mut token = Text::new();
    // ' ': between tokens, 'a': in a word, a quote: inside it.
    let mut st = ' ';
    let mut i = 0;
    while i < t.len() {
        let ch = &t[i];
        i += 1;
        let c = match ch {
            Ch::C(c) => *c,
            Ch::Env(_) => 'a', // a word character
        };
        let skip_line = |i: &mut usize| {
            while *i < t.len() && t[*i] != Ch::C('\n') {
                *i += 1;
            }
            *i += 1;
        };
        match st {
            ' ' => {
                if matches!(ch, Ch::C(' ' | '\t' | '\r' | '\n')) {
                    continue;
                }
                if *ch == Ch::C('#') {
                    skip_line(&mut i);
                } else if word(c) {
                    token.push(ch.clone());
                    st = 'a';
                } else if c == '\'' || c == '"' {
                    token.push(ch.clone());
                    st = c;
                } else {
                    tokens.push(vec![ch.clone()]);
                }
            }
            'a' => {
                if matches!(ch, Ch::C(' ' | '\t' | '\r' | '\n')) {
                    tokens.push(std::mem::take(&mut token));
                    st = ' ';
                } else if *ch == Ch::C('#') {
                    // Non-POSIX shlex drops the rest of the line and goes on with the word.
                    skip_line(&mut i);
                } else if word(c) || c == '\'' || c == '"' {
                    token.push(ch.clone());
                } else {
                    tokens.push(std::mem::take(&mut token));
                    st = ' ';
                    i -= 1;
                }
            }
            q => {
                token.push(ch.clone());
                if *ch == Ch::C(q) {
                    tokens.push(std::mem::take(&mut token));
                    st = ' ';
                }
            }
        }
    }
    match st {
        ' ' => {}
        'a' => tokens.push(token),
        q => return Err(format!("no closing quotation ({q})")),
    }
    Ok(tokens)
}

/// Writes a Text as a hivesup config string: references as `${X}`, and a literal `$` as
/// `$$` where hivesup would otherwise read it as part of `${` or `$$`.
pub fn render(t: &[Ch]) -> String {
    let mut out = String::new();
    for (i, ch) in t.iter().enumerate() {
        match ch {
            Ch::C('$') => {
                let special = matches!(t.get(i + 1), Some(Ch::C('{' | '$') | Ch::Env(_)));
                out.push_str(if special { "$$" } else { "$" });
            }
            Ch::C(c) => out.push(*c),
            Ch::Env(v) => {
                out.push_str("${");
                out.push_str(v);
                out.push('}');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex() -> Expansions {
        Expansions::new(EnvMode::Defer)
            .with("program_name", Known::Str("api".into()))
            .with("process_num", Known::Int(3))
            .with("host_node_name", Known::Later)
    }

    fn exp(raw: &str) -> Result<String, String> {
        expand(raw, &ex(), &mut Vec::new()).map(|t| render(&t))
    }

    #[test]
    fn percent_expansion() {
        let ok = [
            ("plain", "plain"),
            ("%(program_name)s.log", "api.log"),
            (
                "%(process_num)d-%(process_num)02d-%(process_num)s",
                "3-03-3",
            ),
            ("%(process_num)-3d|", "3  |"),
            ("100%%", "100%"),
            ("%(ENV_DATABASE_URL)s", "${DATABASE_URL}"),
            ("x%(ENV_A)s%(ENV_B)sy", "x${A}${B}y"),
            ("$HOME", "$HOME"),
            ("${HOME} $$ $%(ENV_A)s", "$${HOME} $$$ $$${A}"),
        ];
        for (raw, want) in ok {
            assert_eq!(exp(raw).as_deref(), Ok(want), "{raw}");
        }
        let mut notes = Vec::new();
        let t = expand("n-%(host_node_name)s", &ex(), &mut notes).unwrap();
        assert_eq!(render(&t), "n-%(host_node_name)s");
        assert_eq!(notes.len(), 1);
        let bad = [
            ("50%", "a lone % at \"%\" (write %% for a literal %)"),
            (
                "%(nope)s",
                "%(nope)s cannot be expanded: supervisord knows %(host_node_name)s, %(process_num)s, %(program_name)s, %(ENV_NAME)s",
            ),
            (
                "%(program_name",
                "\"%(program_name\" has no closing parenthesis (write %% for a literal %)",
            ),
            (
                "%(program_name)x",
                "%(program_name)x: only the conversions %(NAME)s and %(NAME)d are supported, found %x",
            ),
            (
                "%(program_name)d",
                "%(program_name)d: %(program_name) is text, write %(program_name)s",
            ),
            (
                "%(ENV_A-B)s",
                "%(ENV_A-B)s: \"A-B\" is not a variable name hivesup can expand as ${A-B}",
            ),
        ];
        for (raw, want) in bad {
            assert_eq!(exp(raw), Err(want.to_string()), "{raw}");
        }
    }

    #[test]
    fn local_env_is_spliced() {
        let mut e = ex();
        e.env_local.insert("HOME".into(), text("/srv/api"));
        let t = expand("%(ENV_HOME)s/bin", &e, &mut Vec::new()).unwrap();
        assert_eq!(render(&t), "/srv/api/bin");
    }

    fn words(raw: &str) -> Result<Vec<String>, String> {
        let t = expand(raw, &ex(), &mut Vec::new()).unwrap();
        split_posix(&t).map(|w| w.iter().map(|x| render(x)).collect())
    }

    /// Expected values are what Python's `shlex.split` returns for the same input.
    #[test]
    fn posix_split_matches_shlex_split() {
        let table: &[(&str, &[&str])] = &[
            ("/bin/cat", &["/bin/cat"]),
            ("  a   b\tc\nd ", &["a", "b", "c", "d"]),
            (
                "sh -c \"echo hi; exit 3\"",
                &["sh", "-c", "echo hi; exit 3"],
            ),
            ("a 'b c' \"d e\"f", &["a", "b c", "d ef"]),
            ("a '' \"\"", &["a", "", ""]),
            (r#"a\ b c\"d"#, &["a b", "c\"d"]),
            (r#""x\"y\\z\n""#, &["x\"y\\z\\n"]),
            (r#"'no \escape'"#, &["no \\escape"]),
            ("u --db=%(ENV_DB)s", &["u", "--db=${DB}"]),
            ("a # not a comment", &["a", "#", "not", "a", "comment"]),
        ];
        for (raw, want) in table {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(words(raw), Ok(want), "{raw}");
        }
        assert_eq!(words("a 'b"), Err("no closing quotation (')".into()));
        assert_eq!(words("a \\"), Err("ends with a lone backslash".into()));
    }

    fn pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
        let t = expand(raw, &ex(), &mut Vec::new()).unwrap();
        key_value_pairs(&t).map(|v| v.into_iter().map(|(k, v)| (k, render(&v))).collect())
    }

    /// Expected values are what supervisord's `dict_of_key_value_pairs` returns.
    #[test]
    fn key_value_pairs_match_supervisord() {
        let table: &[(&str, &[(&str, &str)])] = &[
            ("A=\"1\",B=\"2\"", &[("A", "1"), ("B", "2")]),
            ("A=1, B=two", &[("A", "1"), ("B", "two")]),
            (
                "PATH=/usr/bin:/bin,X='a b, c'",
                &[("PATH", "/usr/bin:/bin"), ("X", "a b, c")],
            ),
            (
                "URL=\"%(ENV_DATABASE_URL)s\"",
                &[("URL", "${DATABASE_URL}")],
            ),
            ("URL=%(ENV_DATABASE_URL)s", &[("URL", "${DATABASE_URL}")]),
            ("A=1,A=2,B=3", &[("A", "2"), ("B", "3")]),
            ("A=\"x\"\n  ,B=y", &[("A", "x"), ("B", "y")]),
            ("A=ab#c\nd", &[("A", "abd")]),
            ("", &[]),
        ];
        for (raw, want) in table {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(pairs(raw), Ok(want), "{raw}");
        }
        for bad in ["A", "A=", "A=1,B", "A=u@h", "A=\"open"] {
            assert!(pairs(bad).is_err(), "{bad}");
        }
    }
}

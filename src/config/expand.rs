//! `${VAR}` and `${VAR:-default}` in config strings, from hivesup's own environment.
//!
//! `$$` is a literal `$`, and a `$` that does not start `${` stays as it is, so shell
//! commands keep their own `$HOME` and `$(...)`. Expansion happens once, at load, where the
//! validator reads each string, so every problem is reported at that string's position.
//! Pure: the environment comes in as a function.

/// Looks a variable up; `None` when it is unset.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why a string could not be expanded. Rendered after the dotted key of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("${{{0}}} is not set (give a default with ${{{0}:-...}})")]
    Unset(String),
    #[error("unterminated \"${{\" (write \"$${{\" for a literal \"${{\")")]
    Unterminated,
    #[error(
        "\"${{{0}}}\" is not a variable name (letters, digits and '_', not starting with a digit; write \"$${{\" for a literal \"${{\")"
    )]
    BadName(String),
    #[error("\"${{{0}{1}\": only ${{{0}}} and ${{{0}:-default}} are supported")]
    Unsupported(String, char),
}

/// Expands `s` with `env`.
pub fn expand(s: &str, env: Lookup<'_>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let rest = expand_until(s, env, false, &mut out)?;
    debug_assert!(rest.is_empty());
    Ok(out)
}

/// Expands `s` into `out` up to the end, or (inside a default) up to the `}` that closes
/// it; returns what follows that `}`.
fn expand_until<'s>(
    mut s: &'s str,
    env: Lookup<'_>,
    in_default: bool,
    out: &mut String,
) -> Result<&'s str, ExpandError> {
    loop {
        let stop = if in_default {
            s.find(['$', '}'])
        } else {
            s.find('$')
        };
        let Some(i) = stop else {
            if in_default {
                return Err(ExpandError::Unterminated);
            }
            out.push_str(s);
            return Ok("");
        };
        out.push_str(&s[..i]);
        let tail = &s[i..];
        if let Some(after) = tail.strip_prefix('}') {
            return Ok(after);
        }
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            s = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            s = variable(after, env, out)?;
        } else {
            out.push('$');
            s = &tail[1..];
        }
    }
}

/// `NAME}` or `NAME:-default}` after a `${`; returns what follows the closing `}`.
fn variable<'s>(s: &'s str, env: Lookup<'_>, out: &mut String) -> Result<&'s str, ExpandError> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let (name, after) = s.split_at(end);
    let Some(next) = after.chars().next() else {
        return Err(ExpandError::Unterminated);
    };
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        let shown: String = s.chars().take_while(|c| *c != '}').take(40).collect();
        return Err(ExpandError::BadName(shown));
    }
    match next {
        '}' => match env(name) {
            Some(v) => {
                out.push_str(&v);
                Ok(&after[1..])
            }
            None => Err(ExpandError::Unset(name.to_string())),
        },
        ':' if after[1..].starts_with('-') => {
            // Like the shell's `:-`: the default also applies when the variable is empty.
            // The default is expanded only when used, so an unset variable inside an unused
            // default is not an error.
            let mut default = String::new();
            let rest = expand_until(&after[2..], env, true, &mut default);
            match env(name).filter(|v| !v.is_empty()) {
                Some(v) => {
                    out.push_str(&v);
                    // Still skip the default's text, and still insist that it ends.
                    skip_default(&after[2..])
                }
                None => {
                    out.push_str(&default);
                    rest
                }
            }
        }
        c => Err(ExpandError::Unsupported(name.to_string(), c)),
    }
}

/// Skips a default's text without looking anything up: nested `${...}` are balanced.
fn skip_default(s: &str) -> Result<&str, ExpandError> {
    let mut depth = 0usize;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '$' => match chars.peek() {
                Some((_, '$')) => {
                    chars.next();
                }
                Some((_, '{')) => {
                    chars.next();
                    depth += 1;
                }
                _ => {}
            },
            '}' if depth == 0 => return Ok(&s[i + 1..]),
            '}' => depth -= 1,
            _ => {}
        }
    }
    Err(ExpandError::Unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db".into()),
            "PORT" => Some("5432".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn x(s: &str) -> Result<String, ExpandError> {
        expand(s, &env)
    }

    #[test]
    fn expansion_table() {
        for (input, want) in [
            ("plain", "plain"),
            ("", ""),
            ("${HOST}:${PORT}", "db:5432"),
            ("postgres://${HOST}/app", "postgres://db/app"),
            ("${NOPE:-fallback}", "fallback"),
            ("${NOPE:-}", ""),
            ("${HOST:-fallback}", "db"),
            ("${EMPTY}", ""),
            ("${EMPTY:-was empty}", "was empty"),
            ("${NOPE:-${HOST}}", "db"),
            ("${NOPE:-${ALSO_NOPE:-deep}}", "deep"),
            ("${HOST:-${ALSO_NOPE}}", "db"),
            ("${NOPE:-a$$b}", "a$b"),
            ("${NOPE:-{x}", "{x"),
            ("cost: $$5", "cost: $5"),
            ("$${HOST}", "${HOST}"),
            ("$$$$", "$$"),
            ("echo $HOME $(id -u) $1 $", "echo $HOME $(id -u) $1 $"),
            ("a}b", "a}b"),
            ("é${HOST}é", "édbé"),
        ] {
            assert_eq!(x(input).as_deref(), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn error_table() {
        use ExpandError::*;
        for (input, want) in [
            ("${NOPE}", Unset("NOPE".into())),
            ("x ${NOPE:-${ALSO_NOPE}} y", Unset("ALSO_NOPE".into())),
            ("${HOST", Unterminated),
            ("${", Unterminated),
            ("${NOPE:-abc", Unterminated),
            ("${HOST:-abc", Unterminated),
            ("${HOST:-${x}", Unterminated),
            ("${}", BadName("".into())),
            ("${1A}", BadName("1A".into())),
            ("${A B}", Unsupported("A".into(), ' ')),
            ("${HOST-x}", Unsupported("HOST".into(), '-')),
            ("${HOST:?x}", Unsupported("HOST".into(), ':')),
        ] {
            assert_eq!(x(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn messages_name_the_variable_and_the_fix() {
        assert_eq!(
            ExpandError::Unset("DB_URL".into()).to_string(),
            "${DB_URL} is not set (give a default with ${DB_URL:-...})"
        );
        assert_eq!(
            ExpandError::Unterminated.to_string(),
            "unterminated \"${\" (write \"$${\" for a literal \"${\")"
        );
        assert_eq!(
            ExpandError::Unsupported("A".into(), '?').to_string(),
            "\"${A?\": only ${A} and ${A:-default} are supported"
        );
    }
}

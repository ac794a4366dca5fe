//! `hivesup import FILE`: a supervisord configuration (with its `[include]` files) -> hivesup
//! TOML on stdout, warnings on stderr.
//!
//! - `ini`: supervisord's INI dialect (Python's configparser as supervisord sets it up),
//!   every entry with its line.
//! - `include`: the main file plus `[include] files = ...` globs, relative to the including
//!   file, read in supervisord's order; duplicate sections are errors.
//! - `expand`: `%(name)s` expansion, `shlex` word splitting for `command` and `environment`,
//!   `%(ENV_X)s` -> `${X}`.
//! - `convert`: the mapping tables; options hivesup lacks become
//!   `# supervisord: OPTION = VALUE — why` comments, and warnings when they change behaviour.
//!
//! Import never runs anything and never touches the supervised programs: it only reads files.
//! Input it cannot convert (unreadable, not INI, a value supervisord itself would refuse) is
//! reported as `FILE:LINE: message`, every problem at once, and nothing is printed on stdout.

mod convert;
mod expand;
mod include;
mod ini;
mod toml_out;

use std::fmt;
use std::path::Path;

pub use convert::Converted;

/// Exit code when the input cannot be converted.
pub const EXIT_INVALID: i32 = 2;

/// A located message: `FILE:LINE: message`, or `FILE: message` for a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Converts `path` (and its includes). Errors: every problem found, in file order.
pub fn convert(path: &Path) -> Result<Converted, Vec<Diag>> {
    let (doc, warnings) = include::load(path)?;
    convert::convert(&doc, warnings)
}

/// The command: TOML on stdout, warnings on stderr; 0 when converted, 2 when not.
pub fn command(path: &Path) -> i32 {
    match convert(path) {
        Ok(c) => {
            print!("{}", c.toml);
            for w in &c.warnings {
                // `FILE:LINE: warning: ...`, as compilers put it.
                let warning = Diag {
                    message: format!("warning: {}", w.message),
                    ..w.clone()
                };
                eprintln!("{warning}");
            }
            let programs = match c.programs {
                1 => "1 program".to_string(),
                n => format!("{n} programs"),
            };
            match c.warnings.len() {
                0 => eprintln!("hivesup import: converted {programs}, no warnings"),
                n => eprintln!(
                    "hivesup import: converted {programs} with {n} warning{}: see the \"# supervisord:\" comments",
                    if n == 1 { "" } else { "s" }
                ),
            }
            0
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            EXIT_INVALID
        }
    }
}

//! Walks the spanned document into a typed [`Config`], recording every problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::env::{self, EnvValue};
use super::error::{ConfigErrors, Problem};
use super::expand::Lookup;
use super::raw::{self, Value, Walker, describe};
use super::*;
use crate::signals;

const SUPERVISOR_KEYS: &[&str] = &[
    "health_addr",
    "shutdown_timeout",
    "log_format",
    "control_socket",
    "reload_on_sighup",
    "environment_files",
    "user_switch",
];
const PROGRAM_KEYS: &[&str] = &[
    "command",
    "priority",
    "kind",
    "user",
    "directory",
    "environment",
    "environment_files",
    "restart",
    "stop_signal",
    "stop_timeout",
    "forward_signals",
    "critical",
    "settle_time",
    "restart_backoff",
    "restart_backoff_max",
    "backoff_reset",
    "start_retries",
    "ready",
    "health",
];
const PROBE_KEYS: &[&str] = &["tcp", "unix", "http", "exec", "postgres"];
const READY_KEYS: &[&str] = &[
    "tcp", "unix", "http", "exec", "postgres", "notify", "timeout", "interval",
];
const HEALTH_KEYS: &[&str] = &[
    "tcp", "unix", "http", "exec", "postgres", "interval", "timeout", "failures",
];
/// The signals hivesup catches to forward; TERM, INT and QUIT are its own stop signals.
pub const FORWARDABLE: &[Signal] = &[Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2];

/// Validates config text. `${VAR}` expands with `env`; relative env files and secrets are
/// relative to the config file's directory.
pub fn validate(path: &Path, text: &str, env: Lookup<'_>) -> Result<Config, ConfigErrors> {
    let doc = match raw::parse(text) {
        Ok(doc) => doc,
        Err(problems) => return Err(ConfigErrors::render(path, text, problems)),
    };
    let mut w = Walker::new(env);
    w.check_keys("top level", doc.get_ref(), &["supervisor", "programs"]);
    let base = path.parent().unwrap_or(Path::new(""));

    let mut supervisor = SupervisorConfig::default();
    let mut global_env = Vec::new();
    if let Some(v) = get(doc.get_ref(), "supervisor") {
        if let Some(t) = w.table("supervisor", v) {
            supervisor = supervisor_config(&mut w, t);
            if let Some(v) = get(t, "environment_files") {
                global_env = env_files(&mut w, "supervisor.environment_files", v, base);
            }
        }
    }

    let mut programs = Vec::new();
    match get(doc.get_ref(), "programs") {
        None => w.problem(
            &(0..0),
            "no programs: add at least one [programs.NAME] table",
        ),
        Some(v) => {
            if let Some(t) = w.table("programs", v) {
                if t.is_empty() {
                    w.problem(
                        &v.span(),
                        "programs: no programs: add at least one [programs.NAME] table",
                    );
                }
                for (name, value) in t.iter() {
                    let name_str: &str = name.get_ref();
                    let dotted = format!("programs.{name_str}");
                    if !valid_name(name_str) {
                        w.problem(
                            &name.span(),
                            format!(
                                "{dotted}: a program name may contain only letters, digits, '-', '_' and '.', found \"{name_str}\""
                            ),
                        );
                    }
                    if let Some(pt) = w.table(&dotted, value) {
                        let ctx = ProgramCtx {
                            dotted: &dotted,
                            name: name_str,
                            base,
                            global_env: &global_env,
                        };
                        if let Some(p) = program_config(&mut w, &ctx, value, pt) {
                            programs.push((value.span().start, p));
                        }
                    }
                }
            }
        }
    }

    if !w.problems.is_empty() {
        return Err(ConfigErrors::render(path, text, w.problems));
    }
    programs.sort_by_key(|(offset, _)| *offset);
    Ok(Config {
        path: path.to_path_buf(),
        supervisor,
        programs: programs.into_iter().map(|(_, p)| p).collect(),
    })
}

fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a Value<'i>> {
    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn supervisor_config(w: &mut Walker, t: &DeTable<'_>) -> SupervisorConfig {
    w.check_keys("supervisor", t, SUPERVISOR_KEYS);
    let mut s = SupervisorConfig::default();
    if let Some(v) = get(t, "health_addr") {
        if let Some(text) = w.string("supervisor.health_addr", v) {
            if text.is_empty() {
                s.health_addr = None;
            } else {
                match text.parse::<SocketAddr>() {
                    Ok(a) => s.health_addr = Some(a),
                    Err(_) => w.problem(
                        &v.span(),
                        format!(
                            "supervisor.health_addr: expected IP:PORT like \"0.0.0.0:8080\" (or \"\" to disable), found \"{text}\""
                        ),
                    ),
                }
            }
        }
    }
    if let Some(v) = get(t, "shutdown_timeout") {
        if let Some(d) = w.duration("supervisor.shutdown_timeout", v) {
            s.shutdown_timeout = d;
        }
    }
    if let Some(v) = get(t, "log_format") {
        if let Some(text) = w.string("supervisor.log_format", v) {
            match text.as_str() {
                "text" => s.log_format = LogFormat::Text,
                "json" => s.log_format = LogFormat::Json,
                _ => w.problem(
                    &v.span(),
                    format!(
                        "supervisor.log_format: expected \"text\" or \"json\", found \"{text}\""
                    ),
                ),
            }
        }
    }
    if let Some(v) = get(t, "control_socket") {
        if let Some(text) = w.string("supervisor.control_socket", v) {
            if text.is_empty() {
                s.control_socket = None;
            } else if !text.starts_with('/') {
                w.problem(
                    &v.span(),
                    format!(
                        "supervisor.control_socket: expected an absolute path like \"/run/hivesup.sock\" (or \"\" to disable), found \"{text}\""
                    ),
                );
            } else if text.len() > 107 {
                // sun_path holds 108 bytes including the final NUL (unix(7)).
                w.problem(
                    &v.span(),
                    format!(
                        "supervisor.control_socket: a unix socket path holds at most 107 bytes, found {}",
                        text.len()
                    ),
                );
            } else {
                s.control_socket = Some(ControlSocket {
                    path: text.into(),
                    explicit: true,
                });
            }
        }
    }
    if let Some(v) = get(t, "reload_on_sighup") {
        if let Some(b) = w.bool("supervisor.reload_on_sighup", v) {
            s.reload_on_sighup = b;
        }
    }
    if let Some(v) = get(t, "user_switch") {
        if let Some(text) = w.string("supervisor.user_switch", v) {
            match text.as_str() {
                "required" => s.user_switch = UserSwitch::Required,
                "if-root" => s.user_switch = UserSwitch::IfRoot,
                _ => w.problem(
                    &v.span(),
                    format!(
                        "supervisor.user_switch: expected \"required\" or \"if-root\", found \"{text}\""
                    ),
                ),
            }
        }
    }
    s
}

/// Reads `environment_files` (a list of paths, relative to `base`) in order. Problems inside
/// a file are reported at that file's own line and column.
fn env_files(w: &mut Walker, key: &str, v: &Value<'_>, base: &Path) -> Vec<(String, String)> {
    let Some(list) = w.string_list(key, v) else {
        return Vec::new();
    };
    let mut vars = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let span = item.span();
        if item.get_ref().is_empty() {
            w.problem(
                &span,
                format!("{key}[{i}]: expected a file path, found an empty string"),
            );
            continue;
        }
        let file = base.join(item.get_ref());
        let text = match super::read_capped(&file) {
            Ok(bytes) => bytes,
            Err(e) => {
                w.problem(
                    &span,
                    format!("{key}[{i}]: failed to read {}: {e}", file.display()),
                );
                continue;
            }
        };
        let elsewhere = |line, col, message: String| Problem {
            offset: span.start,
            message,
            elsewhere: Some((file.clone(), line, col)),
        };
        let text = match String::from_utf8(text) {
            Ok(t) => t,
            Err(e) => {
                let lossy = String::from_utf8_lossy(e.as_bytes());
                let (line, col) = super::error::line_col(&lossy, e.utf8_error().valid_up_to());
                w.problems
                    .push(elsewhere(line, col, "the file is not valid UTF-8".into()));
                continue;
            }
        };
        match env::parse_env_file(&text) {
            Ok(v) => vars.extend(v),
            Err(errors) => {
                for e in errors {
                    w.problems.push(elsewhere(e.line, e.col, e.message));
                }
            }
        }
    }
    vars
}

/// Where a program sits: its dotted key and name, the config's directory, and the
/// variables of `[supervisor] environment_files`.
struct ProgramCtx<'a> {
    dotted: &'a str,
    name: &'a str,
    base: &'a Path,
    global_env: &'a [(String, String)],
}

fn program_config(
    w: &mut Walker,
    ctx: &ProgramCtx<'_>,
    whole: &Value<'_>,
    t: &DeTable<'_>,
) -> Option<ProgramConfig> {
    let (dotted, name) = (ctx.dotted, ctx.name);
    w.check_keys(dotted, t, PROGRAM_KEYS);
    let before = w.problems.len();
    let key = |k: &str| format!("{dotted}.{k}");

    let command = match get(t, "command") {
        None => {
            w.problem(&whole.span(), format!("{dotted}: missing key \"command\""));
            None
        }
        Some(v) => command(w, &key("command"), v),
    };
    let mut p = ProgramConfig::new(name, command.unwrap_or(CommandSpec::Argv(vec![])));

    if let Some(v) = get(t, "priority") {
        if let Some(n) = w.integer(&key("priority"), v, 0, i32::MAX as i64) {
            p.priority = n as u32;
        }
    }
    if let Some(v) = get(t, "kind") {
        match w.string(&key("kind"), v).as_deref() {
            Some("daemon") => p.kind = Kind::Daemon,
            Some("oneshot") => p.kind = Kind::Oneshot,
            Some(other) => w.problem(
                &v.span(),
                format!(
                    "{}: expected \"daemon\" or \"oneshot\", found \"{other}\"",
                    key("kind")
                ),
            ),
            None => {}
        }
    }
    if let Some(v) = get(t, "user") {
        p.user = user(w, &key("user"), v);
    }
    if let Some(v) = get(t, "directory") {
        if let Some(d) = w.string(&key("directory"), v) {
            if d.is_empty() {
                w.problem(
                    &v.span(),
                    format!(
                        "{}: expected a directory path, found an empty string",
                        key("directory")
                    ),
                );
            } else {
                p.directory = Some(PathBuf::from(d));
            }
        }
    }
    // Global env files, then the program's own, then its `environment`: later ones win.
    let mut environment: Vec<(String, EnvValue)> = ctx
        .global_env
        .iter()
        .map(|(k, v)| (k.clone(), EnvValue::Plain(v.clone())))
        .collect();
    if let Some(v) = get(t, "environment_files") {
        for (k, v) in env_files(w, &key("environment_files"), v, ctx.base) {
            environment.push((k, EnvValue::Plain(v)));
        }
    }
    if let Some(v) = get(t, "environment") {
        if let Some(env) = w.table(&key("environment"), v) {
            for (k, val) in env.iter() {
                let name: &str = k.get_ref();
                let path = format!("{}.{name}", key("environment"));
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    w.problem(
                        &k.span(),
                        format!("{path}: not a valid environment variable name"),
                    );
                    continue;
                }
                if let Some(value) = env_value(w, &path, val, ctx.base) {
                    environment.push((name.to_string(), value));
                }
            }
        }
    }
    p.environment = merge(environment);
    if let Some(v) = get(t, "restart") {
        match w.string(&key("restart"), v).as_deref() {
            Some("always") => p.restart = Restart::Always,
            Some("on-failure") => p.restart = Restart::OnFailure,
            Some("never") => p.restart = Restart::Never,
            Some(other) => w.problem(
                &v.span(),
                format!(
                    "{}: expected \"always\", \"on-failure\" or \"never\", found \"{other}\"",
                    key("restart")
                ),
            ),
            None => {}
        }
    }
    if let Some(v) = get(t, "stop_signal") {
        if let Some(s) = signal(w, &key("stop_signal"), v) {
            p.stop_signal = s;
        }
    }
    if let Some(v) = get(t, "forward_signals") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}[{i}]", key("forward_signals"));
                    if let Some(s) = signal(w, &path, item) {
                        if FORWARDABLE.contains(&s) {
                            p.forward_signals.push(s);
                        } else {
                            w.problem(
                                &item.span(),
                                format!(
                                    "{path}: hivesup forwards only SIGHUP, SIGUSR1 and SIGUSR2 (SIGTERM, SIGINT and SIGQUIT stop everything), found {}",
                                    s.as_str()
                                ),
                            );
                        }
                    }
                }
            }
            other => w.problem(
                &v.span(),
                format!(
                    "{}: expected an array of signal names, found {}",
                    key("forward_signals"),
                    describe(other)
                ),
            ),
        }
    }
    if let Some(v) = get(t, "critical") {
        if let Some(b) = w.bool(&key("critical"), v) {
            p.critical = b;
        }
    }
    for (name, slot) in [
        ("stop_timeout", &mut p.stop_timeout),
        ("settle_time", &mut p.settle_time),
        ("restart_backoff", &mut p.restart_backoff),
        ("restart_backoff_max", &mut p.restart_backoff_max),
        ("backoff_reset", &mut p.backoff_reset),
    ] {
        if let Some(v) = get(t, name) {
            if let Some(d) = w.duration(&key(name), v) {
                *slot = d;
            }
        }
    }
    if let Some(v) = get(t, "start_retries") {
        if let Some(n) = w.integer(&key("start_retries"), v, 1, 1_000_000) {
            p.start_retries = n as u32;
        }
    }
    if let Some(v) = get(t, "ready") {
        if let Some(rt) = w.table(&key("ready"), v) {
            p.ready = ready(w, &key("ready"), v, rt);
        }
    }
    if let Some(v) = get(t, "health") {
        if let Some(ht) = w.table(&key("health"), v) {
            p.health = health(w, &key("health"), v, ht);
        }
    }
    if p.kind == Kind::Oneshot && p.ready.is_some() {
        if let Some(v) = get(t, "ready") {
            w.problem(
                &v.span(),
                format!(
                    "{}: a oneshot is ready when it exits 0; remove [{}] or use kind = \"daemon\"",
                    key("ready"),
                    key("ready")
                ),
            );
        }
    }
    if p.kind == Kind::Oneshot && p.health.is_some() {
        if let Some(v) = get(t, "health") {
            w.problem(
                &v.span(),
                format!(
                    "{}: a oneshot does not run long enough to be health-checked",
                    key("health")
                ),
            );
        }
    }
    (w.problems.len() == before).then_some(p)
}

/// One `environment` value: a string, or `{ file = "PATH" }` for a secret read at start.
fn env_value(w: &mut Walker, path: &str, v: &Value<'_>, base: &Path) -> Option<EnvValue> {
    match v.get_ref() {
        DeValue::String(s) => {
            let s = w.expand(path, &v.span(), s)?;
            if s.contains('\0') {
                w.problem(
                    &v.span(),
                    format!("{path}: a value cannot contain a NUL byte"),
                );
                return None;
            }
            Some(EnvValue::Plain(s))
        }
        DeValue::Table(t) => {
            w.check_keys(path, t, &["file"]);
            let Some(fv) = get(t, "file") else {
                w.problem(
                    &v.span(),
                    format!("{path}: a secret is {{ file = \"/run/secrets/NAME\" }}, found a table without \"file\""),
                );
                return None;
            };
            let fpath = format!("{path}.file");
            let f = w.string(&fpath, fv)?;
            if f.is_empty() {
                w.problem(
                    &fv.span(),
                    format!("{fpath}: expected a secret file path, found an empty string"),
                );
                return None;
            }
            // Read at each start, long after load: pin a relative path to the config's
            // directory now.
            let joined = base.join(f);
            Some(EnvValue::File(
                std::path::absolute(&joined).unwrap_or(joined),
            ))
        }
        other => {
            w.problem(
                &v.span(),
                format!(
                    "{path}: expected a string (quote numbers and booleans) or {{ file = \"/run/secrets/NAME\" }}, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

/// One entry per name, where the name first appeared, holding its last value.
fn merge(list: Vec<(String, EnvValue)>) -> Vec<(String, EnvValue)> {
    let mut out: Vec<(String, EnvValue)> = Vec::with_capacity(list.len());
    for (k, v) in list {
        match out.iter_mut().find(|(existing, _)| *existing == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

fn command(w: &mut Walker, path: &str, v: &Value<'_>) -> Option<CommandSpec> {
    match v.get_ref() {
        DeValue::String(s) => {
            let s = w.expand(path, &v.span(), s)?;
            if s.trim().is_empty() {
                w.problem(
                    &v.span(),
                    format!("{path}: expected a command, found an empty string"),
                );
                return None;
            }
            Some(CommandSpec::Shell(s))
        }
        DeValue::Array(items) if items.is_empty() => {
            w.problem(
                &v.span(),
                format!("{path}: expected a program and its arguments, found an empty array"),
            );
            None
        }
        DeValue::Array(_) => {
            let list = w.string_list(path, v)?;
            if list[0].get_ref().is_empty() {
                w.problem(
                    &list[0].span(),
                    format!("{path}[0]: the program name is empty"),
                );
                return None;
            }
            if let Some(bad) = list.iter().find(|s| s.get_ref().contains('\0')) {
                w.problem(
                    &bad.span(),
                    format!("{path}: an argument cannot contain a NUL byte"),
                );
                return None;
            }
            Some(CommandSpec::Argv(
                list.into_iter().map(|s| s.into_inner()).collect(),
            ))
        }
        other => {
            w.problem(
                &v.span(),
                format!("{path}: expected an array like [\"prog\", \"arg\"] or a shell string, found {}", describe(other)),
            );
            None
        }
    }
}

fn user(w: &mut Walker, path: &str, v: &Value<'_>) -> Option<UserSpec> {
    let text = match v.get_ref() {
        DeValue::Integer(_) => {
            return w
                .integer(path, v, 0, u32::MAX as i64)
                .map(|n| UserSpec::Uid(n as u32));
        }
        _ => w.string(path, v)?,
    };
    let bad = |w: &mut Walker| {
        w.problem(
            &v.span(),
            format!("{path}: expected a user name, a uid, or \"uid:gid\", found \"{text}\""),
        );
        None
    };
    if text.is_empty() {
        return bad(w);
    }
    if let Some((u, g)) = text.split_once(':') {
        return match (u.parse::<u32>(), g.parse::<u32>()) {
            (Ok(u), Ok(g)) => Some(UserSpec::UidGid(u, g)),
            _ => bad(w),
        };
    }
    if let Ok(uid) = text.parse::<u32>() {
        return Some(UserSpec::Uid(uid));
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '\0')
    {
        return bad(w);
    }
    Some(UserSpec::Name(text))
}

fn signal(w: &mut Walker, path: &str, v: &Value<'_>) -> Option<Signal> {
    let text = match v.get_ref() {
        DeValue::Integer(i) => i.to_string(),
        DeValue::String(s) => w.expand(path, &v.span(), s)?,
        other => {
            w.problem(
                &v.span(),
                format!(
                    "{path}: expected a signal name like \"SIGTERM\", found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    match signals::parse_signal(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            w.problem(&v.span(), format!("{path}: {e}"));
            None
        }
    }
}

/// Finds the one probe key of a ready/health table; reports none or several.
fn probe(
    w: &mut Walker,
    path: &str,
    whole: &Value<'_>,
    t: &DeTable<'_>,
    allow_notify: bool,
) -> Option<Option<Probe>> {
    let kinds: Vec<&str> = if allow_notify {
        vec!["tcp", "unix", "http", "exec", "postgres", "notify"]
    } else {
        PROBE_KEYS.to_vec()
    };
    let present: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| get(t, k).is_some())
        .collect();
    if present.len() != 1 {
        let found = match present.len() {
            0 => "none".to_string(),
            _ => {
                let (last, rest) = present.split_last().expect("len > 1");
                format!("{} and {last}", rest.join(", "))
            }
        };
        w.problem(
            &whole.span(),
            format!(
                "{path}: needs exactly one probe ({}), found {found}",
                kinds.join(", ")
            ),
        );
        return None;
    }
    let kind = present[0];
    let v = get(t, kind).expect("present");
    let kpath = format!("{path}.{kind}");
    let probe = match kind {
        "notify" => {
            return match w.bool(&kpath, v) {
                Some(true) => Some(None),
                Some(false) => {
                    w.problem(
                        &v.span(),
                        format!(
                            "{kpath}: only `notify = true` makes sense; remove the key instead"
                        ),
                    );
                    None
                }
                None => None,
            };
        }
        "tcp" => {
            let s = w.string(&kpath, v)?;
            match s.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Probe::Tcp(s)
                }
                _ => {
                    w.problem(
                        &v.span(),
                        format!(
                            "{kpath}: expected HOST:PORT like \"127.0.0.1:5432\", found \"{s}\""
                        ),
                    );
                    return None;
                }
            }
        }
        "unix" => {
            let s = w.string(&kpath, v)?;
            if s.is_empty() {
                w.problem(
                    &v.span(),
                    format!("{kpath}: expected a socket path, found an empty string"),
                );
                return None;
            }
            Probe::Unix(PathBuf::from(s))
        }
        "http" => {
            let s = w.string(&kpath, v)?;
            match parse_http_url(&s) {
                Ok(t) => Probe::Http(t),
                Err(e) => {
                    w.problem(&v.span(), format!("{kpath}: {e}"));
                    return None;
                }
            }
        }
        "exec" => {
            let list = match v.get_ref() {
                DeValue::Array(a) if a.is_empty() => {
                    w.problem(
                        &v.span(),
                        format!("{kpath}: expected a command, found an empty array"),
                    );
                    return None;
                }
                _ => w.string_list(&kpath, v)?,
            };
            Probe::Exec(list.into_iter().map(|s| s.into_inner()).collect())
        }
        "postgres" => {
            let s = w.string(&kpath, v)?;
            if let Err(e) = s.parse::<tokio_postgres::Config>() {
                // The error names the bad part; it does not echo the string (which may hold a password).
                w.problem(
                    &v.span(),
                    format!("{kpath}: not a valid connection string: {e}"),
                );
                return None;
            }
            Probe::Postgres(s)
        }
        _ => unreachable!("kinds are listed above"),
    };
    Some(Some(probe))
}

fn ready(w: &mut Walker, path: &str, whole: &Value<'_>, t: &DeTable<'_>) -> Option<ReadyConfig> {
    w.check_keys(path, t, READY_KEYS);
    let probe = probe(w, path, whole, t, true);
    let timeout = get(t, "timeout").map(|v| positive(w, &format!("{path}.timeout"), v));
    let interval = get(t, "interval").map(|v| positive(w, &format!("{path}.interval"), v));
    Some(ReadyConfig {
        check: match probe? {
            Some(p) => ReadyCheck::Probe(p),
            None => ReadyCheck::Notify,
        },
        timeout: timeout.unwrap_or(Some(Duration::from_secs(60)))?,
        interval: interval.unwrap_or(Some(Duration::from_millis(100)))?,
    })
}

fn health(w: &mut Walker, path: &str, whole: &Value<'_>, t: &DeTable<'_>) -> Option<HealthConfig> {
    w.check_keys(path, t, HEALTH_KEYS);
    let probe = probe(w, path, whole, t, false);
    let interval = get(t, "interval").map(|v| positive(w, &format!("{path}.interval"), v));
    let timeout = get(t, "timeout").map(|v| positive(w, &format!("{path}.timeout"), v));
    let failures =
        get(t, "failures").map(|v| w.integer(&format!("{path}.failures"), v, 1, 1_000_000));
    Some(HealthConfig {
        probe: probe??,
        interval: interval.unwrap_or(Some(Duration::from_secs(10)))?,
        timeout: timeout.unwrap_or(Some(Duration::from_secs(3)))?,
        failures: failures.unwrap_or(Some(3))? as u32,
    })
}

fn positive(w: &mut Walker, path: &str, v: &Value<'_>) -> Option<Duration> {
    let d = w.duration(path, v)?;
    if d.is_zero() {
        w.problem(&v.span(), format!("{path}: must be longer than 0s"));
        return None;
    }
    Some(d)
}

/// `http://host[:port]/path`; plain HTTP only (probes talk to loopback).
pub fn parse_http_url(s: &str) -> Result<HttpTarget, String> {
    let bad = || format!("expected a URL like \"http://127.0.0.1:8000/health\", found \"{s}\"");
    let rest = if let Some(r) = s.strip_prefix("http://") {
        r
    } else if s.starts_with("https://") {
        return Err(format!(
            "https is not supported for probes (they talk to the program directly), found \"{s}\""
        ));
    } else {
        return Err(bad());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, after) = stripped.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None if after.is_empty() => 80,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| bad())?),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() || path.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(HttpTarget {
        host,
        port,
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(text: &str) -> Vec<String> {
        match validate(Path::new("t.toml"), text, &no_env) {
            Ok(_) => vec![],
            Err(e) => e.lines,
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = validate(
            Path::new("t.toml"),
            "[programs.a]\ncommand = [\"true\"]\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.programs.len(), 1);
        let p = &c.programs[0];
        assert_eq!(p.priority, 100);
        assert_eq!(p.restart, Restart::OnFailure);
        assert_eq!(p.stop_signal, Signal::SIGTERM);
        assert_eq!(p.stop_timeout, Duration::from_secs(5));
        assert_eq!(c.supervisor.shutdown_timeout, Duration::from_secs(9));
        assert_eq!(
            c.supervisor.health_addr,
            Some("0.0.0.0:8080".parse().unwrap())
        );
    }

    #[test]
    fn every_error_is_reported_in_file_order() {
        let text = "[supervisor]\nshutdown_timeout = \"30\"\n\n[programs.web]\ncomand = [\"x\"]\nrestart = \"sometimes\"\n";
        assert_eq!(
            errors(text),
            [
                "t.toml:2:20: supervisor.shutdown_timeout: \"30\" has no unit, write \"30s\"",
                "t.toml:4:1: programs.web: missing key \"command\"",
                "t.toml:5:1: programs.web: unknown key \"comand\" (did you mean \"command\"?)",
                "t.toml:6:11: programs.web.restart: expected \"always\", \"on-failure\" or \"never\", found \"sometimes\"",
            ]
        );
    }

    #[test]
    fn probes_need_exactly_one_kind() {
        let text = "[programs.db]\ncommand = \"x\"\n[programs.db.ready]\ntcp = \"127.0.0.1:1\"\nunix = \"/s\"\n";
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].ends_with("programs.db.ready: needs exactly one probe (tcp, unix, http, exec, postgres, notify), found tcp and unix"),
            "{e:?}"
        );
    }

    fn test_env(name: &str) -> Option<String> {
        match name {
            "APP_PORT" => Some("8000".into()),
            "APP_USER" => Some("1000:100".into()),
            "STOP" => Some("INT".into()),
            "GRACE" => Some("20s".into()),
            "ROOT" => Some("/srv".into()),
            _ => None,
        }
    }

    #[test]
    fn every_string_value_is_expanded_and_keys_are_not() {
        let text = r#"
[supervisor]
health_addr = "${HEALTH_ADDR:-127.0.0.1:9000}"
shutdown_timeout = "${GRACE}"

[programs.api]
command = ["uvicorn", "--port", "${APP_PORT}", "--root-path=${ROOT}/api", "$$5", "$HOME"]
user = "${APP_USER}"
directory = "${ROOT}/app"
environment = { "${KEY}" = "${ROOT:-x}", DB_URL = "postgres://${DB_HOST:-localhost}/app" }
stop_signal = "${STOP}"
stop_timeout = "${GRACE}"
forward_signals = ["${FWD:-HUP}"]

[programs.api.ready]
http = "http://127.0.0.1:${APP_PORT}/health"

[programs.api.health]
exec = ["curl", "-f", "localhost:${APP_PORT}"]

[programs.sh]
command = "echo $HOME $$$$ ${ROOT}"
"#;
        let c = validate(Path::new("t.toml"), text, &test_env).unwrap();
        assert_eq!(
            c.supervisor.health_addr,
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(c.supervisor.shutdown_timeout, Duration::from_secs(20));
        let api = &c.programs[0];
        assert_eq!(
            api.command,
            CommandSpec::Argv(
                [
                    "uvicorn",
                    "--port",
                    "8000",
                    "--root-path=/srv/api",
                    "$5",
                    "$HOME"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(api.user, Some(UserSpec::UidGid(1000, 100)));
        assert_eq!(api.directory, Some(PathBuf::from("/srv/app")));
        assert_eq!(
            api.environment,
            [
                ("${KEY}".to_string(), EnvValue::Plain("/srv".into())),
                (
                    "DB_URL".to_string(),
                    EnvValue::Plain("postgres://localhost/app".into())
                ),
            ]
        );
        assert_eq!(api.stop_signal, Signal::SIGINT);
        assert_eq!(api.stop_timeout, Duration::from_secs(20));
        assert_eq!(api.forward_signals, [Signal::SIGHUP]);
        assert!(matches!(
            &api.ready.as_ref().unwrap().check,
            ReadyCheck::Probe(Probe::Http(t)) if t.port == 8000
        ));
        assert_eq!(
            api.health.as_ref().unwrap().probe,
            Probe::Exec(["curl", "-f", "localhost:8000"].map(String::from).to_vec())
        );
        assert_eq!(
            c.programs[1].command,
            CommandSpec::Shell("echo $HOME $$ /srv".into())
        );
    }

    #[test]
    fn expansion_errors_name_the_key_at_the_string() {
        let text = "[programs.api]\ncommand = [\"app\", \"${NOPE}\"]\nenvironment = { DB_URL = \"${DB_URL}\", X = \"${oops\" }\n[programs.api.ready]\ntcp = \"${1X}:5\"\n";
        assert_eq!(
            errors(text),
            [
                "t.toml:2:19: programs.api.command[1]: ${NOPE} is not set (give a default with ${NOPE:-...})",
                "t.toml:3:26: programs.api.environment.DB_URL: ${DB_URL} is not set (give a default with ${DB_URL:-...})",
                "t.toml:3:43: programs.api.environment.X: unterminated \"${\" (write \"$${\" for a literal \"${\")",
                "t.toml:5:7: programs.api.ready.tcp: \"${1X}\" is not a variable name (letters, digits and '_', not starting with a digit; write \"$${\" for a literal \"${\")",
            ]
        );
    }

    /// A temp dir with files, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str, files: &[(&str, &str)]) -> Dir {
            let d =
                std::env::temp_dir().join(format!("hivesup-validate-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            for (name, text) in files {
                std::fs::write(d.join(name), text).unwrap();
            }
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn env_files_global_then_program_then_environment() {
        let d = Dir::new(
            "precedence",
            &[
                ("global.env", "A=global\nB=global\nC=global\nD=global\n"),
                ("prog.env", "B=prog\nC=prog\n"),
            ],
        );
        let text = "[supervisor]\nenvironment_files = [\"global.env\"]\n[programs.a]\ncommand = \"x\"\nenvironment = { C = \"table\", S = { file = \"pw\" } }\nenvironment_files = [\"prog.env\"]\n[programs.b]\ncommand = \"x\"\n";
        let c = validate(&d.0.join("hivesup.toml"), text, &no_env).unwrap();
        let plain = |k: &str, v: &str| (k.to_string(), EnvValue::Plain(v.into()));
        assert_eq!(
            c.programs[0].environment,
            [
                plain("A", "global"),
                plain("B", "prog"),
                plain("C", "table"),
                plain("D", "global"),
                ("S".to_string(), EnvValue::File(d.0.join("pw"))),
            ]
        );
        assert_eq!(
            c.programs[1].environment,
            [
                plain("A", "global"),
                plain("B", "global"),
                plain("C", "global"),
                plain("D", "global")
            ]
        );
    }

    #[test]
    fn env_file_problems_point_into_the_env_file() {
        let d = Dir::new("problems", &[("bad.env", "OK=1\nnot a line\nQ=\"open\n")]);
        let cfg = d.0.join("hivesup.toml");
        let text = "[supervisor]\nenvironment_files = [\"missing.env\", \"bad.env\"]\n[programs.a]\ncommand = \"x\"\nenvironment_files = [\"bad.env\", \"\"]\n";
        let e = validate(&cfg, text, &no_env).unwrap_err().lines;
        let bad = d.0.join("bad.env");
        let missing = d.0.join("missing.env");
        assert_eq!(
            e,
            [
                format!(
                    "{}:2:22: supervisor.environment_files[0]: failed to read {}: No such file or directory (os error 2)",
                    cfg.display(),
                    missing.display()
                ),
                format!(
                    "{}:2:1: expected KEY=VALUE, found a line without \"=\"",
                    bad.display()
                ),
                format!(
                    "{}:3:3: unterminated \": a value ends on its own line",
                    bad.display()
                ),
                format!(
                    "{}:5:33: programs.a.environment_files[1]: expected a file path, found an empty string",
                    cfg.display()
                ),
            ]
        );
    }

    #[test]
    fn secret_values_are_tables_with_one_file() {
        let text = "[programs.a]\ncommand = \"x\"\nenvironment = { A = { file = \"\" }, B = { path = \"/x\" }, C = 3, D = { file = \"/run/secrets/d\" } }\n";
        assert_eq!(
            errors(text),
            [
                "t.toml:3:30: programs.a.environment.A.file: expected a secret file path, found an empty string",
                "t.toml:3:40: programs.a.environment.B: a secret is { file = \"/run/secrets/NAME\" }, found a table without \"file\"",
                "t.toml:3:42: programs.a.environment.B: unknown key \"path\" (expected one of: file)",
                "t.toml:3:61: programs.a.environment.C: expected a string (quote numbers and booleans) or { file = \"/run/secrets/NAME\" }, found the integer 3",
            ]
        );
    }

    #[test]
    fn http_urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8000/health").unwrap(),
            HttpTarget {
                host: "127.0.0.1".into(),
                port: 8000,
                path: "/health".into()
            }
        );
        assert_eq!(parse_http_url("http://[::1]/").unwrap().host, "::1");
        assert_eq!(parse_http_url("http://localhost").unwrap().path, "/");
        assert!(parse_http_url("https://x/").is_err());
        assert!(parse_http_url("127.0.0.1:80").is_err());
        assert!(parse_http_url("http://h:notaport/").is_err());
    }

    #[test]
    fn users() {
        let c = validate(
            Path::new("t"),
            "[programs.a]\ncommand = \"x\"\nuser = \"1000:100\"\n[programs.b]\ncommand = \"x\"\nuser = 7\n[programs.c]\ncommand = \"x\"\nuser = \"nobody\"\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.programs[0].user, Some(UserSpec::UidGid(1000, 100)));
        assert_eq!(c.programs[1].user, Some(UserSpec::Uid(7)));
        assert_eq!(c.programs[2].user, Some(UserSpec::Name("nobody".into())));
    }

    #[test]
    fn user_switch() {
        let c = |text: &str| {
            validate(
                Path::new("t"),
                &format!("{text}[programs.a]\ncommand = \"x\"\n"),
                &no_env,
            )
        };
        assert_eq!(c("").unwrap().supervisor.user_switch, UserSwitch::Required);
        assert_eq!(
            c("[supervisor]\nuser_switch = \"if-root\"\n")
                .unwrap()
                .supervisor
                .user_switch,
            UserSwitch::IfRoot
        );
        assert_eq!(
            errors("[supervisor]\nuser_switch = \"never\"\n[programs.a]\ncommand = \"x\"\n"),
            [
                "t.toml:2:15: supervisor.user_switch: expected \"required\" or \"if-root\", found \"never\""
            ]
        );
    }
}

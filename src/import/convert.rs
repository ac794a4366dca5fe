//! supervisord sections -> hivesup TOML: the mapping tables.
//!
//! Mapped: `[program:x]` command, priority, user, directory, environment (with the
//! `[supervisord]` environment merged in, as supervisord does), autorestart, startsecs,
//! startretries, stopsignal, stopwaitsecs. Everything else becomes a
//! `# supervisord: OPTION = VALUE — why / what to do` comment where it belongs, and, when
//! hivesup behaves differently, a warning. Values supervisord would refuse (a bad boolean,
//! number or signal, a missing command) are errors, with their file and line.

use std::collections::BTreeMap;

use super::expand::{self, EnvMode, Expansions, Known, Text};
use super::include::{Document, Located};
use super::ini::Entry;
use super::{Diag, toml_out};
use crate::signals;

pub struct Converted {
    pub toml: String,
    pub warnings: Vec<Diag>,
    pub programs: usize,
}

const DASH: &str = " — ";

/// What a section is, by supervisord's prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Supervisord,
    Program,
    Group,
    EventListener,
    FcgiProgram,
    UnixHttpServer,
    InetHttpServer,
    Supervisorctl,
    RpcInterface,
    CtlPlugin,
    Include,
    Default,
    Unknown,
}

fn kind(name: &str) -> Kind {
    let prefixed = |p: &str| name.strip_prefix(p).is_some();
    match name {
        "supervisord" => Kind::Supervisord,
        "supervisorctl" => Kind::Supervisorctl,
        "include" => Kind::Include,
        "DEFAULT" => Kind::Default,
        _ if prefixed("program:") => Kind::Program,
        _ if prefixed("group:") => Kind::Group,
        _ if prefixed("eventlistener:") => Kind::EventListener,
        _ if prefixed("fcgi-program:") => Kind::FcgiProgram,
        _ if prefixed("unix_http_server") => Kind::UnixHttpServer,
        _ if prefixed("inet_http_server") => Kind::InetHttpServer,
        _ if prefixed("rpcinterface:") => Kind::RpcInterface,
        _ if prefixed("ctlplugin:") => Kind::CtlPlugin,
        _ => Kind::Unknown,
    }
}

/// Why a whole section has no counterpart (it becomes a comment block and one warning).
fn section_why(k: Kind) -> &'static str {
    match k {
        Kind::UnixHttpServer => {
            "supervisorctl's socket: `hivesup ctl` talks to [supervisor] control_socket instead (default /run/hivesup.sock, mode 0600)"
        }
        Kind::InetHttpServer => {
            "hivesup opens nothing that changes state to the network: `hivesup ctl` uses the unix socket; the read-only /health, /status and /metrics are on health_addr"
        }
        Kind::Supervisorctl => {
            "`hivesup ctl` replaces supervisorctl (status, start, stop, restart, signal, logs, reload, shutdown) and needs no section of its own"
        }
        Kind::RpcInterface => {
            "hivesup has no XML-RPC interface: `hivesup ctl` and the read-only HTTP endpoints replace it"
        }
        Kind::CtlPlugin => "`hivesup ctl` takes no plugins",
        Kind::EventListener => {
            "hivesup sends no supervisord events, so an event listener would wait forever: run what it does as a program of its own, or use [programs.NAME.health] probes"
        }
        Kind::Group => {
            "hivesup has no groups: the programs are converted one by one (their priorities order them) and `hivesup ctl` acts on one program at a time"
        }
        Kind::FcgiProgram => {
            "hivesup opens no FastCGI sockets for programs: let the program bind its own socket, and convert it to a [programs.NAME] table by hand"
        }
        Kind::Default => {
            "configparser's defaults for every section: hivesup import does not apply them; copy the keys into the sections that need them"
        }
        Kind::Unknown => "not a supervisord section (supervisord ignores it too)",
        Kind::Supervisord | Kind::Program | Kind::Include => "",
    }
}

struct Conv<'a> {
    doc: &'a Document,
    errors: Vec<Diag>,
    warnings: Vec<Diag>,
}

/// One `[programs.NAME]` table.
struct ProgramOut {
    name: String,
    /// (key, TOML value, inline comment), in output order.
    keys: Vec<(&'static str, String, Option<String>)>,
    /// Full-line comments after the keys, in file order.
    comments: Vec<String>,
}

enum Block {
    Program(ProgramOut),
    Comments(Vec<String>),
}

pub fn convert(doc: &Document, warnings: Vec<Diag>) -> Result<Converted, Vec<Diag>> {
    let mut c = Conv {
        doc,
        errors: Vec::new(),
        warnings,
    };

    let groups = c.groups();
    let global_env = c.global_environment();

    let mut supervisor_lines: Vec<String> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut names: BTreeMap<String, (usize, usize)> = BTreeMap::new();

    for l in &doc.sections {
        let s = &l.section;
        match kind(&s.name) {
            Kind::Supervisord => supervisor_lines.extend(c.supervisord(l)),
            Kind::Include => {
                let files: Vec<&str> = doc.files[1..].iter().map(|f| f.display.as_str()).collect();
                let value = s.get("files").map_or(String::new(), |e| e.value.clone());
                let what = if files.is_empty() {
                    "no file matched".to_string()
                } else {
                    format!("their programs are converted below ({})", files.join(", "))
                };
                supervisor_lines.push(comment_line("[include] files", &value, &what));
            }
            Kind::Program => {
                if let Some(p) = c.program(l, &groups, &global_env) {
                    if let Some((file, line)) = names.get(&p.name) {
                        c.errors.push(c.doc.at(
                            l.file,
                            s.line,
                            format!(
                                "[{}] becomes programs.{} like the program at {}:{}: rename one of them",
                                s.name, p.name, doc.files[*file].display, line
                            ),
                        ));
                    }
                    names.insert(p.name.clone(), (l.file, s.line));
                    blocks.push(Block::Program(p));
                }
            }
            k @ (Kind::Group | Kind::EventListener | Kind::FcgiProgram) => {
                blocks.push(Block::Comments(c.whole_section(l, k)));
            }
            k => {
                supervisor_lines.extend(c.whole_section(l, k));
                if k == Kind::InetHttpServer {
                    if let Some(port) = s.get("port") {
                        supervisor_lines.push(format!(
                            "# health_addr = {}   # to keep serving /health and /status on that port",
                            toml_out::string(&health_addr_for(&port.value))
                        ));
                    }
                }
            }
        }
    }

    let programs = blocks
        .iter()
        .filter(|b| matches!(b, Block::Program(_)))
        .count();
    if programs == 0 && c.errors.is_empty() {
        c.errors.push(Diag {
            file: doc.files[0].display.clone(),
            line: None,
            message:
                "no [program:NAME] section: nothing to convert (hivesup needs at least one program)"
                    .into(),
        });
    }
    super::include::sort(&doc.files, &mut c.errors);
    super::include::sort(&doc.files, &mut c.warnings);
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Converted {
        toml: render(doc, &supervisor_lines, &blocks),
        warnings: c.warnings,
        programs,
    })
}

fn render(doc: &Document, supervisor_lines: &[String], blocks: &[Block]) -> String {
    let mut out = String::new();
    out.push_str("# hivesup config converted by `hivesup import` from:\n");
    for f in &doc.files {
        out.push_str(&format!("#   {}\n", toml_out::comment(&f.display)));
    }
    out.push_str(
        "# \"# supervisord:\" comments mark what hivesup does differently or not at all; the ones\n\
         # that need a decision were also listed on stderr. Validate with `hivesup -c FILE check`.\n\
         # Unlike supervisord, a priority starts only once every lower one is ready: a program\n\
         # without [programs.NAME.ready] is ready after running settle_time (supervisord's startsecs).\n",
    );
    out.push_str("\n[supervisor]\n");
    out.push_str(
        "# reload_on_sighup = true   # supervisord reloads its config on SIGHUP; hivesup does when this is set\n",
    );
    for l in supervisor_lines {
        out.push_str(l);
        out.push('\n');
    }
    for b in blocks {
        out.push('\n');
        match b {
            Block::Comments(lines) => {
                for l in lines {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            Block::Program(p) => {
                out.push_str(&format!("[programs.{}]\n", toml_out::key(&p.name)));
                for (k, v, note) in &p.keys {
                    match note {
                        Some(n) => {
                            out.push_str(&format!("{k} = {v}  # {}\n", toml_out::comment(n)))
                        }
                        None => out.push_str(&format!("{k} = {v}\n")),
                    }
                }
                for l in &p.comments {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// `# supervisord: KEY = VALUE — why`
fn comment_line(key: &str, value: &str, why: &str) -> String {
    toml_out::comment(&format!("# supervisord: {key} = {value}{DASH}{why}"))
}

/// `*:9001`, `:9001`, `9001`, `localhost:9001` -> an address `health_addr` accepts.
fn health_addr_for(port: &str) -> String {
    let p = port.trim();
    let (host, port) = match p.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => ("", p),
    };
    let host = match host {
        "" | "*" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        h => h,
    };
    format!("{host}:{port}")
}

impl Conv<'_> {
    fn error(&mut self, l: &Located, line: usize, message: impl Into<String>) {
        self.errors.push(self.doc.at(l.file, line, message));
    }

    fn warn(&mut self, l: &Located, line: usize, message: impl Into<String>) {
        self.warnings.push(self.doc.at(l.file, line, message));
    }

    /// A comment for an option hivesup lacks; a warning too when `warn`.
    fn note(&mut self, l: &Located, e: &Entry, why: &str, warn: bool) -> String {
        if warn {
            self.warn(
                l,
                e.line,
                toml_out::comment(&format!(
                    "[{}] {} = {}{DASH}{why}",
                    l.section.name, e.key, e.value
                )),
            );
        }
        comment_line(&e.key, &e.value, why)
    }

    /// A section with no counterpart: a comment block and one warning.
    fn whole_section(&mut self, l: &Located, k: Kind) -> Vec<String> {
        let s = &l.section;
        let why = section_why(k);
        self.warn(l, s.line, format!("[{}]{DASH}{why}", s.name));
        let mut lines = vec![toml_out::comment(&format!(
            "# supervisord: [{}]{DASH}{why}",
            s.name
        ))];
        for e in &s.entries {
            lines.push(toml_out::comment(&format!("#   {} = {}", e.key, e.value)));
        }
        lines
    }

    /// `[group:g] programs = a,b`: program name -> group name. Every name must exist.
    fn groups(&mut self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let doc = self.doc;
        for l in &doc.sections {
            let Some(g) = l.section.name.strip_prefix("group:") else {
                continue;
            };
            let Some(e) = l.section.get("programs") else {
                self.error(
                    l,
                    l.section.line,
                    format!("[{}]: missing programs = ...", l.section.name),
                );
                continue;
            };
            for p in e.value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let exists = |prefix: &str| {
                    doc.sections
                        .iter()
                        .any(|s| s.section.name == format!("{prefix}{p}"))
                };
                if !exists("program:") && !exists("fcgi-program:") {
                    self.error(
                        l,
                        e.line,
                        format!(
                            "[{}] programs: there is no [program:{p}] (supervisord refuses that too)",
                            l.section.name
                        ),
                    );
                }
                out.entry(p.to_string())
                    .or_insert_with(|| g.trim().to_string());
            }
        }
        out
    }

    /// `[supervisord] environment`, which supervisord adds to every program's environment.
    fn global_environment(&mut self) -> Vec<(String, Text)> {
        let doc = self.doc;
        let Some(l) = doc
            .sections
            .iter()
            .find(|l| l.section.name == "supervisord")
        else {
            return Vec::new();
        };
        let Some(e) = l.section.get("environment") else {
            return Vec::new();
        };
        let ex = Expansions::new(EnvMode::Defer)
            .with(
                "here",
                Known::Str(doc.files[l.file].dir.display().to_string()),
            )
            .with("host_node_name", Known::Later);
        self.env_pairs(l, e, &ex).unwrap_or_default()
    }

    fn env_pairs(
        &mut self,
        l: &Located,
        e: &Entry,
        ex: &Expansions,
    ) -> Option<Vec<(String, Text)>> {
        let t = self.expand(l, e, ex)?;
        match expand::key_value_pairs(&t) {
            Ok(pairs) => Some(pairs),
            Err(msg) => {
                self.error(
                    l,
                    e.line,
                    format!(
                        "[{}] environment: {msg}, found \"{}\"",
                        l.section.name, e.value
                    ),
                );
                None
            }
        }
    }

    fn expand(&mut self, l: &Located, e: &Entry, ex: &Expansions) -> Option<Text> {
        let mut notes = Vec::new();
        let r = expand::expand(&e.value, ex, &mut notes);
        for n in notes {
            self.warn(l, e.line, format!("[{}] {}: {n}", l.section.name, e.key));
        }
        match r {
            Ok(t) => Some(t),
            Err(msg) => {
                self.error(l, e.line, format!("[{}] {}: {msg}", l.section.name, e.key));
                None
            }
        }
    }

    /// supervisord's `integer()`: Python's `int()` of the (stripped) value.
    fn int(&mut self, l: &Located, e: &Entry, min: i64) -> Option<i64> {
        let v = e.value.trim();
        let parsed = v
            .strip_prefix('+')
            .unwrap_or(v)
            .parse::<i64>()
            .ok()
            .filter(|_| !v.is_empty());
        match parsed {
            Some(n) if n >= min => Some(n),
            Some(n) => {
                self.error(
                    l,
                    e.line,
                    format!(
                        "[{}] {}: expected a number >= {min}, found {n}",
                        l.section.name, e.key
                    ),
                );
                None
            }
            None => {
                self.error(
                    l,
                    e.line,
                    format!(
                        "[{}] {}: expected a number, found \"{}\"",
                        l.section.name, e.key, e.value
                    ),
                );
                None
            }
        }
    }

    /// supervisord's `boolean()`: yes/true/on/1 and no/false/off/0, any case.
    fn boolean(&mut self, l: &Located, e: &Entry) -> Option<bool> {
        match e.value.trim().to_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Some(true),
            "no" | "false" | "off" | "0" => Some(false),
            _ => {
                self.error(
                    l,
                    e.line,
                    format!(
                        "[{}] {}: expected true or false (or yes/no, on/off, 1/0), found \"{}\"",
                        l.section.name, e.key, e.value
                    ),
                );
                None
            }
        }
    }

    fn supervisord(&mut self, l: &Located) -> Vec<String> {
        let mut lines = Vec::new();
        for e in &l.section.entries {
            let v = e.value.trim();
            let lower = v.to_lowercase();
            let (why, warn): (String, bool) = match e.key.as_str() {
                "nodaemon" => {
                    self.boolean(l, e);
                    ("hivesup always runs in the foreground".into(), false)
                }
                "logfile" if is_std_stream(v) || v == "/dev/null" => {
                    ("hivesup logs to its own stderr".into(), false)
                }
                "logfile" => (
                    "hivesup writes no log file of its own: it logs to stderr (docker logs)".into(),
                    true,
                ),
                "logfile_maxbytes" | "logfile_backups" => {
                    ("hivesup writes no log file to rotate".into(), false)
                }
                "loglevel" if lower == "info" => ("info is hivesup's default level too".into(), false),
                "loglevel" => {
                    let level = match lower.as_str() {
                        "critical" => "error",
                        "blather" => "trace",
                        "warning" => "warn",
                        other => other,
                    };
                    (format!("set HIVESUP_LOG={level} in hivesup's environment"), true)
                }
                "pidfile" => ("hivesup writes no pid file: in a container it is PID 1".into(), true),
                "silent" => match self.boolean(l, e) {
                    Some(true) => (
                        "hivesup always logs to stderr: set HIVESUP_LOG=error to quiet it".into(),
                        true,
                    ),
                    _ => ("hivesup logs to stderr".into(), false),
                },
                "minfds" | "minprocs" => {
                    let default = if e.key == "minfds" { 1024 } else { 200 };
                    let n = self.int(l, e, 0);
                    let flag = if e.key == "minfds" { "nofile" } else { "nproc" };
                    (
                        format!(
                            "hivesup does not raise resource limits: use `docker run --ulimit {flag}=N`"
                        ),
                        n.is_some_and(|n| n > default),
                    )
                }
                "umask" => (
                    "hivesup does not set a umask: programs inherit hivesup's (usually 022)".into(),
                    v.trim_start_matches('0') != "22",
                ),
                "user" => (
                    "hivesup does not switch its own user: run the container as that user, or set user per program".into(),
                    !matches!(v, "root" | "0"),
                ),
                "identifier" => ("hivesup has no identifier (it is for XML-RPC clients)".into(), false),
                "directory" => (
                    "hivesup does not change its directory: set directory per program".into(),
                    true,
                ),
                "nocleanup" | "childlogdir" => {
                    if e.key == "nocleanup" {
                        self.boolean(l, e);
                    }
                    ("hivesup writes no child log files".into(), false)
                }
                "strip_ansi" => match self.boolean(l, e) {
                    Some(true) => ("hivesup passes program output through unchanged".into(), true),
                    _ => ("hivesup passes program output through unchanged too".into(), false),
                },
                "environment" => (
                    "copied into every program's environment below (a program's own value wins)".into(),
                    false,
                ),
                _ => ("not a [supervisord] option hivesup knows (supervisord ignores it too)".into(), true),
            };
            if warn {
                self.warn(
                    l,
                    e.line,
                    toml_out::comment(&format!("[supervisord] {} = {}{DASH}{why}", e.key, e.value)),
                );
            }
            lines.push(comment_line(
                &format!("[supervisord] {}", e.key),
                &e.value,
                &why,
            ));
        }
        lines
    }

    fn program(
        &mut self,
        l: &Located,
        groups: &BTreeMap<String, String>,
        global_env: &[(String, Text)],
    ) -> Option<ProgramOut> {
        let s = &l.section;
        let raw_name = s.name["program:".len()..].trim().to_string();
        let errors_before = self.errors.len();
        if raw_name.is_empty() || raw_name.contains([' ', ':', '/']) {
            self.error(
                l,
                s.line,
                format!("[{}]: a program name cannot be empty or contain ' ', ':' or '/' (supervisord refuses it too)", s.name),
            );
            return None;
        }
        let name: String = raw_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name != raw_name {
            self.warn(
                l,
                s.line,
                format!("[{}]: renamed to programs.{name} (hivesup names contain only letters, digits, '-', '_' and '.')", s.name),
            );
        }

        let numprocs = match s.get("numprocs") {
            Some(e) => self.int(l, e, 0)?,
            None => 1,
        };
        let numprocs_start = match s.get("numprocs_start") {
            Some(e) => self.int(l, e, 0)?,
            None => 0,
        };
        let group = groups
            .get(&raw_name)
            .cloned()
            .unwrap_or_else(|| raw_name.clone());
        let mut ex = Expansions::new(EnvMode::Defer)
            .with(
                "here",
                Known::Str(self.doc.files[l.file].dir.display().to_string()),
            )
            .with("program_name", Known::Str(raw_name.clone()))
            .with("group_name", Known::Str(group))
            .with("host_node_name", Known::Later)
            .with("process_num", Known::Int(numprocs_start))
            .with("numprocs", Known::Int(numprocs));
        ex.env_local = global_env.iter().cloned().collect();

        // environment first: supervisord expands it before the other options, which then
        // see its variables as %(ENV_X)s.
        let mut env: Vec<(String, Text)> = global_env.to_vec();
        if let Some(e) = s.get("environment") {
            for (k, v) in self.env_pairs(l, e, &ex).unwrap_or_default() {
                match env.iter_mut().find(|(ek, _)| *ek == k) {
                    Some(slot) => slot.1 = v,
                    None => env.push((k, v)),
                }
            }
        }
        for (k, v) in &env {
            ex.env_local.insert(k.clone(), v.clone());
        }

        let mut keys: Vec<(&'static str, String, Option<String>)> = Vec::new();
        let mut comments = Vec::new();
        let text_of = |c: &mut Self, key: &str| -> Option<(Entry, Text)> {
            let e = s.get(key)?.clone();
            let t = c.expand(l, &e, &ex)?;
            Some((e, t))
        };

        match text_of(self, "command") {
            None if s.get("command").is_none() => self.error(
                l,
                s.line,
                format!(
                    "[{}]: missing command = ... (supervisord refuses that too)",
                    s.name
                ),
            ),
            None => {}
            Some((e, t)) => match expand::split_posix(&t) {
                Err(msg) => self.error(l, e.line, format!("[{}] command: {msg}", s.name)),
                Ok(words) if words.is_empty() => {
                    self.error(l, e.line, format!("[{}] command: is empty", s.name))
                }
                Ok(words) => {
                    let argv: Vec<String> = words.iter().map(|w| expand::render(w)).collect();
                    for w in &argv[1..] {
                        if is_shell_operator(w) {
                            self.warn(
                                l,
                                e.line,
                                format!(
                                    "[{}] command: \"{w}\" is passed to {} as an argument: supervisord runs no shell, and neither does hivesup for an array; if a shell was meant, write command = \"...\" (run by /bin/sh -c)",
                                    s.name, argv[0]
                                ),
                            );
                        }
                    }
                    let value = if argv.len() == 3
                        && matches!(argv[0].as_str(), "sh" | "/bin/sh")
                        && argv[1] == "-c"
                    {
                        toml_out::string(&argv[2])
                    } else {
                        toml_out::array(&argv)
                    };
                    keys.push(("command", value, None));
                }
            },
        }

        match s.get("priority") {
            Some(e) => {
                if let Some(n) = self.int(l, e, i64::MIN) {
                    if n < 0 {
                        let why = "hivesup priorities start at 0: this one starts first";
                        self.warn(l, e.line, format!("[{}] priority = {n}{DASH}{why}", s.name));
                        keys.push((
                            "priority",
                            "0".into(),
                            Some(format!("supervisord: priority = {n}{DASH}{why}")),
                        ));
                    } else if n > i64::from(i32::MAX) {
                        self.error(
                            l,
                            e.line,
                            format!(
                                "[{}] priority: expected at most {}, found {n}",
                                s.name,
                                i32::MAX
                            ),
                        );
                    } else {
                        keys.push(("priority", n.to_string(), None));
                    }
                }
            }
            None => keys.push((
                "priority",
                "999".into(),
                Some("supervisord's default priority".into()),
            )),
        }

        if let Some((_, t)) = text_of(self, "user") {
            keys.push(("user", toml_out::string(&expand::render(&t)), None));
        }
        if let Some((_, t)) = text_of(self, "directory") {
            keys.push(("directory", toml_out::string(&expand::render(&t)), None));
        }
        if !env.is_empty() {
            let pairs: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.clone(), expand::render(v)))
                .collect();
            let note = (s.get("environment").is_none())
                .then(|| "from [supervisord] environment".to_string());
            keys.push(("environment", toml_out::inline_table(&pairs), note));
        }

        let exitcodes_nonzero = match s.get("exitcodes") {
            Some(e) => {
                let codes: Result<Vec<u8>, _> =
                    e.value.split(',').map(|c| c.trim().parse::<u8>()).collect();
                match codes {
                    Ok(c) => c != [0],
                    Err(_) => {
                        self.error(
                            l,
                            e.line,
                            format!(
                                "[{}] exitcodes: expected exit codes 0-255 like 0,2, found \"{}\"",
                                s.name, e.value
                            ),
                        );
                        false
                    }
                }
            }
            None => false,
        };
        if let Some(e) = s.get("autorestart") {
            let restart = match e.value.trim().to_lowercase().as_str() {
                "yes" | "true" | "on" | "1" => Some("always"),
                "no" | "false" | "off" | "0" => Some("never"),
                "unexpected" => Some("on-failure"),
                _ => {
                    self.error(
                        l,
                        e.line,
                        format!(
                            "[{}] autorestart: expected true, false or unexpected, found \"{}\"",
                            s.name, e.value
                        ),
                    );
                    None
                }
            };
            if let Some(r) = restart {
                let note = (r == "on-failure" && exitcodes_nonzero)
                    .then(|| "supervisord's \"unexpected\" used exitcodes, see below".to_string());
                keys.push(("restart", toml_out::string(r), note));
            }
        }
        if let Some(e) = s.get("stopsignal") {
            match signals::parse_signal(&e.value) {
                Ok(sig) => keys.push(("stop_signal", toml_out::string(sig.as_str()), None)),
                Err(msg) => self.error(l, e.line, format!("[{}] stopsignal: {msg}", s.name)),
            }
        }
        match s.get("stopwaitsecs") {
            Some(e) => {
                if let Some(n) = self.int(l, e, 0) {
                    keys.push(("stop_timeout", toml_out::string(&format!("{n}s")), None));
                }
            }
            None => keys.push((
                "stop_timeout",
                toml_out::string("10s"),
                Some("supervisord's default stopwaitsecs".into()),
            )),
        }
        let startsecs = match s.get("startsecs") {
            Some(e) => {
                let n = self.int(l, e, 0);
                if let Some(n) = n {
                    keys.push(("settle_time", toml_out::string(&format!("{n}s")), None));
                }
                n
            }
            None => Some(1),
        };
        match s.get("startretries") {
            Some(e) => {
                if let Some(n) = self.int(l, e, 0) {
                    keys.push((
                        "start_retries",
                        (n + 1).to_string(),
                        Some(format!(
                            "supervisord: startretries = {n}, retries after the first try"
                        )),
                    ));
                }
            }
            None => keys.push((
                "start_retries",
                "4".into(),
                Some("supervisord's default startretries = 3, plus the first try".into()),
            )),
        }
        if let Some(n) = startsecs {
            keys.push((
                "backoff_reset",
                toml_out::string(&format!("{n}s")),
                Some(
                    "as in supervisord, only exits within startsecs count toward start_retries"
                        .into(),
                ),
            ));
        }

        for e in &s.entries {
            if let Some(c) = self.program_note(l, e, numprocs) {
                comments.push(c);
            }
        }

        (self.errors.len() == errors_before).then_some(ProgramOut {
            name,
            keys,
            comments,
        })
    }

    /// The comment (and maybe warning) for a `[program:x]` option that is not mapped.
    fn program_note(&mut self, l: &Located, e: &Entry, numprocs: i64) -> Option<String> {
        let v = e.value.trim();
        let lower = v.to_lowercase();
        let stream = if e.key.starts_with("stderr") {
            "stderr"
        } else {
            "stdout"
        };
        let (why, warn): (String, bool) = match e.key.as_str() {
            "command" | "priority" | "user" | "directory" | "environment" | "autorestart"
            | "stopsignal" | "stopwaitsecs" | "startsecs" | "startretries" => return None,
            "process_name" if v == "%(program_name)s" => {
                ("hivesup names the program after its table".into(), false)
            }
            "process_name" => (
                "hivesup names the program after its table: rename the table if the name matters".into(),
                true,
            ),
            "numprocs" if numprocs <= 1 => ("one process per program, as in hivesup".into(), false),
            "numprocs" => (
                "hivesup runs one process per program: copy this table once per instance, under other names".into(),
                true,
            ),
            "numprocs_start" => ("only numbers processes when numprocs > 1".into(), false),
            "umask" => (
                "hivesup sets no umask: programs inherit hivesup's (usually 022); to set another, run the command through `sh -c 'umask 077; exec ...'`".into(),
                v.trim_start_matches('0') != "22",
            ),
            "autostart" => match self.boolean(l, e)? {
                true => ("hivesup starts every program".into(), false),
                false => (
                    "hivesup starts every program: remove this one, or stop it after start with `hivesup ctl stop NAME`".into(),
                    true,
                ),
            },
            "exitcodes" if v == "0" => ("hivesup counts exit 0 as success too".into(), false),
            "exitcodes" => (
                "hivesup counts only exit 0 as success: restart = \"on-failure\" restarts on any other code".into(),
                true,
            ),
            "stopasgroup" | "killasgroup" => {
                self.boolean(l, e)?;
                (
                    "hivesup always signals the program's whole process group, and SIGKILLs what is left of it".into(),
                    false,
                )
            }
            "redirect_stderr" => match self.boolean(l, e)? {
                false => ("hivesup keeps stderr apart too".into(), false),
                true => (
                    "hivesup keeps stderr apart, on its own stderr as `NAME | line`; to merge, run the command through `sh -c '... 2>&1'`".into(),
                    true,
                ),
            },
            "stdout_logfile" | "stderr_logfile" => {
                if is_std_stream(v) {
                    (format!("hivesup prints program output on its own {stream} already, as `NAME | line`"), false)
                } else if matches!(lower.as_str(), "none" | "off") {
                    (format!("hivesup does not discard output: it goes to hivesup's {stream} as `NAME | line`; redirect it in the command to drop it"), true)
                } else {
                    (format!("hivesup writes no log files: output goes to hivesup's {stream} as `NAME | line` (docker logs); ship it from there"), true)
                }
            }
            "stdout_logfile_maxbytes" | "stderr_logfile_maxbytes" | "stdout_logfile_backups"
            | "stderr_logfile_backups" => ("hivesup writes no log files to rotate".into(), false),
            "stdout_capture_maxbytes" | "stderr_capture_maxbytes" => (
                "hivesup has no capture mode (it feeds supervisord events)".into(),
                !matches!(v, "0" | "0B" | "0KB" | "0MB" | "0GB"),
            ),
            "stdout_events_enabled" | "stderr_events_enabled" => {
                let on = self.boolean(l, e)?;
                ("hivesup sends no events".into(), on)
            }
            "stdout_syslog" | "stderr_syslog" => {
                let on = self.boolean(l, e)?;
                ("hivesup does not write to syslog; the container runtime can ship its output".into(), on)
            }
            "serverurl" => (
                "hivesup has no XML-RPC server for supervisor.childutils to reach".into(),
                lower != "auto",
            ),
            _ => ("not a [program:x] option hivesup knows (supervisord ignores it too)".into(), true),
        };
        Some(self.note(l, e, &why, warn))
    }
}

fn is_std_stream(v: &str) -> bool {
    matches!(
        v,
        "/dev/stdout"
            | "/dev/stderr"
            | "/dev/fd/1"
            | "/dev/fd/2"
            | "/proc/self/fd/1"
            | "/proc/self/fd/2"
    )
}

/// Words a shell would have read as operators, which supervisord passes as arguments.
fn is_shell_operator(w: &str) -> bool {
    matches!(
        w,
        "|" | "||" | "&&" | ";" | "&" | "<" | ">" | ">>" | "2>&1" | "<<"
    ) || w.starts_with("2>")
        || w.starts_with(">")
        || w.starts_with("1>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::include::Source;
    use crate::import::ini;

    fn conv(text: &str) -> Result<Converted, Vec<Diag>> {
        let parsed = ini::parse(text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let doc = Document {
            files: vec![Source {
                display: "s.conf".into(),
                dir: "/etc/supervisor".into(),
            }],
            sections: parsed
                .sections
                .into_iter()
                .map(|section| Located { file: 0, section })
                .collect(),
        };
        convert(&doc, Vec::new())
    }

    /// The value of `key` in the only program, and the warnings.
    fn key(text: &str, key: &str) -> (Option<String>, Vec<String>) {
        let c = conv(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let value = c
            .toml
            .lines()
            .skip_while(|l| !l.starts_with("[programs."))
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .map(|v| v.split("  #").next().unwrap().to_string());
        (value, c.warnings.iter().map(|w| w.to_string()).collect())
    }

    fn prog(lines: &str) -> String {
        format!("[program:p]\ncommand=/bin/p\n{lines}\n")
    }

    #[test]
    fn autorestart_table_any_case() {
        let table = [
            ("true", "always"),
            ("TRUE", "always"),
            ("Yes", "always"),
            ("on", "always"),
            ("1", "always"),
            ("false", "never"),
            ("No", "never"),
            ("OFF", "never"),
            ("0", "never"),
            ("unexpected", "on-failure"),
            ("Unexpected", "on-failure"),
        ];
        for (v, want) in table {
            let (got, _) = key(&prog(&format!("autorestart={v}")), "restart");
            assert_eq!(got, Some(format!("\"{want}\"")), "{v}");
        }
    }

    #[test]
    fn numbers_and_signals() {
        let table = [
            ("startretries=0", "start_retries", "1"),
            ("startretries=3", "start_retries", "4"),
            ("", "start_retries", "4"),
            ("startsecs=0", "settle_time", "\"0s\""),
            ("startsecs=0", "backoff_reset", "\"0s\""),
            ("stopwaitsecs=25", "stop_timeout", "\"25s\""),
            ("", "stop_timeout", "\"10s\""),
            ("", "priority", "999"),
            ("priority=5", "priority", "5"),
            ("stopsignal=QUIT", "stop_signal", "\"SIGQUIT\""),
            ("stopsignal=sigint", "stop_signal", "\"SIGINT\""),
            ("stopsignal=9", "stop_signal", "\"SIGKILL\""),
        ];
        for (line, k, want) in table {
            assert_eq!(key(&prog(line), k).0.as_deref(), Some(want), "{line}");
        }
        let (p, w) = key(&prog("priority=-5"), "priority");
        assert_eq!(p.as_deref(), Some("0"));
        assert!(w[0].contains("priority = -5"), "{w:?}");
    }

    #[test]
    fn booleans_are_case_insensitive_and_checked() {
        let (_, w) = key(&prog("autostart=FALSE"), "command");
        assert!(w.iter().any(|w| w.contains("autostart = FALSE")), "{w:?}");
        let (_, w) = key(&prog("autostart=Yes"), "command");
        assert!(w.is_empty(), "{w:?}");
        let e = conv(&prog("stopasgroup=perhaps")).err().unwrap();
        assert_eq!(
            e[0].to_string(),
            "s.conf:3: [program:p] stopasgroup: expected true or false (or yes/no, on/off, 1/0), found \"perhaps\""
        );
    }

    #[test]
    fn expansions_known_here() {
        let text = "[supervisord]\nenvironment=ROOT=\"/srv\"\n\
                    [group:g]\nprograms=w\n\
                    [program:w]\ncommand=%(ENV_ROOT)s/bin/w --log %(here)s/%(group_name)s-%(program_name)s-%(process_num)02d.log --home %(ENV_HOME)s\n\
                    numprocs_start=7\nenvironment=HOME=\"%(ENV_ROOT)s/home\"\n\
                    directory=%(ENV_HOME)s\n";
        let (cmd, _) = key(text, "command");
        assert_eq!(
            cmd.as_deref(),
            Some(r#"["/srv/bin/w", "--log", "/etc/supervisor/g-w-07.log", "--home", "/srv/home"]"#)
        );
        assert_eq!(key(text, "directory").0.as_deref(), Some("\"/srv/home\""));
        assert_eq!(
            key(text, "environment").0.as_deref(),
            Some(r#"{ ROOT = "/srv", HOME = "/srv/home" }"#)
        );
        let (cmd, w) = key(&prog("directory=/var/%(host_node_name)s"), "directory");
        assert_eq!(cmd.as_deref(), Some("\"/var/%(host_node_name)s\""));
        assert!(w[0].contains("only known when supervisord runs"), "{w:?}");
    }

    #[test]
    fn commands_keep_supervisords_argv() {
        let table = [
            ("/bin/sh -c \"a; b\"", r#""a; b""#),
            ("sh -c 'echo $HOME'", r#""echo $HOME""#),
            ("bash -c 'a; b'", r#"["bash", "-c", "a; b"]"#),
            ("/bin/sh -c 'x' extra", r#"["/bin/sh", "-c", "x", "extra"]"#),
            (
                "/bin/echo ${NOT_EXPANDED} %%",
                r#"["/bin/echo", "$${NOT_EXPANDED}", "%"]"#,
            ),
        ];
        for (cmd, want) in table {
            let text = format!("[program:p]\ncommand={cmd}\n");
            assert_eq!(key(&text, "command").0.as_deref(), Some(want), "{cmd}");
        }
        let (_, w) = key("[program:p]\ncommand=/bin/p > /tmp/log\n", "command");
        assert!(
            w[0].contains("\">\" is passed to /bin/p as an argument"),
            "{w:?}"
        );
    }

    #[test]
    fn comments_and_warnings_for_what_hivesup_lacks() {
        let table = [
            (
                "numprocs=3\nprocess_name=%(program_name)s_%(process_num)s",
                2,
            ),
            ("numprocs=1", 0),
            ("exitcodes=0,2\nautorestart=unexpected", 1),
            ("stdout_logfile=/dev/stdout\nstderr_logfile=/dev/stderr", 0),
            ("stdout_logfile=NONE", 1),
            ("redirect_stderr=false", 0),
            ("umask=022", 0),
            ("umask=077", 1),
            ("stopasgroup=true\nkillasgroup=true", 0),
            ("serverurl=AUTO", 0),
            ("frobnicate=1", 1),
        ];
        for (lines, warnings) in table {
            let c = conv(&prog(lines)).unwrap();
            assert_eq!(c.warnings.len(), warnings, "{lines}: {:?}", c.warnings);
            for l in lines.lines() {
                let (k, v) = l.split_once('=').unwrap();
                let comment = format!("# supervisord: {k} = {v} — ");
                assert!(
                    c.toml.contains(&comment) || k == "autorestart",
                    "{comment:?} in\n{}",
                    c.toml
                );
            }
        }
    }

    #[test]
    fn names_hivesup_cannot_take_are_renamed_or_refused() {
        let c = conv("[program:web@1]\ncommand=/bin/w\n").unwrap();
        assert!(c.toml.contains("[programs.web_1]\n"), "{}", c.toml);
        assert!(c.warnings[0].message.contains("renamed to programs.web_1"));
        let c = conv("[program:my.app]\ncommand=/bin/w\n").unwrap();
        assert!(c.toml.contains("[programs.\"my.app\"]\n"), "{}", c.toml);
        let e = conv("[program:a@]\ncommand=/bin/w\n[program:a+]\ncommand=/bin/w\n")
            .err()
            .unwrap();
        assert_eq!(
            e.last().unwrap().to_string(),
            "s.conf:3: [program:a+] becomes programs.a_ like the program at s.conf:1: rename one of them"
        );
    }

    #[test]
    fn section_kinds() {
        let table = [
            ("supervisord", Kind::Supervisord),
            ("program:web", Kind::Program),
            ("group:g", Kind::Group),
            ("eventlistener:e", Kind::EventListener),
            ("fcgi-program:f", Kind::FcgiProgram),
            ("unix_http_server", Kind::UnixHttpServer),
            ("inet_http_server", Kind::InetHttpServer),
            ("supervisorctl", Kind::Supervisorctl),
            ("rpcinterface:supervisor", Kind::RpcInterface),
            ("ctlplugin:x", Kind::CtlPlugin),
            ("include", Kind::Include),
            ("DEFAULT", Kind::Default),
            ("programs:web", Kind::Unknown),
            ("Program:web", Kind::Unknown),
        ];
        for (name, want) in table {
            assert_eq!(kind(name), want, "{name}");
        }
    }

    #[test]
    fn inet_ports_become_health_addrs() {
        let table = [
            ("127.0.0.1:9001", "127.0.0.1:9001"),
            ("*:9001", "0.0.0.0:9001"),
            (":9001", "0.0.0.0:9001"),
            ("9001", "0.0.0.0:9001"),
            ("localhost:9001", "127.0.0.1:9001"),
        ];
        for (port, want) in table {
            assert_eq!(health_addr_for(port), want, "{port}");
        }
    }

    #[test]
    fn shell_operators() {
        for w in ["|", "&&", ">", ">/dev/null", "2>&1", "2>/tmp/x", ";"] {
            assert!(is_shell_operator(w), "{w}");
        }
        for w in ["-c", "a|b", "x;y", "--flag=>"] {
            assert!(!is_shell_operator(w), "{w}");
        }
    }
}

//! hivesup's own log lines (not the programs' output): tracing to stderr, as text or
//! JSON, at the level named by `$HIVESUP_LOG` (error, warn, info, debug, trace).

use tracing::level_filters::LevelFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let level = std::env::var("HIVESUP_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    // SAFETY: isatty only inspects the file descriptor.
    let ansi = unsafe { libc::isatty(2) } == 1;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

//! Logging: human-readable text by default, JSON lines on request. `RUST_LOG` overrides the
//! configured level when set.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(cfg: &LogConfig) {
    // openraft logs every vote and replication step at info; an operator wants elections
    // and membership from rankd's own lines, so openraft speaks at warn unless the level
    // names it.
    let level = if cfg.level.contains("openraft") {
        cfg.level.clone()
    } else {
        format!("{},openraft=warn", cfg.level)
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

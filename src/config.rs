//! Configuration: a TOML file, then environment overrides. Every error names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong type or unknown key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value breaks a rule.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The key, e.g. `limits.body_bytes` or `OUTPOST_LISTEN`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and local serving.
    pub node: NodeConfig,
    /// Where HQ is and how to talk to it.
    #[serde(default)]
    pub hq: HqConfig,
    /// The uploader (P-job).
    #[serde(default)]
    pub upload: UploadConfig,
    /// CDX downloads.
    #[serde(default)]
    pub cdx: CdxConfig,
    /// Bounds on every queue, batch and body.
    #[serde(default)]
    pub limits: Limits,
    /// The redb store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Who may call the local API.
    #[serde(default)]
    pub auth: AuthConfig,
}

/// Identity and local serving.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Store id, e.g. `S0001`; prefixes every temporary customer reference.
    pub store_id: String,
    /// Commerce channel id of the store.
    pub channel_id: String,
    /// Address and port the local API listens on.
    pub listen: SocketAddr,
    /// Directory that holds the store file.
    pub data_dir: PathBuf,
}

/// Where HQ is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HqConfig {
    /// Base URL of HQ, e.g. `http://127.0.0.1:8090`.
    pub url: String,
    /// Timeout of one HQ request, milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for HqConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8090".into(),
            request_timeout_ms: 10_000,
        }
    }
}

/// The uploader.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// How often the uploader looks for pending operations, milliseconds.
    pub interval_ms: u64,
    /// Most operations in one upload batch.
    pub batch_size: usize,
    /// First retry delay after a failure, milliseconds.
    pub retry_initial_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// How long confirmed operations are kept before pruning, seconds.
    pub completed_retention_secs: u64,
    /// How retry delays are spread: `full` (random, the default: a fleet's retries do not
    /// arrive together) or `none` (exactly the backoff ceiling; for measuring what jitter buys).
    pub retry_jitter: RetryJitter,
}

/// How retry delays are spread (`upload.retry_jitter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryJitter {
    /// Uniformly random up to the backoff ceiling.
    #[default]
    Full,
    /// Exactly the backoff ceiling.
    None,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            batch_size: 500,
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            completed_retention_secs: 7 * 24 * 3600,
            retry_jitter: RetryJitter::Full,
        }
    }
}

/// CDX downloads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdxConfig {
    /// How often to download, seconds; 0 = only on demand.
    pub interval_secs: u64,
}

impl Default for CdxConfig {
    fn default() -> Self {
        Self { interval_secs: 300 }
    }
}

/// Bounds on every queue, batch and body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body, bytes.
    pub body_bytes: usize,
    /// Writes waiting for the writer task before callers wait.
    pub write_queue: usize,
    /// Most writes committed in one transaction (group commit).
    pub group_commit_max: usize,
    /// Longest a busy writer waits for the callers it just answered to send again before it
    /// commits a group without them, microseconds (0: never waits; a writer that was idle
    /// never waits).
    pub group_commit_wait_us: u64,
    /// Whole-request timeout, milliseconds.
    pub request_timeout_ms: u64,
    /// Most concurrent requests served at once.
    pub max_concurrent_requests: usize,
    /// Most results of one search or listing.
    pub max_page: usize,
    /// Most TCP connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Longest wait for a request's headers (also how long an idle keep-alive connection is
    /// kept), milliseconds.
    pub header_read_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 64 * 1024,
            write_queue: 4_096,
            group_commit_max: 512,
            group_commit_wait_us: 500,
            request_timeout_ms: 10_000,
            max_concurrent_requests: 1_024,
            max_page: 500,
            max_connections: 512,
            header_read_timeout_ms: 5_000,
        }
    }
}

/// The redb store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// redb page cache, bytes.
    pub cache_bytes: usize,
    /// Search terms of recent writes held (in memory and in the log) before the writer merges
    /// them into the main search index between writes.
    pub search_merge_entries: usize,
    /// Most search terms merged in one transaction (bounds the pause a merge adds to a write).
    pub search_merge_chunk: usize,
    /// Quiet time after which the writer merges whatever search terms it holds.
    pub search_merge_idle_ms: u64,
    /// Most reads of the store running at once; more wait their turn.
    pub max_concurrent_reads: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let merge = crate::store::writer::MergeOptions::default();
        Self {
            cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            search_merge_entries: merge.start_at_entries,
            search_merge_chunk: merge.chunk_entries,
            search_merge_idle_ms: merge.idle_after.as_millis() as u64,
            max_concurrent_reads: crate::store::DEFAULT_CONCURRENT_READS,
        }
    }
}

impl StoreConfig {
    /// The writer's merge settings.
    pub fn merge(&self) -> crate::store::writer::MergeOptions {
        crate::store::writer::MergeOptions {
            start_at_entries: self.search_merge_entries,
            chunk_entries: self.search_merge_chunk,
            idle_after: std::time::Duration::from_millis(self.search_merge_idle_ms),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Text or JSON.
    pub format: LogFormat,
    /// Filter, in `RUST_LOG` syntax.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A till: the customer endpoints and reading the sync status.
    Pos,
    /// A field technician: everything.
    Technician,
}

impl Role {
    /// The name used in the configuration and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pos => "pos",
            Role::Technician => "technician",
        }
    }
}

/// One accepted bearer token, stored as the SHA-256 of the raw token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it, e.g. `till-1`; shown in logs instead of the token.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the raw token, 64 hex digits (`outpost hash-token` prints it).
    pub sha256: String,
}

/// Who may call the local API. With no tokens the API is open, which the node allows only on
/// a loopback address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The accepted tokens.
    pub tokens: Vec<TokenConfig>,
}

/// Environment variables that override the file, and the key each one sets.
pub const ENV_OVERRIDES: [(&str, &str); 5] = [
    ("OUTPOST_LISTEN", "node.listen"),
    ("OUTPOST_DATA_DIR", "node.data_dir"),
    ("OUTPOST_HQ_URL", "hq.url"),
    ("OUTPOST_UPLOAD_INTERVAL_MS", "upload.interval_ms"),
    ("OUTPOST_CDX_INTERVAL_SECS", "cdx.interval_secs"),
];

impl Config {
    /// Reads `path`, applies the process environment, and checks every rule.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_and_env(&text, path, |k| std::env::var(k).ok())
    }

    /// Parses `text` (read from `path`), applies overrides from `env`, and checks every rule.
    pub fn from_toml_and_env(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value
                .parse()
                .map_err(|e: T::Err| invalid(key, format!("cannot parse {value:?}: {e}")))
        }
        for (var, _) in ENV_OVERRIDES {
            let Some(value) = env(var) else { continue };
            match var {
                "OUTPOST_LISTEN" => self.node.listen = parse(var, &value)?,
                "OUTPOST_DATA_DIR" => self.node.data_dir = PathBuf::from(value),
                "OUTPOST_HQ_URL" => self.hq.url = value,
                "OUTPOST_UPLOAD_INTERVAL_MS" => self.upload.interval_ms = parse(var, &value)?,
                "OUTPOST_CDX_INTERVAL_SECS" => self.cdx.interval_secs = parse(var, &value)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks the rules no type can express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::domain::validation::code("node.store_id", &self.node.store_id, 10)
            .map_err(|e| invalid("node.store_id", e.message))?;
        crate::domain::validation::code("node.channel_id", &self.node.channel_id, 20)
            .map_err(|e| invalid("node.channel_id", e.message))?;
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "must not be empty"));
        }
        let url = reqwest::Url::parse(&self.hq.url)
            .map_err(|e| invalid("hq.url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("hq.url", "must be an http or https URL"));
        }
        let positive: [(&str, u64); 15] = [
            (
                "store.max_concurrent_reads",
                self.store.max_concurrent_reads as u64,
            ),
            (
                "store.search_merge_entries",
                self.store.search_merge_entries as u64,
            ),
            (
                "store.search_merge_chunk",
                self.store.search_merge_chunk as u64,
            ),
            (
                "store.search_merge_idle_ms",
                self.store.search_merge_idle_ms,
            ),
            ("hq.request_timeout_ms", self.hq.request_timeout_ms),
            ("upload.interval_ms", self.upload.interval_ms),
            ("upload.batch_size", self.upload.batch_size as u64),
            ("upload.retry_initial_ms", self.upload.retry_initial_ms),
            ("limits.body_bytes", self.limits.body_bytes as u64),
            ("limits.write_queue", self.limits.write_queue as u64),
            (
                "limits.group_commit_max",
                self.limits.group_commit_max as u64,
            ),
            ("limits.request_timeout_ms", self.limits.request_timeout_ms),
            (
                "limits.max_concurrent_requests",
                self.limits.max_concurrent_requests as u64,
            ),
            ("limits.max_connections", self.limits.max_connections as u64),
            (
                "limits.header_read_timeout_ms",
                self.limits.header_read_timeout_ms,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.upload.retry_max_ms < self.upload.retry_initial_ms {
            return Err(invalid(
                "upload.retry_max_ms",
                "must be at least upload.retry_initial_ms",
            ));
        }
        if self.limits.group_commit_wait_us > 10_000 {
            return Err(invalid(
                "limits.group_commit_wait_us",
                "must be at most 10000 (10 ms): every write of a busy node may wait this long",
            ));
        }
        if self.limits.max_page == 0 || self.limits.max_page > 10_000 {
            return Err(invalid("limits.max_page", "must be between 1 and 10000"));
        }
        if self.store.cache_bytes < 1024 * 1024 {
            return Err(invalid("store.cache_bytes", "must be at least 1 MiB"));
        }
        self.validate_auth()
    }

    /// Token entries: a name in the code format, 64 hex digits, no name or hash twice.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let tokens = &self.auth.tokens;
        for (i, token) in tokens.iter().enumerate() {
            let key = |field: &str| format!("auth.tokens[{i}].{field}");
            crate::domain::validation::code("name", &token.name, 64)
                .map_err(|e| invalid(&key("name"), e.message))?;
            let hex_ok =
                token.sha256.len() == 64 && token.sha256.chars().all(|c| c.is_ascii_hexdigit());
            if !hex_ok {
                return Err(invalid(
                    &key("sha256"),
                    "must be the 64 hex digits of the token's SHA-256 (see `outpost hash-token`)",
                ));
            }
            let earlier = &tokens[..i];
            if earlier.iter().any(|t| t.name == token.name) {
                return Err(invalid(&key("name"), "another token has this name"));
            }
            if earlier
                .iter()
                .any(|t| t.sha256.eq_ignore_ascii_case(&token.sha256))
            {
                return Err(invalid(&key("sha256"), "another token has this hash"));
            }
        }
        Ok(())
    }

    /// Path of the redb store file.
    pub fn store_path(&self) -> PathBuf {
        self.node.data_dir.join("outpost.redb")
    }

    /// A configuration for tests and benches: loopback on an ephemeral port, data in `dir`.
    pub fn for_dir(dir: &Path) -> Config {
        Config {
            node: NodeConfig {
                store_id: "S0001".into(),
                channel_id: "CH0001".into(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                data_dir: dir.to_path_buf(),
            },
            hq: HqConfig::default(),
            upload: UploadConfig::default(),
            cdx: CdxConfig { interval_secs: 0 },
            limits: Limits::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[node]
store_id = "S0001"
channel_id = "CH1"
listen = "127.0.0.1:8080"
data_dir = "./data"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(text, Path::new("test.toml"), |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn env_overrides_the_file() {
        let c = load(
            MINIMAL,
            &[
                ("OUTPOST_LISTEN", "127.0.0.1:9999"),
                ("OUTPOST_CDX_INTERVAL_SECS", "0"),
            ],
        )
        .unwrap();
        assert_eq!(c.node.listen.port(), 9999);
        assert_eq!(c.cdx.interval_secs, 0);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(MINIMAL, &[("OUTPOST_UPLOAD_INTERVAL_MS", "soon")]).unwrap_err();
        assert!(e.to_string().contains("OUTPOST_UPLOAD_INTERVAL_MS"), "{e}");
        let e = load(&format!("{MINIMAL}[limits]\nbody_bytes = 0\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("limits.body_bytes"), "{e}");
        let e = load(&format!("{MINIMAL}[limits]\nbody_byte = 5\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("body_byte"), "{e}");
        let e = load(MINIMAL, &[("OUTPOST_HQ_URL", "ftp://x")]).unwrap_err();
        assert!(e.to_string().contains("hq.url"), "{e}");
        let wait = |us: u32| {
            load(
                &format!("{MINIMAL}[limits]\ngroup_commit_wait_us = {us}\n"),
                &[],
            )
        };
        let e = wait(10_001).unwrap_err();
        assert!(e.to_string().contains("limits.group_commit_wait_us"), "{e}");
        assert!(
            wait(10_000).is_ok() && wait(0).is_ok(),
            "0 (never) to 10 ms"
        );
    }

    #[test]
    fn token_entries_are_checked_and_named_by_index() {
        let entry = |name: &str, hash: &str| {
            format!("[[auth.tokens]]\nname = \"{name}\"\nrole = \"pos\"\nsha256 = \"{hash}\"\n")
        };
        let good = "ab".repeat(32);
        let c = load(&format!("{MINIMAL}{}", entry("till-1", &good)), &[]).unwrap();
        assert_eq!(c.auth.tokens[0].role, Role::Pos);
        let e = load(&format!("{MINIMAL}{}", entry("till-1", "abc")), &[]).unwrap_err();
        assert!(e.to_string().contains("auth.tokens[0].sha256"), "{e}");
        let twice = format!(
            "{MINIMAL}{}{}",
            entry("a", &good),
            entry("a", &"cd".repeat(32))
        );
        let e = load(&twice, &[]).unwrap_err();
        assert!(e.to_string().contains("auth.tokens[1].name"), "{e}");
        let same = format!(
            "{MINIMAL}{}{}",
            entry("a", &good),
            entry("b", &good.to_uppercase())
        );
        let e = load(&same, &[]).unwrap_err();
        assert!(e.to_string().contains("auth.tokens[1].sha256"), "{e}");
        let e = load(&format!("{MINIMAL}{}", entry("till 1", &good)), &[]).unwrap_err();
        assert!(e.to_string().contains("auth.tokens[0].name"), "{e}");
        let bad_role = format!(
            "{MINIMAL}[[auth.tokens]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"{good}\"\n"
        );
        assert!(load(&bad_role, &[]).is_err());
        let e = load(&format!("{MINIMAL}[limits]\nmax_connections = 0\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("limits.max_connections"), "{e}");
    }

    #[test]
    fn retry_jitter_is_full_or_none() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.upload.retry_jitter, RetryJitter::Full);
        let c = load(
            &format!("{MINIMAL}[upload]\nretry_jitter = \"none\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.upload.retry_jitter, RetryJitter::None);
        let e = load(
            &format!("{MINIMAL}[upload]\nretry_jitter = \"some\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("retry_jitter"), "{e}");
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../config/outpost.toml");
        load(text, &[]).unwrap();
    }
}

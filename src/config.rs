//! One validated [`Config`] from the command line, the environment and `sqlite2pg.toml`.
//! Precedence: command-line flag, then environment (`SQLITE2PG_TARGET`, `DATABASE_URL` for the
//! target), then the config file, then the default. Errors name the flag or key that is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::convert::{ConvertOptions, PgType};
use crate::error::{Error, Result};
use crate::source::profile::ColumnOverrides;
use crate::target::connect::TargetUrl;

/// Environment variables read for the target URL, in order of preference.
pub const TARGET_ENV_VARS: &[&str] = &["SQLITE2PG_TARGET", "DATABASE_URL"];

/// The PostgreSQL schema tables go to when none is named: `public`, where applications look.
pub const DEFAULT_SCHEMA: &str = "public";

/// PostgreSQL truncates identifiers longer than this many bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The config file's keys: the global flags' names, plus per-column type overrides.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub source: Option<PathBuf>,
    pub target: Option<String>,
    pub schema: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// Offset for date-time text without one, e.g. "+02:00"; UTC when absent.
    pub source_timezone: Option<String>,
    /// `"table.column" = "type"`: pins a column's PostgreSQL type.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

/// The global options as given on the command line (all optional there).
#[derive(Debug, Clone, Default)]
pub struct GlobalFlags {
    pub source: Option<PathBuf>,
    pub target: Option<String>,
    pub schema: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub target: Option<TargetUrl>,
    pub schema: String,
    state_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    pub columns: ColumnOverrides,
    pub convert: ConvertOptions,
}

impl Config {
    /// Merges flags, environment and the config file into one validated config.
    pub fn resolve(flags: &GlobalFlags) -> Result<Config> {
        let file = match &flags.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let env_target = TARGET_ENV_VARS
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()));
        let target = flags.target.clone().or(env_target).or(file.target);
        let target = target.map(|t| TargetUrl::parse(&t)).transpose()?;
        let schema = flags
            .schema
            .clone()
            .or(file.schema)
            .unwrap_or_else(|| DEFAULT_SCHEMA.into());
        validate_identifier("schema", &schema)?;
        Ok(Config {
            source: flags.source.clone().or(file.source),
            target,
            schema,
            state_dir: flags.state_dir.clone().or(file.state_dir),
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            columns: parse_overrides(&file.columns)?,
            convert: ConvertOptions {
                default_offset_seconds: match &file.source_timezone {
                    Some(tz) => parse_offset(tz)?,
                    None => 0,
                },
            },
        })
    }

    /// The same settings for another source, state directory and target (the demo's own).
    pub fn with_paths(
        &self,
        source: PathBuf,
        state_dir: PathBuf,
        target: Option<TargetUrl>,
    ) -> Config {
        Config {
            source: Some(source),
            state_dir: Some(state_dir),
            target,
            ..self.clone()
        }
    }

    /// The source path, or a usage error naming the flag.
    pub fn require_source(&self) -> Result<&Path> {
        self.source.as_deref().ok_or_else(|| Error::Config {
            field: "--source".into(),
            reason: "no SQLite database given: pass --source PATH (or `source` in the config file)"
                .into(),
        })
    }

    /// The target, or a usage error naming the flag and the environment variables.
    pub fn require_target(&self) -> Result<&TargetUrl> {
        self.target.as_ref().ok_or_else(|| Error::Config {
            field: "--target".into(),
            reason: "no PostgreSQL target given: pass --target URL or set SQLITE2PG_TARGET or DATABASE_URL".into(),
        })
    }

    /// The state directory: as configured, else `<source>.sqlite2pg/` beside the source.
    pub fn state_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Ok(dir.clone());
        }
        let source = self.require_source()?;
        let mut name = source.file_name().unwrap_or_default().to_os_string();
        name.push(".sqlite2pg");
        Ok(source.with_file_name(name))
    }

    /// Creates the state directory private to the user (0700), or tightens an existing one.
    pub fn ensure_state_dir(&self) -> Result<PathBuf> {
        let dir = self.state_dir()?;
        create_private_dir(&dir)?;
        Ok(dir)
    }
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is set to 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io_err = |op| {
        move |source| Error::Io {
            op,
            path: dir.to_path_buf(),
            source,
        }
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create the state directory"))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("make the state directory private"))
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        op: "read the config file",
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| Error::Config {
        field: format!("config file {}", path.display()),
        reason: e.to_string().trim().to_string(),
    })
}

fn parse_overrides(columns: &BTreeMap<String, String>) -> Result<ColumnOverrides> {
    columns
        .iter()
        .map(|(key, ty)| {
            let field = || format!("columns.\"{key}\"");
            if !key.contains('.') {
                return Err(Error::Config {
                    field: field(),
                    reason: "keys are \"table.column\"".into(),
                });
            }
            let ty = PgType::parse(ty).map_err(|reason| Error::Config {
                field: field(),
                reason,
            })?;
            Ok((key.to_lowercase(), ty))
        })
        .collect()
}

/// Parses "+02:00", "-0530", "Z" or "UTC" into seconds east of UTC.
fn parse_offset(tz: &str) -> Result<i32> {
    let bad = || Error::Config {
        field: "source_timezone".into(),
        reason: format!("{tz:?} is not a UTC offset like \"+02:00\" or \"UTC\""),
    };
    let t = tz.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(0);
    }
    let sign = match t.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let digits: String = t[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (
        digits[..2].parse().map_err(|_| bad())?,
        digits[2..].parse().map_err(|_| bad())?,
    );
    if h > 15 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// Rejects a PostgreSQL identifier that is empty or would be truncated.
pub fn validate_identifier(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES {
        return Err(Error::Config {
            field: field.into(),
            reason: format!("{name:?} must be 1 to {MAX_IDENTIFIER_BYTES} bytes long"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+02:00").unwrap(), 7200);
        assert_eq!(parse_offset("-0530").unwrap(), -19800);
        assert_eq!(parse_offset("UTC").unwrap(), 0);
        assert!(parse_offset("Europe/Paris").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_field() {
        let err = toml::from_str::<FileConfig>("sourc = 'x'").unwrap_err();
        assert!(err.to_string().contains("sourc"));
        let mut cols = BTreeMap::new();
        cols.insert("jobs.at".to_string(), "real".to_string());
        let err = parse_overrides(&cols).unwrap_err().to_string();
        assert!(err.contains("jobs.at"), "{err}");
    }

    #[test]
    fn state_dir_defaults_beside_the_source() {
        let flags = GlobalFlags {
            source: Some("/data/app.db".into()),
            ..Default::default()
        };
        let config = Config::resolve(&flags).unwrap();
        assert_eq!(
            config.state_dir().unwrap(),
            PathBuf::from("/data/app.db.sqlite2pg")
        );
    }
}

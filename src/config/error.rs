//! Configuration errors with their line and column, and the collector that gathers them
//! while parsing and checking ([`Errors`]).

use std::fmt;
use std::ops::Range;

/// One configuration error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line and column, when the error has a place in the text.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// Every error found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file name used in messages (`<config>` for text not from a file).
    pub file: String,
    /// The errors, in text order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match e.location {
                Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, e.message)?,
                None => write!(f, "{}: {}", self.file, e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors against the text they point into.
pub(super) struct Errors<'t> {
    pub(super) text: &'t str,
    pub(super) list: Vec<(Option<usize>, String)>,
    /// Where each line starts, computed once when a position is first needed: a file
    /// with many errors is reported in linear time.
    pub(super) lines: std::cell::OnceCell<Vec<usize>>,
}

impl<'t> Errors<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Self {
            text,
            list: Vec::new(),
            lines: std::cell::OnceCell::new(),
        }
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let starts = self.lines.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        line_col(self.text, starts, offset)
    }

    /// The 1-based line of byte `offset`.
    pub(super) fn line(&self, offset: usize) -> usize {
        self.line_col(offset).0
    }

    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.list.push((Some(span.start), message.into()));
    }

    pub(super) fn toml(&mut self, e: &toml::de::Error) {
        let msg = e.message().trim_end().to_string();
        self.list.push((e.span().map(|s| s.start), msg));
    }

    pub(super) fn finish(self, file: &str) -> Result<(), ConfigErrors> {
        if self.list.is_empty() {
            return Ok(());
        }
        Err(self.into_errors(file))
    }

    pub(super) fn into_errors(mut self, file: &str) -> ConfigErrors {
        self.list.sort_by_key(|(off, _)| off.unwrap_or(0));
        self.list.dedup();
        let errors = std::mem::take(&mut self.list)
            .into_iter()
            .map(|(off, message)| ConfigError {
                location: off.map(|o| self.line_col(o)),
                message,
            })
            .collect();
        ConfigErrors {
            file: file.to_string(),
            errors,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, starts: &[usize], offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let line = starts.partition_point(|&st| st <= off).max(1);
    let start = starts[line - 1];
    (line, text[start..off].chars().count() + 1)
}

//! Progress on stderr for imports, training, the demo and the harness: the only module that
//! names indicatif.
//!
//! With the `cli` feature (on by default) a [`Progress`] wraps an indicatif bar, which draws
//! only when stderr is a terminal. Without it the type is empty and every call does nothing,
//! so an application that links the library with `default-features = false` does not
//! compile indicatif.

use std::borrow::Cow;

/// A progress bar or spinner on stderr, or nothing (hidden, or the `cli` feature off).
#[derive(Clone, Debug)]
pub struct Progress {
    #[cfg(feature = "cli")]
    bar: indicatif::ProgressBar,
}

#[cfg(feature = "cli")]
impl Progress {
    /// A bar that draws nothing.
    pub fn hidden() -> Self {
        Progress {
            bar: indicatif::ProgressBar::hidden(),
        }
    }

    /// A bar of `len` steps drawn with the indicatif `template` (bar characters `=> `).
    pub(crate) fn bar(len: u64, template: &str) -> Self {
        let bar = indicatif::ProgressBar::new(len);
        Self::style(&bar, template);
        Progress { bar }
    }

    /// A spinner drawn with the indicatif `template`, for work of unknown length; it moves
    /// only when advanced unless [`enable_steady_tick`](Self::enable_steady_tick) is called.
    pub(crate) fn spinner(template: &str) -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        Self::style(&bar, template);
        Progress { bar }
    }

    fn style(bar: &indicatif::ProgressBar, template: &str) {
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
    }

    /// Redraws every `interval` on a background thread (for spinners).
    pub(crate) fn enable_steady_tick(&self, interval: std::time::Duration) {
        self.bar.enable_steady_tick(interval);
    }

    /// Advances by `n` steps.
    pub(crate) fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Moves to step `pos`.
    pub(crate) fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Sets the text shown as `{msg}`.
    pub(crate) fn set_message(&self, msg: impl Into<Cow<'static, str>>) {
        self.bar.set_message(msg);
    }

    /// Removes the bar from the terminal.
    pub(crate) fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// Without the `cli` feature: the calls the library makes, each doing nothing.
#[cfg(not(feature = "cli"))]
impl Progress {
    #[cfg(feature = "parquet")]
    pub fn hidden() -> Self {
        Progress {}
    }

    pub(crate) fn bar(_len: u64, _template: &str) -> Self {
        Progress {}
    }

    #[cfg(feature = "parquet")]
    pub(crate) fn spinner(_template: &str) -> Self {
        Progress {}
    }

    pub(crate) fn inc(&self, _n: u64) {}

    pub(crate) fn set_position(&self, _pos: u64) {}

    pub(crate) fn set_message(&self, _msg: impl Into<Cow<'static, str>>) {}

    pub(crate) fn finish_and_clear(&self) {}
}

//! Models: training, offline evaluation, the serving generation and the retrain policy.

use super::*;

impl Engine {
    /// Trains every model from the interaction log and swaps the new generation in. Readers
    /// keep using the previous generation until the swap.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the log is unusable for a model, [`Error::Io`] when the model
    /// file cannot be written (the previous generation keeps serving).
    pub fn train(&self, options: &crate::train::TrainOptions) -> Result<crate::train::TrainReport> {
        self.writable("training")?;
        let _one_training = self.training_lock.lock();
        let report = crate::train::train(&self.state, options)?;
        *self.last_training.lock() = (self.state.events_count(), std::time::Instant::now());
        Ok(report)
    }

    /// Serves MF factors fitted elsewhere (e.g. Spark's ALS) as a new model generation: the
    /// serving generation with its MF channel (recall, scores and re-ranker feature) built
    /// from `factors`. Every factor is checked before anything changes: one dimension,
    /// finite values, no id twice, ids the engine knows (or skipped with
    /// `skip_unknown`). Users the factors miss are folded in from their history; items
    /// they miss are never proposed by MF. The re-ranker and the fusion weights stay those
    /// the serving generation learned; a later [`train`](Self::train) fits MF again.
    ///
    /// # Errors
    /// [`Error::NotTrained`] before the first training, [`Error::Invalid`] for factors that
    /// fail a check (nothing is applied), [`Error::Io`] when the model file cannot be
    /// written (the previous generation keeps serving).
    pub fn import_mf(
        &self,
        factors: &crate::channel::MfFactors,
        options: &crate::channel::MfImportOptions,
    ) -> Result<crate::channel::MfImportReport> {
        self.writable("importing a model")?;
        let _one_training = self.training_lock.lock();
        crate::train::import_mf(&self.state, factors, options)
    }

    /// [`import_mf`](Self::import_mf) from Parquet: `DIR/user_factors` and
    /// `DIR/item_factors`, each a `.parquet` file or a folder of them (as Spark writes),
    /// columns `id` (string or integer) and `features` (a list of float32 or float64): the
    /// layout of Spark's `ALSModel.userFactors` / `itemFactors` and of
    /// [`export_mf`](Self::export_mf). Needs the `parquet` feature.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a file that is not Parquet, is cut, or has the wrong columns;
    /// then as [`import_mf`](Self::import_mf). Nothing is applied on any error.
    #[cfg(feature = "parquet")]
    pub fn import_mf_parquet(
        &self,
        dir: impl AsRef<std::path::Path>,
        options: &crate::channel::MfImportOptions,
    ) -> Result<crate::channel::MfImportReport> {
        let factors = crate::export::read_factors(dir.as_ref())?;
        self.import_mf(&factors, options)
    }

    /// Offline evaluation: splits the log, fits each model on the training part, and scores
    /// the held-out part by full ranking over every item the user has not seen.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unusable split or log.
    pub fn evaluate(
        &self,
        options: &crate::evaluate::EvalOptions,
    ) -> Result<crate::evaluate::EvalReport> {
        crate::evaluate::evaluate(&self.state, options)
    }

    /// The model generation serving queries (0 when never trained).
    pub fn model_generation(&self) -> u64 {
        self.state
            .models
            .read()
            .as_ref()
            .map_or(0, |m| m.generation)
    }

    /// What tuning tried and chose for the serving model generation (`None` before the first
    /// training or when it trained without tuning).
    pub fn tuning_report(&self) -> Option<crate::tune::TuneReport> {
        self.state
            .models
            .read()
            .as_ref()
            .and_then(|m| m.tuning.clone())
    }

    /// What the import of the serving generation's MF factors did, when they were imported
    /// ([`import_mf`](Self::import_mf)) rather than fitted.
    pub fn mf_import_report(&self) -> Option<crate::channel::MfImportReport> {
        self.state
            .models
            .read()
            .as_ref()
            .and_then(|m| m.imported_mf.clone())
    }

    /// Sets (or with `None` turns off) automatic retraining, checked at each commit.
    pub fn set_retrain_policy(&self, policy: Option<crate::train::RetrainPolicy>) {
        *self.retrain.lock() = policy;
    }

    /// Trains when the retrain policy says it is due. Returns the report when it trained.
    pub(super) fn maybe_retrain(&self) -> Result<Option<crate::train::TrainReport>> {
        let Some(policy) = *self.retrain.lock() else {
            return Ok(None);
        };
        let (events_then, at) = *self.last_training.lock();
        let by_events = policy
            .after_events
            .is_some_and(|n| self.state.events_count().saturating_sub(events_then) >= n);
        let by_time = policy
            .after_secs
            .is_some_and(|s| at.elapsed().as_secs() >= s);
        if by_events || by_time {
            return self.train(&crate::train::TrainOptions::default()).map(Some);
        }
        Ok(None)
    }
}

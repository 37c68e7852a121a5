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

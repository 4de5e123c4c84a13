//! Group commit for the hot statements: concurrent callers each hand in one row's input, and
//! one statement (one round trip, one plan, one commit and its WAL flush) serves every caller
//! that arrived while the previous batch ran. At low load a batch is a single row and runs at
//! once; under load batches grow, so a statement's fixed cost is shared instead of paid per
//! row. The queueing is `batch-aint-one`'s; this module adds the PostgreSQL side: a pooled
//! connection per batch, and a row whose statement fails not failing the rows beside it.

use std::{future::Future, sync::Arc};

use batch_aint_one::{BatchError, Batcher, BatchingPolicy, Limits, Processor};
use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

/// A database error, shared by every caller of the batch it failed.
pub type DbError = Arc<sqlx::Error>;

/// A statement that serves many callers at once.
pub trait Statement: Clone + Send + Sync + 'static {
    type Input: Clone + Send + Sync + 'static;
    type Output: Send + 'static;
    /// Runs the statement for `inputs` (at least one) in one round trip and returns one output
    /// per input, in the order of `inputs`.
    fn run(
        &self,
        conn: &mut PgConnection,
        inputs: &[Self::Input],
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Output>>> + Send;
}

/// Checks that a batched statement answered one row per input (`what` names the statement in
/// the error), and hands the rows on.
pub fn one_row_each<T>(rows: Vec<T>, inputs: usize, what: &str) -> sqlx::Result<Vec<T>> {
    if rows.len() != inputs {
        return Err(sqlx::Error::Protocol(format!(
            "{what} answered {} rows for {inputs} inputs",
            rows.len()
        )));
    }
    Ok(rows)
}

/// How large one batch may grow.
const MAX_ROWS: usize = 128;
/// How many batches of one statement may run at once.
const CONCURRENCY: usize = 4;

#[derive(Clone)]
struct Runner<S> {
    pool: PgPool,
    statement: S,
}

impl<S: Statement> Processor for Runner<S> {
    type Key = ();
    type Input = S::Input;
    type Output = Result<S::Output, DbError>;
    type Error = DbError;
    type Resources = PoolConnection<Postgres>;

    // Each call runs in a task of its own: the futures are boxed so that spawning one moves a
    // pointer, not their whole state.
    async fn acquire_resources(&self, _key: ()) -> Result<PoolConnection<Postgres>, DbError> {
        Box::pin(self.pool.acquire()).await.map_err(Arc::new)
    }

    async fn process(
        &self,
        _key: (),
        inputs: impl Iterator<Item = S::Input> + Send,
        conn: PoolConnection<Postgres>,
    ) -> Result<Vec<Self::Output>, DbError> {
        let inputs: Vec<S::Input> = inputs.collect();
        Box::pin(self.run_all(inputs, conn)).await
    }
}

impl<S: Statement> Runner<S> {
    async fn run_all(
        &self,
        inputs: Vec<S::Input>,
        mut conn: PoolConnection<Postgres>,
    ) -> Result<Vec<Result<S::Output, DbError>>, DbError> {
        metrics::histogram!("herald_db_batch_rows").record(inputs.len() as f64);
        match self.statement.run(&mut conn, &inputs).await {
            Ok(outputs) => Ok(outputs.into_iter().map(Ok).collect()),
            // The server refused the statement (a constraint, a deadlock between two batches,
            // a value one row carries): run each row on its own, so only its own caller sees
            // its error. A lost connection fails them all; they were not applied.
            Err(sqlx::Error::Database(_)) if inputs.len() > 1 => {
                let mut outputs = Vec::with_capacity(inputs.len());
                for input in &inputs {
                    let one = self.statement.run(&mut conn, std::slice::from_ref(input));
                    outputs.push(match one.await {
                        Ok(mut out) if out.len() == 1 => Ok(out.remove(0)),
                        Ok(_) => Err(Arc::new(sqlx::Error::Protocol(
                            "a batched statement returned no row for its input".into(),
                        ))),
                        Err(e) => Err(Arc::new(e)),
                    });
                }
                Ok(outputs)
            }
            Err(e) => Err(Arc::new(e)),
        }
    }
}

/// A [`Statement`] behind its batcher; cheap to clone, shared by every task of a process.
pub struct Batched<S: Statement> {
    batcher: Batcher<Runner<S>>,
}

impl<S: Statement> Clone for Batched<S> {
    fn clone(&self) -> Self {
        Batched {
            batcher: self.batcher.clone(),
        }
    }
}

impl<S: Statement> Batched<S> {
    /// Starts the batcher's task (needs a Tokio runtime).
    pub fn new(name: &str, pool: PgPool, statement: S) -> Self {
        let limits = Limits::builder()
            .max_batch_size(MAX_ROWS)
            .max_key_concurrency(CONCURRENCY)
            // Callers bound themselves (prefetch, HTTP concurrency); never reject one here.
            .max_key_queued_items(1_000_000)
            .build();
        let batcher = Batcher::builder()
            .name(name)
            .processor(Runner { pool, statement })
            .limits(limits)
            // One batch runs at once as soon as a row arrives; while it runs, rows gather for
            // the next, which starts when one finishes or when enough are waiting.
            .batching_policy(BatchingPolicy::Balanced {
                min_size_hint: MAX_ROWS / 4,
            })
            .build();
        Batched { batcher }
    }

    /// Runs the statement for `input`, in whichever batch takes it.
    pub async fn run(&self, input: S::Input) -> Result<S::Output, DbError> {
        match self.batcher.add((), input).await {
            Ok(result) => result,
            Err(BatchError::BatchFailed(e) | BatchError::ResourceAcquisitionFailed(e)) => Err(e),
            Err(other) => Err(Arc::new(sqlx::Error::Io(std::io::Error::other(format!(
                "batched statement did not run: {other}"
            ))))),
        }
    }
}
